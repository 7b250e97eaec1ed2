"""LoRA merging: lightx2v / FusionX key formats, alpha, diff/diff_b, fp8 weights, quantised refusal."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from infinitetalk.errors import CheckpointError, InputError
from infinitetalk.lora import lora_deltas, lora_key_map, merge_lora, merge_loras, parse_lora_spec
from tests.needs import need_module


class Attn(nn.Module):
    def __init__(self):
        super().__init__()
        self.q = nn.Linear(8, 8)
        self.k = nn.Linear(8, 8)


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.self_attn = Attn()
        self.norm3 = nn.LayerNorm(8)
        self.modulation = nn.Parameter(torch.zeros(1, 6, 8))


class TinyDiT(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.patch_embedding = nn.Conv3d(4, 8, (1, 2, 2), stride=(1, 2, 2))
        self.blocks = nn.ModuleList([Block(), Block()])


def _pair(rank=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rank, 8, generator=g), torch.randn(8, rank, generator=g)


def test_lightx2v_format_with_alpha_and_scale(tmp_path):
    model, down, up = TinyDiT(), *_pair()
    before = model.blocks[0].self_attn.q.weight.clone()
    sd = {
        "diffusion_model.blocks.0.self_attn.q.lora_down.weight": down,
        "diffusion_model.blocks.0.self_attn.q.lora_up.weight": up,
        "diffusion_model.blocks.0.self_attn.q.alpha": torch.tensor(1.0),  # alpha / rank = 0.5
    }
    save_file(sd, tmp_path / "l.safetensors")
    assert merge_lora(model, tmp_path / "l.safetensors", scale=0.8) == 1
    expected = before + up @ down * 0.8 * 0.5
    assert torch.allclose(model.blocks[0].self_attn.q.weight, expected, atol=1e-6)
    assert torch.equal(model.blocks[0].self_attn.k.weight, TinyDiT().blocks[0].self_attn.k.weight)


def test_kohya_underscores_peft_ab_and_no_alpha():
    model, (down, up), (down2, up2) = TinyDiT(), _pair(seed=1), _pair(seed=2)
    ref = TinyDiT()
    sd = {
        "lora_unet_blocks_1_self_attn_k.lora_down.weight": down,
        "lora_unet_blocks_1_self_attn_k.lora_up.weight": up,
        "blocks.0.self_attn.q.lora_A.weight": down2,
        "blocks.0.self_attn.q.lora_B.weight": up2,
    }
    assert merge_lora(model, sd) == 2
    assert torch.allclose(
        model.blocks[1].self_attn.k.weight, ref.blocks[1].self_attn.k.weight + up @ down, atol=1e-6
    )
    assert torch.allclose(
        model.blocks[0].self_attn.q.weight, ref.blocks[0].self_attn.q.weight + up2 @ down2, atol=1e-6
    )


@pytest.mark.parametrize(
    "name",
    [
        "blocks.1.self_attn.k",
        "diffusion_model.blocks.1.self_attn.k",
        "model.diffusion_model.blocks.1.self_attn.k",
        "base_model.model.blocks.1.self_attn.k",
        "transformer.blocks.1.self_attn.k",
        "lora_unet_blocks_1_self_attn_k",
    ],
)
def test_every_spelling_merges_here_and_is_in_the_hosts_key_map(name):
    """One list of spellings: what merge_lora reads is what ComfyUI's LoRA loader is told (lora_key_map)."""
    model, ref, (down, up) = TinyDiT(), TinyDiT(), _pair(seed=3)
    assert lora_key_map(model.state_dict())[name] == "blocks.1.self_attn.k.weight"
    assert merge_lora(model, {f"{name}.lora_down.weight": down, f"{name}.lora_up.weight": up}) == 1
    assert torch.allclose(
        model.blocks[1].self_attn.k.weight, ref.blocks[1].self_attn.k.weight + up @ down, atol=1e-6
    )
    assert "blocks.1.self_attn.k.bias" not in lora_key_map(model.state_dict()).values()  # weights only


def test_fusionx_diff_and_diff_b_and_bare_parameter():
    model, ref = TinyDiT(), TinyDiT()
    sd = {
        "diffusion_model.blocks.0.norm3.diff": torch.full((8,), 0.5),
        "diffusion_model.blocks.0.norm3.diff_b": torch.full((8,), -1.0),
        "diffusion_model.blocks.1.modulation.diff": torch.ones(1, 6, 8),
    }
    assert merge_lora(model, sd, scale=2.0) == 3
    assert torch.allclose(model.blocks[0].norm3.weight, ref.blocks[0].norm3.weight + 1.0)
    assert torch.allclose(model.blocks[0].norm3.bias, ref.blocks[0].norm3.bias - 2.0)
    assert torch.allclose(model.blocks[1].modulation, ref.blocks[1].modulation + 2.0)


def test_conv_lora_reshaped():
    model, ref = TinyDiT(), TinyDiT()
    g = torch.Generator().manual_seed(3)
    down, up = torch.randn(2, 4, 1, 2, 2, generator=g), torch.randn(8, 2, 1, 1, 1, generator=g)
    merge_lora(
        model,
        {
            "diffusion_model.patch_embedding.lora_down.weight": down,
            "diffusion_model.patch_embedding.lora_up.weight": up,
        },
    )
    delta = (up.flatten(1) @ down.flatten(1)).view(8, 4, 1, 2, 2)
    assert torch.allclose(model.patch_embedding.weight, ref.patch_embedding.weight + delta, atol=1e-6)


def test_two_entries_on_one_weight_add_up():
    model, (down, up) = TinyDiT(), _pair(seed=4)
    sd = {
        "blocks.0.self_attn.q.lora_down.weight": down,
        "blocks.0.self_attn.q.lora_up.weight": up,
        "blocks.0.self_attn.q.diff": torch.ones(8, 8),
    }
    deltas, unmatched = lora_deltas(sd, model, 1.0)
    assert unmatched == [] and torch.allclose(deltas["blocks.0.self_attn.q.weight"], up @ down + 1)


def test_float8_weight_dequant_merge_requant():
    if not hasattr(torch, "float8_e4m3fn"):
        pytest.skip("no float8 in this torch")
    model = TinyDiT()
    lin = model.blocks[0].self_attn.q
    full = lin.weight.detach().clone()
    lin.weight = nn.Parameter(full.to(torch.float8_e4m3fn), requires_grad=False)
    lin.register_buffer("scale_weight", torch.tensor(1.0))
    merge_lora(model, {"blocks.0.self_attn.q.diff": torch.full((8, 8), 0.25)})
    assert lin.weight.dtype == torch.float8_e4m3fn
    merged = lin.weight.float() * lin.scale_weight
    assert (merged - (full + 0.25)).abs().max() < 0.07  # e4m3 step at |w|<=2 is <= 0.125: half-step rounding


def test_quantised_weights_are_refused():
    quanto = need_module("optimum.quanto", "pip install -r requirements.txt (optimum-quanto)")
    model = TinyDiT()
    quanto.quantize(model.blocks[0], weights=quanto.qint8)
    quanto.freeze(model.blocks[0])
    with pytest.raises(CheckpointError, match="quantis"):
        merge_lora(model, {"blocks.0.self_attn.q.diff": torch.ones(8, 8)})


def test_mismatched_and_unknown_keys():
    model = TinyDiT()
    with pytest.raises(CheckpointError, match="shape"):
        merge_lora(model, {"blocks.0.self_attn.q.diff": torch.ones(4, 4)})
    with pytest.raises(CheckpointError, match="no key matches"):
        merge_lora(model, {"unet.down.0.lora_down.weight": torch.ones(2, 8)})
    with pytest.raises(InputError, match="does not exist"):
        merge_lora(model, "/nonexistent/lora.safetensors")


def test_lora_spec_parsing(tmp_path):
    assert parse_lora_spec("a/b.safetensors") == ("a/b.safetensors", 1.0)
    assert parse_lora_spec("a/b.safetensors:0.7") == ("a/b.safetensors", 0.7)
    assert parse_lora_spec("C:\\loras\\x.safetensors") == ("C:\\loras\\x.safetensors", 1.0)
    assert parse_lora_spec("C:\\loras\\x.safetensors:2") == ("C:\\loras\\x.safetensors", 2.0)
    model, (down, up) = TinyDiT(), _pair(seed=5)
    save_file(
        {"blocks.0.self_attn.q.lora_down.weight": down, "blocks.0.self_attn.q.lora_up.weight": up},
        tmp_path / "a.safetensors",
    )
    assert merge_loras(model, [(str(tmp_path / "a.safetensors"), 1.0)] * 2) == 2
