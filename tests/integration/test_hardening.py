"""Hardening through the real server: hostile prompts are refused with one clear line and the next good prompt
runs to success; a server SIGKILLed mid-run leaves a playable partial video and, restarted, resumes to the same
video as an uninterrupted run."""

from __future__ import annotations

import copy
import json
import time
import urllib.error
from pathlib import Path

import av
import numpy as np
import pytest

from tests import hostile as H

from .harness import REPO, ComfyServer, PromptError, ensure_comfyui, output_files
from .test_workflows import OPTION_KEYS, load_api, node_of

pytestmark = pytest.mark.integration

API = REPO / "example_workflows" / "api"
I2V, TTS, DIALOGUE = (
    API / f"infinitetalk_{n}_api.json" for n in ("image_to_video", "tts_to_video", "two_person_dialogue")
)
FAST = {"steps": 1, "frame_num": 5, "motion_frame": 1, "max_frames": 9}  # 2 windows (5 + 4 frames), 64x64
GOOD = {**FAST, "max_frames": 5, "text_scale": 1.0}  # one window, two guidance passes per step


def _set(prompt: dict, class_type: str, **inputs) -> dict:
    """Set node inputs; the sampler's expert knobs go to its options node."""
    if class_type == "InfiniteTalkSampler":
        options = {k: v for k, v in inputs.items() if k in OPTION_KEYS}
        inputs = {k: v for k, v in inputs.items() if k not in OPTION_KEYS}
        if options:
            prompt[node_of(prompt, "InfiniteTalkSamplerOptions")]["inputs"].update(options)
    prompt[node_of(prompt, class_type)]["inputs"].update(inputs)
    return prompt


def _message(server: ComfyServer, prompt: dict) -> tuple[str, bool]:
    """The refusal of ``prompt`` and whether it ran: ComfyUI's validation answer to POST /prompt (nothing
    ran), or the execution error (one line)."""
    try:
        entry = server.run(prompt, timeout=600)
    except PromptError as err:
        return err.body, False
    assert entry["status"]["status_str"] == "error", json.dumps(entry["status"])[:2000]
    errors = [m[1] for m in entry["status"]["messages"] if m[0] == "execution_error"]
    assert errors, entry["status"]
    message = errors[0]["exception_message"].strip()
    assert "\n" not in message, message  # one line
    return message, True


def _inputs(server: ComfyServer) -> dict[str, str]:
    d = server.input_dir
    files = {
        "static.wav": H.garbage(d, "static.wav"),
        "silence.wav": H.silent_wav(d),
        "mute.mp4": H.video(d, "mute.mp4", frames=5),
    }
    return {k: v.name for k, v in files.items()}


# (case id, workflow, changes: list of (class_type, inputs), expected message parts)
CASES = [
    ("frame_num-not-4n+1", I2V, [("InfiniteTalkSampler", {"frame_num": 80})], ["frame_num 80 must be 4n+1"]),
    ("motion-not-below-frames", I2V, [("InfiniteTalkSampler", {"frame_num": 9, "motion_frame": 9})],
     ["motion_frame 9 must be smaller than frame_num 9"]),
    ("motion-not-4n+1", I2V, [("InfiniteTalkSampler", {"motion_frame": 6})], ["motion_frame 6 must be 4n+1"]),
    ("size-unknown", I2V, [("InfiniteTalkSampler", {"size": "enormous"})], ["size 'enormous' is unknown"]),
    ("two-people-one-audio", I2V, [("InfiniteTalkSampler", {"speaker_boxes": "0,0,100,100; 100,0,200,100"})],
     ["speaker_boxes place two people but the audio has one speaker"]),
    ("prefix-dotdot", I2V, [("InfiniteTalkVideoCombine", {"filename_prefix": "../../escaped"})],
     ["filename_prefix '../../escaped' climbs out of the output folder"]),
    ("prefix-absolute", I2V, [("InfiniteTalkVideoCombine", {"filename_prefix": "/tmp/escaped"})],
     ["filename_prefix '/tmp/escaped' is an absolute path"]),
    ("audio-unreadable", I2V, [("InfiniteTalkLoadAudio", {"audio": "static.wav"})],
     ["static.wav' is not a readable audio or video file"]),
    ("audio-silent", I2V, [("InfiniteTalkLoadAudio", {"audio": "silence.wav"})],
     ["audio_1 is silent (digital silence)", "the lips would not move"]),
    ("audio-no-stream", I2V, [("InfiniteTalkLoadAudio", {"audio": "mute.mp4"})], ["mute.mp4' has no audio stream"]),
    ("audio-too-short", I2V, [("InfiniteTalkLoadAudio", {"duration_seconds": 0.01})],
     ["audio_1 lasts 10.0 ms: shorter than one video frame"]),
    ("audio-start-past-end", I2V, [("InfiniteTalkLoadAudio", {"start_seconds": 3000})],
     ["nothing left after start_seconds=3000"]),
    ("weights-missing", I2V, [("InfiniteTalkModelLoader", {"dit": "no_such_model.safetensors"})],
     ["no_such_model.safetensors", "diffusion_models"]),
    ("boxes-malformed", DIALOGUE, [("InfiniteTalkSampler", {"speaker_boxes": "1,2,3"})],
     ["speaker_boxes: '1,2,3' is not 'x0,y0,x1,y1'"]),
    ("boxes-inverted", DIALOGUE, [("InfiniteTalkSampler", {"speaker_boxes": "50,0,10,60; 60,0,90,60"})],
     ["'50,0,10,60' is empty or inverted"]),
    ("boxes-outside", DIALOGUE, [("InfiniteTalkSampler", {"speaker_boxes": "0,0,100,100; 100,0,5000,100"})],
     ["box 2 '100,0,5000,100' lies outside the", "reference image"]),
    ("tts-only-markup", DIALOGUE, [("InfiniteTalkDialogueTTS", {"text": "(s1) ... (s2) !!"})],
     ["holds only markup and symbols"]),
    ("tts-unknown-voice", TTS, [("InfiniteTalkTTS", {"voice": "zz_nobody"})],
     ["voice 'zz_nobody' is not a Kokoro voice"]),
    ("tts-unknown-language", TTS, [("InfiniteTalkTTS", {"language": "xx: Klingon"})],
     ["language 'xx: Klingon' is unknown"]),
    ("tts-empty-text", TTS, [("InfiniteTalkTTS", {"text": "   "})], ["text is empty: write what to say"]),
]  # fmt: skip


@pytest.fixture(scope="module")
def hostile_files(comfy_server):
    return _inputs(comfy_server)


@pytest.mark.parametrize(
    ("workflow", "changes", "needles"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_prompt_is_refused_then_the_next_runs(comfy_server, hostile_files, workflow, changes, needles):
    bad = load_api(workflow, **FAST)
    for class_type, inputs in changes:
        _set(bad, class_type, **inputs)
    message, ran = _message(comfy_server, bad)
    for needle in needles:
        assert needle in message, message[:2000]
    # the next good prompt runs to success: after a failed execution the sampler runs again (a new seed);
    # after a refusal at /prompt nothing ran, so a new file name (the combine node runs) is enough
    stamp = int(time.time() * 1000) % 100000
    good = load_api(I2V, **GOOD, seed=stamp if ran else 1)
    _set(good, "InfiniteTalkVideoCombine", filename_prefix=f"after_bad/{stamp}")
    entry = comfy_server.run(good, timeout=600)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000]
    assert [p for p in output_files(entry, comfy_server.output_dir) if p.suffix == ".mp4"][0].is_file()


# ------------------------------------------------------------------------------------------- kill
# 5 windows (5 + 4 x 4 frames), 2 steps each, two guidance passes. 128 pixels: below that x264's output is
# not repeatable (same frames, other bytes; 64x64 differs run to run): the videos could not be compared.
KILL = {"steps": 2, "frame_num": 5, "motion_frame": 1, "max_frames": 21, "seed": 5, "text_scale": 1.0,
        "width": 128, "height": 128}  # fmt: skip
FRAMES_AFTER = [5, 9, 13, 17, 21]  # video length after each window


def _frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def test_sigkill_mid_run_then_restart_resumes_to_the_same_video(tiny_models, tmp_path_factory):
    ensure_comfyui()
    server = ComfyServer(tmp_path_factory.mktemp("kill_server"), tiny_models, name="kill")
    prompt = load_api(I2V, **KILL)
    sampler = node_of(prompt, "InfiniteTalkSampler")
    steps = KILL["steps"]
    server.start()
    try:
        seen = {}

        def kill_after_window_2(msg):  # the first step of window 3: windows 1 and 2 are committed
            data = msg.get("data", {})
            if msg.get("type") == "progress" and data.get("node") == sampler and data["value"] > 2 * steps:
                if "killed" not in seen:
                    server.kill()
                    seen["killed"] = data["value"]

        prompt_id = server.queue(prompt)
        with pytest.raises(urllib.error.URLError, match="refused"):  # the next /history poll finds no server
            server.wait(prompt_id, timeout=300, on_message=kill_after_window_2)
        assert seen.get("killed") == 2 * steps + 1, seen
        partials = sorted((server.output_dir / "InfiniteTalk").glob("image_to_video_*_partial.mp4"))
        assert len(partials) == 1, list(server.output_dir.rglob("*"))
        assert len(_frames(partials[0])) == FRAMES_AFTER[1]  # windows 1-2, playable before any restart
        with av.open(str(partials[0])) as c:
            assert c.streams.audio, "the partial video carries its soundtrack"
        runs = list((server.user_dir / "__infinitetalk" / "runs").iterdir())
        manifest = json.loads((runs[0] / "manifest.json").read_text())
        assert [s["window"] for s in manifest["segments"]] == [0, 1] and not manifest["complete"]

        server.start()  # ComfyUI empties temp/ on start; the run folder lives in the user directory
        values = []

        def record(msg):
            if msg.get("type") == "progress" and msg["data"].get("node") == sampler:
                values.append(msg["data"]["value"])

        resumed = server.run(prompt, timeout=600, on_message=record)
        assert resumed["status"]["status_str"] == "success", json.dumps(resumed["status"])[:3000]
        assert values and min(values) >= 2 * steps, values  # windows 1-2 were not generated again
        assert not partials[0].exists()  # the final video replaces the partial one
        (final,) = [p for p in output_files(resumed, server.output_dir) if p.suffix == ".mp4"]
        hashes = [s["sha256"] for s in json.loads((runs[0] / "manifest.json").read_text())["segments"]]

        # the same job without resume: all five windows in one go (a changed input, so ComfyUI runs it)
        fresh_prompt = _set(copy.deepcopy(prompt), "InfiniteTalkSampler", resume=False)
        values.clear()
        fresh = server.run(fresh_prompt, timeout=600, on_message=record)
        assert fresh["status"]["status_str"] == "success", json.dumps(fresh["status"])[:3000]
        assert min(values) <= steps  # generated from the first window
        (reference,) = [p for p in output_files(fresh, server.output_dir) if p.suffix == ".mp4"]
        fresh_hashes = [s["sha256"] for s in json.loads((runs[0] / "manifest.json").read_text())["segments"]]
        assert hashes == fresh_hashes  # the raw frames of every window, bit for bit
        a, b = _frames(final), _frames(reference)
        assert len(a) == len(b) == FRAMES_AFTER[-1]
        diff = [int(np.abs(x.astype(int) - y.astype(int)).max()) for x, y in zip(a, b, strict=True)]
        assert diff == [0] * len(a), diff
    finally:
        server.stop()
