"""Untrusted prompts through the real server: every file name a prompt can carry stays inside its folders, every
widget bound holds through the API, text lengths are capped. Each hostile prompt is refused in one line and the
next good prompt runs to success.

The marker that a named file was never opened: the files the hostile prompts point at (the canaries, outside
every folder the server may read) are watched with Linux inotify (``IN_OPEN | IN_ACCESS``): the kernel reports
any open or read of them, by any process. Access times are not used (``relatime`` and ``noatime`` mounts do not
update them). The canaries hold real media and weights, so without the boundary the prompts would read them
and succeed. ``test_the_open_marker_sees_an_open`` shows the marker fires. An existence test (``stat``) raises
no inotify event: that the boundary makes no file-system call before refusing is shown in
``tests/unit/test_paths.py`` (every ``os`` call recorded), and the refusals here carry its wording.
"""

from __future__ import annotations

import copy
import ctypes
import json
import os
import shutil
import struct
import time
from pathlib import Path

import pytest

from tests import hostile as H

from .harness import REPO, ComfyServer, PromptError, output_files
from .test_hardening import FAST, GOOD, I2V, TTS, _set
from .test_workflows import load_api, node_of

pytestmark = pytest.mark.integration

IN_ACCESS, IN_OPEN = 0x1, 0x20


class OpenWatch:
    """Which of ``files`` any process opened or read since the last :meth:`opened` (Linux inotify)."""

    def __init__(self, files: list[Path]):
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed: the open marker needs Linux inotify")
        self.files: dict[int, Path] = {}
        for f in files:
            wd = libc.inotify_add_watch(self.fd, os.fsencode(f), IN_OPEN | IN_ACCESS)
            if wd < 0:
                raise OSError(ctypes.get_errno(), f"inotify_add_watch {f}")
            self.files[wd] = f

    def opened(self) -> list[str]:
        seen = []
        while True:
            try:
                buf = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return seen
            pos = 0
            while pos < len(buf):
                wd, mask, _, length = struct.unpack_from("iIII", buf, pos)
                seen.append(f"{self.files.get(wd)} ({'open' if mask & IN_OPEN else 'read'})")
                pos += 16 + length

    def close(self) -> None:
        os.close(self.fd)


@pytest.fixture(scope="module")
def canary(comfy_server, tmp_path_factory, tiny_models):
    """Real media and weights outside every folder of the server, watched; a symlink in the input folder that
    points out (at a folder beside them), as a server's owner might have made."""
    folder = tmp_path_factory.mktemp("canary")
    files = {
        "wav": H.wav(folder, "canary.wav", seconds=1.0),
        "weights": folder / "canary.safetensors",
        "voice": folder / "canary.pt",
    }
    shutil.copyfile(tiny_models / "models" / "vae" / "wan_2.1_vae.safetensors", files["weights"])
    voice = next((tiny_models / "models" / "kokoro" / "voices").glob("*.pt"))
    shutil.copyfile(voice, files["voice"])
    (folder / "inner").mkdir()
    link = comfy_server.input_dir / "outlink"
    if not link.is_symlink():
        link.symlink_to(folder / "inner", target_is_directory=True)
    assert (link / ".." / "canary.wav").is_file()  # the system resolves '..' from the link's target
    watch = OpenWatch(list(files.values()))
    yield files, watch
    watch.close()
    link.unlink()


def test_the_open_marker_sees_an_open(canary):
    files, watch = canary
    watch.opened()
    with open(files["wav"], "rb") as fh:
        fh.read(4)
    assert any("canary.wav" in s for s in watch.opened())
    assert watch.opened() == []


def _rel(target: Path, start: Path) -> str:
    return os.path.relpath(target, start)


def _refusal(server: ComfyServer, prompt: dict) -> tuple[str, bool]:
    """The refusal of ``prompt`` (one line) and whether anything ran: ComfyUI's answer to POST /prompt
    (validation: nothing ran) or the execution error."""
    try:
        entry = server.run(prompt, timeout=600)
    except PromptError as err:
        body = json.loads(err.body)
        details = [
            f"{e.get('message', '')}: {e.get('details', '')}"  # ComfyUI's own range check: input in details
            for node in (body.get("node_errors") or {}).values()
            for e in node.get("errors", [])
        ] or [body.get("error", {}).get("message", "")]
        assert all("\n" not in d for d in details), details
        return " | ".join(details), False
    errors = [m[1] for m in entry["status"]["messages"] if m[0] == "execution_error"]
    if not errors:  # not refused: the case fails, with the canaries it opened
        return f"NOT REFUSED ({entry['status']['status_str']})", True
    message = errors[0]["exception_message"].strip()
    assert "\n" not in message, message
    return message, True


def _rename(prompt: dict, old: str, new: str) -> dict:
    out = {}
    for key, node in prompt.items():
        node = copy.deepcopy(node)
        for name, value in node["inputs"].items():
            if isinstance(value, list) and len(value) == 2 and str(value[0]) == old:
                node["inputs"][name] = [new, value[1]]
        out[new if key == old else key] = node
    return out


def _with_lora(prompt: dict, name: str) -> dict:
    loader, sampler = node_of(prompt, "InfiniteTalkModelLoader"), node_of(prompt, "InfiniteTalkSampler")
    prompt["900"] = {
        "class_type": "InfiniteTalkLoraLoader",
        "inputs": {"model": [loader, 0], "lora": name, "strength": 1.0},
    }
    prompt[sampler]["inputs"]["model"] = ["900", 0]
    return prompt


def _script(text: str) -> dict:
    """The TTS workflow with InfiniteTalk Script in place of the TTS node."""
    prompt = load_api(TTS, **FAST)
    tts = node_of(prompt, "InfiniteTalkTTS")
    voice = prompt[tts]["inputs"]["voice"]
    prompt[tts] = {
        "class_type": "InfiniteTalkScript",
        "inputs": {
            "text_encoder": [node_of(prompt, "InfiniteTalkTextEncoderLoader"), 0],
            "script": text,
            "kokoro": [node_of(prompt, "InfiniteTalkKokoroLoader"), 0],
            "voice_1": voice,
            "voice_2": voice,
            "speed": 1.0,
            "language": "auto (from the voice name)",
            "negative_prompt": "",
        },
    }
    prompt[node_of(prompt, "InfiniteTalkVideoCombine")]["inputs"]["srt"] = [tts, 4]
    return prompt


def _cases(server: ComfyServer, files: dict[str, Path]):
    """(case id, prompt, expected message parts)."""
    wav, weights, voice = files["wav"], files["weights"], files["voice"]
    up_wav = _rel(wav, server.input_dir)  # ../../canaryN/canary.wav
    up_weights = _rel(weights, REPO / "weights")
    up_lora = _rel(weights, server.tiny / "models" / "diffusion_models")

    def i2v(class_type, **inputs):
        prompt = load_api(I2V, **FAST)
        if class_type == "InfiniteTalkSampler":
            return _set(prompt, class_type, **inputs)
        prompt[node_of(prompt, class_type)]["inputs"].update(inputs)
        return prompt

    def tts(class_type, **inputs):
        prompt = load_api(TTS, **FAST)
        prompt[node_of(prompt, class_type)]["inputs"].update(inputs)
        return prompt

    sampler = node_of(load_api(I2V), "InfiniteTalkSampler")
    schedule = "\n".join(f"[{i}s] she talks, take {i}" for i in range(300))
    return [
        ("audio-dotdot", i2v("InfiniteTalkLoadAudio", audio=up_wav), ["climbs out of its folder with '..'"]),
        ("audio-absolute", i2v("InfiniteTalkLoadAudio", audio=str(wav)), ["is an absolute path"]),
        ("audio-symlink-out", i2v("InfiniteTalkLoadAudio", audio="outlink/../canary.wav"),
         ["audio 'outlink/../canary.wav' climbs out of its folder with '..'"]),
        ("audio-drive", i2v("InfiniteTalkLoadAudio", audio="C:\\canary\\canary.wav"), ["names a drive"]),
        ("audio-unc", i2v("InfiniteTalkLoadAudio", audio="\\\\fileserver\\share\\canary.wav"),
         ["is a network (UNC) path"]),
        ("audio-nul", i2v("InfiniteTalkLoadAudio", audio=f"{wav}\x00.png"), ["holds a NUL byte"]),
        ("dit-weights-dotdot", i2v("InfiniteTalkModelLoader", dit=f"weights/{up_weights}"),
         ["climbs out of its folder with '..'"]),
        ("vae-absolute", i2v("InfiniteTalkVAELoader", name=str(weights)), ["vae '", "is an absolute path"]),
        ("lora-dotdot", _with_lora(load_api(I2V, **FAST), up_lora), ["lora '", "climbs out of its folder"]),
        ("kokoro-unc", tts("InfiniteTalkKokoroLoader", name="//fileserver/share/kokoro"),
         ["is a network (UNC) path"]),
        ("tts-voice-path", tts("InfiniteTalkTTS", voice=str(voice)), ["is not a Kokoro voice"]),
        ("script-audio-dotdot", _script(f"[S1] audio: {up_wav} | hello"),
         ["script segment 1 audio", "climbs out of its folder with '..'"]),
        ("script-voice-path", _script(f"voice 1: {voice}\n[S1] Hello there."),
         ["script voice 1", "is an absolute path"]),
        ("node-id-slash", _rename(load_api(I2V, **FAST), sampler, "runs/escape"), ["reads like a path"]),
        ("node-id-dotdot", _rename(load_api(I2V, **FAST), sampler, "../../../escape"), ["reads like a path"]),
        ("frame_num-past-max", i2v("InfiniteTalkSampler", frame_num=1001), ["frame_num 1001 is above 201"]),
        ("motion_frame-past-max", i2v("InfiniteTalkSampler", motion_frame=1001),
         ["motion_frame 1001 must be smaller than frame_num"]),
        ("steps-past-max", i2v("InfiniteTalkSampler", steps=100_000), ["steps", "100"]),
        ("max_frames-past-max", i2v("InfiniteTalkSampler", max_frames=10**12), ["max_frames", "1000000"]),
        ("width-past-max", i2v("InfiniteTalkSampler", size="custom", width=65536), ["width", "2048"]),
        ("start-past-max", i2v("InfiniteTalkLoadAudio", start_seconds=1e12),
         ["start_seconds 1000000000000.0 must be a number of seconds between 0 and 36,000"]),
        ("tts-text-too-long", tts("InfiniteTalkTTS", text="Hello there. " * 2000),
         ["text is 26,000 characters long, more than the 20,000 allowed"]),
        ("script-too-long", _script("[S1] Hello there.\n" * 12_000),
         ["script is 216,000 characters long, more than the 200,000 allowed"]),
        ("schedule-too-many", i2v("InfiniteTalkTextEncode", prompt=schedule), ["more than 200 timed prompts"]),
        ("prompt-too-long", i2v("InfiniteTalkTextEncode", prompt="a woman talks " * 2000),
         ["prompt is 28,000 characters long, more than the 20,000 allowed for one prompt"]),
    ]  # fmt: skip


def test_untrusted_prompts_are_refused_and_the_next_good_prompt_runs(comfy_server, canary):
    files, watch = canary
    watch.opened()
    cases = _cases(comfy_server, files)
    assert len(cases) >= 15
    runs_root = comfy_server.user_dir / "__infinitetalk" / "runs"
    failures = []
    for n, (case, bad, needles) in enumerate(cases):
        message, ran = _refusal(comfy_server, bad)
        missing = [needle for needle in needles if needle not in message]
        opened = watch.opened()
        if missing or opened:
            failures.append(f"{case}: missing {missing}, canaries opened {opened}: {message[:600]}")
        # the next good prompt runs to success (a new seed after an execution error: the sampler runs again)
        stamp = f"{int(time.time() * 1000) % 100000}_{n}"
        good = load_api(I2V, **GOOD, seed=n + 100 if ran else 1)
        _set(good, "InfiniteTalkVideoCombine", filename_prefix=f"after_untrusted/{stamp}")
        entry = comfy_server.run(good, timeout=600)
        assert entry["status"]["status_str"] == "success", (case, json.dumps(entry["status"])[:3000])
        assert [p for p in output_files(entry, comfy_server.output_dir) if p.suffix == ".mp4"][0].is_file()
    assert failures == [], "\n".join(failures)
    # no folder was made from a node id outside the run folders
    for place in (comfy_server.user_dir, comfy_server.workdir, runs_root, comfy_server.temp_dir):
        assert not (place / "escape").exists() and not (place / "escape_").exists()
    assert not [p for p in runs_root.rglob("*escape*")]
    assert watch.opened() == []
