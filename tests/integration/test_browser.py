"""The editor in headless Chromium, in every front-end configuration (browser.FRONT_ENDS: the front end
ComfyUI 0.3.75 pins, and the newest one on PyPI in the classic canvas and in the Vue node mode), one server
each: every example workflow loads (from the template route, as users get it), has no missing nodes, takes a
widget edit, converts to the same API prompt as its shipped twin, queues from the page, and its output video
appears in the Video Combine node; the window clips, the Doctor's report, the Run Report's chart and the Load
Audio player show; old workflows are migrated; and the console shows no error from the pack's scripts.
Screenshots (no dialog over the canvas) go to test-artifacts/browser_<configuration>_*.png, the console to
browser-console-*.log.

Sampler inputs are overridden for CPU speed exactly as in test_workflows.py (documented there), plus a
different seed so the sampler really runs again instead of coming from ComfyUI's cache.
"""

from __future__ import annotations

import io
import json
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass

import pytest

from tests.needs import need_browser

from .browser import (
    FRONT_ENDS,
    FrontEnd,
    body_text,
    close_dialogs,
    console_entries,
    dialogs_open,
    errors_from_our_scripts,
    open_editor,
    prepare_settings,
    vue_nodes_active,
)
from .harness import ARTIFACTS, REPO, ComfyServer, ensure_comfyui
from .test_workflows import CPU_OPTIONS, CPU_OVERRIDES

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.usefixtures("chromedriver")]

NAMES = sorted(p.stem for p in (REPO / "example_workflows").glob("*.json"))
SKIP_API_KEYS = {"audioUI"}  # front-end-only widget values the editor includes in prompts


@pytest.fixture(scope="session")
def chromedriver() -> str:
    return need_browser()  # skips locally; fails under CI=true (before a server is started)


@dataclass
class Editor:
    server: ComfyServer
    driver: object
    front_end: FrontEnd

    def screenshot(self, name: str) -> None:
        """The canvas, fitted to the graph, no dialog over it."""
        close_dialogs(self.driver)
        assert dialogs_open(self.driver) == 0, "a dialog covers the canvas"
        ARTIFACTS.mkdir(exist_ok=True)
        self.driver.save_screenshot(str(ARTIFACTS / f"browser_{self.front_end.name}_{name}.png"))


@pytest.fixture(scope="module", params=FRONT_ENDS, ids=lambda f: f.name)
def editor(request, chromedriver, tiny_models, tmp_path_factory):
    front_end: FrontEnd = request.param
    ensure_comfyui()
    server = ComfyServer(
        tmp_path_factory.mktemp(f"browser_{front_end.name}"),
        tiny_models,
        name=f"browser-{front_end.name}",
        front_end=front_end.static_root(),
    )
    server.start()
    driver = None
    log = ARTIFACTS / f"browser-console-{front_end.name}.log"
    try:
        prepare_settings(server, front_end)
        driver = open_editor(server.url)
        driver.set_script_timeout(60)
        log.write_text("")
        yield Editor(server, driver, front_end)
    finally:
        if driver is not None:
            driver.quit()
        server.stop()


@pytest.fixture(autouse=True)
def no_console_errors_from_our_scripts(editor):
    """After each test: the console holds no error from the pack's scripts (all entries kept in a log)."""
    yield
    entries = console_entries(editor.driver)
    log = ARTIFACTS / f"browser-console-{editor.front_end.name}.log"
    with log.open("a") as f:
        f.writelines(f"{e['level']} {e['message']}\n" for e in entries)
    errors = errors_from_our_scripts(entries)
    assert not errors, errors


LOAD_JS = """
const [source, overrides] = arguments;
const done = arguments[arguments.length - 1];
(async () => {
  const graph = typeof source === "string" ? await (await fetch(source)).json() : source;
  await window.app.loadGraphData(graph);
  for (const [type, values] of Object.entries(overrides)) {
    const node = window.app.graph._nodes.find((n) => n.type === type);
    if (!node) throw new Error("no node " + type);
    for (const [k, v] of Object.entries(values)) {
      const w = node.widgets.find((x) => x.name === k);
      if (!w) throw new Error(type + " has no widget " + k);
      w.value = v;
    }
  }
  const p = await window.app.graphToPrompt();
  await new Promise((r) => setTimeout(r, 500));
  const combine = window.app.graph._nodes.find((n) => n.type === "InfiniteTalkVideoCombine");
  done(JSON.stringify({prompt: p.output, combine: combine ? String(combine.id) : null,
    vueNodes: document.querySelectorAll("[data-node-id]").length}));
})().catch((e) => done(JSON.stringify({error: String(e && e.stack || e)})));
"""


def _strip(prompt: dict) -> dict:
    return {
        k: {**v, "inputs": {i: x for i, x in v["inputs"].items() if i not in SKIP_API_KEYS}}
        for k, v in prompt.items()
    }


def _overrides(seed: int) -> dict:
    return {
        "InfiniteTalkSampler": {**CPU_OVERRIDES, "seed": seed},
        "InfiniteTalkSamplerOptions": CPU_OPTIONS,
    }


def _with_overrides(prompt: dict, overrides: dict) -> dict:
    for node in prompt.values():
        node["inputs"].update(overrides.get(node["class_type"], {}))
    return prompt


@pytest.mark.parametrize("name", NAMES)
def test_workflow_in_editor(editor, name):
    comfy_server, driver = editor.server, editor.driver
    overrides = _overrides(1234)
    url = f"/api/workflow_templates/ComfyUI-InfiniteTalk/{name}.json"
    result = json.loads(driver.execute_async_script(LOAD_JS, url, overrides))
    assert "error" not in result, result.get("error")
    # the configuration's node mode is really on: Vue renders each node as an element with data-node-id
    assert (result["vueNodes"] > 0) == editor.front_end.vue_nodes, result["vueNodes"]
    assert vue_nodes_active(driver) == editor.front_end.vue_nodes
    text = body_text(driver)
    assert "missing nodes" not in text.lower(), text[:2000]
    # the UI file and its API twin describe the same graph
    twin = json.loads((REPO / "example_workflows" / "api" / f"{name}_api.json").read_text())
    assert _strip(result["prompt"]) == _strip(_with_overrides(twin, overrides))

    before = set(comfy_server.get("/history") or {})
    driver.execute_script("window.app.queuePrompt(0, 1)")
    entry = _wait_new_history(comfy_server, before, timeout=900)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000]
    filename = entry["outputs"][result["combine"]]["images"][0]["filename"]
    _focus(driver, result["combine"])
    assert _wait_preview(driver, filename, timeout=30), f"{filename} not shown in the editor"
    assert "Prompt outputs failed validation" not in body_text(driver)
    editor.screenshot(name)


LEGACY_UI = sorted(p.stem for p in (REPO / "tests" / "legacy").glob("*.json") if not p.stem.endswith("_api"))
# widget positions of the old 26-input Sampler in a saved workflow
LEGACY_WIDGETS = ("mode", "size", "width", "height", "steps", "seed", "control_after_generate", "text_scale",
                  "audio_scale", "shift", "scheduler", "frame_num", "motion_frame", "max_frames",
                  "color_correction", "apg", "teacache", "speaker_boxes", "resume")  # fmt: skip


def _canonical(prompt: dict) -> dict:
    """Node ids replaced by class types (each type occurs once in the example workflows)."""
    types = {k: v["class_type"] for k, v in prompt.items()}
    out = {}
    for node in prompt.values():
        inputs = {
            i: (types[x[0]], x[1]) if isinstance(x, list) and len(x) == 2 and x[0] in types else x
            for i, x in node["inputs"].items()
            if i not in SKIP_API_KEYS
        }
        out[node["class_type"]] = inputs
    return out


@pytest.mark.parametrize("name", LEGACY_UI)
def test_legacy_workflow_in_editor(editor, name):
    """A workflow saved with the old 26-input Sampler loads migrated: the expert values sit on a new options
    node, the graph equals the current twin, and it runs from the page."""
    comfy_server, driver = editor.server, editor.driver
    legacy = json.loads((REPO / "tests" / "legacy" / f"{name}.json").read_text())
    sampler = next(n for n in legacy["nodes"] if n["type"] == "InfiniteTalkSampler")
    assert len(sampler["widgets_values"]) == len(LEGACY_WIDGETS)
    overrides = _overrides(4321)
    for key, value in {**overrides["InfiniteTalkSampler"], **CPU_OPTIONS}.items():
        sampler["widgets_values"][LEGACY_WIDGETS.index(key)] = value  # saved values, not set in the page
    result = json.loads(driver.execute_async_script(LOAD_JS, legacy, {}))
    assert "error" not in result, result.get("error")
    assert "missing nodes" not in body_text(driver).lower()
    twin = json.loads((REPO / "example_workflows" / "api" / f"{name}_api.json").read_text())
    saved = {"InfiniteTalkModelLoader": {"block_swap": 0}}  # the old default, saved in the legacy file
    assert _canonical(result["prompt"]) == _canonical(_with_overrides(twin, {**overrides, **saved}))
    if name != LEGACY_UI[0]:
        return  # the same graph as its twin, which test_workflow_in_editor runs: one queued run is enough

    before = set(comfy_server.get("/history") or {})
    driver.execute_script("window.app.queuePrompt(0, 1)")
    entry = _wait_new_history(comfy_server, before, timeout=900)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000]
    options = next(k for k, v in result["prompt"].items() if v["class_type"] == "InfiniteTalkSamplerOptions")
    _focus(driver, options, scale=0.6)  # the options node the migration added, linked to the sampler
    editor.screenshot(f"legacy_{name}")


def test_options_node_saved_before_the_storage_widget(editor):
    """An options node saved before its last widgets (storage, then latent_motion and color_anchor) loads with
    its saved values in place and those widgets at their defaults: the prompt equals the current twin's."""
    driver = editor.driver
    name = "infinitetalk_image_to_video"
    graph = json.loads((REPO / "example_workflows" / f"{name}.json").read_text())
    options = next(n for n in graph["nodes"] if n["type"] == "InfiniteTalkSamplerOptions")
    saved = options["widgets_values"]
    assert saved[-3:] == ["h264", False, 0]  # storage, latent_motion, color_anchor: the widgets added last
    del saved[-3:]  # the layout saved before they existed
    options["widgets_values"][2] = 33  # frame_num: a saved value that must stay where it was
    result = json.loads(driver.execute_async_script(LOAD_JS, graph, {}))
    assert "error" not in result, result.get("error")
    twin = json.loads((REPO / "example_workflows" / "api" / f"{name}_api.json").read_text())
    expected = _with_overrides(twin, {"InfiniteTalkSamplerOptions": {"frame_num": 33}})
    assert _strip(result["prompt"]) == _strip(expected)


def _focus(driver, node_id: str, scale: float = 0.8) -> None:
    """The node in the middle of the view at a scale where its widgets and previews are drawn."""
    driver.execute_script(
        "const node = window.app.graph.getNodeById(Number(arguments[0]));"
        "window.app.canvas.ds.scale = arguments[1]; window.app.canvas.centerOnNode(node);"
        "window.app.graph.setDirtyCanvas(true, true);",
        node_id,
        scale,
    )
    time.sleep(0.5)


def _wait_new_history(server, before: set, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        history = server.get("/history") or {}
        new = [k for k in history if k not in before]
        if new:
            return history[new[0]]
        time.sleep(1)
    raise TimeoutError("the prompt queued from the editor did not finish")


def _wait_preview(driver, filename: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    js = "return Array.from(document.querySelectorAll('video, img')).some(e => (e.src || '').includes(arguments[0]))"
    while time.monotonic() < deadline:
        if driver.execute_script(js, filename):
            return True
        time.sleep(0.5)
    return False


PREVIEW_JS = """
const sampler = arguments[0];
const node = window.app.graph.getNodeById(Number(sampler));
const videos = Array.from(document.querySelectorAll('video')).map((v) => ({
  src: v.currentSrc || v.src || '', ready: v.readyState, duration: v.duration || 0}));
return {videos, text: document.body.innerText, hasNode: !!node};
"""


def test_windows_are_previewed_while_the_sampler_runs(editor):
    """Watch while it is made: the first finished window plays in the editor (on the Video Combine node
    the frames go to) before the run ends.

    4 s of speech in 17-frame windows (12 new frames each) is 8 windows here, so the run is still going
    when window 1 is shown; the test then cancels it (what was generated stays for a resume).
    """
    comfy_server, driver = editor.server, editor.driver
    name = "infinitetalk_image_to_video"
    overrides = {
        "InfiniteTalkSampler": {**CPU_OVERRIDES, "seed": 4242, "steps": 3},
        "InfiniteTalkSamplerOptions": {**CPU_OPTIONS, "max_frames": 0},
    }
    url = f"/api/workflow_templates/ComfyUI-InfiniteTalk/{name}.json"
    result = json.loads(driver.execute_async_script(LOAD_JS, url, overrides))
    assert "error" not in result, result.get("error")
    sampler = next(k for k, v in result["prompt"].items() if v["class_type"] == "InfiniteTalkSampler")
    _focus(driver, result["combine"])  # where the window clips play
    before = set(comfy_server.get("/history") or {})
    driver.execute_script("window.app.queuePrompt(0, 1)")
    deadline, seen = time.monotonic() + 600, None
    while time.monotonic() < deadline and seen is None:
        state = driver.execute_script(PREVIEW_JS, sampler)
        previews = [v for v in state["videos"] if "window_0" in v["src"] and "type=temp" in v["src"]]
        if previews:
            seen = previews[0]
            running = comfy_server.get("/queue")["queue_running"]
            finished = set(comfy_server.get("/history") or {}) - before
        elif set(comfy_server.get("/history") or {}) - before:
            break  # the run ended without any preview
        time.sleep(0.25)
    assert seen is not None, "no window preview appeared on the sampler"
    assert "window_00000.mp4" in seen["src"], seen  # the first window, as soon as it was done
    assert running and not finished, "the preview came only after the run"
    # it is a real, playable video (the browser read its header and duration)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        state = driver.execute_script(PREVIEW_JS, sampler)
        playable = [
            v for v in state["videos"] if "window_0" in v["src"] and v["ready"] >= 1 and v["duration"] > 0
        ]
        if playable:
            break
        time.sleep(0.5)
    assert playable, state["videos"]
    assert 0.5 < playable[0]["duration"] < 1.0  # one window: 17 frames at 25 fps (0.68 s)
    editor.screenshot("window_preview")
    # the run is still going (8 windows, the first just shown): the cancel must stop it, not find it done
    assert comfy_server.get("/queue")["queue_running"], "the run ended before the test could cancel it"
    comfy_server.post("/interrupt")
    entry = _wait_new_history(comfy_server, before, timeout=300)
    kinds = [m[0] for m in entry["status"]["messages"]]
    assert "execution_interrupted" in kinds and entry["status"]["status_str"] == "error", kinds


AUDIO_JS = """
const done = arguments[arguments.length - 1];
(async () => {
  const node = window.app.graph._nodes.find((n) => n.type === "InfiniteTalkLoadAudio");
  const player = node.widgets.find((w) => w.name === "audioUI");
  window.app.canvas.ds.scale = 1;  // at full size, the node in the middle of the view
  window.app.canvas.centerOnNode(node);
  window.app.graph.setDirtyCanvas(true, true);
  await new Promise((r) => setTimeout(r, 1000));
  const audio = Array.from(document.querySelectorAll("audio")).find((a) => a.src.includes(arguments[0]));
  if (!audio) return done(JSON.stringify({player: !!player, audio: null}));
  audio.muted = true;
  await audio.play();
  await new Promise((r) => setTimeout(r, 1500));
  done(JSON.stringify({player: !!player, audio: {src: audio.src, time: audio.currentTime, paused: audio.paused,
    duration: audio.duration,
    // the classic canvas shows the <audio> controls; the Vue node mode hides it inside its own player
    visible: audio.getBoundingClientRect().width > 0 || audio.parentElement.getBoundingClientRect().width > 0}}));
})().catch((e) => done(JSON.stringify({error: String(e && e.stack || e)})));
"""


def test_load_audio_has_a_player_that_plays(editor):
    """InfiniteTalk Load Audio shows ComfyUI's audio player with the chosen file, and it plays."""
    driver = editor.driver
    url = "/api/workflow_templates/ComfyUI-InfiniteTalk/infinitetalk_image_to_video.json"
    result = json.loads(driver.execute_async_script(LOAD_JS, url, {}))
    assert "error" not in result, result.get("error")
    time.sleep(1)
    state = json.loads(driver.execute_async_script(AUDIO_JS, "infinitetalk_speech.wav"))
    assert "error" not in state, state["error"]
    assert state["player"] and state["audio"] is not None, state
    audio = state["audio"]
    assert "type=input" in audio["src"] and audio["visible"], audio
    assert audio["time"] > 0.2 and not audio["paused"] and audio["duration"] > 1, audio  # it really plays
    editor.screenshot("load_audio_player")


DOCTOR_JS = """
const done = arguments[arguments.length - 1];
(async () => {
  window.app.graph.clear();
  const node = LiteGraph.createNode("InfiniteTalkDoctor");
  node.pos = [100, 100];
  window.app.graph.add(node);
  await new Promise((r) => setTimeout(r, 500));
  done(JSON.stringify({id: String(node.id)}));
})().catch((e) => done(JSON.stringify({error: String(e && e.stack || e)})));
"""

REPORT_JS = """
const node = window.app.graph.getNodeById(Number(arguments[0]));
const widget = (node.widgets || []).find((w) => w.name === "report_text");
const boxes = Array.from(document.querySelectorAll("textarea.infinitetalk-doctor-report"));
return {widget: widget ? String(widget.value) : null, serialize: widget ? widget.serialize : null,
  shown: boxes.filter((b) => b.getBoundingClientRect().width > 0).map((b) => b.value)};
"""


def test_doctor_report_is_shown_on_the_node(editor):
    """Queued alone, InfiniteTalk Doctor shows its report in a read-only text box on the node."""
    comfy_server, driver = editor.server, editor.driver
    result = json.loads(driver.execute_async_script(DOCTOR_JS))
    assert "error" not in result, result.get("error")
    before = set(comfy_server.get("/history") or {})
    driver.execute_script("window.app.queuePrompt(0, 1)")
    entry = _wait_new_history(comfy_server, before, timeout=300)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000]
    report = entry["outputs"][result["id"]]["text"]
    report = "\n".join(report) if isinstance(report, list) else report
    deadline, state = time.monotonic() + 30, None
    while time.monotonic() < deadline:
        state = driver.execute_script(REPORT_JS, result["id"])
        if state["widget"] and state["shown"]:
            break
        time.sleep(0.5)
    assert state["widget"] == report and report.strip().splitlines()[-1].endswith("ready"), state
    assert state["shown"] == [report], state  # the text box on the page holds the report
    assert state["serialize"] is False  # never saved with the workflow
    driver.execute_script("window.app.extensionManager?.command?.execute?.('Comfy.Canvas.FitView')")
    time.sleep(0.5)
    editor.screenshot("doctor_report")


ALPHA_JS = """
const [source, overrides] = arguments;
const done = arguments[arguments.length - 1];
(async () => {
  const graph = await (await fetch(source)).json();
  await window.app.loadGraphData(graph);
  const combine = window.app.graph._nodes.find((n) => n.type === "InfiniteTalkVideoCombine");
  combine.disconnectInput(combine.findInputSlot("background"));  // no slide: the transparent presenter
  combine.widgets.find((w) => w.name === "format").value = "webm-vp9";
  for (const [type, values] of Object.entries(overrides)) {
    const node = window.app.graph._nodes.find((n) => n.type === type);
    for (const [k, v] of Object.entries(values)) node.widgets.find((x) => x.name === k).value = v;
  }
  done(JSON.stringify({combine: String(combine.id)}));
})().catch((e) => done(JSON.stringify({error: String(e && e.stack || e)})));
"""

VIDEO_STATE_JS = """
const [needle, x, y] = arguments;
const done = arguments[arguments.length - 1];
(async () => {
  const v = Array.from(document.querySelectorAll('video')).find(
    (e) => (e.currentSrc || e.src || '').includes(needle));
  if (!v) return done(null);
  const style = getComputedStyle(v);
  let pixel = null;
  if (v.readyState >= 1 && v.videoWidth > 0) {
    v.pause();
    await new Promise((ok) => { v.addEventListener('seeked', ok, {once: true}); v.currentTime = 0.2;
                                setTimeout(ok, 3000); });
    const canvas = document.createElement('canvas');
    canvas.width = v.videoWidth; canvas.height = v.videoHeight;
    const ctx = canvas.getContext('2d');
    ctx.drawImage(v, 0, 0);
    pixel = Array.from(ctx.getImageData(x, y, 1, 1).data);
  }
  done({src: v.currentSrc || v.src, ready: v.readyState, width: v.videoWidth, height: v.videoHeight,
        background: style.backgroundImage, pixel});
})().catch((e) => done({error: String(e)}));
"""


def _video_state(driver, needle: str, x: int = 0, y: int = 0, timeout: float = 30, ready: int = 1):
    deadline, state = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        state = driver.execute_async_script(VIDEO_STATE_JS, needle, x, y)
        if state and state.get("ready", 0) >= ready:
            return state
        time.sleep(0.5)
    return state


def test_presenter_over_the_slide_is_shown_composited(editor):
    """The seventh workflow from the page: the preview on Video Combine is the composite at the slide's size,
    and where the slide shows (its title bar, top left) the browser draws the slide's colours."""
    comfy_server, driver = editor.server, editor.driver
    name = "infinitetalk_presenter_over_slide"
    url = f"/api/workflow_templates/ComfyUI-InfiniteTalk/{name}.json"
    result = json.loads(driver.execute_async_script(LOAD_JS, url, _overrides(5151)))
    assert "error" not in result, result.get("error")
    before = set(comfy_server.get("/history") or {})
    driver.execute_script("window.app.queuePrompt(0, 1)")
    entry = _wait_new_history(comfy_server, before, timeout=900)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000]
    filename = entry["outputs"][result["combine"]]["images"][0]["filename"]
    state = _video_state(driver, filename, 10, 10)
    assert state is not None, f"{filename} not shown in the editor"
    assert (state["width"], state["height"]) == (640, 360), state
    if state["pixel"] and state["pixel"][3]:  # a Chromium that decodes H.264: the slide's title bar
        assert max(abs(a - b) for a, b in zip(state["pixel"][:3], (32, 64, 128), strict=True)) < 12, state
    editor.screenshot("presenter_over_slide")


def test_transparent_presenter_is_previewed_over_a_checkerboard(editor):
    """Without the slide and in webm-vp9, the preview is the WebM with alpha (its alpha is checked in
    tests/nodes/test_compositing_nodes.py), shown over the checkerboard the pack's CSS puts behind it."""
    comfy_server, driver = editor.server, editor.driver
    name = "infinitetalk_presenter_over_slide"
    url = f"/api/workflow_templates/ComfyUI-InfiniteTalk/{name}.json"
    result = json.loads(driver.execute_async_script(ALPHA_JS, url, _overrides(6161)))
    assert "error" not in result, result.get("error")
    before = set(comfy_server.get("/history") or {})
    driver.execute_script("window.app.queuePrompt(0, 1)")
    entry = _wait_new_history(comfy_server, before, timeout=900)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000]
    filename = entry["outputs"][result["combine"]]["images"][0]["filename"]
    assert "infinitetalk_alpha" in filename and filename.endswith(".webm")
    state = _video_state(driver, filename)
    assert state is not None, f"{filename} not shown in the editor"
    assert "conic-gradient" in state["background"], state  # the checkerboard behind it
    assert (state["width"], state["height"]) == (64, 64), state
    editor.screenshot("transparent_presenter")


RUN_REPORT_JS = """
const [source, overrides] = arguments;
const done = arguments[arguments.length - 1];
(async () => {
  const graph = await (await fetch(source)).json();
  await window.app.loadGraphData(graph);
  for (const [type, values] of Object.entries(overrides)) {
    const node = window.app.graph._nodes.find((n) => n.type === type);
    for (const [k, v] of Object.entries(values)) node.widgets.find((x) => x.name === k).value = v;
  }
  const sampler = window.app.graph._nodes.find((n) => n.type === "InfiniteTalkSampler");
  const report = LiteGraph.createNode("InfiniteTalkRunReport");
  // to the right of the whole graph, large enough to read the chart (nothing else over it in the screenshot)
  const right = Math.max(...window.app.graph._nodes.map((n) => n.pos[0] + n.size[0]));
  report.pos = [right + 120, sampler.pos[1]];
  window.app.graph.add(report);
  report.setSize([720, 660]);
  const link = sampler.connect(sampler.findOutputSlot("frames"), report, report.findInputSlot("frames"));
  await new Promise((r) => setTimeout(r, 500));
  const p = await window.app.graphToPrompt();
  done(JSON.stringify({report: String(report.id), linked: !!link, inputs: p.output[String(report.id)]?.inputs,
    sampler: String(sampler.id)}));
})().catch((e) => done(JSON.stringify({error: String(e && e.stack || e)})));
"""

# The images the page shows for a node: the classic canvas draws node.imgs (Image objects, not in the DOM);
# the Vue node mode puts an <img> inside the node's element. Each with its size once loaded.
NODE_IMAGES_JS = """
const id = arguments[0];
const node = window.app.graph.getNodeById(Number(id));
const info = (img) => ({src: img.currentSrc || img.src || "", complete: !!img.complete,
  width: img.naturalWidth || 0, height: img.naturalHeight || 0,
  shown: img.isConnected ? img.getBoundingClientRect().width > 0 : null});
const element = document.querySelector(`[data-node-id="${id}"]`);
return {canvas: (node?.imgs || []).map(info),
        dom: element ? Array.from(element.querySelectorAll("img")).map(info) : [],
        debug: {element: !!element, html: element ? element.innerHTML.length : 0,
                all: Array.from(document.querySelectorAll("img")).map((i) => i.src).filter((s) => s.includes("view")),
                outputs: JSON.stringify(window.app.nodeOutputs?.[id] ?? null),
                ids: Array.from(document.querySelectorAll("[data-node-id]")).map((e) => e.dataset.nodeId)}};
"""


def test_run_report_chart_is_shown_on_the_node(editor):
    """InfiniteTalk Run Report on the Sampler's frames (the image-to-video workflow, the node added in the
    page): the drift chart the library draws is served from /view and shown on the node, loaded."""
    from PIL import Image

    from infinitetalk.report import HEADER, PANEL_H, WIDTH

    comfy_server, driver = editor.server, editor.driver
    url = "/api/workflow_templates/ComfyUI-InfiniteTalk/infinitetalk_image_to_video.json"
    result = json.loads(driver.execute_async_script(RUN_REPORT_JS, url, _overrides(7272)))
    assert "error" not in result, result.get("error")
    assert result["linked"] and result["inputs"]["frames"] == [result["sampler"], 0], result
    before = set(comfy_server.get("/history") or {})
    driver.execute_script("window.app.queuePrompt(0, 1)")
    entry = _wait_new_history(comfy_server, before, timeout=900)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000]
    (chart,) = entry["outputs"][result["report"]]["images"]
    assert chart["filename"].endswith(".png"), chart

    # the PNG the server serves is the library's chart: its width, and at least a header, a line and 5 panels
    query = urllib.parse.urlencode({k: chart[k] for k in ("filename", "subfolder", "type")})
    with urllib.request.urlopen(f"{comfy_server.url}/view?{query}", timeout=30) as r:
        png = Image.open(io.BytesIO(r.read()))
    assert png.format == "PNG" and png.width == WIDTH and png.height >= HEADER + 18 + 5 * PANEL_H + 30, png

    _focus(driver, result["report"], scale=0.6)
    deadline, state, shown = time.monotonic() + 30, None, []
    while time.monotonic() < deadline and not shown:
        state = driver.execute_script(NODE_IMAGES_JS, result["report"])
        images = state["dom"] if editor.front_end.vue_nodes else state["canvas"]
        shown = [i for i in images if "/view?" in i["src"] and chart["filename"] in i["src"] and i["complete"]
                 and i["width"] > 0]  # fmt: skip
        time.sleep(0.5)
    if not shown:
        editor.screenshot("run_report_chart_failed")
    assert shown, state
    assert (shown[0]["width"], shown[0]["height"]) == png.size, shown  # the browser decoded that PNG
    if editor.front_end.vue_nodes:
        assert shown[0]["shown"], shown  # laid out on the node, not hidden
    _focus(driver, result["report"], scale=0.9)
    editor.screenshot("run_report_chart")
