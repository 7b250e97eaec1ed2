"""What a prompt from a stranger cannot do through the library: leave its folders (scripts, voices, manifests),
pass the widgets' bounds, ask for unbounded text work, reserve disk with a lying header, or keep runs forever."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from infinitetalk import validation as V
from infinitetalk.errors import CheckpointError, InputError
from infinitetalk.pipeline import GenerationConfig
from infinitetalk.prompts import parse_prompt_schedule
from infinitetalk.script import parse_script, render_script
from infinitetalk.tts import check_tts_text
from tests import hostile as H


# ----------------------------------------------------------------------------------------------- bounds
@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"frame_num": 205}, "frame_num 205 is above 201"),
        ({"frame_num": 4001}, "frame_num 4001 is above 201"),
        ({"motion_frame": 201, "frame_num": 201}, "motion_frame 201 must be smaller than frame_num 201"),
        ({"steps": 101}, "steps 101 must be between 1 and 100"),
        ({"steps": 0}, "steps 0 must be between 1 and 100"),
        ({"max_frame_num": 1_000_001}, "max_frame_num 1000001 must be between 1 and 1,000,000"),
        ({"size": "4096x480"}, "size '4096x480' is larger than 2048 pixels on a side"),
    ],
)
def test_the_library_enforces_what_the_widgets_promise(changes, needle):
    with pytest.raises(InputError, match=needle):
        V.check_config(GenerationConfig(**changes))


def test_the_widgets_read_the_library_bounds_at_their_edges():
    V.check_config(
        GenerationConfig(
            frame_num=201, motion_frame=197, steps=100, max_frame_num=1_000_000, size="2048x2048"
        )
    )
    assert (V.FRAME_NUM.hi, V.MOTION_FRAME.hi, V.STEPS.hi, V.MAX_FRAMES.hi, V.OUTPUT_SIDE.hi) == (
        201,
        197,
        100,
        1_000_000,
        2048,
    )


@pytest.mark.parametrize("value", [float("nan"), -1.0, 36_000.5, 1e300, "5", True])
def test_audio_slice_seconds_are_bounded(value):
    with pytest.raises(InputError, match="start_seconds .* must be a number of seconds between 0 and 36,000"):
        V.check_seconds(value, name="start_seconds")


# ------------------------------------------------------------------------------------------------- text
def test_text_caps():
    check_tts_text("a" * V.MAX_TEXT_CHARS)
    with pytest.raises(InputError, match="text is 20,001 characters long, more than the 20,000 allowed"):
        check_tts_text("a" * (V.MAX_TEXT_CHARS + 1))
    with pytest.raises(InputError, match="prompt is 20,001 characters long"):
        parse_prompt_schedule("b" * (V.MAX_TEXT_CHARS + 1))


def test_prompt_schedule_entries_are_capped():
    ok = "\n".join(f"[{i}s] take {i}" for i in range(V.MAX_SCHEDULE_ENTRIES))
    assert len(parse_prompt_schedule(ok)) == V.MAX_SCHEDULE_ENTRIES
    with pytest.raises(InputError, match="line 201: more than 200 timed prompts"):
        parse_prompt_schedule(ok + "\n[9999s] one more")


def test_script_caps():
    with pytest.raises(InputError, match="script is 200,001 characters long"):
        parse_script("a" * (V.MAX_SCRIPT_CHARS + 1))
    with pytest.raises(InputError, match="script has 1,001 segments, more than the 1,000 allowed"):
        parse_script("[S1] hi\n" * (V.MAX_SEGMENTS + 1))
    with pytest.raises(InputError, match="'voices' names speakers \\[3\\]"):
        parse_script(json.dumps({"voices": {"3": "af_heart"}, "segments": [{"text": "hi"}]}))
    with pytest.raises(InputError, match="segment 1 has speaker 7"):
        parse_script(json.dumps({"segments": [{"text": "hi", "speaker": 7}]}))


# --------------------------------------------------------------------------------------- script paths
@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("[S1] audio: ../secret.wav | hi", "script segment 1 audio '../secret.wav' climbs out of its folder"),
        ("[S1] audio: /etc/secret.wav", "is an absolute path"),
        ("[S1] audio: C:\\secret.wav", "names a drive"),
        ("[S1] audio: \\\\host\\share\\x.wav", "network (UNC) path"),
        ("voice 1: /tmp/evil.pt\n[S1] hi", "script voice 1 '/tmp/evil.pt' is an absolute path"),
        ("voice 2: ../../evil\n[S2] hi", "script voice 2 '../../evil' climbs out"),
        ("voice 1: sub/evil.pt\n[S1] hi", "script voice 1 'sub/evil.pt' is a file path"),
    ],
)
def test_a_script_from_a_prompt_is_confined(line, needle):
    with pytest.raises(
        InputError, match=needle.replace("\\", "\\\\").replace("(", r"\(").replace(")", r"\)")
    ):
        parse_script(line, "/nonexistent-input", confine=True)
    parse_script(line, "/nonexistent-input", confine=False)  # the command line's user may name any file


def test_confined_recordings_resolve_inside_the_input_folder(tmp_path):
    inside = tmp_path / "input"
    (inside / "sub").mkdir(parents=True)
    H.wav(inside / "sub", "take.wav", seconds=0.5)
    rendered = render_script(parse_script("[S1] audio: sub/take.wav | hello", inside, confine=True))
    assert rendered.duration == pytest.approx(0.5, abs=1e-3)
    assert [c.text for c in rendered.cues] == ["hello"]


# ----------------------------------------------------------------------------------------------- voices
def _voices_only(tmp_path: Path, voice_files: bool):
    from infinitetalk.tts.kokoro import KokoroTTS

    tts = object.__new__(KokoroTTS)  # the voice lookup needs no model
    tts.model_dir, tts.voice_files = tmp_path, voice_files
    (tmp_path / "voices").mkdir(parents=True, exist_ok=True)
    return tts


def test_kokoro_voices_from_prompts_are_names_in_the_voices_folder(tmp_path):
    tts = _voices_only(tmp_path / "model", voice_files=False)
    assert tts._voice_path("af_heart") == tmp_path / "model" / "voices" / "af_heart.pt"
    assert tts._voice_path("af_heart.pt") == tmp_path / "model" / "voices" / "af_heart.pt"
    for hostile, needle in [
        (str(tmp_path / "evil.pt"), "is an absolute path"),
        ("../../evil", "climbs out of its folder"),
        ("../evil.pt", "climbs out of its folder"),
        ("C:\\evil.pt", "names a drive"),
    ]:
        with pytest.raises(InputError, match=f"TTS voice .*{needle}"):
            tts._voice_path(hostile)
    cli = _voices_only(tmp_path / "cli_model", voice_files=True)
    assert cli._voice_path(str(tmp_path / "mine.pt")) == tmp_path / "mine.pt"  # the machine's user


# --------------------------------------------------------------------------------------------- manifest
@pytest.mark.parametrize(
    "entry",
    [
        {"segments": [{"window": 0, "file": "../../outside/segment_00000.mp4", "frames": 5}]},
        {"segments": [{"window": 0, "file": "/etc/passwd", "frames": 5}]},
        {"segments": [], "state": "../state_00000.pt"},
        {"segments": ["segment_00000.mp4"]},
        {
            "segments": [{"window": 0, "file": "segment_00000.mp4", "frames": 5}],
            "state": "sub/state_00000.pt",
        },
    ],
)
def test_a_planted_manifest_cannot_name_files_outside_its_run(tmp_path, entry):
    from infinitetalk.sinks import SegmentStore

    run = tmp_path / "run"
    run.mkdir()
    (tmp_path / "outside").mkdir()
    victim = tmp_path / "outside" / "segment_00000.mp4"
    victim.write_bytes(b"keep me")
    manifest = {"version": 1, "fps": 25, "codec": "h264", "fingerprint": "f", "complete": False, **entry}
    (run / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="not a file of this run|is not a run manifest"):
        SegmentStore(run).begin("f", resume=True)
    assert victim.read_bytes() == b"keep me"


# ------------------------------------------------------------------------------------------------ sweep
def _run(root: Path, name: str, *, complete=False, committed=True, size=1000, age_days=0.0) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    segments = [{"window": 0, "file": "segment_00000.mp4", "frames": 5}] if committed else []
    (folder / "segment_00000.mp4").write_bytes(b"\0" * size)
    (folder / "manifest.json").write_text(json.dumps({"complete": complete, "segments": segments}))
    when = time.time() - age_days * 86400
    os.utime(folder / "manifest.json", (when, when))
    return folder


def test_sweep_removes_unfinished_runs_by_age_then_size_with_a_log_line_each(tmp_path, caplog):
    from infinitetalk.runs import RunLimits, sweep

    old = _run(tmp_path, "old", age_days=10)
    big_old = _run(tmp_path, "big_old", size=6000, age_days=3)
    recent = _run(tmp_path, "recent", size=3000, age_days=1)
    current = _run(tmp_path, "current", size=2000)
    done = _run(tmp_path, "done", complete=True)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "manifest.json").write_text("[1, 2]")  # malformed: cannot resume
    limits = RunLimits(max_age_s=7 * 86400, max_bytes=7000)
    with caplog.at_level(logging.INFO, logger="infinitetalk.runs"):
        removed = sweep(tmp_path, keep=[current], finished=False, limits=limits)
    assert removed == [old, big_old]  # 10 days > 7; then 6000 + 3000 + 2000 > 7000, the oldest goes first
    assert recent.is_dir() and current.is_dir() and done.is_dir()
    lines = [r.getMessage() for r in caplog.records]
    assert any(str(old) in m and "unused for 10.0 days" in m for m in lines), lines
    assert any(str(big_old) in m and "runs take" in m for m in lines), lines
    removed = sweep(tmp_path, keep=[current], finished=True, limits=RunLimits(max_age_s=0, max_bytes=0))
    assert sorted(removed) == sorted([done, tmp_path / "junk"])  # 0 switches the limits off
    assert recent.is_dir() and current.is_dir()


def test_run_limits_from_the_environment(monkeypatch):
    from infinitetalk.runs import RunLimits

    monkeypatch.setenv("INFINITETALK_RUNS_MAX_AGE_DAYS", "2")
    monkeypatch.setenv("INFINITETALK_RUNS_MAX_GB", "0.5")
    assert RunLimits.from_env() == RunLimits(max_age_s=2 * 86400, max_bytes=512 * 1024**2)
    monkeypatch.setenv("INFINITETALK_RUNS_MAX_GB", "lots")
    assert RunLimits.from_env().max_bytes == 20 * 1024**3


# ------------------------------------------------------------------------------------------ lying header
def _lying_flac(folder: Path, seconds: float = 1.0, sr: int = 48000) -> Path:
    """A real FLAC whose STREAMINFO claims 2^36 - 1 samples (397 hours at 48 kHz) in 15 KB."""
    path = folder / "claims_hours.flac"
    soundfile.write(path, H.tone(seconds, sr), sr)
    data = bytearray(path.read_bytes())
    offset = (
        4 + 4 + 10
    )  # 'fLaC', block header, block/frame sizes; then rate(20) channels(3) bits(5) total(36)
    packed = int.from_bytes(data[offset : offset + 8], "big") | ((1 << 36) - 1)
    data[offset : offset + 8] = packed.to_bytes(8, "big")
    path.write_bytes(bytes(data))
    assert soundfile.info(str(path)).duration > 3600 * 100
    return path


def test_a_header_claiming_hours_reserves_only_what_the_file_can_hold(tmp_path, monkeypatch):
    from infinitetalk import spill
    from infinitetalk.media import stream

    path = _lying_flac(tmp_path)
    asked = []
    real = spill.empty_array
    monkeypatch.setattr(  # read_audio's own name for it (imported at module level)
        stream, "empty_array", lambda shape, *a, **k: asked.append(shape) or real(shape, *a, **k)
    )
    with pytest.raises(InputError, match="cannot be decoded"):  # libsndfile then fails to seek: one line
        stream.read_audio(path, spill_dir=tmp_path / "spill")
    bound = stream.believable_samples(stream.probe_audio(path))
    assert bound < 48000 * 60  # a minute at most for 15 KB ...
    assert (
        asked and max(s[1] for s in asked) <= bound
    )  # ... was all that was reserved, whatever the header says


def test_a_file_holding_more_than_believed_is_read_whole(tmp_path, monkeypatch):
    from infinitetalk.media import stream

    path = H.wav(tmp_path, "long.wav", seconds=3.0, sr=16000)
    monkeypatch.setattr(stream, "MIN_BITRATE", 10**7)  # believe only a few thousand samples up front
    wave, _ = stream.read_audio(path, spill_dir=tmp_path)
    assert wave.shape == (1, 48000)
    np.testing.assert_allclose(wave[0], H.tone(3.0, 16000)[:, 0], atol=1e-4)


def test_kokoro_caps_the_text_itself_when_a_node_cannot_check_it_at_queue_time(tmp_path):
    # a text linked from another node's output reaches execute unchecked by validate_inputs
    tts = _voices_only(tmp_path, voice_files=False)
    long = "Hello there. " * 2000
    with pytest.raises(InputError, match="TTS text is 26,000 characters long, more than the 20,000 allowed"):
        tts.speak(long, "af_heart")
    with pytest.raises(InputError, match="TTS text is 26,000 characters long"):
        tts.speak_dialogue(long, {1: "af_heart", 2: "am_adam"})
    with pytest.raises(InputError, match="dialogue voices"):
        tts.speak_dialogue("(s1) hi (s3) ho", {1: "a", 2: "b", 3: "c"})  # two speakers at most


# --------------------------------------------------------------------------------------------- torch pin
def test_pickled_files_are_refused_on_a_torch_older_than_2_6(tmp_path):
    import torch

    from infinitetalk.loading.state_dict import check_safe_torch, safe_torch_load

    path = tmp_path / "voice.pt"
    torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(
        CheckpointError, match=r"voice\.pt: torch 2\.5\.1\+cu121 cannot load .* upgrade torch"
    ):
        check_safe_torch(path, "2.5.1+cu121")
    check_safe_torch(path, "2.6.0")  # the first safe release, and this one, load
    assert safe_torch_load(path)["w"].shape == (2,)
