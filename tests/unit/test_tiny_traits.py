"""The tiny files carry the traits of the real ones, and every adapter/audio dimension is distinct, so
that a loader which swapped two of them fails here instead of passing silently (issue #14, item 5)."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
import torch

import infinitetalk.encoders.wav2vec2 as w2v_module
import infinitetalk.loading.dit as dit_module
from infinitetalk.encoders import load_audio_encoder
from infinitetalk.errors import CheckpointError
from infinitetalk.loading.dit import load_dit
from infinitetalk.loading.state_dict import open_checkpoint
from infinitetalk.tiny.dit import TINY_DIT, tiny_path
from infinitetalk.tiny.encoders import TINY_W2V_HEADS, TINY_WAV2VEC2
from infinitetalk.weights import Component

ADAPTER_DIMS = ("audio_intermediate_dim", "audio_output_dim", "audio_context_tokens")
BACKBONE_DIMS = ("dim", "ffn_dim", "text_dim", "clip_dim")


def test_every_adapter_and_audio_dimension_is_distinct():
    features = TINY_DIT.audio_blocks * TINY_DIT.audio_channels
    dims = [
        TINY_DIT.dim,
        TINY_DIT.num_layers,
        TINY_DIT.audio_blocks,
        TINY_DIT.audio_channels,
        features,
        5 * features,  # proj1 input
        8 * features,  # proj1_vf input
        TINY_DIT.audio_intermediate_dim,
        TINY_DIT.audio_output_dim,
        TINY_DIT.audio_context_tokens,
        TINY_WAV2VEC2["intermediate"],
        TINY_WAV2VEC2["conv_dim"],
    ]
    assert len(set(dims)) == len(dims), dims
    assert (TINY_DIT.audio_blocks, TINY_DIT.audio_channels) == (
        TINY_WAV2VEC2["layers"],
        TINY_WAV2VEC2["hidden"],
    )


def _swapping(real, a: str, b: str):
    def swapped(*args, **kwargs):
        cfg = real(*args, **kwargs)
        return replace(cfg, **{a: getattr(cfg, b), b: getattr(cfg, a)})

    return swapped


@pytest.mark.parametrize(
    ("a", "b"), [*itertools.combinations(ADAPTER_DIMS, 2), *itertools.combinations(BACKBONE_DIMS, 2)]
)
def test_a_loader_with_two_dimensions_swapped_fails(tiny_dit_root, monkeypatch, a, b):
    dit = tiny_dit_root / tiny_path(Component.DIT, "comfy_fp16")
    adapter = tiny_dit_root / tiny_path(Component.ADAPTER_SINGLE, "comfy")
    load_dit(dit, adapter, dtype=torch.float32)  # the honest loader loads
    monkeypatch.setattr(dit_module, "infer_dit_config", _swapping(dit_module.infer_dit_config, a, b))
    with pytest.raises(CheckpointError, match="has shape .* expects"):
        load_dit(dit, adapter, dtype=torch.float32)


@pytest.mark.parametrize(
    ("a", "b"), [("hidden_size", "intermediate_size"), ("hidden_size", "num_hidden_layers")]
)
def test_a_wav2vec2_loader_with_two_dimensions_swapped_fails(tiny_root, monkeypatch, a, b):
    single = tiny_root / "models/audio_encoders/wav2vec2-chinese-base_fp16.safetensors"
    load_audio_encoder(single)

    def swapped(*args, **kwargs):
        cfg = real(*args, **kwargs)
        va, vb = getattr(cfg, a), getattr(cfg, b)
        setattr(cfg, a, vb)
        setattr(cfg, b, va)
        return cfg

    real = w2v_module.infer_wav2vec2_config
    monkeypatch.setattr(w2v_module, "infer_wav2vec2_config", swapped)
    with pytest.raises(ValueError):  # a shape mismatch (CheckpointError) or a model that cannot be built
        load_audio_encoder(single)


def test_wav2vec2_conv_width_differs_from_the_hidden_width(tiny_root):
    """The projection maps conv width -> hidden width: equal widths would hide a transposed projection."""
    with open_checkpoint(tiny_root / "weights/chinese-wav2vec2-base/model.safetensors", prefixes=()) as r:
        assert tuple(r.shape("wav2vec2.feature_projection.projection.weight")) == (
            TINY_WAV2VEC2["hidden"],
            TINY_WAV2VEC2["conv_dim"],
        )


@pytest.mark.parametrize("key", ["comfy", "kj_fp16"])
def test_published_fp16_adapters_are_mixed_like_the_real_files(tiny_dit_root, key):
    """audio_proj.* and the 1-D block tensors fp32, every block matrix fp16 (docs/WEIGHTS.md)."""
    path = tiny_dit_root / tiny_path(Component.ADAPTER_SINGLE, key)
    with open_checkpoint(path) as r:
        dtypes = {k: r.dtype(k) for k in r.keys()}
        shapes = {k: r.shape(k) for k in r.keys()}
    fp32 = {k for k, d in dtypes.items() if d == torch.float32}
    assert fp32 == {
        k for k in dtypes if k.startswith("audio_proj.") or (k.startswith("blocks.") and len(shapes[k]) == 1)
    }
    assert {dtypes[k] for k in dtypes if k not in fp32} == {torch.float16}
    assert "audio_proj.proj1.weight" in fp32 and "blocks.0.norm_x.weight" in fp32
    assert dtypes["blocks.0.audio_cross_attn.kv_linear.weight"] == torch.float16


@pytest.mark.parametrize(
    ("component", "key"), [(Component.DIT, "kj_fp8_scaled"), (Component.ADAPTER_SINGLE, "kj_fp8_scaled")]
)
def test_kijai_scale_tensors_are_fp32_scalars(tiny_dit_root, component, key):
    from safetensors import safe_open

    with safe_open(str(tiny_dit_root / tiny_path(component, key)), "pt") as f:
        scales = [k for k in f.keys() if k.endswith(".scale_weight")]
        assert scales
        for k in scales:
            t = f.get_tensor(k)
            assert t.shape == () and t.dtype == torch.float32, k
            assert f.get_tensor(k[: -len("scale_weight")] + "weight").dtype == torch.float8_e4m3fn


def test_kijai_wav2vec2_holds_the_pretraining_heads(tiny_root):
    """Kijai's file is the whole Wav2Vec2ForPreTraining state dict (190,115,368 bytes in fp16)."""
    h, c = TINY_W2V_HEADS, TINY_WAV2VEC2
    with open_checkpoint(
        tiny_root / "models/audio_encoders/wav2vec2-chinese-base_fp16.safetensors", prefixes=()
    ) as r:
        shapes = {k: tuple(r.shape(k)) for k in r.keys()}
        assert {r.dtype(k) for k in r.keys()} == {torch.float16}
    gv = h["groups"] * h["entries"]
    assert shapes["quantizer.codevectors"] == (1, gv, h["codevector_dim"] // h["groups"])
    assert shapes["quantizer.weight_proj.weight"] == (gv, c["conv_dim"])
    assert shapes["project_hid.weight"] == (h["proj_dim"], c["hidden"])
    assert shapes["project_q.weight"] == (h["proj_dim"], h["codevector_dim"])
    assert all(k.startswith(("wav2vec2.", "quantizer.", "project_")) for k in shapes)
