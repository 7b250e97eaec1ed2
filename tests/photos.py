"""Real photographs shipped by registry packages (scikit-image, matplotlib), and images built from them."""

from __future__ import annotations

import numpy as np
from PIL import Image

# Hand-labelled face boxes (x0, y0, x1, y1), forehead to chin (also in bench/face_detection.py).
ASTRONAUT_FACE = (175, 60, 275, 170)
GRACE_FACE = (150, 125, 375, 340)


def astronaut() -> np.ndarray:
    """scikit-image's astronaut (Eileen Collins), 512x512 RGB."""
    from skimage import data

    return data.astronaut()


def grace_hopper() -> np.ndarray:
    """matplotlib's sample portrait of Grace Hopper, 600x512 RGB."""
    import matplotlib.cbook

    return np.asarray(Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))


def two_people() -> tuple[np.ndarray, list[tuple[float, float, float, float]]]:
    """Astronaut (left) and Grace Hopper (right, scaled to 512 px high) side by side, with their face boxes."""
    left, right = astronaut(), grace_hopper()
    s = 512 / right.shape[0]
    right = np.asarray(Image.fromarray(right).resize((round(right.shape[1] * s), 512), Image.BILINEAR))
    g = tuple(v * s for v in GRACE_FACE)
    return np.concatenate([left, right], axis=1), [ASTRONAUT_FACE, (g[0] + 512, g[1], g[2] + 512, g[3])]


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)
