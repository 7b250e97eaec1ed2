"""Colour correction: per-frame Lab mean/std transfer to a reference image, blended by a strength.

This is what keeps long videos from drifting in colour (spec §4). The colour maths follows
scikit-image's ``rgb2lab`` / ``lab2rgb`` (sRGB primaries, D65 white, 2° observer) so results match the
reference's skimage-based correction, but runs in torch on any device, one frame at a time.
"""

from __future__ import annotations

import torch

from .errors import InputError

# sRGB (linear) -> XYZ, as in the sRGB specification (the matrix skimage uses).
_XYZ_FROM_RGB = torch.tensor(
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]],
    dtype=torch.float64,
)
_RGB_FROM_XYZ = torch.linalg.inv(_XYZ_FROM_RGB)
_D65_WHITE = torch.tensor([0.95047, 1.0, 1.08883], dtype=torch.float64)


def _mat(m: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return m.to(device=like.device, dtype=like.dtype)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1], channels last ``(..., 3)`` -> CIE Lab ``(..., 3)`` (L in [0, 100])."""
    linear = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = linear @ _mat(_XYZ_FROM_RGB, rgb).T
    xyz = xyz / _mat(_D65_WHITE, rgb)
    f = torch.where(xyz > 0.008856, xyz.clamp_min(0) ** (1.0 / 3.0), 7.787 * xyz + 16.0 / 116.0)
    fx, fy, fz = f.unbind(-1)
    return torch.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], dim=-1)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """CIE Lab ``(..., 3)`` -> sRGB clipped to [0, 1] (negative Z clipped to 0, as skimage)."""
    L, a, b = lab.unbind(-1)
    fy = (L + 16.0) / 116.0
    fx = a / 500.0 + fy
    fz = (fy - b / 200.0).clamp_min(0)
    f = torch.stack([fx, fy, fz], dim=-1)
    xyz = torch.where(f > 0.2068966, f**3, (f - 16.0 / 116.0) / 7.787) * _mat(_D65_WHITE, lab)
    linear = xyz @ _mat(_RGB_FROM_XYZ, lab).T
    rgb = torch.where(linear > 0.0031308, 1.055 * linear.clamp_min(0) ** (1 / 2.4) - 0.055, linear * 12.92)
    return rgb.clamp(0.0, 1.0)


def _lab_stats(lab: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and population std of ``(H, W, 3)`` -> two ``(3,)``."""
    flat = lab.reshape(-1, 3)
    return flat.mean(0), flat.std(0, unbiased=False)


def transfer_frame(frame01: torch.Tensor, ref_mean: torch.Tensor, ref_std: torch.Tensor, strength: float):
    """One ``(H, W, 3)`` frame in [0, 1] -> colour-matched and blended ``(H, W, 3)`` in [0, 1]."""
    lab = rgb_to_lab(frame01)
    mean, std = _lab_stats(lab)
    # A flat channel (std 0) takes the reference mean, as the reference does.
    safe = torch.where(std == 0, torch.ones_like(std), std)
    matched = torch.where(std == 0, ref_mean.expand_as(lab), (lab - mean) * (ref_std / safe) + ref_mean)
    corrected = lab_to_rgb(matched)
    return (1.0 - strength) * frame01 + strength * corrected


def match_colors(video: torch.Tensor, reference: torch.Tensor, strength: float) -> torch.Tensor:
    """Colour-correct every frame of ``video (B, 3, T, H, W)`` in [-1, 1] towards ``reference``.

    ``reference``: ``(B, 3, 1, H', W')``, ``(3, H', W')`` or ``(3, 1, H', W')`` in [-1, 1] (the first input
    frame). ``strength`` in [0, 1]: 0 returns ``video`` unchanged, 1 is full transfer. Frames are
    processed one at a time in float32; returns a new tensor of ``video``'s dtype and device.
    """
    if not 0.0 <= strength <= 1.0:
        raise InputError(f"colour correction strength {strength} is outside [0, 1]: pick a value in [0, 1]")
    if strength == 0.0:
        return video
    ref = reference.reshape(-1, *reference.shape[-2:])[-3:].float()  # (3, H', W')
    ref01 = ((ref.permute(1, 2, 0) + 1.0) / 2.0).clamp(0.0, 1.0)  # (H', W', 3)
    ref_mean, ref_std = _lab_stats(rgb_to_lab(ref01.to(video.device)))
    out = torch.empty_like(video)
    for b in range(video.shape[0]):
        for t in range(video.shape[2]):
            frame01 = ((video[b, :, t].float().permute(1, 2, 0) + 1.0) / 2.0).clamp(0.0, 1.0)  # (H, W, 3)
            fixed = transfer_frame(frame01, ref_mean, ref_std, strength)
            out[b, :, t] = (fixed * 2.0 - 1.0).permute(2, 0, 1).to(video.dtype)
    return out


# ============================================================================ regional anchoring
def _masked_stats(lab: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted per-channel mean and std of ``lab (H, W, 3)`` under ``weight (H, W)`` -> two ``(3,)``."""
    w = weight[..., None]
    total = w.sum().clamp_min(1e-6)
    mean = (lab * w).sum((0, 1)) / total
    std = (((lab - mean) ** 2 * w).sum((0, 1)) / total).sqrt()
    return mean, std


def region_drift(video: torch.Tensor, reference: torch.Tensor, face: torch.Tensor) -> tuple[float, float]:
    """Mean ΔE76 over the frames of ``video (1, 3, T, H, W)`` in [-1, 1] between the mean Lab colour of the
    face region (weights ``face (H, W)`` in [0, 1]) and the reference's, and the same for the background
    (weights ``1 - face``). ``reference``: ``(1, 3, 1, H, W)`` in [-1, 1]."""
    ref = rgb_to_lab(((reference[0, :, 0].float().permute(1, 2, 0) + 1) / 2).clamp(0, 1))
    face = face.to(ref)
    ref_face, ref_bg = _masked_stats(ref, face)[0], _masked_stats(ref, 1 - face)[0]
    de_face = de_bg = 0.0
    for t in range(video.shape[2]):
        lab = rgb_to_lab(((video[0, :, t].float().permute(1, 2, 0) + 1) / 2).clamp(0, 1))
        de_face += float((_masked_stats(lab, face)[0] - ref_face).norm())
        de_bg += float((_masked_stats(lab, 1 - face)[0] - ref_bg).norm())
    n = max(1, video.shape[2])
    return de_face / n, de_bg / n


def anchor_regions(video: torch.Tensor, reference: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
    """Lab mean/std transfer per region: the face region (soft weights ``face (H, W)``) takes the reference
    face's statistics, the background the reference background's; the two blend by the weights. Stronger
    than :func:`match_colors`, which matches the whole frame at once (and so leaves a face that drifted one
    way and a background that drifted the other)."""
    ref = rgb_to_lab(((reference[0, :, 0].float().permute(1, 2, 0) + 1) / 2).clamp(0, 1))
    face = face.to(ref)
    targets = [_masked_stats(ref, face), _masked_stats(ref, 1 - face)]
    out = torch.empty_like(video)
    for t in range(video.shape[2]):
        lab = rgb_to_lab(((video[0, :, t].float().permute(1, 2, 0) + 1) / 2).clamp(0, 1))
        parts = []
        for weight, (ref_mean, ref_std) in zip((face, 1 - face), targets, strict=True):
            mean, std = _masked_stats(lab, weight)
            parts.append((lab - mean) * (ref_std / std.clamp_min(1e-6)) + ref_mean)
        blended = parts[0] * face[..., None] + parts[1] * (1 - face[..., None])
        out[0, :, t] = (lab_to_rgb(blended) * 2 - 1).permute(2, 0, 1).to(video.dtype)
    return out
