"""Caption cues: SRT text in and out, and captions burnt into frames (PIL)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..config import VIDEO_FPS
from ..errors import InputError


@dataclass(frozen=True)
class Cue:
    """One caption: shown from ``start`` (inclusive) to ``end`` (exclusive), in seconds."""

    start: float
    end: float
    text: str


# -- SRT ------------------------------------------------------------------------------------------------
_TIME = r"(\d+):(\d{1,2}):(\d{1,2})(?:[,.](\d{1,3}))?"
_TIMING = re.compile(rf"^\s*{_TIME}\s*-->\s*{_TIME}")


def _srt_time(seconds: float) -> str:
    ms = max(0, round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d},{ms:03d}"


def srt_format(cues: Sequence[Cue]) -> str:
    """Cues -> SRT text (numbered from 1, ``HH:MM:SS,mmm``, blank line after each cue)."""
    blocks = [
        f"{i}\n{_srt_time(c.start)} --> {_srt_time(c.end)}\n{c.text.strip()}\n" for i, c in enumerate(cues, 1)
    ]
    return "\n".join(blocks)


def _parse_seconds(h: str, m: str, s: str, frac: str | None) -> float:
    ms = int((frac or "0").ljust(3, "0"))
    return int(h) * 3600 + int(m) * 60 + int(s) + ms / 1000


def srt_parse(text: str) -> list[Cue]:
    """SRT text -> cues. Tolerates a BOM, CRLF, ``.`` as millisecond separator, missing index lines and
    multi-line text; a block whose timing line is unreadable raises ``InputError``."""
    text = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    cues = []
    for number, block in enumerate(re.split(r"\n\s*\n", text.strip()), 1):
        lines = block.split("\n")
        if not block.strip():
            continue
        timing_at = next((k for k, ln in enumerate(lines[:2]) if "-->" in ln), None)
        match = _TIMING.match(lines[timing_at]) if timing_at is not None else None
        if match is None:
            raise InputError(
                f"SRT block {number} has no readable timing line ('{lines[0][:40]}'): "
                "expected 'HH:MM:SS,mmm --> HH:MM:SS,mmm'"
            )
        g = match.groups()
        start, end = _parse_seconds(*g[:4]), _parse_seconds(*g[4:])
        cues.append(Cue(start, end, "\n".join(lines[timing_at + 1 :]).strip()))
    return cues


# -- burnt-in captions -------------------------------------------------------------------------------
def active_cue(cues: Sequence[Cue], t: float) -> Cue | None:
    """The cue shown at time ``t`` (the latest-starting one if several overlap)."""
    live = [c for c in cues if c.start <= t < c.end and c.text.strip()]
    return max(live, key=lambda c: c.start) if live else None


def _wrap(text: str, font, max_width: int) -> list[str]:
    lines = []
    for paragraph in text.split("\n"):
        words, line = paragraph.split(), ""
        for word in words:
            trial = f"{line} {word}".strip()
            if line and font.getlength(trial) > max_width:
                lines.append(line)
                line = word
            else:
                line = trial
        lines.append(line)
    return [ln for ln in lines if ln]


@lru_cache(maxsize=32)
def _overlay(text: str, width: int, height: int, font_size: int, font_path: str | None):
    """Render a caption once: ``(rgb float32 (h, w, 3), alpha float32 (h, w, 1), top, left)``."""
    font = ImageFont.truetype(font_path, font_size) if font_path else ImageFont.load_default(size=font_size)
    stroke = max(1, font_size // 12)
    lines = _wrap(text, font, int(width * 0.9))
    layer = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    spacing = font_size // 4
    box = draw.multiline_textbbox((0, 0), "\n".join(lines), font=font, spacing=spacing, stroke_width=stroke)
    text_w, text_h = box[2] - box[0], box[3] - box[1]
    x = (width - text_w) // 2 - box[0]
    y = height - int(height * 0.05) - text_h - box[1]
    draw.multiline_text(
        (x, y),
        "\n".join(lines),
        font=font,
        fill=(255, 255, 255, 255),
        spacing=spacing,
        align="center",
        stroke_width=stroke,
        stroke_fill=(0, 0, 0, 255),
    )
    rgba = np.asarray(layer, dtype=np.float32) / 255.0  # (H, W, 4)
    rows = np.nonzero(rgba[..., 3].any(axis=1))[0]
    cols = np.nonzero(rgba[..., 3].any(axis=0))[0]
    if rows.size == 0:
        return None
    crop = rgba[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    return crop[..., :3] * 255.0, crop[..., 3:], int(rows[0]), int(cols[0])


def burn_captions(
    frames: np.ndarray,
    cues: Sequence[Cue],
    t0: float,
    fps: int = VIDEO_FPS,
    font_size: int | None = None,
    font_path: str | Path | None = None,
) -> np.ndarray:
    """Draw the active cue (white text, black outline, bottom centre) on each frame.

    ``frames`` is ``uint8 (T, H, W, 3)``; frame ``j`` is at time ``t0 + j / fps``. Returns new frames;
    frames without an active cue are copied unchanged. ``font_size`` defaults to 5 % of the height;
    ``font_path`` picks a TrueType font (PIL's default font covers Latin scripts only).
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise InputError(
            f"burn_captions: frames are {frames.dtype} {frames.shape}: expected uint8 (T, H, W, 3)"
        )
    out = frames.copy()
    height, width = frames.shape[1:3]
    size = int(font_size) if font_size else max(10, round(height * 0.05))
    for j in range(frames.shape[0]):
        cue = active_cue(cues, t0 + j / fps)
        if cue is None:
            continue
        overlay = _overlay(cue.text.strip(), width, height, size, str(font_path) if font_path else None)
        if overlay is None:
            continue
        rgb, alpha, top, left = overlay
        region = out[j, top : top + rgb.shape[0], left : left + rgb.shape[1]].astype(np.float32)
        blended = region * (1.0 - alpha) + rgb * alpha
        out[j, top : top + rgb.shape[0], left : left + rgb.shape[1]] = np.rint(blended).astype(np.uint8)
    return out
