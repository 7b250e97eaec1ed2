"""Output sizes: the reference's aspect buckets, or an explicit ``WxH``; resize-to-cover + centre crop."""

from __future__ import annotations

import math
import re

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .errors import InputError

# height/width ratio -> (height, width), the reference's tables (about 640x640 and 960x960 pixels).
BUCKETS_480 = {
    0.26: (320, 1216), 0.38: (384, 1024), 0.50: (448, 896), 0.67: (512, 768), 0.82: (576, 704),
    1.00: (640, 640), 1.22: (704, 576), 1.50: (768, 512), 1.86: (832, 448), 2.00: (896, 448),
    2.50: (960, 384), 2.83: (1088, 384), 3.60: (1152, 320), 3.80: (1216, 320), 4.00: (1280, 320),
}  # fmt: skip
BUCKETS_720 = {
    0.22: (448, 2048), 0.29: (512, 1792), 0.36: (576, 1600), 0.45: (640, 1408), 0.55: (704, 1280),
    0.63: (768, 1216), 0.76: (832, 1088), 0.88: (896, 1024), 1.00: (960, 960), 1.14: (1024, 896),
    1.31: (1088, 832), 1.50: (1152, 768), 1.58: (1216, 768), 1.82: (1280, 704), 1.91: (1344, 704),
    2.20: (1408, 640), 2.30: (1472, 640), 2.67: (1536, 576), 2.89: (1664, 576), 3.62: (1856, 512),
    3.75: (1920, 512),
}  # fmt: skip
BUCKETS = {"infinitetalk-480": BUCKETS_480, "infinitetalk-720": BUCKETS_720}
_WXH = re.compile(r"^(\d+)[xX*](\d+)$")


def default_shift(size: str) -> float:
    """The reference's default flow shift: 11 for 720p buckets, 7 otherwise."""
    return 11.0 if size == "infinitetalk-720" else 7.0


def target_size(size: str, src_h: int, src_w: int) -> tuple[int, int]:
    """``(height, width)`` for ``size`` (a bucket name or ``WxH``, multiples of 16) and a source image."""
    if size in BUCKETS:
        table = BUCKETS[size]
        ratio = src_h / src_w
        closest = min(table, key=lambda r: abs(r - ratio))  # first of equals, as the reference's sort
        return table[closest]
    match = _WXH.match(size.strip())
    if not match:
        raise InputError(
            f"size '{size}' is unknown: use infinitetalk-480, infinitetalk-720 or WxH (e.g. 832x480)"
        )
    w, h = int(match[1]), int(match[2])
    if w <= 0 or h <= 0 or w % 16 or h % 16:
        raise InputError(f"size '{size}': width and height must be positive multiples of 16 (e.g. 832x480)")
    return h, w


def cover_size(src_h: int, src_w: int, h: int, w: int) -> tuple[int, int]:
    scale = max(h / src_h, w / src_w)
    return math.ceil(scale * src_h), math.ceil(scale * src_w)


def crop_box(big_h: int, big_w: int, h: int, w: int) -> tuple[int, int]:
    """Top-left corner of a centred crop, rounding as torchvision's ``center_crop``."""
    return int(round((big_h - h) / 2.0)), int(round((big_w - w) / 2.0))


def resize_and_crop_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``uint8 (H, W, 3)`` -> ``uint8 (h, w, 3)``: bilinear resize to cover, then centre crop (reference)."""
    h, w = size
    big_h, big_w = cover_size(image.shape[0], image.shape[1], h, w)
    resized = np.asarray(Image.fromarray(image).resize((big_w, big_h), resample=Image.BILINEAR))
    top, left = crop_box(big_h, big_w, h, w)
    return np.ascontiguousarray(resized[top : top + h, left : left + w])


def resize_and_crop_masks(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(C, H, W)`` masks -> ``(C, h, w)``: nearest resize to cover, then centre crop (reference)."""
    h, w = size
    big_h, big_w = cover_size(masks.shape[-2], masks.shape[-1], h, w)
    resized = F.interpolate(masks[None].float(), size=(big_h, big_w), mode="nearest")[0]
    top, left = crop_box(big_h, big_w, h, w)
    return resized[:, top : top + h, left : left + w].contiguous()


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """``uint8 (H, W, 3)`` -> ``float32 (3, H, W)`` in [-1, 1]."""
    return (
        torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1).float() / 255 - 0.5
    ) * 2
