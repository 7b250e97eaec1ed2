"""ComfyUI's own encoders (CLIP umT5, VAE, CLIP_VISION) through the pack: ComfyUI 0.3.75's real classes on
the tiny checkpoints give what the pack's own encoders give on the same files.

Tolerances (float32 on CPU; weights stored in fp16 in the files, so both sides hold the same values):
- text: 1e-4 relative to the largest value (two implementations of umT5 summing in different orders);
- VAE: 1e-4 of the latent/pixel range (two implementations of the causal 3-D convolutions);
- CLIP vision: 1e-4 (the pack prepares the image as the reference and runs ComfyUI's model on it); ComfyUI's
  own encode_image (the fallback) rounds the resized pixels to 8 bits: measured here, stated in the README.
"""

from __future__ import annotations

import importlib
from types import SimpleNamespace

import pytest
import torch

from .conftest import PACK_MODULE

PROMPTS = [
    "A woman (smiling) talks to the camera &amp; nods:1.2, soft light.",
    "short",
    "色调艳丽，过曝，静态，细节模糊不清",
]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-12))


@pytest.fixture(scope="module")
def core(pack):
    return importlib.import_module(f"{PACK_MODULE}.nodes._core")


@pytest.fixture(scope="module")
def tiny_core():
    from tests import tiny_core

    return tiny_core


# ------------------------------------------------------------------------------------------------ text
@pytest.fixture(scope="module")
def text_pair(tiny_models, tiny_core):
    from infinitetalk.encoders.text import load_text_encoder

    path = tiny_models / "models" / "text_encoders" / "umt5_xxl_fp16.safetensors"
    return load_text_encoder(path, device="cpu", dtype=torch.float32), tiny_core.core_clip(path)


def test_core_clip_gives_the_reference_text_embeddings(core, text_pair):
    own, clip = text_pair
    expected = own.encode(PROMPTS)
    got = core.CoreTextEncoder(clip).encode(PROMPTS)
    for prompt, e, g in zip(PROMPTS, expected, got, strict=True):
        assert g.shape == e.shape, (prompt, g.shape, e.shape)  # trimmed to the real tokens, </s> included
        assert _rel(g, e) < 1e-4, prompt


def test_parentheses_stay_text_and_are_not_weights(core, text_pair):
    _, clip = text_pair
    tokens = core.CoreTextEncoder(clip).tokens("a (smiling:1.5) face")
    assert {w for _, w, *rest in tokens[core.UMT5_KEY][0]} == {1.0}


def test_text_encode_node_takes_comfyui_clip(nodes, core, text_pair):
    own, clip = text_pair
    node = nodes["InfiniteTalkTextEncode"]
    inputs = node.GET_SCHEMA().inputs
    accepted = set(next(i for i in inputs if i.id == "text_encoder").get_io_type().split(","))
    assert {"INFINITETALK_TEXT_ENCODER", "CLIP"} <= accepted
    managed = SimpleNamespace(obj=own, patcher=None)  # the pack's encoder, already in memory
    models = importlib.import_module(f"{PACK_MODULE}.nodes._models")
    load = models.load
    models.load = lambda *a, **k: None
    try:
        mine = node.execute(text_encoder=managed, prompt=PROMPTS[0], negative_prompt=PROMPTS[2]).result[0]
    finally:
        models.load = load
    theirs = node.execute(text_encoder=clip, prompt=PROMPTS[0], negative_prompt=PROMPTS[2]).result[0]
    assert theirs.positive.shape == mine.positive.shape and theirs.negative.shape == mine.negative.shape
    assert _rel(theirs.positive, mine.positive) < 1e-4 and _rel(theirs.negative, mine.negative) < 1e-4


def test_a_clip_that_is_not_umt5_is_one_clear_error(core):
    clip_l = SimpleNamespace(tokenize=lambda text, **k: {"l": [[(49406, 1.0)]]}, encode_from_tokens=None)
    with pytest.raises(
        ValueError, match=r"^text_encoder: the connected CLIP is not umT5 .*Load CLIP, type wan"
    ):
        core.CoreTextEncoder(clip_l).encode(["hello"])


# ------------------------------------------------------------------------------------------------ VAE
@pytest.fixture(scope="module")
def vae_pair(tiny_models, tiny_core):
    from infinitetalk.encoders.vae import load_vae

    path = tiny_models / "models" / "vae" / "wan_2.1_vae.safetensors"
    return load_vae(path, device="cpu", dtype=torch.float32), tiny_core.core_vae(path)


def test_core_vae_encodes_and_decodes_as_the_pack(core, vae_pair):
    own, vae = vae_pair
    managed = core.pack_vae(vae)
    assert managed.patcher is vae.patcher  # ComfyUI's memory manager keeps placing it
    video = torch.rand(1, 3, 9, 32, 48, generator=torch.Generator().manual_seed(0)) * 2 - 1
    expected = own.encode(video)
    got = managed.obj.encode(video)
    assert got.shape == expected.shape == (1, 16, 3, 4, 6)
    assert float((got - expected).abs().max()) < 1e-4 * float(expected.abs().max())
    decoded, mine = managed.obj.decode(expected), own.decode(expected)
    assert decoded.shape == mine.shape == (1, 3, 9, 32, 48)
    assert float((decoded - mine).abs().max()) < 2e-4  # pixels in [-1, 1]


def test_a_vae_that_is_not_wan_2_1_is_one_clear_error(core):
    sd_vae = SimpleNamespace(first_stage_model=None, decode=lambda x: x, latent_channels=4, latent_dim=2)
    with pytest.raises(ValueError, match=r"^vae: the connected VAE has 4 latent channels .*Load VAE"):
        core.pack_vae(sd_vae)


# ------------------------------------------------------------------------------------------------ CLIP vision
@pytest.fixture(scope="module")
def clip_pair(tiny_models, tiny_core, tmp_path_factory):
    from infinitetalk.encoders.clip import load_clip_vision

    path = tiny_models / "models" / "clip_vision" / "clip_vision_h.safetensors"
    workdir = tmp_path_factory.mktemp("core_clip")
    return load_clip_vision(path, device="cpu", dtype=torch.float32), tiny_core.core_clip_vision(
        path, workdir
    )


def test_core_clip_vision_gives_the_reference_features_on_an_8_bit_image(core, clip_pair):
    own, clip_vision = clip_pair
    size = own.image_size
    pixels = torch.randint(0, 256, (2, 3, size, size), generator=torch.Generator().manual_seed(1))
    image = pixels.float() / 255 * 2 - 1  # already 224 x 224 and 8-bit: ComfyUI's rounding keeps it
    expected, got = own.encode(image), core.pack_clip_vision(clip_vision).obj.encode(image)
    assert got.shape == expected.shape == (2, (size // 14) ** 2 + 1, own.dim)
    assert _rel(got, expected) < 1e-4


def test_core_clip_vision_prepares_any_image_as_the_reference(core, clip_pair):
    own, clip_vision = clip_pair
    image = torch.rand(1, 3, 300, 200, generator=torch.Generator().manual_seed(2)) * 2 - 1
    expected, got = own.encode(image), core.pack_clip_vision(clip_vision).obj.encode(image)
    assert _rel(got, expected) < 1e-4


def test_encode_image_fallback_differs_only_by_its_8_bit_rounding(core, clip_pair):
    """ComfyUI's encode_image (used where its model takes other arguments) rounds the resized pixels to
    8 bits: on this noise image the tiny model's features move by 4 % of their largest value; the pack's
    encoder on the rounded image agrees with it exactly."""
    own, clip_vision = clip_pair
    wrapper = core.pack_clip_vision(clip_vision).obj
    image = torch.rand(1, 3, 300, 200, generator=torch.Generator().manual_seed(2)) * 2 - 1
    resized = wrapper.resized(image)
    got = wrapper.encode_image(resized)
    rounded = (torch.clip(resized * 255, 0, 255).round() / 255) * 2 - 1
    assert _rel(got, own.encode(rounded)) < 1e-4
    assert 1e-3 < _rel(got, own.encode(image)) < 0.1


def test_the_sampler_accepts_comfyui_vae_and_clip_vision(nodes):
    inputs = {i.id: i for i in nodes["InfiniteTalkSampler"].GET_SCHEMA().inputs}
    assert set(inputs["vae"].get_io_type().split(",")) == {"INFINITETALK_VAE", "VAE"}
    assert set(inputs["clip_vision"].get_io_type().split(",")) == {"INFINITETALK_CLIP_VISION", "CLIP_VISION"}


def test_comfyui_0_3_75_loaders_size_umt5_and_clip_vision_from_fixed_configs(tiny_models):
    """Why tests/tiny_core.py exists: 0.3.75's Load CLIP (wan) takes umT5 only when block 23 is 4096 wide (it
    then builds umT5-XXL from a fixed config) and Load CLIP Vision finds no config for a 2-layer tower; its
    VAE loader reads the width from the file. If ComfyUI starts sizing them from the file, this fails and the
    test-server plugin (tests/integration/comfy_plugins/tiny_core_sizes) can go."""
    import comfy.clip_vision
    import comfy.sd
    import comfy.utils

    models = tiny_models / "models"
    umt5 = comfy.utils.load_torch_file(str(models / "text_encoders" / "umt5_xxl_fp16.safetensors"))
    assert comfy.sd.detect_te_model(umt5) not in (comfy.sd.TEModel.T5_XXL, None)  # taken for another T5
    assert comfy.clip_vision.load(str(models / "clip_vision" / "clip_vision_h.safetensors")) is None
    vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(models / "vae" / "wan_2.1_vae.safetensors")))
    assert vae.latent_channels == 16 and vae.latent_dim == 3
