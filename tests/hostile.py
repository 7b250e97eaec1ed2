"""Hostile inputs for the bad-input suites (CLI, nodes, server): files a user could really hand us.

Each maker writes one file into ``folder`` and returns its path. Speech is a 200 Hz tone with a slow
envelope (not silence); images are a smooth gradient with a bright square (a stand-in for a face).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import soundfile
from PIL import Image


def tone(seconds: float, sr: int = 16000, channels: int = 1, level: float = 0.3) -> np.ndarray:
    """float32 ``(N, channels)`` speech-like tone (soundfile's layout)."""
    t = np.arange(int(round(seconds * sr))) / sr
    wave = level * np.sin(2 * np.pi * 200 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    return np.repeat(wave[:, None], channels, axis=1).astype(np.float32)


def wav(folder: Path, name: str, seconds: float = 1.0, sr: int = 16000, channels: int = 1, level=0.3) -> Path:
    path = Path(folder) / name
    soundfile.write(path, tone(seconds, sr, channels, level), sr)
    return path


def silent_wav(folder: Path, name: str = "silence.wav", seconds: float = 1.0) -> Path:
    path = Path(folder) / name
    soundfile.write(path, np.zeros((int(seconds * 16000), 1), np.float32), 16000)
    return path


def empty_wav(folder: Path, name: str = "empty.wav") -> Path:
    path = Path(folder) / name
    soundfile.write(path, np.zeros((0, 1), np.float32), 16000)
    return path


def garbage(folder: Path, name: str, size: int = 4096, seed: int = 0) -> Path:
    """Random bytes under a media name (what a failed download or a renamed file looks like)."""
    path = Path(folder) / name
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes())
    return path


def face(h: int = 48, w: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 // max(1, w - 1), yy * 255 // max(1, h - 1), np.full_like(xx, 99)], -1)
    img[h // 4 : 3 * h // 4, w // 3 : 2 * w // 3] = 230
    return img.astype(np.uint8)


def png(folder: Path, name: str = "face.png", h: int = 48, w: int = 64, mode: str = "RGB") -> Path:
    """A portrait in PIL ``mode``: RGB, RGBA (left half transparent), L, I;16 (16-bit greyscale)."""
    path = Path(folder) / name
    rgb = face(h, w)
    if mode == "RGBA":
        alpha = np.full((h, w, 1), 255, np.uint8)
        alpha[:, : w // 2] = 0
        Image.fromarray(np.concatenate([rgb, alpha], -1), "RGBA").save(path)
    elif mode == "L":
        Image.fromarray(rgb[..., 0]).save(path)
    elif mode == "I;16":
        Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(path)
    else:
        Image.fromarray(rgb).save(path)
    return path


def video(
    folder: Path,
    name: str = "clip.mp4",
    frames: int = 30,
    h: int = 48,
    w: int = 64,
    times: list[float] | None = None,
    rotation: int = 0,
    audio_s: float = 0.0,
) -> Path:
    """An H.264 mp4 of ``frames`` frames (frame k has brightness ~8k) at 25 fps, or shown at ``times``
    (seconds: a variable frame rate), with a display rotation (degrees counter-clockwise) and an optional
    audio track of ``audio_s`` seconds. ``frames=0`` gives a file with a video stream and no frames."""
    path = Path(folder) / name
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)  # timestamps in ms: any frame rate, variable
        stream.time_base = Fraction(1, 1000)
        if rotation:
            stream.set_display_rotation(rotation)
        astream = out.add_stream("aac", rate=16000, layout="mono") if audio_s else None
        out.start_encoding()  # the header is written even when no frame follows
        base = face(h, w)
        for k in range(frames):
            img = base.copy()
            img[: h // 6, : w // 6] = (8 * k) % 256  # frame marker, top-left corner
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = round((times[k] if times else k / 25) * 1000)
            frame.time_base = Fraction(1, 1000)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
        if astream is not None:
            wave = tone(audio_s)[:, 0][None]
            for start in range(0, wave.shape[1], 1024):
                chunk = np.ascontiguousarray(wave[:, start : start + 1024])
                af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
                af.sample_rate, af.pts = 16000, start
                out.mux(astream.encode(af))
            out.mux(astream.encode(None))
    return path
