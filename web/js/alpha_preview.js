// ComfyUI-InfiniteTalk: transparency shows over a checkerboard.
// Video Combine previews alpha outputs as a WebM with alpha whose file name holds "infinitetalk_alpha"
// (nodes/video.py ALPHA_PREVIEW); browsers play its alpha, and this rule puts the usual checkerboard behind it.
import { app } from "../../../scripts/app.js";

const CHECKERBOARD = `
video[src*="infinitetalk_alpha"], img[src*="infinitetalk_alpha"] {
  background-color: #cccccc;
  background-image: repeating-conic-gradient(#999999 0% 25%, #cccccc 0% 50%);
  background-size: 16px 16px;
}`;

app.registerExtension({
  name: "InfiniteTalk.AlphaPreview",
  setup() {
    if (document.getElementById("infinitetalk-alpha-preview")) return;
    const style = document.createElement("style");
    style.id = "infinitetalk-alpha-preview";
    style.textContent = CHECKERBOARD;
    document.head.appendChild(style);
  },
});
