"""Alpha outputs round-trip through PyAV: each alpha format is written from straight RGBA chunks (two chunks,
as windows come) with a soundtrack, read back with PyAV, and compared with what went in.

Tolerances (0-255 levels): PNG and FFV1 exact (lossless). ProRes 4444: colour within 2 (10-bit 4:4:4
Y'CbCr, lossy but near-transparent), alpha exact (16-bit alpha plane, 8-bit values scaled exactly). WebM VP9:
colour mean within 2 and max 16 on a smooth picture (4:2:0 chroma and CRF coding), alpha mean within 1.5 and
max 16 (the alpha plane is coded like luma).
"""

from __future__ import annotations

import av
import numpy as np
import pytest
import soundfile

from infinitetalk.errors import InputError
from infinitetalk.media.export import ALPHA_FORMATS, MATTE_PNG, PNG_PATTERN, WAV_NAME, write_video
from infinitetalk.media.video import VideoWriter, iter_rgba

FPS, H, W, T = 25, 48, 64, 20


def smooth_rgba(t0: int, n: int) -> np.ndarray:
    """Gradients that move with t, alpha a soft disc plus a ramp (every alpha level occurs)."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    out = np.empty((n, H, W, 4), np.uint8)
    for i in range(n):
        t = t0 + i
        r = 40 + 3 * xx + t
        g = 60 + 2 * yy + 2 * t
        b = 200 - 2 * xx
        disc = np.clip(1.5 - np.hypot(xx - 32 - t * 0.5, yy - 24) / 12, 0, 1) * 255
        alpha = np.maximum(disc, np.clip(xx * 4 - 200, 0, 255))
        out[i] = np.clip(np.stack([r, g, b, alpha], axis=-1), 0, 255).astype(np.uint8)
    return out


def noise_rgba(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, H, W, 4), dtype=np.uint8)


def music(seconds: float, sr: int) -> np.ndarray:
    t = np.arange(round(seconds * sr)) / sr
    return np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 660 * t)]).astype(np.float32)


def _write(tmp_path, fmt, frames, matte=False, audio=None):
    return write_video(
        tmp_path / "presenter",
        iter([frames[:7], frames[7:]]),
        fps=FPS,
        width=W,
        height=H,
        fmt=fmt,
        audio=audio,
        matte=matte,
    )


def _read_png_sequence(folder, pattern=PNG_PATTERN, fmt="rgba"):
    frames = []
    for i in range(T):
        with av.open(str(folder / pattern.format(i))) as c:
            frames.append(next(c.decode(video=0)).to_ndarray(format=fmt))
    return np.stack(frames)


@pytest.mark.parametrize("fmt", ["png-rgba", "ffv1-rgba-mkv"])
def test_lossless_alpha_formats_are_exact(tmp_path, fmt):
    frames = noise_rgba(0, T)
    sr = 48000
    sound = np.round(music(1.0, sr) * 32767) / 32768
    out = _write(tmp_path, fmt, frames, audio=(sound, sr))
    if fmt == "png-rgba":
        back = _read_png_sequence(out)
        wave, rate = soundfile.read(out / WAV_NAME, dtype="float32", always_2d=True)
        assert rate == sr and wave.shape[0] == round(T / FPS * sr)
    else:
        assert out.suffix == ".mkv"
        back = np.stack(list(iter_rgba(out)))
        with av.open(str(out)) as c:
            assert c.streams.video[0].codec_context.pix_fmt == "bgra"
            assert c.streams.audio[0].codec_context.name == "pcm_s24le"
    np.testing.assert_array_equal(back, frames)


def test_prores_4444_keeps_alpha_exact_and_colour_within_2(tmp_path):
    frames = smooth_rgba(0, T)
    sr = 44100
    sound = np.round(music(1.0, sr) * 32767) / 32768
    out = _write(tmp_path, "prores4444-mov", frames, audio=(sound, sr))
    assert out.suffix == ".mov"
    back = np.stack(list(iter_rgba(out)))
    assert back.shape == frames.shape
    np.testing.assert_array_equal(back[..., 3], frames[..., 3])
    assert np.abs(back[..., :3].astype(int) - frames[..., :3]).max() <= 2
    with av.open(str(out)) as c:
        v = c.streams.video[0]
        assert v.codec_context.name == "prores" and v.codec_context.pix_fmt.startswith("yuva444p")
        assert c.streams.audio[0].codec_context.name == "pcm_s24le"
        assert int(v.codec_context.colorspace) == 1  # BT.709 tagged


def test_opaque_pixels_stay_opaque_in_prores(tmp_path):
    """255 is scaled to the format's full scale (1023), not shifted (1020): opaque stays 100% opaque."""
    frames = smooth_rgba(0, T)
    frames[..., 3] = 255
    back = np.stack(list(iter_rgba(_write(tmp_path, "prores4444-mov", frames))))
    assert (back[..., 3] == 255).all()


def test_webm_vp9_alpha_is_tagged_and_comes_back_within_tolerance(tmp_path):
    frames = smooth_rgba(0, T)
    sr = 44100  # not an Opus rate: resampled to 48 kHz
    out = _write(tmp_path, "webm-vp9", frames, audio=(music(2.0, sr), sr))
    assert out.suffix == ".webm"
    with av.open(str(out)) as c:
        v = c.streams.video[0]
        assert v.codec_context.name == "vp9"
        assert v.metadata.get("alpha_mode") == "1"  # browsers show the alpha only with this tag
        a = c.streams.audio[0]
        assert a.codec_context.name == "opus" and a.sample_rate == 48000 and a.channels == 2
        assert abs(float(a.duration * a.time_base) - T / FPS) < 0.05 if a.duration else True
    back = np.stack(list(iter_rgba(out)))
    assert back.shape == frames.shape
    colour = np.abs(back[..., :3].astype(int) - frames[..., :3])
    alpha = np.abs(back[..., 3].astype(int) - frames[..., 3])
    assert colour.mean() <= 2 and colour.max() <= 16, (colour.mean(), colour.max())
    assert alpha.mean() <= 1.5 and alpha.max() <= 16, (alpha.mean(), alpha.max())


@pytest.mark.parametrize("fmt", ALPHA_FORMATS)
def test_matte_is_the_alpha_as_grey(tmp_path, fmt):
    frames = smooth_rgba(3, T)
    out = _write(tmp_path, fmt, frames, matte=True)
    if fmt == "png-rgba":
        matte = _read_png_sequence(out, MATTE_PNG, "gray")
    else:
        suffix = {"prores4444-mov": ".mov", "webm-vp9": ".mp4", "ffv1-rgba-mkv": ".mkv"}[fmt]
        path = out.with_name(out.stem + "_matte" + suffix)
        assert path.is_file()
        matte = np.stack([f[..., 1] for f in iter_rgba(path)])
    err = np.abs(matte.astype(int) - frames[..., 3])
    lossless = fmt in ("png-rgba", "ffv1-rgba-mkv")
    assert err.max() == 0 if lossless else err.mean() < 2.5, (fmt, err.mean(), err.max())


def test_rgb_frames_in_an_alpha_format_are_opaque_and_rgba_in_an_opaque_format_is_refused(tmp_path):
    rgb = noise_rgba(1, T)[..., :3]
    out = write_video(tmp_path / "opaque", iter([rgb]), fps=FPS, width=W, height=H, fmt="ffv1-rgba-mkv")
    back = np.stack(list(iter_rgba(out)))
    assert (back[..., 3] == 255).all() and np.array_equal(back[..., :3], rgb)
    with pytest.raises(InputError, match="'h264-mp4' has no alpha"):
        write_video(tmp_path / "x", iter([noise_rgba(2, 2)]), fps=FPS, width=W, height=H, fmt="h264-mp4")
    with pytest.raises(InputError, match="a matte needs an alpha format"):
        write_video(tmp_path / "y", iter([rgb]), fps=FPS, width=W, height=H, fmt="prores-mov", matte=True)
    with pytest.raises(InputError, match=r"expected uint8 \(T, 48, 64, 3\)"):
        with VideoWriter(tmp_path / "z.mp4", FPS, W, H) as writer:
            writer.write(noise_rgba(2, 1))
