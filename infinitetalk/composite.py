"""The presenter over a background: keyed RGBA frames placed on a slide (a still image) or a video.

:class:`Placement` says where: ``x`` and ``y`` from 0 (left / top) to 1 (right / bottom) place the presenter's
box inside the background (1, 1 is the bottom-right corner), ``scale`` is its height as a fraction of the
background's height. The output has the background's size. A background video is read at the frames' rate
and loops when it is shorter than the talk.

:class:`Presenter` is what a front end hands to the final write: key the frames (:mod:`infinitetalk.keying`)
and, given a background, composite them; chunk by chunk, so memory stays flat.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
from PIL import Image

from .errors import InputError
from .keying import Keyer, KeySettings, parse_color, place_on_backdrop
from .media import VideoReader, read_image
from .media.export import output_format
from .pipeline import StillImage

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Placement:
    x: float = 1.0  # 0: against the left edge, 0.5: centred, 1: against the right edge
    y: float = 1.0  # 0: against the top, 1: standing on the bottom edge
    scale: float = 0.8  # presenter height / background height

    def __post_init__(self):
        if not (0.0 <= self.x <= 1.0 and 0.0 <= self.y <= 1.0):
            raise InputError(
                f"presenter position x={self.x}, y={self.y} is outside 0..1: use 0 (left/top) .. 1"
            )
        if not 0.05 <= self.scale <= 2.0:
            raise InputError(
                f"presenter scale {self.scale} is out of range: use 0.05 .. 2 (of the background height)"
            )

    def box(self, size: tuple[int, int], background: tuple[int, int]) -> tuple[int, int, int, int]:
        """``(left, top, width, height)`` of a ``size = (w, h)`` presenter on a ``(W, H)`` background."""
        (w, h), (bw, bh) = size, background
        ph = max(1, round(self.scale * bh))
        pw = max(1, round(w * ph / h))
        return round(self.x * (bw - pw)), round(self.y * (bh - ph)), pw, ph


class Background(Protocol):
    size: tuple[int, int]  # (width, height)

    def frame(self, index: int) -> np.ndarray: ...  # uint8 (H, W, 3)


class StillBackground:
    """A slide: the same picture for every frame."""

    def __init__(self, image: np.ndarray):
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
            raise InputError(f"background {image.dtype} {tuple(image.shape)}: expected an RGB image")
        self.image = image
        self.size = (image.shape[1], image.shape[0])

    def frame(self, index: int) -> np.ndarray:
        return self.image


class VideoBackground:
    """A background video (a :class:`~infinitetalk.media.VideoReader`), looped."""

    def __init__(self, reader):
        if reader.num_frames < 1:
            raise InputError(f"background video '{reader.path}' has no frames: pick another video")
        self.reader = reader
        self.size = reader.size

    def frame(self, index: int) -> np.ndarray:
        return self.reader.frame(index % self.reader.num_frames)


def over(rgba: np.ndarray, background: np.ndarray, placement: Placement) -> np.ndarray:
    """One straight-alpha frame ``uint8 (h, w, 4)`` over ``background`` ``uint8 (H, W, 3)``: ``uint8 (H, W, 3)``.

    The presenter is resized premultiplied (no dark or coloured fringe from transparent pixels' colour)."""
    bh, bw = background.shape[:2]
    left, top, pw, ph = placement.box((rgba.shape[1], rgba.shape[0]), (bw, bh))
    a = rgba[..., 3:4].astype(np.float32) / 255.0
    premul = np.concatenate([rgba[..., :3].astype(np.float32) * a, a], axis=-1)
    shrink = ph < rgba.shape[0]
    premul = cv2.resize(premul, (pw, ph), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    # the part of the presenter's box inside the background
    x0, y0, x1, y1 = max(left, 0), max(top, 0), min(left + pw, bw), min(top + ph, bh)
    out = background.astype(np.float32)  # a copy
    if x1 > x0 and y1 > y0:
        patch = premul[y0 - top : y1 - top, x0 - left : x1 - left]
        region = out[y0:y1, x0:x1]
        out[y0:y1, x0:x1] = patch[..., :3] + (1.0 - patch[..., 3:4]) * region
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def checkerboard(height: int, width: int, cell: int = 16) -> np.ndarray:
    """The usual transparency checkerboard (light and mid grey), ``uint8 (H, W, 3)``."""
    yy, xx = np.mgrid[0:height, 0:width]
    light = ((yy // cell + xx // cell) % 2 == 0)[..., None]
    return np.where(light, np.uint8(204), np.uint8(153)).repeat(3, axis=-1).astype(np.uint8)


@dataclass
class Presenter:
    """Key the frames (``key``; None: they already are RGBA or stay opaque) and put them over ``background``
    (None: keep the alpha) at ``placement``. Call it on an iterable of chunks."""

    key: KeySettings | None = None
    hint: tuple[int, int, int] | None = None  # the backdrop colour, when known (Portrait Backdrop)
    background: Background | None = None
    placement: Placement = Placement()

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        return self.background.size if self.background is not None else (width, height)

    @property
    def alpha(self) -> bool:
        """Whether the chunks that come out carry alpha."""
        return self.key is not None and self.background is None

    def __call__(self, chunks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        if self.key is not None:
            chunks = Keyer(self.key, self.hint).key_chunks(chunks)
        if self.background is None:
            yield from chunks
            return
        index = 0
        for chunk in chunks:
            out = np.empty((chunk.shape[0], self.background.size[1], self.background.size[0], 3), np.uint8)
            for i, frame in enumerate(chunk):
                rgba = frame if frame.shape[-1] == 4 else _opaque(frame)
                out[i] = over(rgba, self.background.frame(index + i), self.placement)
            index += chunk.shape[0]
            yield out


def _opaque(rgb: np.ndarray) -> np.ndarray:
    return np.concatenate([rgb, np.full((*rgb.shape[:2], 1), 255, np.uint8)], axis=-1)


# ----------------------------------------------------------------------------------------------- front ends
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class PresenterPlan:
    """Checked alpha options of a front end (the command line); :meth:`build` makes the :class:`Presenter`
    when the frames are written (None: nothing to do)."""

    key: KeySettings | None = None
    background: str | None = None  # an image or a video file
    placement: Placement = Placement()

    def build(self, hint: tuple[int, int, int] | None = None) -> Presenter | None:
        if self.key is None and self.background is None:
            return None
        bg = None
        if self.background is not None:
            path = Path(self.background)
            bg = StillBackground(read_image(path)) if path.suffix.lower() in _IMAGE_SUFFIXES else None
            bg = bg or VideoBackground(VideoReader(path))
        return Presenter(key=self.key, hint=hint, background=bg, placement=self.placement)


def presenter_options(
    key: bool, key_color: str, background: str | None, placement: str, matte: bool, fmt: str
) -> PresenterPlan:
    """The command line's ``--key``/alpha format, ``--key_color``, ``--background``, ``--presenter X,Y,SCALE``
    and ``--matte`` for ``--format fmt``, checked in one line each."""
    alpha = output_format(fmt).alpha
    colour = parse_color(key_color, name="--key_color")
    if background is not None and not Path(background).is_file():
        raise InputError(
            f"--background '{background}' does not exist: give an image (a slide) or a video file"
        )
    if matte and not alpha:
        raise InputError(f"--matte needs an alpha --format (prores4444-mov, webm-vp9, ...), not '{fmt}'")
    if key and not alpha and background is None:
        raise InputError(
            f"--key needs an alpha --format (prores4444-mov, webm-vp9, ...) or a --background, not '{fmt}'"
        )
    try:
        x, y, scale = (float(v) for v in placement.split(","))
    except ValueError:
        raise InputError(f"--presenter '{placement}' is not X,Y,SCALE: e.g. 1,1,0.8 (bottom right)") from None
    keyed = key or background is not None
    return PresenterPlan(KeySettings(key_color=colour) if keyed else None, background, Placement(x, y, scale))


def on_backdrop(source, mask_path: str, key_color: str = "auto"):
    """The command line's ``--backdrop MASK``: ``(StillImage of the person on a key-colour backdrop, key rgb)``.
    The mask file: white on the person (greyscale), or a cut-out with transparency (its alpha is used)."""
    if not isinstance(source, StillImage):
        raise InputError("--backdrop needs an image as --input_path (a video's backdrop cannot be replaced)")
    path = Path(mask_path)
    if not path.is_file():
        raise InputError(f"--backdrop '{path}' does not exist: give the person's mask image (white = person)")
    try:
        with Image.open(path) as img:
            has_alpha = img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info
            mask = np.asarray(img.convert("RGBA").getchannel("A") if has_alpha else img.convert("L"))
    except OSError as err:
        raise InputError(f"--backdrop '{path}' is not a readable image ({err}): use a png mask") from None
    result = place_on_backdrop(
        source.image, mask.astype(np.float32) / 255.0, parse_color(key_color, name="--key_color")
    )
    logger.info("--backdrop: the person on a %s backdrop %s", result.key_name, result.key_color)
    return StillImage(result.image), result.key_color
