"""The drift report of a tiny streamed run on the command line: beside the output, in the run folder, and
the options to bound drift accepted end to end (tiny random weights: the figures mean nothing, the plumbing
does)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from infinitetalk.cli import main
from tests import drift_videos as dv


@pytest.fixture(scope="module")
def tiny_root(request) -> Path:
    """The tiny checkpoints of scripts/test.sh (INFINITETALK_TINY_DIR) when there, else a fresh set."""
    env = os.environ.get("INFINITETALK_TINY_DIR")
    if env and (Path(env) / "models").is_dir():
        return Path(env)
    return request.getfixturevalue("tiny_root")


def _inputs(tmp_path, seconds=2.0):
    active = dv.speech_pattern(int(seconds * 25), period=12)
    sf.write(tmp_path / "speech.wav", dv.speech_wave(active), 16000)
    Image.fromarray(dv.base_image()[::2, ::2]).save(tmp_path / "face.png")  # 128x128, a real face
    return tmp_path / "face.png", tmp_path / "speech.wav"


def _run(tiny_root, tmp_path, *extra) -> int:
    face, speech = _inputs(tmp_path)
    argv = [
        "--weights", str(tiny_root / "models"), "--input_path", str(face), "--audio_path", str(speech),
        "--output_path", str(tmp_path / "talk.mp4"), "--size", "128x128", "--sample_steps", "1",
        "--frame_num", "21", "--motion_frame", "5", "--prompt", "a face", "--no_live", *extra,
    ]  # fmt: skip
    return main(argv)


def test_cli_writes_the_drift_report_beside_the_output_and_in_the_run_folder(tiny_root, tmp_path):
    assert _run(tiny_root, tmp_path, "--keep_segments") == 0
    summary = json.loads((tmp_path / "talk.report.json").read_text())
    assert [r["frames"] for r in summary["windows"]] == [21, 16, 13]  # 50 frames in windows of 21, +16, +16
    assert summary["frames"] == 50 and summary["windows"][1]["seam"] is not None
    assert summary["mouth"] and summary["mouth"][0]["speaking_frames"] > 0  # the speech was read
    chart = Image.open(tmp_path / "talk.report.png")
    assert chart.size[0] == 1200 and np.asarray(chart).std() > 10  # drawn, not blank
    assert (tmp_path / "talk.mp4.parts" / "report.json").is_file()  # redrawn after every window
    assert (tmp_path / "talk.mp4.parts" / "report.png").is_file()


def test_cli_no_report_and_the_drift_options(tiny_root, tmp_path):
    rc = _run(
        tiny_root,
        tmp_path,
        "--no_report",
        "--latent_motion",
        "--color_anchor",
        "4",
        "--silence_noise_floor",
        "-45",
    )
    assert rc == 0 and (tmp_path / "talk.mp4").is_file()
    assert not (tmp_path / "talk.report.json").exists()


@pytest.mark.parametrize("flag, value", [("--silence_noise_floor", "3"), ("--color_anchor", "-1")])
def test_cli_refuses_bad_drift_options_in_one_line(tiny_root, tmp_path, capsys, flag, value):
    assert _run(tiny_root, tmp_path, flag, value) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and flag.strip("-") in err[0]
