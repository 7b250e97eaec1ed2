"""The editor in headless Chromium: every example workflow loads (from the template route, as users get it),
has no missing nodes, converts to the same API prompt as its shipped twin, queues from the page, and its
output video appears in the Video Combine node. Screenshots go to test-artifacts/.

Sampler inputs are overridden for CPU speed exactly as in test_workflows.py (documented there), plus a
different seed so the sampler really runs again instead of coming from ComfyUI's cache.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.needs import need_browser

from .browser import body_text, close_dialogs, open_editor
from .harness import ARTIFACTS, REPO
from .test_workflows import CPU_OPTIONS, CPU_OVERRIDES

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.usefixtures("chromedriver")]

NAMES = sorted(p.stem for p in (REPO / "example_workflows").glob("*.json"))
SKIP_API_KEYS = {"audioUI"}  # front-end-only widget values the editor includes in prompts


@pytest.fixture(scope="session")
def chromedriver() -> str:
    return need_browser()  # skips locally; fails under CI=true (before a server is started)


@pytest.fixture(scope="module")
def editor(chromedriver, comfy_server):
    driver = open_editor(comfy_server.url)
    driver.set_script_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


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
  done(JSON.stringify({prompt: p.output, combine: String(window.app.graph._nodes.find(
    (n) => n.type === "InfiniteTalkVideoCombine").id)}));
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
def test_workflow_in_editor(comfy_server, editor, name):
    overrides = _overrides(1234)
    url = f"/api/workflow_templates/ComfyUI-InfiniteTalk/{name}.json"
    result = json.loads(editor.execute_async_script(LOAD_JS, url, overrides))
    assert "error" not in result, result.get("error")
    text = body_text(editor)
    assert "missing nodes" not in text.lower(), text[:2000]
    # the UI file and its API twin describe the same graph
    twin = json.loads((REPO / "example_workflows" / "api" / f"{name}_api.json").read_text())
    assert _strip(result["prompt"]) == _strip(_with_overrides(twin, overrides))

    before = set(comfy_server.get("/history") or {})
    editor.execute_script("window.app.queuePrompt(0, 1)")
    entry = _wait_new_history(comfy_server, before, timeout=900)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000]
    filename = entry["outputs"][result["combine"]]["images"][0]["filename"]
    assert _wait_preview(editor, filename, timeout=30), f"{filename} not shown in the editor"
    assert "Prompt outputs failed validation" not in body_text(editor)
    ARTIFACTS.mkdir(exist_ok=True)
    close_dialogs(editor)
    editor.save_screenshot(str(ARTIFACTS / f"browser_{name}.png"))


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
def test_legacy_workflow_in_editor(comfy_server, editor, name):
    """A workflow saved with the old 26-input Sampler loads migrated: the expert values sit on a new options
    node, the graph equals the current twin, and it runs from the page."""
    legacy = json.loads((REPO / "tests" / "legacy" / f"{name}.json").read_text())
    sampler = next(n for n in legacy["nodes"] if n["type"] == "InfiniteTalkSampler")
    assert len(sampler["widgets_values"]) == len(LEGACY_WIDGETS)
    overrides = _overrides(4321)
    for key, value in {**overrides["InfiniteTalkSampler"], **CPU_OPTIONS}.items():
        sampler["widgets_values"][LEGACY_WIDGETS.index(key)] = value  # saved values, not set in the page
    result = json.loads(editor.execute_async_script(LOAD_JS, legacy, {}))
    assert "error" not in result, result.get("error")
    assert "missing nodes" not in body_text(editor).lower()
    twin = json.loads((REPO / "example_workflows" / "api" / f"{name}_api.json").read_text())
    saved = {"InfiniteTalkModelLoader": {"block_swap": 0}}  # the old default, saved in the legacy file
    assert _canonical(result["prompt"]) == _canonical(_with_overrides(twin, {**overrides, **saved}))
    if name != LEGACY_UI[0]:
        return  # the same graph as its twin, which test_workflow_in_editor runs: one queued run is enough

    before = set(comfy_server.get("/history") or {})
    editor.execute_script("window.app.queuePrompt(0, 1)")
    entry = _wait_new_history(comfy_server, before, timeout=900)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000]
    close_dialogs(editor)
    editor.save_screenshot(str(ARTIFACTS / f"browser_legacy_{name}.png"))


def test_options_node_saved_before_the_storage_widget(comfy_server, editor):
    """An options node saved before its last widget (storage) loads with its saved values in place and
    storage at its default: the prompt equals the current twin's."""
    name = "infinitetalk_image_to_video"
    graph = json.loads((REPO / "example_workflows" / f"{name}.json").read_text())
    options = next(n for n in graph["nodes"] if n["type"] == "InfiniteTalkSamplerOptions")
    assert options["widgets_values"].pop() == "h264"  # the layout saved before the widget existed
    options["widgets_values"][2] = 33  # frame_num: a saved value that must stay where it was
    result = json.loads(editor.execute_async_script(LOAD_JS, graph, {}))
    assert "error" not in result, result.get("error")
    twin = json.loads((REPO / "example_workflows" / "api" / f"{name}_api.json").read_text())
    expected = _with_overrides(twin, {"InfiniteTalkSamplerOptions": {"frame_num": 33}})
    assert _strip(result["prompt"]) == _strip(expected)


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


def test_windows_are_previewed_while_the_sampler_runs(comfy_server, editor):
    """Watch while it is made: the first finished window plays in the editor (on the Video Combine node
    the frames go to) before the run ends.

    4 s of speech in 17-frame windows (12 new frames each) is 8 windows here, so the run is still going
    when window 1 is shown; the test then cancels it (what was generated stays for a resume).
    """
    name = "infinitetalk_image_to_video"
    overrides = {
        "InfiniteTalkSampler": {**CPU_OVERRIDES, "seed": 4242, "steps": 3},
        "InfiniteTalkSamplerOptions": {**CPU_OPTIONS, "max_frames": 0},
    }
    url = f"/api/workflow_templates/ComfyUI-InfiniteTalk/{name}.json"
    result = json.loads(editor.execute_async_script(LOAD_JS, url, overrides))
    assert "error" not in result, result.get("error")
    sampler = next(k for k, v in result["prompt"].items() if v["class_type"] == "InfiniteTalkSampler")
    before = set(comfy_server.get("/history") or {})
    editor.execute_script("window.app.queuePrompt(0, 1)")
    deadline, seen = time.monotonic() + 600, None
    while time.monotonic() < deadline and seen is None:
        state = editor.execute_script(PREVIEW_JS, sampler)
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
        state = editor.execute_script(PREVIEW_JS, sampler)
        playable = [
            v for v in state["videos"] if "window_0" in v["src"] and v["ready"] >= 1 and v["duration"] > 0
        ]
        if playable:
            break
        time.sleep(0.5)
    assert playable, state["videos"]
    assert 0.5 < playable[0]["duration"] < 1.0  # one window: 17 frames at 25 fps (0.68 s)
    ARTIFACTS.mkdir(exist_ok=True)
    close_dialogs(editor)
    editor.save_screenshot(str(ARTIFACTS / "browser_window_preview.png"))
    # the run is still going (8 windows, the first just shown): the cancel must stop it, not find it done
    assert comfy_server.get("/queue")["queue_running"], "the run ended before the test could cancel it"
    comfy_server.post("/interrupt")
    entry = _wait_new_history(comfy_server, before, timeout=300)
    kinds = [m[0] for m in entry["status"]["messages"]]
    assert "execution_interrupted" in kinds and entry["status"]["status_str"] == "error", kinds
