"""Loaders through ComfyUI's model management: the tiny DiT, LoRA as ComfyUI weight patches (applied on load,
removed when the unpatched model loads again), and the block-swap placement's patch/unpatch round trip."""

from __future__ import annotations

import importlib

import pytest
import torch
from safetensors.torch import save_file

from .conftest import PACK_MODULE

DIT = "wan2.1_i2v_480p_14B_fp16.safetensors"
ADAPTER = "wan2.1_infiniteTalk_single_fp16.safetensors"
KEY = "blocks.0.self_attn.q.weight"


@pytest.fixture(scope="module")
def model(nodes, tiny_models):
    return nodes["InfiniteTalkModelLoader"].execute(DIT, ADAPTER, "fp32", "none").args[0]


@pytest.fixture(scope="module")
def lora_name(comfy, model, tmp_path_factory):
    """A rank-2 LoRA on one projection, in the lightx2v key spelling; returns (file name, expected delta)."""
    folder = tmp_path_factory.mktemp("loras")
    out_f, in_f = model.patcher.model.state_dict()[KEY].shape
    gen = torch.Generator().manual_seed(0)
    down, up = torch.randn(2, in_f, generator=gen), torch.randn(out_f, 2, generator=gen)
    save_file(
        {
            "diffusion_model.blocks.0.self_attn.q.lora_down.weight": down,
            "diffusion_model.blocks.0.self_attn.q.lora_up.weight": up,
            "diffusion_model.blocks.0.self_attn.q.alpha": torch.tensor(2.0),
        },
        str(folder / "tiny_lora.safetensors"),
    )
    comfy.add_model_folder_path("loras", str(folder))
    return "tiny_lora.safetensors", up @ down  # alpha / rank = 1


def test_lora_patches_apply_on_load_and_come_off(nodes, model, lora_name):
    models = importlib.import_module(f"{PACK_MODULE}.nodes._models")
    name, delta = lora_name
    base = model.patcher.model.state_dict()[KEY].clone()
    patched = nodes["InfiniteTalkLoraLoader"].execute(model, name, 0.5).args[0]
    assert patched.patcher.model is model.patcher.model  # same weights in memory, separate patch lists
    assert patched.loras[-1][1] == 0.5
    models.load(patched)
    torch.testing.assert_close(
        model.patcher.model.state_dict()[KEY], base + 0.5 * delta, atol=1e-5, rtol=1e-5
    )
    models.load(model)  # the unpatched model: ComfyUI restores the weights
    torch.testing.assert_close(model.patcher.model.state_dict()[KEY], base, atol=0, rtol=0)


def test_lora_for_another_model_is_a_clear_error(nodes, model, comfy, tmp_path):
    save_file(
        {
            "lora_unet_down_blocks_0.lora_down.weight": torch.zeros(2, 4),
            "lora_unet_down_blocks_0.lora_up.weight": torch.zeros(4, 2),
        },
        str(tmp_path / "sdxl_lora.safetensors"),
    )
    comfy.add_model_folder_path("loras", str(tmp_path))
    with pytest.raises(ValueError, match="matches no weight of the InfiniteTalk DiT"):
        nodes["InfiniteTalkLoraLoader"].execute(model, "sdxl_lora.safetensors", 1.0)


def test_block_swap_placement_round_trip(nodes, model, lora_name):
    models = importlib.import_module(f"{PACK_MODULE}.nodes._models")
    name, delta = lora_name
    models.load(model)
    base = model.patcher.model.state_dict()[KEY].clone()
    patched = nodes["InfiniteTalkLoraLoader"].execute(model, name, 1.0).args[0]
    config = importlib.import_module(f"{PACK_MODULE}.infinitetalk.pipeline").GenerationConfig(frame_num=5)
    assert models.prepare_dit(patched, config, 64, 64, 1).swap is None  # on the CPU: ComfyUI places the model
    placement = models.BlockSwapPlacement(patched, blocks_to_swap=1)  # CPU device: transfers are no-ops
    placement.activate()
    placement.activate()  # idempotent: called before every window
    torch.testing.assert_close(model.patcher.model.state_dict()[KEY], base + delta, atol=1e-5, rtol=1e-5)
    placement.release()
    torch.testing.assert_close(model.patcher.model.state_dict()[KEY], base, atol=0, rtol=0)


@pytest.mark.parametrize("quantization", ["fp8_e4m3fn", "quanto_int8"])
def test_quantized_loads(nodes, tiny_models, quantization):
    dit = nodes["InfiniteTalkModelLoader"].execute(DIT, ADAPTER, "fp32", quantization).args[0].patcher.model
    weight = dit.blocks[0].self_attn.q.weight
    if quantization == "fp8_e4m3fn":
        assert weight.dtype == torch.float8_e4m3fn
        assert dit.head.head.weight.dtype == torch.float32  # outside the blocks: untouched
    else:
        quant = importlib.import_module(f"{PACK_MODULE}.infinitetalk.quant")
        names = quant.quantized_modules(dit)
        assert "blocks.0.self_attn.q" in names and not any(n.startswith("head") for n in names)
    assert dit.compute_dtype == torch.float32
