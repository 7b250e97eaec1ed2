"""Portrait Backdrop, Key and Video Combine's alpha formats and background, called in-process.

The frames are the synthetic keying scene (tests/unit/keying_scene.py) committed to a SegmentStore in two
windows, as the sampler leaves them (lossless segments), wrapped in the sampler's FrameStream."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest
import torch

from ..unit.keying_scene import bands, scene, subject
from .conftest import PACK_MODULE

T, H, W = 30, 96, 128


@pytest.fixture(scope="module")
def stream(nodes, tmp_path_factory):
    from infinitetalk.sinks import SegmentStore

    bridge = importlib.import_module(f"{PACK_MODULE}.nodes._bridge")
    frames, truth = scene(T, H, W)
    store = SegmentStore(tmp_path_factory.mktemp("run"), codec="h264-lossless")
    store.begin("fingerprint")
    for w, (a, b) in enumerate([(0, 17), (17, T)]):
        store.write(frames[a:b])
        store.commit(w)
    store.mark_complete()
    sr = 48000
    sound = (np.zeros((2, sr * 2), np.float32), sr)
    return bridge.FrameStream(store, T, W, H, 25, sound), truth


def _saved(comfy, result) -> Path:
    saved = result.ui.as_dict()["images"][0]
    root = comfy.get_output_directory() if saved["type"] == "output" else comfy.get_temp_directory()
    return Path(root) / saved["subfolder"] / saved["filename"]


def test_portrait_backdrop_node(nodes):
    fg, a = subject(0, H, W)
    image = torch.from_numpy(np.clip(fg * a[..., None] + 250 * (1 - a[..., None]), 0, 255) / 255.0)[
        None
    ].float()
    mask = torch.from_numpy(1.0 - a)[None]  # Load Image's mask: 1 where transparent
    out, colour, matte = nodes["InfiniteTalkPortraitBackdrop"].execute(image, mask).args[:3]
    assert out.shape == (1, H, W, 3) and colour.startswith("#") and len(colour) == 7
    corner = (out[0, 0, 0].numpy() * 255).round()
    assert np.abs(corner - [int(colour[i : i + 2], 16) for i in (1, 3, 5)]).max() <= 1
    assert np.abs(matte[0].numpy() - a).mean() < 0.1
    out2, colour2, _ = nodes["InfiniteTalkPortraitBackdrop"].execute(image, mask, key_color="blue").args[:3]
    assert colour2 == "#0047bb"
    with pytest.raises(ValueError, match="key_color 'nope' is not a colour"):
        nodes["InfiniteTalkPortraitBackdrop"].execute(image, mask, key_color="nope")


def test_key_then_webm_with_alpha(nodes, comfy, stream):
    from infinitetalk.media.video import iter_rgba

    frames, truth = stream
    keyed = nodes["InfiniteTalkKey"].execute(frames, backdrop_color="#0aaf3c").args[0]
    assert keyed.width == W and keyed.store is frames.store  # the frames stay on disk
    result = nodes["InfiniteTalkVideoCombine"].execute("none", "alpha/talk", frames=keyed, format="webm-vp9")
    path = _saved(comfy, result)
    assert path.suffix == ".webm" and path.is_file() and "infinitetalk_alpha" in path.name
    rgba = np.stack(list(iter_rgba(path)))
    assert rgba.shape == (T, H, W, 4)
    alpha = rgba[..., 3].astype(np.float32) / 255
    inside = np.mean([np.abs(alpha[t] - truth[t])[bands(truth[t])["inside"]].mean() for t in range(T)])
    outside = np.mean([np.abs(alpha[t] - truth[t])[bands(truth[t])["outside"]].mean() for t in range(T)])
    assert inside < 0.02 and outside < 0.02, (inside, outside)  # keyer + VP9 coding of the alpha


def test_key_then_prores_4444_is_previewed_as_webm_over_a_checkerboard(nodes, comfy, stream):
    frames, _ = stream
    keyed = nodes["InfiniteTalkKey"].execute(frames).args[0]
    result = nodes["InfiniteTalkVideoCombine"].execute(
        "none", "alpha/master", frames=keyed, format="prores4444-mov", matte=True
    )
    preview = _saved(comfy, result)
    assert preview.suffix == ".webm" and "infinitetalk_alpha" in preview.name  # the checkerboard's marker
    outputs = sorted(p.name for p in (Path(comfy.get_output_directory()) / "alpha").glob("master*"))
    assert any(n.endswith(".mov") and "_matte" not in n for n in outputs)
    assert any(n.endswith("_matte.mov") for n in outputs)


def test_presenter_over_a_slide(nodes, comfy, stream):
    from infinitetalk.media.export import iter_written

    frames, truth = stream
    slide = torch.zeros(1, 180, 320, 3)
    slide[..., 2] = 0.6  # a blue slide
    slide[:, :20] = 1.0  # a white title bar
    keyed = nodes["InfiniteTalkKey"].execute(frames).args[0]
    result = nodes["InfiniteTalkVideoCombine"].execute(
        "none", "alpha/slide", frames=keyed, background=slide, x=1.0, y=1.0, scale=0.5
    )
    path = _saved(comfy, result)
    assert path.suffix == ".mp4"
    out = np.concatenate(list(iter_written(path)))[..., :3].astype(int)
    assert out.shape == (T, 180, 320, 3)
    # left of the presenter: the slide, untouched by any green
    assert np.abs(out[:, 60:, :100] - [0, 0, 153]).mean() < 4
    # the presenter's box: bottom-right, 90 px high, 120 px wide; no green backdrop left in it
    box = out[:, 90:, 200:]
    green = (box[..., 1] > box[..., 0] + 60) & (box[..., 1] > box[..., 2] + 60)
    assert green.mean() < 0.01
    skin = (np.abs(box - [224, 172, 140]).max(axis=-1) < 30).mean()
    assert skin > 0.02  # the face is there


def test_keyed_frames_need_an_alpha_format_or_a_background(nodes, stream):
    frames, _ = stream
    keyed = nodes["InfiniteTalkKey"].execute(frames).args[0]
    with pytest.raises(ValueError, match="keyed frames need an alpha format"):
        nodes["InfiniteTalkVideoCombine"].execute("none", "alpha/bad", frames=keyed, format="h264-mp4")


def test_images_with_a_mask_give_alpha(nodes, comfy):
    from infinitetalk.media.export import iter_written

    images = torch.rand(5, 32, 48, 3)
    mask = torch.zeros(5, 32, 48)
    mask[:, :, 24:] = 1.0
    result = nodes["InfiniteTalkVideoCombine"].execute(
        "none", "alpha/images", images=images, mask=mask, format="ffv1-rgba-mkv"
    )
    out_dir = Path(comfy.get_output_directory()) / "alpha"
    path = next(out_dir.glob("images*.mkv"))
    rgba = np.concatenate(list(iter_written(path)))
    assert (rgba[..., :24, 3] == 0).all() and (rgba[..., 24:, 3] == 255).all()
    assert _saved(comfy, result).suffix == ".webm"


def test_portrait_check_warns_for_a_busy_background_without_a_mask(nodes):
    rng = np.random.default_rng(0)
    busy = torch.from_numpy(rng.random((1, 256, 256, 3)).astype(np.float32))
    node = nodes["InfiniteTalkPortraitCheck"]
    warnings = node.execute(busy, 1, "none", transparent_background=True).args[1]
    assert "background is busy" in warnings and "Portrait Backdrop" in warnings
    warnings = node.execute(busy, 1, "none", transparent_background=True, mask=torch.ones(1, 256, 256)).args[
        1
    ]
    assert "background is busy" not in warnings
    assert "background is busy" not in node.execute(busy, 1, "none").args[1]
    grey = torch.full((1, 256, 256, 3), 0.5)
    assert "plain but not a key colour" in node.execute(grey, 1, "none", transparent_background=True).args[1]
