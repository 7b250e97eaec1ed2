"""Prompt schedules: time tags in a prompt switch it per window (parsing, the pipeline, the CLI)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from infinitetalk.errors import InputError
from infinitetalk.prompts import parse_prompt_schedule
from infinitetalk.sinks import MemorySink
from tests.unit.test_pipeline import audio_embedding, fake_pipeline, small_config, test_image


# ============================================================================ parsing
@pytest.mark.parametrize(
    "tag, frame",
    [
        ("[0:12]", 300),
        ("[1:05.5]", 1637),  # 65.5 s * 25 = 1637.5: the frame on screen then
        ("[1:02:03]", 93075),
        ("[0:00:00.4]", 10),
        ("[12s]", 300),
        ("[12.5s]", 312),
        ("[ 2 S ]", 50),
    ],
)
def test_each_tag_form(tag, frame):
    assert parse_prompt_schedule(f"calm\n{tag} smiling") == [(0, "calm"), (frame, "smiling")]


def test_continuation_lines_and_text_before_the_first_tag():
    text = "  a woman talks calmly\n  to the camera\n\n[0:12] she smiles\nand laughs\n\n[1:05.5]\n  she leans in\n"
    assert parse_prompt_schedule(text) == [
        (0, "a woman talks calmly\n  to the camera"),
        (300, "she smiles\nand laughs"),
        (1637, "she leans in"),
    ]
    # no text before the first tag: the schedule starts there (the first prompt also opens the video)
    assert parse_prompt_schedule("[0:02] a\n[0:04] b") == [(50, "a"), (100, "b")]


@pytest.mark.parametrize(
    "text",
    [
        "a person talking",
        "  two lines\n with [0:12] inside a line, and trailing space  \n",
        "[close-up] a face\n[S1] not a time either",
        "",
    ],
)
def test_no_tag_is_the_prompt_unchanged(text):
    assert parse_prompt_schedule(text) == [(0, text)]


@pytest.mark.parametrize(
    "text, needle",
    [
        ("a\n[0:12] b\n[0:10] c", "line 3: [0:10] is not after the prompt before it (line 2, 0:12.00)"),
        ("a\n[0:00] b", "line 2: [0:00] is not after"),
        ("a\n[0:01] b\n[0:01.01s] c", "line 3"),
        ("a\n[0:12]\n[0:20] c", "line 2: the prompt at 0:12.00 has no text"),
        ("a\n[0:12]   \n", "line 2: the prompt at 0:12.00 has no text"),
        ("a\n[1:75] b", "line 2: [1:75] is not a time: write [0:12]"),
        ("a\n[12] b", "[12] is not a time"),
        ("a\n[1:2] b", "[1:2] is not a time"),
        ("a\n[1:60:00] b", "[1:60:00] is not a time"),
        ("a\n[1.2.3s] b", "[1.2.3s] is not a time"),
        ("a\n[" + "9" * 400 + "s] b", "more than 100 hours"),
    ],
)
def test_errors_name_the_line_and_the_fix(text, needle):
    with pytest.raises(InputError, match="^my prompt ") as err:
        parse_prompt_schedule(text, name="my prompt")
    assert needle in str(err.value) and "\n" not in str(err.value)


_lines = st.lists(
    st.one_of(
        st.text(max_size=12),
        st.builds(
            lambda t, r: f"[{t}]{r}", st.from_regex(r"[0-9:. sS]{0,8}", fullmatch=True), st.text(max_size=6)
        ),
    ),
    max_size=6,
)


@settings(max_examples=300, deadline=None)
@given(_lines)
def test_any_text_gives_a_schedule_or_a_clear_error(lines):
    text = "\n".join(lines)
    try:
        schedule = parse_prompt_schedule(text)
    except InputError as err:
        assert str(err).startswith("prompt line ") and "\n" not in str(err)
        return
    frames = [f for f, _ in schedule]
    assert frames == sorted(set(frames)) and all(isinstance(f, int) and f >= 0 for f in frames)
    if len(schedule) > 1 or schedule[0][1] != text:
        assert all(p.strip() == p and p for _, p in schedule)


# ============================================================================ the pipeline
def test_windows_use_the_scheduled_prompts_and_late_prompts_are_named(caplog):
    """40 frames, windows of 17 with 5 carried: new frames 0-16, 17-28, 29-39 (middles 8, 22, 34)."""
    schedule = parse_prompt_schedule("a calm face\n[0.8s] a smiling face\n[1.3s] a serious face\n[9s] never")
    assert schedule == [(0, "a calm face"), (20, "a smiling face"), (32, "a serious face"), (225, "never")]
    cfg = small_config(
        frame_num=17, motion_frame=5, text_scale=1.0, audio_scale=1.0, steps=1, prompt=schedule[0][1]
    )
    pipe = fake_pipeline()
    with caplog.at_level(logging.INFO, logger="infinitetalk.pipeline"):
        pipe.generate(test_image(), audio_embedding(40), cfg, MemorySink(), prompts=schedule)
    for k, prompt in enumerate(WINDOWS, 1):
        assert f"window {k}/3 prompt: {prompt}" in caplog.text
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "prompt schedule: 'never' at 0:09.00 starts after the audio ends (0:01.60): it never runs"
    ]
    # the model saw each window's prompt: the fake DiT records the mean of the context padded to 12 tokens
    encoded = dict(zip(WINDOWS, pipe.text_encoder.encode(list(WINDOWS)), strict=True))
    per_window = len(pipe.dit.calls) // 3
    for k, prompt in enumerate(WINDOWS):
        seen = [c["ctx"][0] for c in pipe.dit.calls[k * per_window : (k + 1) * per_window]]
        assert seen == pytest.approx([encoded[prompt].sum().item() / (12 * 16)] * per_window, abs=1e-6)


WINDOWS = ("a calm face", "a smiling face", "a serious face")


def test_a_prompt_too_short_for_any_window_is_named(caplog):
    schedule = parse_prompt_schedule("a\n[0:00.4] b\n[0:00.6] c")  # b: frames 10-14, no window middle
    with caplog.at_level(logging.WARNING, logger="infinitetalk.pipeline"):
        fake_pipeline().generate(
            test_image(),
            audio_embedding(40),
            small_config(frame_num=17, motion_frame=5, steps=1),
            MemorySink(),
            prompts=schedule,
        )
    assert "'b' at 0:00.40 is used by no window" in caplog.text and "'c'" not in caplog.text


# ============================================================================ the CLI
def _cli_args(**kw):
    from infinitetalk.cli import build_parser

    args = build_parser().parse_args(["--input_path", "x.png"])
    for k, v in kw.items():
        setattr(args, k, v)
    return args


def test_cli_prompt_without_tags_is_untouched(tmp_path):
    from infinitetalk.cli import _prompt_schedule, _read_prompt_file

    text = "  a person\n[close-up] talking  "
    args = _cli_args(prompt=text)
    _prompt_schedule(args, _read_prompt_file(args))
    assert args.prompt == text and args.prompt_schedule is None
    (tmp_path / "p.txt").write_text("calm\n[0:01] smiling\n", encoding="utf-8")
    args = _cli_args(prompt_file=str(tmp_path / "p.txt"))
    _prompt_schedule(args, _read_prompt_file(args))
    assert args.prompt == "calm" and args.prompt_schedule == [(0, "calm"), (25, "smiling")]
    with pytest.raises(InputError, match="both --prompt and --prompt_file"):
        _read_prompt_file(_cli_args(prompt="x", prompt_file=str(tmp_path / "p.txt")))
    with pytest.raises(InputError, match="--prompt_file '.*missing.txt' cannot be read"):
        _read_prompt_file(_cli_args(prompt_file=str(tmp_path / "missing.txt")))
    with pytest.raises(InputError, match=r"^--prompt line 2: \[1:75\] is not a time"):
        _prompt_schedule(_cli_args(prompt="a\n[1:75] b"), "--prompt")
    with pytest.raises(InputError, match="--script is given"):
        _prompt_schedule(_cli_args(prompt="a\n[0:01] b", script="s.txt"), "--prompt")


def test_cli_prompt_schedule_on_the_tiny_models(tiny_root, tmp_path, caplog):
    """A tagged --prompt_file switches the prompt per window of one tiny run (logged per window)."""
    from infinitetalk.cli import main

    sr = 16000
    t = np.arange(int(1.6 * sr)) / sr
    sf.write(tmp_path / "a.wav", (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), sr)
    Image.fromarray(np.full((48, 64, 3), 120, np.uint8)).save(tmp_path / "face.png")
    (tmp_path / "prompt.txt").write_text("a calm face\n[0:00.8] a smiling face\n[0:30] too late\n")
    out = tmp_path / "sched.mp4"
    args = ["--weights", str(tiny_root), "--input_path", str(tmp_path / "face.png"), "--audio_path"]
    args += [str(tmp_path / "a.wav"), "--prompt_file", str(tmp_path / "prompt.txt"), "--size", "32x32"]
    args += ["--output_path", str(out), "--sample_steps", "1", "--sample_text_guide_scale", "1"]
    args += ["--frame_num", "17", "--motion_frame", "5", "--seed", "1"]
    with caplog.at_level(logging.INFO):
        assert main(args) == 0
    log = caplog.text
    assert "prompt from 0:00.80: a smiling face" in log
    # 40 frames: windows add 0-16, 17-28, 29-39 (middles 8, 22, 34)
    for k, prompt in enumerate(["a calm face", "a smiling face", "a smiling face"], 1):
        assert f"window {k}/3 prompt: {prompt}" in log
    assert "'too late' at 0:30.00 starts after the audio ends (0:01.60): it never runs" in log
    assert out.is_file()
