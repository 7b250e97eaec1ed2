"""Model Loader inputs (one set of names with the command line) and the sampler-time memory plan."""

from __future__ import annotations

import importlib

import pytest
import torch

from .conftest import PACK_MODULE

DIT = "wan2.1_i2v_480p_14B_fp16.safetensors"
ADAPTER = "wan2.1_infiniteTalk_single_fp16.safetensors"


def module(name: str):
    return importlib.import_module(f"{PACK_MODULE}.{name}")


def test_model_loader_inputs_match_the_library(nodes):
    info = nodes["InfiniteTalkModelLoader"].INPUT_TYPES()
    inputs = {**info["required"], **info.get("optional", {})}
    assert inputs["quantization"][1]["options"] == list(module("infinitetalk.build").QUANTIZATIONS)
    swap = inputs["block_swap"][1]
    assert (swap["default"], swap["min"], swap["max"]) == (-1, -1, 40) and "auto" in swap["tooltip"]
    assert inputs["compile"][0] == "BOOLEAN" and inputs["compile"][1]["default"] is False
    assert inputs["attention"][1]["options"] == list(module("infinitetalk.attention").BACKENDS)
    assert all(inputs[k][1].get("advanced") is True for k in ("block_swap", "attention", "compile"))


def test_attention_kernel_is_checked_before_any_weight_is_read(nodes, tiny_models, monkeypatch):
    reads = []
    monkeypatch.setattr(module("infinitetalk.loading.dit"), "_load_weights", lambda *a, **k: reads.append(1))
    with pytest.raises(
        ValueError, match="attention backend 'sage' runs on CUDA only but the model computes on cpu"
    ):
        nodes["InfiniteTalkModelLoader"].execute(DIT, ADAPTER, "fp32", "none", -1, "sage")
    assert reads == []


def test_compile_option_compiles_the_blocks(nodes, tiny_models):
    managed = nodes["InfiniteTalkModelLoader"].execute(DIT, ADAPTER, "fp32", "none", 0, "auto", True).args[0]
    dit = managed.patcher.model
    assert managed.plan.options.compile is True and all(
        hasattr(b.forward, "_torchdynamo_orig_callable") for b in dit.blocks
    )


@pytest.fixture()
def on_a_gpu(monkeypatch):
    """Make the DiT look like it runs on a CUDA card with ``free`` bytes (no GPU needed: nothing is moved)."""
    import comfy.model_management as mm

    state = {"free": 0}
    monkeypatch.setattr(mm, "get_free_memory", lambda device=None, torch_free_too=False: state["free"])
    monkeypatch.setattr(mm, "current_loaded_models", [])

    def place(managed):
        managed.patcher.load_device = torch.device("cuda", 0)
        return managed

    return state, place


def test_sampler_plan_resolves_auto_and_reserves_working_memory(nodes, tiny_models, on_a_gpu):
    """block_swap -1 (auto) with room for everything: no swap, ComfyUI loads the model and is asked to keep
    the working memory free. Less room: the tiny DiT's 2 blocks gain nothing from swapping (the running and
    the prefetched block are both on the device), so auto refuses in one line with the fix. A fixed count
    gives the sampler a block-swap placement."""
    state, place = on_a_gpu
    models, preflight = module("nodes._models"), module("infinitetalk.preflight")
    config = module("infinitetalk.pipeline").GenerationConfig(frame_num=5, text_scale=1.0)
    managed = place(nodes["InfiniteTalkModelLoader"].execute(DIT, ADAPTER, "fp32", "none", -1).args[0])
    cfg, run = managed.patcher.model.config, preflight.RunShape(64, 64, 5)
    need = preflight.estimate(cfg, torch.float32, "none", run, 0, host_copy=True).budget()
    state["free"] = need
    plan = models.prepare_dit(managed, config, 64, 64, 1)
    assert plan.swap is None and plan.memory_required == plan.estimate.working > 0
    state["free"] = need - 1
    with pytest.raises(
        ValueError, match=r"\(64x64, 5 frames, none, block_swap 2\) but .* is free: use quantization"
    ):
        models.prepare_dit(managed, config, 64, 64, 1)
    fixed = place(nodes["InfiniteTalkModelLoader"].execute(DIT, ADAPTER, "fp32", "none", 2).args[0])
    state["free"] = need
    plan = models.prepare_dit(fixed, config, 64, 64, 1)
    assert (
        plan.swap is not None and plan.swap.blocks_to_swap == 2 and plan.swap.swap is None
    )  # not yet active
