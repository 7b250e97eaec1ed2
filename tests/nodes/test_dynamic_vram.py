"""The Model Loader, LoRA and block swap on a ComfyUI whose layers behave like the newest ``comfy.ops`` with
dynamic VRAM on (issue #16): ``comfy.ops.disable_weight_init`` / ``manual_cast`` are replaced by the stand-in
of ``tests/standin_comfy_ops.py`` (weights created only in ``_load_from_state_dict``, ``run_every_op`` calling
ComfyUI's real interrupt check), and ``comfy.model_patcher.CoreModelPatcher`` by a dynamic patcher stand-in.
CI's ComfyUI 0.3.75 runs ``--cpu``, where dynamic VRAM is off: without these stand-ins nothing would see it.
"""

from __future__ import annotations

import importlib

import pytest
import torch

from tests.standin_comfy_ops import make_operations

from .conftest import PACK_MODULE

DIT = "wan2.1_i2v_480p_14B_fp16.safetensors"
ADAPTER = "wan2.1_infiniteTalk_single_fp16.safetensors"


def module(name: str):
    return importlib.import_module(f"{PACK_MODULE}.{name}")


@pytest.fixture()
def dynamic_ops(pack, monkeypatch):
    import comfy.model_management as mm
    import comfy.ops

    plain = make_operations(check_interrupt=mm.throw_exception_if_processing_interrupted)
    cast = make_operations(check_interrupt=mm.throw_exception_if_processing_interrupted, cast=True)
    monkeypatch.setattr(comfy.ops, "disable_weight_init", plain)
    monkeypatch.setattr(comfy.ops, "manual_cast", cast)
    return plain, cast


def load(nodes, quantization="none", block_swap=0):
    return nodes["InfiniteTalkModelLoader"].execute(DIT, ADAPTER, "fp32", quantization, block_swap).args[0]


def _inputs():
    from infinitetalk.tiny.dit import TINY_DIT

    g = torch.Generator().manual_seed(0)
    return (
        torch.randn(1, 16, 2, 4, 6, generator=g), torch.tensor([500.0]), torch.randn(1, 7, TINY_DIT.text_dim, generator=g),
        torch.randn(1, 257, TINY_DIT.clip_dim, generator=g), torch.randn(1, 20, 2, 4, 6, generator=g),
        torch.randn(1, 1, 5, 5, TINY_DIT.audio_blocks, TINY_DIT.audio_channels, generator=g),
    )  # fmt: skip


@pytest.mark.parametrize("quantization", ["none", "fp8_e4m3fn", "quanto_int8"])
def test_model_loader_with_dynamic_vram_layers(nodes, tiny_models, dynamic_ops, quantization):
    plain_ops, cast_ops = dynamic_ops
    managed = load(nodes, quantization)
    dit = managed.patcher.model
    ops = cast_ops if quantization == "fp8_e4m3fn" else plain_ops
    if quantization == "quanto_int8":
        assert "blocks.0.self_attn.q" in module("infinitetalk.quant").quantized_modules(dit)
        assert type(dit.blocks[0].norm_x) is not ops.LayerNorm and isinstance(dit.patch_embedding, ops.Conv3d)
    else:
        assert type(dit.blocks[0].self_attn.q) is ops.Linear
    reference = module("infinitetalk.loading.dit").load_dit(
        tiny_models / "models/diffusion_models" / DIT,
        tiny_models / "models/model_patches" / ADAPTER,
        dtype=torch.float8_e4m3fn if quantization == "fp8_e4m3fn" else torch.float32,
        operations=module("infinitetalk.model.ops").casting_operations,
    )
    if quantization == "quanto_int8":
        module("infinitetalk.quant").quantize_dit(reference, "int8")
    reference.compute_dtype = torch.float32  # the node's precision
    with torch.no_grad():
        assert torch.equal(dit(*_inputs()), reference(*_inputs()))


def test_registered_with_the_running_comfyuis_patcher(nodes, tiny_models, dynamic_ops, monkeypatch):
    """CoreModelPatcher where ComfyUI has it (newer: ModelPatcherDynamic with dynamic VRAM), else ModelPatcher;
    a dynamic patcher streams weights itself, so block swap steps aside and the working memory is reserved."""
    import comfy.model_management as mm
    import comfy.model_patcher

    assert type(load(nodes).patcher) is comfy.model_patcher.ModelPatcher  # 0.3.75: no CoreModelPatcher

    class DynamicPatcher(comfy.model_patcher.ModelPatcher):
        def is_dynamic(self):
            return True

    archived = []
    monkeypatch.setattr(comfy.model_patcher, "CoreModelPatcher", DynamicPatcher, raising=False)
    monkeypatch.setattr(mm, "archive_model_dtypes", lambda m: archived.append(m), raising=False)
    managed = load(nodes, "fp8_e4m3fn", block_swap=2)
    models = module("nodes._models")
    assert type(managed.patcher) is DynamicPatcher and models.is_dynamic(managed)
    assert archived == [managed.patcher.model]  # the stored dtypes (fp8) are recorded for ComfyUI's casts
    config = module("infinitetalk.pipeline").GenerationConfig(frame_num=5)
    run = models.prepare_dit(managed, config, 64, 64, 1)
    assert run.swap is None and run.memory_required == run.estimate.working > 0


def test_lora_and_block_swap_with_dynamic_vram_layers(nodes, tiny_models, dynamic_ops, comfy, tmp_path):
    from safetensors.torch import save_file

    models = module("nodes._models")
    managed = load(nodes)
    key = "blocks.1.ffn.0.weight"
    base = managed.patcher.model.state_dict()[key].clone()
    g = torch.Generator().manual_seed(0)
    down, up = torch.randn(2, base.shape[1], generator=g), torch.randn(base.shape[0], 2, generator=g)
    save_file({"diffusion_model.blocks.1.ffn.0.lora_down.weight": down,
               "diffusion_model.blocks.1.ffn.0.lora_up.weight": up}, str(tmp_path / "dyn_lora.safetensors"))  # fmt: skip
    comfy.add_model_folder_path("loras", str(tmp_path))
    patched = nodes["InfiniteTalkLoraLoader"].execute(managed, "dyn_lora.safetensors", 0.5).args[0]
    models.load(patched)  # ComfyUI patches the weights the stand-in layers created at load time
    weight = patched.patcher.model.state_dict()[key]
    torch.testing.assert_close(weight, base + 0.5 * up @ down, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        patched_out = patched.patcher.model(*_inputs())
    models.load(managed)
    assert torch.equal(managed.patcher.model.state_dict()[key], base)
    placement = models.BlockSwapPlacement(patched, blocks_to_swap=2)
    placement.activate()
    with torch.no_grad():
        assert torch.equal(patched.patcher.model(*_inputs()), patched_out)
    placement.release()
    assert torch.equal(managed.patcher.model.state_dict()[key], base)


def test_cancel_interrupts_inside_a_model_call(nodes, tiny_models, dynamic_ops):
    """run_every_op: ComfyUI's Cancel stops the DiT at its next layer, not at the end of the step."""
    import comfy.model_management as mm

    dit = load(nodes).patcher.model
    plain_ops, _ = dynamic_ops
    before = plain_ops.state.ops_run
    mm.interrupt_current_processing(True)
    try:
        with pytest.raises(mm.InterruptProcessingException), torch.no_grad():
            dit(*_inputs())
    finally:
        mm.interrupt_current_processing(False)
    assert plain_ops.state.ops_run - before == 1  # stopped at the first layer
