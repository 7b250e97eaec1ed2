// ComfyUI-InfiniteTalk front-end glue.
// The core audio upload button expects an audio player widget ("audioUI") that the front end only adds to
// core audio nodes; give InfiniteTalk Load Audio the same player (created before the upload button).
import { app } from "../../../scripts/app.js";

app.registerExtension({
  name: "InfiniteTalk.LoadAudioPlayer",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== "InfiniteTalkLoadAudio") return;
    const required = nodeData.input?.required;
    if (!required || required.audioUI) return;
    const upload = required.upload;
    delete required.upload;
    required.audioUI = ["AUDIO_UI", {}];
    if (upload) required.upload = upload;
  },
});
