"""Alpha for talking heads: a portrait placed on a plain key-colour backdrop, and a keyer for the streamed frames.

1. :func:`place_on_backdrop` takes the portrait and a subject mask (from any background remover), erodes and
   feathers the matte (so no halo of the old background stays) and puts the subject on a plain backdrop of
   a key colour. :func:`choose_key_color` picks that colour on the image: of the candidate key colours
   (``KEY_COLORS``), the one whose chroma is farthest from the subject's own colours (the largest 1st
   percentile of the distances in the BT.709 Cb/Cr plane), so skin, hair and clothes never key out.
2. :class:`Keyer` keys the generated frames chunk by chunk (a window at a time, memory bounded by one
   chunk): colour-difference keying against the backdrop in the Cb/Cr plane, spill suppression, soft
   edges. The backdrop colour is measured on the frames and measured again on every chunk (long runs
   drift); the key colour moves smoothly from one chunk's estimate to the next over the chunk's frames, and
   a temporal filter carries the previous frame's alpha from chunk to chunk, so the alpha does not jump at
   window joins.

Alpha is straight (not premultiplied): the colour of a half-transparent pixel is the subject's colour
with the backdrop removed (unmixed), not the colour times alpha. RGBA arrays are ``uint8 (..., 4)``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from .errors import InputError

logger = logging.getLogger(__name__)

# Candidate backdrop colours (sRGB): the broadcast chroma green and blue, and saturated hues far from skin.
KEY_COLORS = {
    "green": (0, 177, 64),
    "blue": (0, 71, 187),
    "magenta": (255, 0, 255),
    "cyan": (0, 255, 255),
    "yellow": (255, 255, 0),
    "red": (255, 0, 0),
}
_KR, _KB = 0.2126, 0.0722  # BT.709 luma weights of R and B
_SAMPLE = 64_000  # pixels sampled per chunk to estimate the backdrop


def parse_color(text: str, *, name: str = "key_color") -> tuple[int, int, int] | None:
    """``"auto"`` -> None; a name of ``KEY_COLORS``, ``#rrggbb`` or ``r,g,b`` -> an sRGB triple."""
    value = (text or "auto").strip().lower()
    if value == "auto":
        return None
    if value in KEY_COLORS:
        return KEY_COLORS[value]
    try:
        if value.startswith("#") and len(value) == 7:
            return tuple(int(value[i : i + 2], 16) for i in (1, 3, 5))
        parts = [int(p) for p in value.split(",")]
        if len(parts) == 3 and all(0 <= p <= 255 for p in parts):
            return tuple(parts)
    except ValueError:
        pass
    raise InputError(
        f"{name} '{text}' is not a colour: use auto, a name ({', '.join(KEY_COLORS)}), #rrggbb or r,g,b"
    )


def color_hex(rgb: Iterable[float]) -> str:
    return "#" + "".join(f"{int(round(v)):02x}" for v in rgb)


def chroma(rgb: np.ndarray) -> np.ndarray:
    """BT.709 Cb/Cr of RGB (``uint8`` or float in 0-255), as ``float32 (..., 2)`` in [-0.5, 0.5]."""
    x = np.asarray(rgb, np.float32) / 255.0
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    y = _KR * r + (1 - _KR - _KB) * g + _KB * b
    return np.stack([(b - y) / (2 * (1 - _KB)), (r - y) / (2 * (1 - _KR))], axis=-1)


# ----------------------------------------------------------------------------------------------- the backdrop
def choose_key_color(image: np.ndarray, mask: np.ndarray) -> tuple[str, tuple[int, int, int], float]:
    """The candidate of ``KEY_COLORS`` farthest from the subject's colours: ``(name, rgb, distance)``, the
    distance being the 1st percentile of the subject pixels' Cb/Cr distances to it (a few stray pixels do
    not decide). ``image`` ``uint8 (H, W, 3)``, ``mask`` float ``(H, W)``, 1 on the subject."""
    subject = image[mask > 0.5]
    if subject.shape[0] == 0:
        raise InputError("subject mask is empty (no pixel above 0.5): connect the mask of the subject")
    step = max(1, subject.shape[0] // 50_000)
    c = chroma(subject[::step])  # (N, 2)
    scores = {
        name: float(np.percentile(np.linalg.norm(c - chroma(np.array(rgb)), axis=-1), 1))
        for name, rgb in KEY_COLORS.items()
    }
    best = max(scores, key=scores.get)
    logger.info(
        "key colour %s %s (chroma distance to the subject %.3f; %s)",
        best,
        color_hex(KEY_COLORS[best]),
        scores[best],
        ", ".join(f"{k} {v:.3f}" for k, v in scores.items()),
    )
    return best, KEY_COLORS[best], scores[best]


def subject_mask(mask: np.ndarray, height: int, width: int, *, name: str = "mask") -> np.ndarray:
    """A mask as ``float32 (height, width)`` in [0, 1], 1 on the subject: resized to the image, and turned
    round when it is 1 on most of the border (a background mask, such as Load Image's alpha mask)."""
    m = np.asarray(mask, np.float32)
    if m.ndim == 3 and m.shape[-1] in (1, 3, 4):
        m = m[..., -1] if m.shape[-1] == 4 else m[..., 0]
    if m.ndim != 2:
        raise InputError(f"{name} has shape {tuple(m.shape)}: expected one (H, W) mask")
    if m.size and m.max() > 1.0:
        m = m / 255.0
    if m.shape != (height, width):
        m = cv2.resize(m, (width, height), interpolation=cv2.INTER_LINEAR)
    m = np.clip(m, 0.0, 1.0)
    border = np.concatenate([m[0], m[:, 0], m[:, -1]])
    if border.mean() > 0.5:
        logger.warning("%s covers most of the image border: taken as a background mask and inverted", name)
        m = 1.0 - m
    if m.max() <= 0.5:
        raise InputError(f"{name} is empty (no pixel above 0.5): connect the mask of the subject")
    return m


def refine_matte(mask: np.ndarray, erode: float = 2.0, feather: float = 1.5) -> np.ndarray:
    """Shrink the matte by ``erode`` pixels (so edge pixels that still hold the old background go) and
    soften it with a Gaussian of ``feather`` pixels: ``float32 (H, W)`` in [0, 1]."""
    m = np.asarray(mask, np.float32)
    if erode > 0:
        r = int(np.ceil(erode))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        m = cv2.erode(m, kernel)
    if feather > 0:
        m = cv2.GaussianBlur(m, (0, 0), sigmaX=feather, sigmaY=feather)
    return np.clip(m, 0.0, 1.0)


@dataclass(frozen=True)
class Backdrop:
    """A portrait on a plain backdrop: the image, the key colour and its name, the matte used."""

    image: np.ndarray  # uint8 (H, W, 3)
    key_color: tuple[int, int, int]
    key_name: str  # a name of KEY_COLORS, or "custom"
    matte: np.ndarray  # float32 (H, W)


def place_on_backdrop(
    image: np.ndarray,
    mask: np.ndarray,
    key_color: tuple[int, int, int] | None = None,
    erode: float = 2.0,
    feather: float = 1.5,
) -> Backdrop:
    """The subject of ``image`` (``uint8 (H, W, 3)``) cut out with ``mask`` (1 on the subject; see
    :func:`subject_mask`) on a plain backdrop of ``key_color`` (None: :func:`choose_key_color`)."""
    if erode < 0 or feather < 0:
        raise InputError(f"erode {erode} / feather {feather} must not be negative: use 0 to turn one off")
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise InputError(f"portrait {image.dtype} {tuple(image.shape)}: expected uint8 (H, W, 3)")
    h, w = image.shape[:2]
    m = subject_mask(mask, h, w)
    if key_color is None:
        name, key_color, _ = choose_key_color(image, m)
    else:
        name = next((k for k, v in KEY_COLORS.items() if tuple(v) == tuple(key_color)), "custom")
    matte = refine_matte(m, erode, feather)
    a = matte[..., None]
    out = a * image.astype(np.float32) + (1.0 - a) * np.asarray(key_color, np.float32)
    return Backdrop(np.clip(np.round(out), 0, 255).astype(np.uint8), tuple(key_color), name, matte)


def background_busy(image: np.ndarray) -> float:
    """How busy the border of a portrait is: the mean Cb/Cr distance of the border pixels (top rows, left
    and right columns) to their median. A plain backdrop measures about 0.01; a room 0.05 and more."""
    img = np.asarray(image)
    h, w = img.shape[:2]
    band = max(1, min(h, w) // 20)
    border = np.concatenate(
        [img[:band].reshape(-1, 3), img[:, :band].reshape(-1, 3), img[:, -band:].reshape(-1, 3)]
    )
    c = chroma(border)
    y = border.astype(np.float32) @ np.array([_KR, 1 - _KR - _KB, _KB], np.float32) / 255.0
    spread_c = np.linalg.norm(c - np.median(c, axis=0), axis=-1).mean()
    spread_y = np.abs(y - np.median(y)).mean()
    return float(spread_c + 0.5 * spread_y)


# ----------------------------------------------------------------------------------------------- the keyer
@dataclass(frozen=True)
class KeySettings:
    """The keyer's knobs; the defaults work without tuning (tooltips in the Key node say the same)."""

    key_color: tuple[int, int, int] | None = None  # None: measured on the frames (auto)
    follow: bool = True  # measure the backdrop again on every chunk (long runs drift)
    clip_black: float = 0.0  # fraction of the key's chroma below which a pixel is fully opaque
    clip_white: float = 3.0  # noise sigmas below the backdrop's chroma where a pixel is fully transparent
    spill: float = 1.0  # 0..1: how much of the key colour's cast is removed from the subject
    softness: float = 0.7  # px: Gaussian blur of the alpha edge (0: hard)
    temporal: float = 0.5  # 0..1: how much of the previous frame's alpha a still pixel keeps

    def __post_init__(self):
        checks = {
            "clip_black": (0.0, 0.9),
            "clip_white": (0.0, 10.0),
            "spill": (0.0, 1.0),
            "softness": (0.0, 10.0),
            "temporal": (0.0, 0.95),
        }
        for field_name, (lo, hi) in checks.items():
            value = getattr(self, field_name)
            if not lo <= value <= hi:
                raise InputError(f"key {field_name} {value} is out of range: use {lo} .. {hi}")


@dataclass(frozen=True)
class _Estimate:
    """A chunk's backdrop: colour (float32 RGB 0-255), chroma noise sigma, subject level (fraction of key)."""

    key: np.ndarray
    noise: float
    level: float

    def towards(self, other: _Estimate, f: float) -> _Estimate:
        return _Estimate(
            self.key + (other.key - self.key) * f,
            self.noise + (other.noise - self.noise) * f,
            self.level + (other.level - self.level) * f,
        )


_MOTION = 0.15  # an alpha change this large is motion, not noise: the temporal filter lets it through


class Keyer:
    """Keys ``uint8 (T, H, W, 3)`` chunks in order into straight-alpha ``uint8 (T, H, W, 4)``.

    State carried from chunk to chunk (constant size): the backdrop estimate (colour and noise) and the last
    frame's alpha. ``hint``: the backdrop colour the portrait was put on (a first guess; the frames decide).
    """

    def __init__(self, settings: KeySettings | None = None, hint: tuple[int, int, int] | None = None):
        self.settings = settings or KeySettings()
        self.hint = self.settings.key_color or hint
        self.state: _Estimate | None = None  # the last chunk's backdrop estimate
        self._alpha: np.ndarray | None = None  # float32 (H, W): the last frame's alpha
        self.estimates: list[_Estimate] = []  # one per chunk (for logs and tests)

    # -- estimation ------------------------------------------------------------------------------------
    def _sample(self, frames: np.ndarray) -> np.ndarray:
        t, h, w = frames.shape[:3]
        step = max(1, int(np.sqrt(t * h * w / _SAMPLE)))
        picks = frames[:: max(1, t // 4), ::step, ::step]  # a few frames of the chunk, a pixel grid
        return picks.reshape(-1, 3)

    def _first_guess(self, frames: np.ndarray) -> np.ndarray:
        """The backdrop colour when nothing is known: the most saturated colour on the top rows and side
        columns of the first frame (where a portrait shows its backdrop)."""
        f = frames[0]
        band = max(1, min(f.shape[:2]) // 16)
        border = np.concatenate(
            [f[:band].reshape(-1, 3), f[:, :band].reshape(-1, 3), f[:, -band:].reshape(-1, 3)]
        )
        c = chroma(border)
        sat = np.linalg.norm(c, axis=-1)
        saturated = border[sat >= np.percentile(sat, 50)]
        guess = np.median(saturated, axis=0).astype(np.float32)
        if np.linalg.norm(chroma(guess)) < 0.08:
            raise InputError(
                "the frames have no coloured backdrop to key (the border is grey): put the portrait on a "
                "backdrop (InfiniteTalk Portrait Backdrop / --backdrop) or give the key colour"
            )
        return guess

    def _estimate(self, frames: np.ndarray) -> _Estimate:
        """This chunk's backdrop: the median colour of the pixels near the current guess in Cb/Cr, the
        robust sigma of their chroma along the key direction, and the subject's level along it."""
        s = self.settings
        if self.state is not None and not s.follow:
            return self.state
        guess = self.state.key if self.state is not None else None
        if guess is None:
            guess = np.asarray(self.hint, np.float32) if self.hint is not None else self._first_guess(frames)
        pixels = self._sample(frames)
        c, ck = chroma(pixels), chroma(guess)
        near = np.linalg.norm(c - ck, axis=-1) < 0.35 * float(np.linalg.norm(ck))
        if near.sum() < max(50, 0.02 * len(pixels)):
            logger.debug("backdrop estimate: %d pixels near the key, keeping %s", near.sum(), guess)
            if self.state is not None:
                return self.state
            key, noise = guess.astype(np.float32), 0.01
        else:
            key = np.median(pixels[near], axis=0).astype(np.float32)
            if s.key_color is not None and not s.follow:
                key = np.asarray(s.key_color, np.float32)  # the user's colour, as given
            p = c[near] @ _unit(chroma(key))
            noise = max(float(1.4826 * np.median(np.abs(p - np.median(p)))), 0.002)
        return _Estimate(key, noise, self._subject_level(frames[len(frames) // 2], key))

    def _subject_level(self, frame: np.ndarray, key: np.ndarray) -> float:
        """Where the subject sits along the key direction, as a fraction of the key's chroma: the 98th
        percentile over the subject's inside (pixels well away from the backdrop, edges eroded), clamped to
        [clip_black, 0.5]. A subject with a little of the key's hue (a blue shirt on green) stays opaque."""
        ck = chroma(key)
        pk = float(np.linalg.norm(ck))
        p = (chroma(frame) @ (ck / pk)) / pk  # (H, W)
        inside = cv2.erode((p < 0.5).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        level = float(np.percentile(p[inside], 98)) if inside.sum() > 100 else 0.0
        return float(np.clip(level, self.settings.clip_black, 0.5))

    # -- keying ----------------------------------------------------------------------------------------
    def key_chunk(self, frames: np.ndarray) -> np.ndarray:
        """Straight RGBA ``uint8 (T, H, W, 4)`` of ``frames`` ``uint8 (T, H, W, 3)``."""
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.dtype != np.uint8 or frames.shape[-1] != 3:
            raise InputError(
                f"frames {frames.dtype} {tuple(frames.shape)} to key: expected uint8 (T, H, W, 3)"
            )
        if frames.shape[0] == 0:
            return np.zeros((*frames.shape[:3], 4), np.uint8)
        new = self._estimate(frames)
        start = self.state if self.state is not None else new
        self.estimates.append(new)
        out = np.empty((*frames.shape[:3], 4), np.uint8)
        t = frames.shape[0]
        for i, frame in enumerate(frames):
            # the estimate moves smoothly from the last chunk's to this one's over the chunk's frames
            out[i] = self._key_frame(frame, start.towards(new, (i + 1) / t))
        self.state = new
        return out

    def _key_frame(self, frame: np.ndarray, est: _Estimate) -> np.ndarray:
        s = self.settings
        rgb = frame.astype(np.float32)
        ck = chroma(est.key)
        pk = float(np.linalg.norm(ck))
        u = ck / pk
        p = chroma(rgb) @ u  # (H, W) chroma along the key direction: pk on the backdrop, low on the subject
        hi = pk - max(s.clip_white * est.noise, 0.02 * pk)
        lo = min(est.level * pk, hi - 0.05 * pk)
        alpha = np.clip((hi - p) / (hi - lo), 0.0, 1.0)
        if s.softness > 0:
            alpha = cv2.GaussianBlur(alpha, (0, 0), sigmaX=s.softness, sigmaY=s.softness)
        alpha = self._temporal(alpha)
        colour = _unmix(rgb, alpha, est.key)
        if s.spill > 0:
            colour = _despill(colour, u, lo, s.spill)
        out = np.empty((*frame.shape[:2], 4), np.uint8)
        out[..., :3] = np.clip(np.round(colour), 0, 255)
        out[..., 3] = np.round(alpha * 255.0)
        return out

    def _temporal(self, alpha: np.ndarray) -> np.ndarray:
        """Per pixel: small changes (noise) are averaged with the previous frame, large ones (motion) pass."""
        prev, self._alpha = self._alpha, alpha
        if prev is None or prev.shape != alpha.shape or self.settings.temporal == 0:
            return alpha
        change = np.abs(alpha - prev)
        keep = self.settings.temporal * np.clip(1.0 - change / _MOTION, 0.0, 1.0)
        alpha = alpha + (prev - alpha) * keep
        self._alpha = alpha
        return alpha

    def key_chunks(self, chunks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        for chunk in chunks:
            yield self.key_chunk(chunk)


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def _unmix(rgb: np.ndarray, alpha: np.ndarray, key: np.ndarray) -> np.ndarray:
    """The subject's own colour of a pixel mixed with the backdrop: ``(c - (1 - a) k) / a`` (straight alpha),
    clipped; pixels below 5% alpha keep their colour (no division blow-up), spill removal greys them."""
    a = np.maximum(alpha, 0.05)[..., None]
    fg = (rgb - (1.0 - a) * key) / a
    return np.where(alpha[..., None] >= 0.05, np.clip(fg, 0.0, 255.0), rgb)


def _despill(rgb: np.ndarray, u: np.ndarray, limit: float, strength: float) -> np.ndarray:
    """Remove the part of each pixel's chroma along the key direction ``u`` above ``limit`` (luma kept)."""
    c = chroma(rgb)
    excess = np.maximum(c @ u - limit, 0.0) * strength  # (H, W)
    d_cb, d_cr = -excess * u[0], -excess * u[1]
    # back to RGB with Y fixed: R = Y + 2(1-kr) Cr, B = Y + 2(1-kb) Cb, G from Y
    dr = 2 * (1 - _KR) * d_cr * 255.0
    db = 2 * (1 - _KB) * d_cb * 255.0
    dg = -(_KR * dr + _KB * db) / (1 - _KR - _KB)
    return np.clip(rgb + np.stack([dr, dg, db], axis=-1), 0.0, 255.0)


def key_chunks(
    chunks: Iterable[np.ndarray],
    settings: KeySettings | None = None,
    hint: tuple[int, int, int] | None = None,
) -> Iterator[np.ndarray]:
    """RGBA chunks of RGB ``chunks`` (one :class:`Keyer` over the whole stream)."""
    return Keyer(settings, hint).key_chunks(chunks)
