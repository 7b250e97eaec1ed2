"""Tiny random DiT + InfiniteTalk adapter checkpoints in every real file layout.

Every file is derived from ONE seeded float32 source (:func:`random_source`), so a test can check
that each layout loads to the same parameters (exactly, or after the storage cast). The key
layout comes from :func:`infinitetalk.loading.dit.dit_key_shapes` (spec §2).

Files written under ``root`` (see :data:`DIT_FILES` for the storage of each):

- ``weights/Wan2.1-I2V-14B-480P/diffusion_pytorch_model-0000{1..7}-of-00007.safetensors`` + index (fp32)
- ``weights/InfiniteTalk/{single,multi}/infinitetalk.safetensors`` (fp32)
- ``models/diffusion_models/wan2.1_i2v_480p_14B_{fp16,bf16,fp8_e4m3fn}.safetensors`` (bf16 with the
  ``model.diffusion_model.`` prefix), Kijai ``Wan2_1-I2V-14B-480P_fp8_e4m3fn_scaled_KJ.safetensors``,
  Kijai adapters ``Wan2_1-InfiniTetalk-Single_fp16.safetensors`` (sic) and
  ``Wan2_1-InfiniteTalk-Single_fp8_e4m3fn_scaled_KJ.safetensors``, and a merged DiT+adapter file
- ``models/model_patches/wan2.1_infiniteTalk_{single,multi}_fp16.safetensors``
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..config import DiTConfig
from ..loading.dit import adapter_key_shapes, base_key_shapes

TINY_DIT = DiTConfig(
    dim=256,
    ffn_dim=512,
    num_heads=2,
    num_layers=2,
    text_dim=64,
    clip_dim=32,
    audio_blocks=2,
    audio_channels=32,
    audio_intermediate_dim=64,
    audio_output_dim=64,
    audio_context_tokens=32,
)
FP8_MAX = 448.0  # largest finite float8_e4m3fn
NUM_SHARDS = 7
OFFICIAL_DIR = "weights/Wan2.1-I2V-14B-480P"
PREFIX = "model.diffusion_model."


@dataclass(frozen=True)
class TinyFile:
    """One generated file: what it holds and how it is stored."""

    path: str  # relative to root; the official DiT entry is the index json
    content: str  # "dit" | "adapter" | "merged"
    storage: str  # "fp32" | "fp16" | "bf16" | "fp8" | "fp8_scaled"
    adapter: str = "single"  # which adapter source ("single" | "multi"), when content holds one
    prefix: str = ""


DIT_FILES: tuple[TinyFile, ...] = (
    TinyFile(f"{OFFICIAL_DIR}/diffusion_pytorch_model.safetensors.index.json", "dit", "fp32"),
    TinyFile("weights/InfiniteTalk/single/infinitetalk.safetensors", "adapter", "fp32", "single"),
    TinyFile("weights/InfiniteTalk/multi/infinitetalk.safetensors", "adapter", "fp32", "multi"),
    TinyFile("models/diffusion_models/wan2.1_i2v_480p_14B_fp16.safetensors", "dit", "fp16"),
    TinyFile("models/diffusion_models/wan2.1_i2v_480p_14B_bf16.safetensors", "dit", "bf16", prefix=PREFIX),
    TinyFile("models/diffusion_models/wan2.1_i2v_480p_14B_fp8_e4m3fn.safetensors", "dit", "fp8"),
    TinyFile(
        "models/diffusion_models/Wan2_1-I2V-14B-480P_fp8_e4m3fn_scaled_KJ.safetensors", "dit", "fp8_scaled"
    ),
    TinyFile(
        "models/diffusion_models/Wan2_1-InfiniTetalk-Single_fp16.safetensors", "adapter", "fp16", "single"
    ),
    TinyFile(
        "models/diffusion_models/Wan2_1-InfiniteTalk-Single_fp8_e4m3fn_scaled_KJ.safetensors",
        "adapter",
        "fp8_scaled",
    ),
    TinyFile(
        "models/diffusion_models/wan2.1_i2v_480p_14B_infinitetalk_single_merged_fp16.safetensors",
        "merged",
        "fp16",
    ),
    TinyFile("models/model_patches/wan2.1_infiniteTalk_single_fp16.safetensors", "adapter", "fp16", "single"),
    TinyFile("models/model_patches/wan2.1_infiniteTalk_multi_fp16.safetensors", "adapter", "fp16", "multi"),
)


# --------------------------------------------------------------------------------------------
# The one random source
# --------------------------------------------------------------------------------------------


def random_source(cfg: DiTConfig = TINY_DIT, seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """``{"base": ..., "single": ..., "multi": ...}`` float32 tensors (official keys), seeded."""
    return {
        "base": _random_tensors(base_key_shapes(cfg), seed),
        "single": _random_tensors(adapter_key_shapes(cfg), seed + 1),
        "multi": _random_tensors(adapter_key_shapes(cfg), seed + 2),
    }


def _random_tensors(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {k: _random_tensor(k, s, gen) for k, s in shapes.items()}


def _random_tensor(key: str, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """Weights ~ N(0, 1/fan_in), norms ~ 1 + 0.1 N, biases ~ 0.05 N, modulation ~ N / sqrt(dim)."""
    x = torch.randn(shape, generator=gen)
    if key.endswith("modulation"):
        return x / math.sqrt(shape[-1])
    if key.endswith(".bias"):
        return 0.05 * x
    if len(shape) == 1:  # norm weights
        return 1.0 + 0.1 * x
    return x / math.sqrt(math.prod(shape[1:]))


# --------------------------------------------------------------------------------------------
# Storage conversions
# --------------------------------------------------------------------------------------------


def fp8_eligible(key: str, shape: torch.Size | tuple[int, ...]) -> bool:
    """Which tensors fp8 files store in fp8: the linear weights inside the transformer blocks."""
    return key.startswith("blocks.") and key.endswith(".weight") and len(shape) == 2


def _store(
    tensors: dict[str, torch.Tensor], storage: str, scale_shape: tuple[int, ...] = ()
) -> dict[str, torch.Tensor]:
    """Convert float32 tensors to one storage flavour (adding scale keys for fp8_scaled)."""
    plain = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if storage in plain:
        return {k: v.to(plain[storage]).contiguous() for k, v in tensors.items()}
    other = torch.float16 if storage == "fp8" else torch.bfloat16
    out: dict[str, torch.Tensor] = {}
    for k, v in tensors.items():
        if not fp8_eligible(k, v.shape):
            out[k] = v.to(other)
        elif storage == "fp8":
            out[k] = v.to(torch.float8_e4m3fn)
        else:
            scale = v.abs().max() / FP8_MAX
            out[k] = (v / scale).to(torch.float8_e4m3fn)
            stem = k[: -len("weight")]
            out[stem + "scale_weight"] = scale.reshape(scale_shape).float()
            out[stem + "scale_input"] = torch.ones(scale_shape)
    return out


def file_tensors(entry: TinyFile, source: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The tensors (stored names and dtypes) of one generated file."""
    parts = {"dit": ["base"], "adapter": [entry.adapter], "merged": ["base", entry.adapter]}[entry.content]
    tensors = {k: v for p in parts for k, v in source[p].items()}
    stored = _store(tensors, entry.storage, scale_shape=(1,) if entry.content == "adapter" else ())
    if entry.storage == "fp8_scaled" and entry.content != "adapter":
        stored["scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)  # ComfyUI-style marker
    return {entry.prefix + k: v for k, v in stored.items()}


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def write_dit_files(root: str | Path, seed: int = 0, cfg: DiTConfig = TINY_DIT) -> list[Path]:
    """Write every DiT/adapter file of :data:`DIT_FILES` under ``root``; return the paths written."""
    root = Path(root)
    source = random_source(cfg, seed)
    written: list[Path] = []
    for entry in DIT_FILES:
        tensors = file_tensors(entry, source)
        if entry.path.endswith(".index.json"):
            written += _write_sharded(root / entry.path, tensors)
        else:
            written.append(_save(root / entry.path, tensors))
    return written


def _save(path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"format": "pt"})
    return path


def _write_sharded(index: Path, tensors: dict[str, torch.Tensor]) -> list[Path]:
    """Split keys in order into NUM_SHARDS shards named like the official release, plus the index."""
    keys = list(tensors)
    per = math.ceil(len(keys) / NUM_SHARDS)
    weight_map, written = {}, []
    for i in range(NUM_SHARDS):
        name = f"diffusion_pytorch_model-{i + 1:05d}-of-{NUM_SHARDS:05d}.safetensors"
        chunk = {k: tensors[k] for k in keys[i * per : (i + 1) * per]}
        written.append(_save(index.parent / name, chunk))
        weight_map |= {k: name for k in chunk}
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    index.write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    return [*written, index]
