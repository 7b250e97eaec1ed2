"""GGUF through the Model Loader and ComfyUI's model management: the loader lists the GGUF files, the DiT keeps
its quantised blocks (ComfyUI counts their real bytes), and a LoRA node's patches ride beside the GGUF weights
(applied to the dequantised weight at each call, removed when the unpatched model loads again)."""

from __future__ import annotations

import importlib

import pytest
import torch
from safetensors.torch import save_file

from .conftest import PACK_MODULE

pytest.importorskip("gguf")

DIT = "wan2.1-i2v-14b-480p-Q4_K_M.gguf"
ADAPTER = "Wan2_1-InfiniteTalk_Single_Q8.gguf"


def module(name: str):
    return importlib.import_module(f"{PACK_MODULE}.{name}")


@pytest.fixture(scope="module")
def gguf_models(comfy, tiny_models, tmp_path_factory):
    trees = module("infinitetalk.tiny.gguf").write_gguf_trees(tiny_models, tmp_path_factory.mktemp("gguf"))
    for folder in ("diffusion_models", "text_encoders"):
        comfy.add_model_folder_path(folder, str(trees["gguf"] / "models" / folder))
    return trees


@pytest.fixture(scope="module")
def gguf_model(nodes, gguf_models):
    return nodes["InfiniteTalkModelLoader"].execute(DIT, ADAPTER, "fp32", "none", 0).args[0]


def test_loader_lists_gguf_files(nodes, gguf_models):
    info = nodes["InfiniteTalkModelLoader"].INPUT_TYPES()
    inputs = {**info["required"], **info.get("optional", {})}
    names = [str(v) for spec in inputs.values() if isinstance(spec, (list, tuple)) and spec for v in
             (spec[1].get("options", []) if len(spec) > 1 and isinstance(spec[1], dict) else [])]  # fmt: skip
    assert DIT in names and ADAPTER in names


def test_model_loader_keeps_gguf_blocks_and_comfy_counts_real_bytes(gguf_model):
    import comfy.model_management as mm

    GGUFWeight = module("infinitetalk.gguf_tensor").GGUFWeight
    dit = gguf_model.patcher.model
    weight = dit.blocks[0].self_attn.q.weight
    assert isinstance(weight, GGUFWeight) and weight.qtype == "Q4_K"
    assert type(gguf_model.patcher).__name__.startswith("GGUF")
    stored = sum(t.numel() * t.element_size() for t in dit.state_dict().values())
    assert mm.module_size(dit) == stored and gguf_model.patcher.model_size() == stored
    dense = sum(
        module("infinitetalk.gguf_tensor").real_shape(t).numel() * 4 for t in dit.state_dict().values()
    )
    assert stored < dense / 3  # Q4_K blocks: about 1/7 of fp32 for those weights


def test_lora_node_patches_gguf_weights_beside_them(nodes, comfy, gguf_model, tmp_path):
    models = module("nodes._models")
    q = gguf_model.patcher.model.blocks[0].self_attn.q
    gen = torch.Generator().manual_seed(0)
    down, up = torch.randn(2, 256, generator=gen) * 0.1, torch.randn(256, 2, generator=gen) * 0.1
    save_file({"diffusion_model.blocks.0.self_attn.q.lora_down.weight": down,
               "diffusion_model.blocks.0.self_attn.q.lora_up.weight": up}, str(tmp_path / "gguf_lora.safetensors"))  # fmt: skip
    comfy.add_model_folder_path("loras", str(tmp_path))
    x = torch.randn(3, 256, generator=gen)
    models.load(gguf_model)
    base = q(x)
    patched = nodes["InfiniteTalkLoraLoader"].execute(gguf_model, "gguf_lora.safetensors", 0.5).args[0]
    models.load(patched)
    assert type(q.weight).__name__ == "GGUFWeight"  # still the quantised blocks
    want = base + 0.5 * torch.nn.functional.linear(x, up @ down)
    torch.testing.assert_close(q(x), want, rtol=1e-4, atol=1e-4)
    models.load(gguf_model)  # the unpatched model: the patch comes off
    torch.testing.assert_close(q(x), base, rtol=0, atol=0)
