"""The command line's alpha and compositing options on tiny weights: --backdrop, alpha formats, --matte,
--background with --presenter, and their one-line errors."""

from __future__ import annotations

import av
import numpy as np
import pytest
from PIL import Image

from infinitetalk.cli import main
from infinitetalk.media.video import iter_rgba

from .test_cli import _inputs


def _cutout(tmp_path, h=48, w=64):
    """The person as a cut-out PNG (RGBA: alpha = the mask), as a background remover leaves it."""
    yy, xx = np.mgrid[0:h, 0:w]
    alpha = (((xx - w / 2) / (w / 4)) ** 2 + ((yy - h / 2) / (h / 3)) ** 2 <= 1).astype(np.uint8) * 255
    rgba = np.zeros((h, w, 4), np.uint8)
    rgba[..., :3] = (200, 150, 120)
    rgba[..., 3] = alpha
    Image.fromarray(rgba).save(tmp_path / "cutout.png")
    return tmp_path / "cutout.png"


def _argv(tiny_root, face, speech, out, *extra):
    return [
        "--weights", str(tiny_root / "models"), "--input_path", str(face), "--audio_path", str(speech),
        "--output_path", str(out), "--size", "32x32", "--sample_steps", "2", "--mode", "clip",
        "--prompt", "a face", *extra,
    ]  # fmt: skip


def test_cli_backdrop_key_and_webm_with_alpha_and_matte(tiny_root, tmp_path):
    face, speech = _inputs(tmp_path, seconds=1.0)
    mask = _cutout(tmp_path)
    out = tmp_path / "talk.webm"
    argv = _argv(tiny_root, face, speech, out, "--backdrop", str(mask), "--key_color", "green")
    assert main([*argv, "--format", "webm-vp9", "--matte"]) == 0
    with av.open(str(out)) as c:
        assert c.streams.video[0].metadata.get("alpha_mode") == "1"
        assert c.streams.audio[0].codec_context.name == "opus"
    rgba = np.stack(list(iter_rgba(out)))
    assert rgba.shape == (25, 32, 32, 4)
    matte = np.stack([f[..., 1] for f in iter_rgba(tmp_path / "talk_matte.mp4")])
    assert matte.shape == (25, 32, 32)
    assert np.abs(matte.astype(int) - rgba[..., 3]).mean() < 4  # the matte is the alpha (both lossy)


def test_cli_presenter_over_a_slide(tiny_root, tmp_path):
    face, speech = _inputs(tmp_path, seconds=1.0)
    slide = np.zeros((90, 160, 3), np.uint8)
    slide[...] = (20, 40, 200)
    Image.fromarray(slide).save(tmp_path / "slide.png")
    out = tmp_path / "over.mp4"
    argv = _argv(tiny_root, face, speech, out, "--key_color", "green")
    assert main([*argv, "--background", str(tmp_path / "slide.png"), "--presenter", "0,1,0.5"]) == 0
    frames = np.stack([f[..., :3] for f in iter_rgba(out)]).astype(int)
    assert frames.shape == (25, 90, 160, 3)  # the slide's size
    # the presenter (45 px high, bottom left): the right part is the slide
    assert np.abs(frames[:, :, 60:] - (20, 40, 200)).mean() < 4


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--matte"], "--matte needs an alpha --format"),
        (["--key"], "--key needs an alpha --format"),
        (["--format", "webm-vp9", "--presenter", "1,1"], "--presenter '1,1' is not X,Y,SCALE"),
        (["--background", "nowhere.png"], "--background 'nowhere.png' does not exist"),
        (["--backdrop", "nowhere.png"], "--backdrop 'nowhere.png' does not exist"),
        (["--format", "webm-vp9", "--key_color", "mauve-ish"], "--key_color 'mauve-ish' is not a colour"),
    ],
)
def test_cli_alpha_errors_are_one_line(tiny_root, tmp_path, capsys, extra, needle):
    face, speech = _inputs(tmp_path, seconds=1.0)
    assert main(_argv(tiny_root, face, speech, tmp_path / "x.mp4", *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert any(needle in line for line in err), err
    assert not (tmp_path / "x.mp4.parts").exists()  # refused before any work
