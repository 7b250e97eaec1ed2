"""The DiT built with layers that behave like ComfyUI's newest dynamic-VRAM ``comfy.ops`` (issue #16):
``Linear`` created without weights, its tensors arriving only through its own ``_load_from_state_dict``,
every op calling ``run_every_op`` (the stand-in is ``tests/standin_comfy_ops.py``).

Each test compares with the same model built from plain ``torch.nn`` layers: loading must give the same
tensors, and running (a sampler step, LoRA, block swap, fp8 storage, quanto) the same outputs, bit for bit.
Before the loader went through the modules' own ``load_state_dict`` the first test failed with
"Missing key(s) in state_dict" for every layout (the reported bug).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from infinitetalk.build import ModelOptions, build_dit
from infinitetalk.errors import CheckpointError
from infinitetalk.loading.dit import load_dit
from infinitetalk.lora import merge_lora
from infinitetalk.model.ops import casting_operations
from infinitetalk.offload import place_model
from infinitetalk.pipeline import StillImage
from infinitetalk.quant import quantized_modules
from infinitetalk.sinks import MemorySink
from infinitetalk.tiny.dit import DIT_FILES, TINY_DIT, file_tensors, random_source
from tests.standin_comfy_ops import StandInInterrupt, make_operations

from .test_build import inputs
from .test_pipeline import small_config, test_image, tiny_audio, tiny_pipeline

DM, MP = "models/diffusion_models", "models/model_patches"
LAYOUTS = [
    ("weights/Wan2.1-I2V-14B-480P", "weights/InfiniteTalk/single/infinitetalk.safetensors"),
    (f"{DM}/wan2.1_i2v_480p_14B_fp16.safetensors", f"{MP}/wan2.1_infiniteTalk_single_fp16.safetensors"),
    (f"{DM}/wan2.1_i2v_480p_14B_bf16.safetensors", f"{MP}/wan2.1_infiniteTalk_multi_fp16.safetensors"),
    (  # Kijai's fp8-scaled DiT and adapter (names from the tiny generator, which follows the registry)
        next(f.path for f in DIT_FILES if f.content == "dit" and f.storage == "fp8_scaled"),
        next(f.path for f in DIT_FILES if f.content == "adapter" and f.storage == "fp8_scaled"),
    ),
    (f"{DM}/wan2.1_i2v_480p_14B_infinitetalk_single_merged_fp16.safetensors", None),
]


def files(root: Path, dit: str, adapter: str | None) -> SimpleNamespace:
    return SimpleNamespace(dit=root / dit, adapter=root / adapter if adapter else None)


@pytest.mark.parametrize(("dit", "adapter"), LAYOUTS, ids=lambda p: Path(p).name if p else "merged")
def test_every_layout_loads_into_layers_without_weights(tiny_dit_root, dit, adapter):
    ops = make_operations()
    probe = ops.Linear(4, 3, device="meta")
    assert probe.weight is None and probe.bias is None  # the stand-in really creates nothing up front
    f = files(tiny_dit_root, dit, adapter)
    model = load_dit(f.dit, f.adapter, dtype=torch.float32, operations=ops)
    plain = load_dit(f.dit, f.adapter, dtype=torch.float32)
    assert type(model.blocks[0].ffn[0]) is ops.Linear
    got, want = model.state_dict(), plain.state_dict()
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) and got[k].dtype == want[k].dtype for k in want)
    args = inputs(0)
    before = ops.state.ops_run
    with torch.no_grad():
        assert torch.equal(model(**args), plain(**args))
    assert ops.state.ops_run - before > 15 * TINY_DIT.num_layers  # every layer went through run_every_op


def test_shapes_are_still_checked_when_the_layers_check_nothing(tmp_path):
    """The stand-in assigns whatever it is given (like ComfyUI's lazy loader): the loader checks shapes."""
    source = random_source(TINY_DIT, seed=0)
    merged = next(f for f in DIT_FILES if f.content == "merged")
    tensors = file_tensors(merged, source)
    tensors["blocks.1.ffn.2.weight"] = tensors["blocks.1.ffn.2.weight"][:, :-8].contiguous()
    save_file(tensors, str(tmp_path / "odd.safetensors"))
    with pytest.raises(
        CheckpointError, match=r"'blocks.1.ffn.2.weight' has shape \(256, 504\) but the model"
    ):
        load_dit(tmp_path / "odd.safetensors", dtype=torch.float32, operations=make_operations())


@pytest.mark.parametrize("quantization", ["fp8_e4m3fn", "quanto_int8"])
def test_fp8_storage_and_quanto_with_dynamic_layers(tiny_dit_root, quantization):
    """fp8 storage through the stand-in's manual_cast behaviour equals the library's casting layers;
    quanto replaces the stand-in's linears exactly as it replaces torch.nn's."""
    f = files(tiny_dit_root, *LAYOUTS[1])
    options = ModelOptions(precision="fp32", quantization=quantization)
    ops = make_operations(cast=quantization == "fp8_e4m3fn")
    model = build_dit(f, options, operations=ops)
    plain = build_dit(f, options, operations=casting_operations if quantization == "fp8_e4m3fn" else None)
    if quantization == "fp8_e4m3fn":
        assert model.blocks[1].self_attn.o.weight.dtype == torch.float8_e4m3fn
    else:
        assert quantized_modules(model) == quantized_modules(plain) != []
    args = inputs(1)
    with torch.no_grad():
        assert torch.equal(model(**args), plain(**args))


def test_lora_and_block_swap_with_dynamic_layers(tiny_dit_root, tmp_path):
    f = files(tiny_dit_root, *LAYOUTS[1])
    model = load_dit(f.dit, f.adapter, dtype=torch.float32, operations=make_operations())
    plain = load_dit(f.dit, f.adapter, dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    lora = {
        "diffusion_model.blocks.1.ffn.0.lora_down.weight": torch.randn(2, TINY_DIT.dim, generator=g),
        "diffusion_model.blocks.1.ffn.0.lora_up.weight": torch.randn(TINY_DIT.ffn_dim, 2, generator=g),
    }
    assert merge_lora(model, lora, 0.5) == merge_lora(plain, lora, 0.5) == 1
    args = inputs(2)
    with torch.no_grad():
        want = plain(**args)
        assert torch.equal(model(**args), want)
        swap = place_model(model, "cpu", blocks_to_swap=TINY_DIT.num_layers)
        assert torch.equal(model(**args), want)
        swap.remove()


def test_a_sampler_run_with_dynamic_layers_is_the_plain_run(tiny_root):
    """One window, one step through the real pipeline (tiny VAE, CLIP, umT5): same frames."""
    wan = tiny_root / "weights/Wan2.1-I2V-14B-480P"
    adapter = tiny_root / "weights/InfiniteTalk/single/infinitetalk.safetensors"
    pipe = tiny_pipeline(tiny_root)
    cfg = small_config(size="32x32", steps=1, frame_num=5, motion_frame=1, mode="clip")
    plain = MemorySink()
    pipe.generate(StillImage(test_image(48, 64)), tiny_audio(5), cfg, plain)
    ops = make_operations()
    pipe.dit = load_dit(wan, adapter, dtype=torch.float32, operations=ops)
    dynamic = MemorySink()
    pipe.generate(StillImage(test_image(48, 64)), tiny_audio(5), cfg, dynamic)
    assert dynamic.frames.shape == (5, 32, 32, 3)
    assert torch.equal(torch.from_numpy(dynamic.frames), torch.from_numpy(plain.frames))
    assert ops.state.ops_run > 0

    # Cancel pressed while the model runs: run_every_op raises inside the model call, the pipeline lets the
    # host's exception through (ComfyUI turns it into "interrupted"), and nothing half-made is written.
    ops.interrupt_after(10)
    cancelled = MemorySink()
    with pytest.raises(StandInInterrupt, match="interrupted at op"):
        pipe.generate(StillImage(test_image(48, 64)), tiny_audio(5), cfg, cancelled)
    assert cancelled.chunks == []
