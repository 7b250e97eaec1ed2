"""Face detection, offline: OpenCV's Haar cascades from the ``opencv-python-headless`` wheel.

``detect_faces(image) -> list[Face]``: boxes in image pixels, a confidence in [0, 1] and the eyes as
landmarks when the eye cascade finds both. Nothing is downloaded: the cascade files ship inside the
wheel (``cv2.data.haarcascades``). Why Haar and not BlazeFace/YuNet, with the measured figures:
docs/PRODUCTION.md (``python bench/face_detection.py``).

How it works: the frontal-face cascade ``haarcascade_frontalface_alt2`` runs on a grey, equalised copy
scaled so its longer side is at most ``work_size`` pixels (faster; boxes are mapped back). Each merged
detection keeps the number of raw hits that voted for it; ``confidence = 1 - exp(-hits / 8)``; below 0.5 (fewer than 6 hits) a detection is dropped. Then
``haarcascade_eye`` looks for the two eyes in the upper part of each face box.

Also here: :func:`track_faces` (one smoothed face box per video frame, for face-only dubbing) and
:func:`feathered_mask` (soft elliptical face region).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from .errors import InputError

logger = logging.getLogger(__name__)

FACE_CASCADE = "haarcascade_frontalface_alt2.xml"
EYE_CASCADE = "haarcascade_eye.xml"
WORK_SIZE = 640  # longer side (px) the detector runs at
MIN_FACE_FRACTION = 0.05  # smallest face side searched, as a fraction of the shorter image side
HIT_SCALE = 8.0  # confidence = 1 - exp(-hits / HIT_SCALE)


@dataclass(frozen=True)
class Face:
    """One detected face. ``box`` is ``(x0, y0, x1, y1)`` in pixels of the image given (x = column).

    ``landmarks`` maps point names to ``(x, y)`` pixels; the Haar detector gives ``left_eye`` and
    ``right_eye`` (left/right as seen in the image) when it finds both eyes, else nothing.
    """

    box: tuple[float, float, float, float]
    confidence: float
    landmarks: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def size(self) -> float:
        """Side of the (square) face box in pixels."""
        return min(self.width, self.height)

    @property
    def center(self) -> tuple[float, float]:
        return (self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2

    def scaled(self, sx: float, sy: float) -> Face:
        x0, y0, x1, y1 = self.box
        marks = {k: (x * sx, y * sy) for k, (x, y) in self.landmarks.items()}
        return Face((x0 * sx, y0 * sy, x1 * sx, y1 * sy), self.confidence, marks)


@lru_cache(maxsize=4)
def _cascade(name: str):
    import cv2

    path = f"{cv2.data.haarcascades}{name}"
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise InputError(
            f"OpenCV cascade '{path}' cannot be read: reinstall opencv-python-headless (4.x, which ships it)"
        )
    return cascade


def _grey(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] in (3, 4):
        image = image[..., :3]
        if image.dtype != np.uint8:
            image = np.clip(image * (255 if image.max() <= 1.0 else 1), 0, 255).astype(np.uint8)
        grey = (image[..., 0] * 0.299 + image[..., 1] * 0.587 + image[..., 2] * 0.114).astype(np.uint8)
    elif image.ndim == 2:
        grey = image if image.dtype == np.uint8 else np.clip(image * 255, 0, 255).astype(np.uint8)
    else:
        raise InputError(f"image of shape {image.shape}: expected (H, W, 3) RGB or (H, W) grey")
    return np.ascontiguousarray(grey)


def detect_faces(
    image: np.ndarray,
    min_confidence: float = 0.5,
    min_face: int | None = None,
    work_size: int = WORK_SIZE,
    landmarks: bool = True,
) -> list[Face]:
    """Faces in ``image`` (uint8 ``(H, W, 3)`` RGB or ``(H, W)`` grey), largest first.

    ``min_face``: smallest face side in image pixels (default 5% of the shorter side, at least 20 px).
    """
    import cv2

    grey = _grey(image)
    h, w = grey.shape
    scale = min(1.0, work_size / max(h, w))
    small = cv2.resize(grey, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    small = cv2.equalizeHist(small)
    min_side = max(20, round(min_face * scale) if min_face else round(MIN_FACE_FRACTION * min(small.shape)))
    rects, hits = _cascade(FACE_CASCADE).detectMultiScale2(
        small, scaleFactor=1.1, minNeighbors=3, minSize=(min_side, min_side)
    )
    faces = []
    for (x, y, fw, fh), n in zip(np.asarray(rects).reshape(-1, 4), np.asarray(hits).reshape(-1), strict=True):
        conf = 1.0 - math.exp(-float(n) / HIT_SCALE)
        if conf < min_confidence:
            continue
        marks = _eyes(small, (x, y, fw, fh)) if landmarks else {}
        faces.append(
            Face((float(x), float(y), float(x + fw), float(y + fh)), conf, marks).scaled(1 / scale, 1 / scale)
        )
    faces.sort(key=lambda f: f.width * f.height, reverse=True)
    return faces


def _eyes(grey: np.ndarray, rect) -> dict[str, tuple[float, float]]:
    """The two eyes inside a face box (upper 60%, one in each half), or nothing."""
    x, y, w, h = (int(v) for v in rect)
    roi = grey[y : y + int(h * 0.6), x : x + w]
    side = max(8, w // 8)
    found = _cascade(EYE_CASCADE).detectMultiScale(
        roi, scaleFactor=1.1, minNeighbors=3, minSize=(side, side), maxSize=(w // 2, w // 2)
    )
    left, right = [], []
    for ex, ey, ew, eh in np.asarray(found).reshape(-1, 4):
        cx, cy = x + ex + ew / 2, y + ey + eh / 2
        (left if cx < x + w / 2 else right).append((ew * eh, (float(cx), float(cy))))
    if not left or not right:
        return {}
    return {"left_eye": max(left)[1], "right_eye": max(right)[1]}


# ============================================================================ video: tracking and masks
def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def track_faces(
    frames: Iterable[np.ndarray], smooth: int = 5, min_confidence: float = 0.5, work_size: int = 320
) -> list[np.ndarray | None]:
    """One face box ``(x0, y0, x1, y1)`` per frame, following the main face through the video.

    Every frame is searched (at ``work_size`` px on its longer side: about 4x faster than for stills); the
    face kept is the one overlapping the previous box most (the largest
    face when nothing was tracked yet). Frames where the face is lost take the nearest tracked box;
    boxes are then smoothed over time with a centred moving average of ``2 * smooth + 1`` frames so the
    region does not jitter. Returns ``None`` everywhere when no frame shows a face.
    """
    raw: list[np.ndarray | None] = []
    last = None
    for frame in frames:
        faces = detect_faces(frame, min_confidence=min_confidence, work_size=work_size, landmarks=False)
        pick = None
        if faces:
            if last is not None:
                best = max(faces, key=lambda f: _iou(f.box, last))
                pick = best if _iou(best.box, last) > 0.1 else None
            if pick is None and last is None:
                pick = faces[0]
        if pick is not None:
            last = pick.box
        raw.append(None if pick is None else np.asarray(pick.box, np.float64))
    known = [i for i, b in enumerate(raw) if b is not None]
    if not known:
        return [None] * len(raw)
    filled = np.stack([raw[min(known, key=lambda k: abs(k - i))] for i in range(len(raw))])  # (T, 4)
    if smooth > 0 and len(filled) > 1:
        pad = np.pad(filled, ((smooth, smooth), (0, 0)), mode="edge")
        kernel = np.ones(2 * smooth + 1) / (2 * smooth + 1)
        filled = np.stack([np.convolve(pad[:, c], kernel, mode="valid") for c in range(4)], axis=1)
    return list(filled)


def feathered_mask(box, height: int, width: int, grow: float = 0.35, feather: int = 12) -> np.ndarray:
    """float32 ``(H, W)`` in [0, 1]: 1 inside an ellipse around the face box, 0 outside, soft in between.

    The ellipse is the box grown by ``grow`` of its size on each side (a little more below, for the chin
    and mouth); a ``(2 * feather + 1)``-pixel box blur softens its edge. Every pixel further than
    ``feather`` pixels (along x or y) from the ellipse is exactly 0, every pixel further than ``feather``
    inside it exactly 1.
    """
    import cv2

    x0, y0, x1, y1 = (float(v) for v in box)
    bw, bh = x1 - x0, y1 - y0
    centre = (round((x0 + x1) / 2), round((y0 + y1) / 2 + 0.1 * bh))
    axes = (max(1, round(bw * (0.5 + grow))), max(1, round(bh * (0.55 + grow))))
    hard = np.zeros((height, width), np.float32)
    cv2.ellipse(hard, centre, axes, 0, 0, 360, 1.0, thickness=-1)
    if feather <= 0:
        return hard
    k = 2 * int(feather) + 1
    return cv2.blur(hard, (k, k), borderType=cv2.BORDER_CONSTANT)
