"""A synthetic talking head with a known alpha: an RGBA subject (skin, dark hair, a blue-grey shirt, soft
anti-aliased edges) moving over a key-colour backdrop whose colour drifts slowly, with camera noise."""

from __future__ import annotations

import cv2
import numpy as np

SKIN, HAIR, SHIRT = (224, 172, 140), (60, 40, 30), (70, 90, 150)


def subject(t: int, h: int, w: int, ss: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Frame ``t``'s subject: colour ``float32 (h, w, 3)`` and alpha ``float32 (h, w)`` (area coverage,
    ``ss`` x ``ss`` supersampled)."""
    cx = w / 2 + 0.12 * w * np.sin(2 * np.pi * t / 40)
    cy = 0.42 * h + 0.03 * h * np.sin(2 * np.pi * t / 25)
    yy, xx = np.mgrid[0 : h * ss, 0 : w * ss].astype(np.float32)
    yy, xx = (yy + 0.5) / ss, (xx + 0.5) / ss
    head = ((xx - cx) / (0.11 * w)) ** 2 + ((yy - cy) / (0.19 * h)) ** 2 <= 1
    hair = head & (yy < cy - 0.06 * h)
    body = ((xx - cx) / (0.3 * w)) ** 2 + ((yy - (cy + 0.55 * h)) / (0.35 * h)) ** 2 <= 1
    cover = (head | body).astype(np.float32)
    colour = np.where(body[..., None], np.float32(SHIRT), np.float32(SKIN))
    colour = np.where(hair[..., None], np.float32(HAIR), colour)
    alpha = cv2.resize(cover, (w, h), interpolation=cv2.INTER_AREA)
    # the colour of partly covered pixels: the mean over the covered sub-pixels
    summed = cv2.resize(colour * cover[..., None], (w, h), interpolation=cv2.INTER_AREA)
    rgb = np.where(alpha[..., None] > 0, summed / np.maximum(alpha[..., None], 1e-6), 0)
    shade = 1.0 + 0.08 * np.sin(np.arange(w, dtype=np.float32) / 5.0)[None, :, None]  # texture
    return np.clip(rgb * shade, 0, 255).astype(np.float32), alpha.astype(np.float32)


def backdrop_colour(t: int, total: int) -> np.ndarray:
    """Green drifting slowly toward a duller, bluer green over the run."""
    f = t / max(1, total - 1)
    return np.float32([10, 175, 60]) + f * np.float32([25, -30, 25])


def scene(total: int, h: int = 96, w: int = 128, noise: float = 3.0, seed: int = 0):
    """``frames uint8 (T, h, w, 3)`` and the true ``alpha float32 (T, h, w)``."""
    rng = np.random.default_rng(seed)
    frames = np.empty((total, h, w, 3), np.uint8)
    alphas = np.empty((total, h, w), np.float32)
    for t in range(total):
        fg, a = subject(t, h, w)
        bg = backdrop_colour(t, total)[None, None, :]
        img = a[..., None] * fg + (1 - a[..., None]) * bg + rng.normal(0, noise, (h, w, 3))
        frames[t] = np.clip(np.round(img), 0, 255)
        alphas[t] = a
    return frames, alphas


def bands(alpha: np.ndarray, margin: int = 2) -> dict[str, np.ndarray]:
    """Inside (fully covered, ``margin`` px from any edge), outside (uncovered, ``margin`` px away) and the
    edge band between them, as boolean masks of ``alpha (h, w)``."""
    k = np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)
    inside = cv2.erode((alpha >= 0.999).astype(np.uint8), k).astype(bool)
    outside = cv2.erode((alpha <= 0.001).astype(np.uint8), k).astype(bool)
    return {"inside": inside, "outside": outside, "edge": ~inside & ~outside}
