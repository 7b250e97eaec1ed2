"""Lab colour transfer: sRGB/Lab maths against scikit-image (optional), and the drift it corrects."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from infinitetalk.color import lab_to_rgb, match_colors, rgb_to_lab
from infinitetalk.errors import InputError
from tests.needs import need_module

SKIMAGE = "pip install -r scripts/requirements-test.txt (scikit-image)"


def _frames(seed=0, t=3, h=16, w=20):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, t, h, w, generator=g) * 2 - 1  # (1, 3, T, H, W) in [-1, 1]


def test_lab_roundtrip_and_known_values():
    rgb = torch.rand(50, 3, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(lab_to_rgb(rgb_to_lab(rgb)), rgb, atol=1e-4)
    white, black = rgb_to_lab(torch.ones(1, 3)), rgb_to_lab(torch.zeros(1, 3))
    assert torch.allclose(white, torch.tensor([[100.0, 0.0, 0.0]]), atol=2e-2)
    assert torch.allclose(black, torch.zeros(1, 3), atol=1e-4)


def _lab_mean(video01: np.ndarray) -> np.ndarray:
    return rgb_to_lab(torch.from_numpy(video01).float()).reshape(-1, 3).mean(0).numpy()


def test_drifted_frame_is_pulled_to_reference_lab_mean():
    ref = _frames(1, t=1) * 0.4  # mid-range colours: the transfer stays inside the sRGB gamut
    drifted = ref * 0.8 + torch.tensor([0.2, -0.05, -0.15])[None, :, None, None, None]
    as01 = lambda v: ((v[0, :, 0].permute(1, 2, 0) + 1) / 2).numpy()  # noqa: E731
    ref_mean, before = _lab_mean(as01(ref)), _lab_mean(as01(drifted))
    full = _lab_mean(as01(match_colors(drifted, ref, 1.0)))
    half = _lab_mean(as01(match_colors(drifted, ref, 0.5)))
    d0, d1, dh = (np.abs(m - ref_mean).max() for m in (before, full, half))
    assert d0 > 5.0  # the drift is real (Lab units)
    assert d1 < 0.2  # full strength: the means match (up to the non-linear sRGB round trip)
    assert d1 < dh < d0


def test_strength_zero_is_identity_and_range_checked():
    v = _frames()
    assert match_colors(v, v[:, :, :1], 0.0) is v
    with pytest.raises(InputError, match="strength"):
        match_colors(v, v[:, :, :1], 1.5)


def test_flat_channel_takes_reference_mean():
    flat = torch.zeros(1, 3, 1, 8, 8)  # grey: a and b channels have std 0
    ref = _frames(2, t=1, h=8, w=8)
    out = match_colors(flat, ref, 1.0)
    # every Lab channel of the frame has std 0, so each takes the reference's mean: the whole frame becomes
    # the one colour whose Lab is the reference mean (0.05 Lab units: float32 sRGB round trip)
    pixels = out[0, :, 0].permute(1, 2, 0).reshape(-1, 3)
    assert torch.equal(pixels, pixels[:1].expand_as(pixels))  # still flat
    ref_lab = rgb_to_lab(((ref[0, :, 0].permute(1, 2, 0) + 1) / 2).reshape(-1, 3))
    got_lab = rgb_to_lab((pixels[0] + 1) / 2)
    assert torch.allclose(got_lab, ref_lab.mean(0), atol=0.05), (got_lab, ref_lab.mean(0))


# ---------------------------------------------------------------------------- against scikit-image
def _skimage_reference(source: torch.Tensor, reference: torch.Tensor, strength: float) -> np.ndarray:
    """The reference's algorithm (skimage rgb2lab/lab2rgb, numpy mean/std) re-derived for the test."""
    color = need_module("skimage.color", SKIMAGE)
    src = np.clip((source[0].permute(1, 2, 3, 0).numpy() + 1) / 2, 0, 1)
    ref_lab = color.rgb2lab(np.clip((reference[0, :, 0].permute(1, 2, 0).numpy() + 1) / 2, 0, 1))
    out = []
    for frame in src:
        lab = color.rgb2lab(frame)
        new = lab.copy()
        for j in range(3):
            ms, ss = lab[..., j].mean(), lab[..., j].std()
            mr, sr = ref_lab[..., j].mean(), ref_lab[..., j].std()
            new[..., j] = mr if ss == 0 else (lab[..., j] - ms) * (sr / ss) + mr
        out.append((1 - strength) * frame + strength * np.clip(color.lab2rgb(new), 0, 1))
    return np.stack(out) * 2 - 1  # (T, H, W, 3)


def test_rgb_to_lab_matches_skimage():
    color = need_module("skimage.color", SKIMAGE)
    rgb = np.random.default_rng(0).random((7, 9, 3))
    ours = rgb_to_lab(torch.from_numpy(rgb)).numpy()
    np.testing.assert_allclose(ours, color.rgb2lab(rgb), atol=1e-6)  # float64 both sides
    lab = color.rgb2lab(rgb) * 1.1 + 3
    np.testing.assert_allclose(
        lab_to_rgb(torch.from_numpy(lab)).numpy(), np.clip(color.lab2rgb(lab), 0, 1), atol=1e-6
    )


@pytest.mark.parametrize("strength", [1.0, 0.3])
def test_match_colors_matches_skimage_reference(strength):
    src, ref = _frames(3), _frames(4, t=1)
    src = (src * 0.7 + 0.2).clamp(-1, 1)
    ours = match_colors(src, ref, strength)[0].permute(1, 2, 3, 0).numpy()
    # float32 (ours) vs float64 (skimage): 1e-4 in [-1, 1] is far below one uint8 level (7.8e-3).
    np.testing.assert_allclose(ours, _skimage_reference(src, ref, strength), atol=1e-4)
