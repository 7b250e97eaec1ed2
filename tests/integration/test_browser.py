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

from .browser import body_text, chromedriver_path, close_dialogs, open_editor
from .harness import ARTIFACTS, REPO
from .test_workflows import CPU_OVERRIDES

pytestmark = [pytest.mark.integration, pytest.mark.browser]

NAMES = sorted(p.stem for p in (REPO / "example_workflows").glob("*.json"))
SKIP_API_KEYS = {"audioUI"}  # front-end-only widget values the editor includes in prompts


@pytest.fixture(scope="module")
def editor(comfy_server):
    if chromedriver_path() is None:
        pytest.skip(
            "chromedriver not installed (scripts/test.sh installs chromium + chromium-driver with apt-get)"
        )
    driver = open_editor(comfy_server.url)
    driver.set_script_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


LOAD_JS = """
const [name, overrides] = arguments;
const done = arguments[arguments.length - 1];
(async () => {
  const r = await fetch("/api/workflow_templates/ComfyUI-InfiniteTalk/" + name + ".json");
  await window.app.loadGraphData(await r.json());
  const sampler = window.app.graph._nodes.find((n) => n.type === "InfiniteTalkSampler");
  for (const [k, v] of Object.entries(overrides)) {
    const w = sampler.widgets.find((x) => x.name === k);
    if (!w) throw new Error("sampler has no widget " + k);
    w.value = v;
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


@pytest.mark.parametrize("name", NAMES)
def test_workflow_in_editor(comfy_server, editor, name):
    overrides = {**CPU_OVERRIDES, "seed": 1234}
    result = json.loads(editor.execute_async_script(LOAD_JS, name, overrides))
    assert "error" not in result, result.get("error")
    text = body_text(editor)
    assert "missing nodes" not in text.lower(), text[:2000]
    # the UI file and its API twin describe the same graph
    twin = json.loads((REPO / "example_workflows" / "api" / f"{name}_api.json").read_text())
    for node in twin.values():
        if node["class_type"] == "InfiniteTalkSampler":
            node["inputs"].update(overrides)
    assert _strip(result["prompt"]) == _strip(twin)

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
    overrides = {**CPU_OVERRIDES, "seed": 4242, "max_frames": 0, "steps": 3}
    result = json.loads(editor.execute_async_script(LOAD_JS, name, overrides))
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
    comfy_server.post("/interrupt")
    entry = _wait_new_history(comfy_server, before, timeout=300)
    kinds = [m[0] for m in entry["status"]["messages"]]
    assert "execution_interrupted" in kinds or entry["status"]["status_str"] == "success", kinds
