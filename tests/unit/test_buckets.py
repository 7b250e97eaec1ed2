"""Size buckets (reference tables), WxH sizes, resize-to-cover + centre crop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from infinitetalk.buckets import (
    BUCKETS_480,
    BUCKETS_720,
    default_shift,
    image_to_tensor,
    resize_and_crop_image,
    resize_and_crop_masks,
    target_size,
)
from infinitetalk.errors import InputError


@pytest.mark.parametrize(
    "size,src_hw,expected",
    [
        ("infinitetalk-480", (1080, 1920), (448, 896)),  # ratio 0.5625 -> 0.50
        ("infinitetalk-480", (1920, 1080), (832, 448)),  # 1.78 -> 1.86
        ("infinitetalk-480", (512, 512), (640, 640)),
        ("infinitetalk-720", (720, 1280), (704, 1280)),  # 0.5625 -> 0.55
        ("infinitetalk-720", (1024, 1024), (960, 960)),
        ("128x64", (999, 17), (64, 128)),  # WxH -> (h, w)
    ],
)
def test_target_sizes(size, src_hw, expected):
    assert target_size(size, *src_hw) == expected


def test_tables_are_multiples_of_16_and_about_the_right_area():
    for table, side in ((BUCKETS_480, 640), (BUCKETS_720, 960)):
        for h, w in table.values():
            assert h % 16 == 0 and w % 16 == 0
            assert 0.85 < h * w / side**2 < 1.1  # the reference's extreme ratios reach 1.07
    assert default_shift("infinitetalk-720") == 11 and default_shift("infinitetalk-480") == 7


@pytest.mark.parametrize("bad", ["100x64", "64", "big", "0x64"])
def test_bad_sizes(bad):
    with pytest.raises(InputError, match="size"):
        target_size(bad, 100, 100)


def test_resize_covers_then_centre_crops():
    img = np.zeros((100, 200, 3), np.uint8)
    img[:, 90:110] = 255  # a vertical bar in the middle
    out = resize_and_crop_image(img, (64, 64))  # scale 0.64 -> 64 x 128, crop columns 32..96
    assert out.shape == (64, 64, 3)
    cols = np.nonzero(out[32, :, 0] > 128)[0]
    assert 24 <= cols.min() and cols.max() <= 39  # bar at 57.6..70.4 in the resized image, minus 32


def test_crop_offset_rounds_like_torchvision():
    import torchvision.transforms.functional as tv  # the oracle (scripts/requirements-test.txt)

    masks = torch.rand(3, 37, 91) > 0.5
    ours = resize_and_crop_masks(masks, (32, 48))
    # scale = max(32/37, 48/91) = 0.8649 -> (32, ceil(78.7)=79)
    big = torch.nn.functional.interpolate(masks[None].float(), size=(32, 79), mode="nearest")
    assert torch.equal(ours, tv.center_crop(big, [32, 48])[0])


def test_image_to_tensor_range():
    t = image_to_tensor(np.array([[[0, 255, 128]]], np.uint8))
    assert t.shape == (3, 1, 1) and t[0] == -1 and t[1] == 1 and abs(float(t[2]) - 0.00392) < 1e-4
