// ComfyUI-InfiniteTalk front-end glue. Works with the front end ComfyUI 0.3.75 pins (1.32.9) and the newer
// ones, in the classic canvas and in the Vue node mode ("Nodes 2.0"). Only `app` is imported (the extension
// API); no internal module (scripts/widgets.js) is used.
import { app } from "../../../scripts/app.js";

// The core audio upload button expects an audio player widget ("audioUI") that the front end only adds to
// core audio nodes; give InfiniteTalk Load Audio the same player (created before the upload button).
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

// InfiniteTalk Doctor: show the report it returns (ui.text) in a read-only text box on the node: a DOM widget
// (node.addDOMWidget), which both node modes render; never saved with the workflow.
const REPORT = "report_text";

function reportWidget(node) {
  const found = node.widgets?.find((w) => w.name === REPORT);
  if (found) return found;
  const area = document.createElement("textarea");
  area.readOnly = true;
  area.spellcheck = false;
  area.className = "comfy-multiline-input infinitetalk-doctor-report";
  Object.assign(area.style, { fontFamily: "monospace", width: "100%", height: "100%", resize: "none" });
  const widget = node.addDOMWidget(REPORT, "infinitetalk_report", area, {
    getValue: () => area.value,
    setValue: (value) => {
      area.value = value ?? "";
    },
    getMinHeight: () => 240,
    serialize: false,
  });
  widget.serialize = false;
  return widget;
}

app.registerExtension({
  name: "InfiniteTalk.DoctorReport",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== "InfiniteTalkDoctor") return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const text = Array.isArray(message?.text) ? message.text.join("\n") : message?.text;
      if (typeof text !== "string") return;
      reportWidget(this).value = text;
      this.setSize([Math.max(this.size[0], 720), Math.max(this.size[1], 420)]);
      this.setDirtyCanvas?.(true, true);
    };
  },
});

// InfiniteTalk Run Report: its preview is the chart (an image). The Vue node mode shows the outputs of a node
// with a VIDEO input (its optional 'video') as a video unless the node says otherwise: say "image".
app.registerExtension({
  name: "InfiniteTalk.RunReportChart",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== "InfiniteTalkRunReport") return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = onNodeCreated?.apply(this, arguments);
      this.previewMediaType = "image";
      return result;
    };
  },
});
