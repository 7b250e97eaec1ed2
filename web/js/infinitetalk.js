// ComfyUI-InfiniteTalk front-end glue.
// The core audio upload button expects an audio player widget ("audioUI") that the front end only adds to
// core audio nodes; give InfiniteTalk Load Audio the same player (created before the upload button).
import { app } from "../../../scripts/app.js";
import { ComfyWidgets } from "../../../scripts/widgets.js";

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

// InfiniteTalk Doctor: show the report it returns (ui.text) in a read-only text box on the node.
app.registerExtension({
  name: "InfiniteTalk.DoctorReport",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== "InfiniteTalkDoctor") return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const text = Array.isArray(message?.text) ? message.text.join("\n") : message?.text;
      if (typeof text !== "string") return;
      let widget = this.widgets?.find((w) => w.name === "report_text");
      if (!widget) {
        widget = ComfyWidgets["STRING"](this, "report_text", ["STRING", { multiline: true }], app).widget;
        widget.inputEl.readOnly = true;
        widget.inputEl.style.fontFamily = "monospace";
        widget.serialize = false;
      }
      widget.value = text;
      this.setSize([Math.max(this.size[0], 720), Math.max(this.size[1], 420)]);
    };
  },
});
