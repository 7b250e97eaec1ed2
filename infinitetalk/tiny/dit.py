"""Tiny random DiT + InfiniteTalk adapter checkpoints in every real file layout.

Every file is derived from ONE seeded float32 source (:func:`random_source`), so a test can check
that each layout loads to the same parameters (exactly, or after the storage cast). The key
layout comes from :func:`infinitetalk.loading.dit.dit_key_shapes` (spec §2).

Files written under ``root`` (names and folders from :mod:`infinitetalk.weights`; see :data:`DIT_FILES`
for the storage of each): the official sharded DiT and adapters under ``weights/`` (fp32), and under
``models/`` ComfyUI's fp16/bf16 (``model.diffusion_model.``-prefixed)/fp8 DiTs, Kijai's fp8-scaled DiT,
the adapters as published (mixed fp16 + fp32 like the real files: ``audio_proj.*`` and the 1-D block
tensors in fp32), Kijai's fp8-scaled adapter, and a merged DiT + adapter file.
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
from ..weights import Component, spec

# Every dimension of the adapter / audio path differs from every other one, so that a loader that
# swapped two of them fails (features per frame 3 x 96 = 288, intermediate 56, tokens 12 x 72).
TINY_DIT = DiTConfig(
    dim=256,
    ffn_dim=512,
    num_heads=2,
    num_layers=2,
    text_dim=64,
    clip_dim=32,
    audio_blocks=3,
    audio_channels=96,
    audio_intermediate_dim=56,
    audio_output_dim=72,
    audio_context_tokens=12,
)
FP8_MAX = 448.0  # largest finite float8_e4m3fn
NUM_SHARDS = 7
PREFIX = "model.diffusion_model."
MERGED_NAME = (
    "wan2.1_i2v_480p_14B_infinitetalk_single_merged_fp16.safetensors"  # not published: a test layout
)


def tiny_path(component: Component, key: str) -> str:
    """Where the tiny tree keeps the published file ``key`` of ``component`` (relative to its root)."""
    f = spec(component).published(key)
    return f"{'weights' if f.tree == 'official' else 'models'}/{f.relpath}"


@dataclass(frozen=True)
class TinyFile:
    """One generated file: what it holds and how it is stored.

    ``component``/``key`` name a published file of :mod:`infinitetalk.weights` (its path follows the
    registry); ``fixed`` is the path of a file that is not published (the merged test layout).
    """

    component: Component | None
    key: str
    content: str  # "dit" | "adapter" | "merged"
    storage: str  # "fp32" | "fp16" | "bf16" | "fp8" | "fp8_scaled" | "mixed" (fp16 + fp32 as published)
    adapter: str = "single"  # which adapter source ("single" | "multi"), when content holds one
    prefix: str = ""
    fixed: str = ""

    @property
    def path(self) -> str:
        """Relative to root; the official DiT entry is its index json."""
        if self.fixed:
            return self.fixed
        rel = tiny_path(self.component, self.key)
        if self.component is Component.DIT and self.key == "official":
            return f"{rel}/diffusion_pytorch_model.safetensors.index.json"
        return rel


_DIT, _SINGLE, _MULTI = Component.DIT, Component.ADAPTER_SINGLE, Component.ADAPTER_MULTI
DIT_FILES: tuple[TinyFile, ...] = (
    TinyFile(_DIT, "official", "dit", "fp32"),
    TinyFile(_SINGLE, "official", "adapter", "fp32", "single"),
    TinyFile(_MULTI, "official", "adapter", "fp32", "multi"),
    TinyFile(_DIT, "comfy_fp16", "dit", "fp16"),
    TinyFile(_DIT, "comfy_bf16", "dit", "bf16", prefix=PREFIX),
    TinyFile(_DIT, "comfy_fp8", "dit", "fp8"),
    TinyFile(_DIT, "kj_fp8_scaled", "dit", "fp8_scaled"),
    TinyFile(_SINGLE, "kj_fp16", "adapter", "mixed", "single"),
    TinyFile(_SINGLE, "kj_fp8_scaled", "adapter", "fp8_scaled"),
    TinyFile(None, "", "merged", "fp16", fixed=f"models/diffusion_models/{MERGED_NAME}"),
    TinyFile(_SINGLE, "comfy", "adapter", "mixed", "single"),
    TinyFile(_MULTI, "comfy", "adapter", "mixed", "multi"),
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


def mixed_fp32(key: str, shape: torch.Size | tuple[int, ...]) -> bool:
    """Which tensors the published fp16 adapters keep in fp32: ``audio_proj.*`` and 1-D block tensors.

    Measured from the byte sizes of the real files (docs/WEIGHTS.md): 5,125,258,232 bytes is exactly
    2.4117e9 fp16 block weights + 74.2e6 fp32 ``audio_proj`` + 1.23e6 fp32 biases/norms + the header.
    """
    return key.startswith("audio_proj.") or (key.startswith("blocks.") and len(shape) == 1)


def _store(tensors: dict[str, torch.Tensor], storage: str) -> dict[str, torch.Tensor]:
    """Convert float32 tensors to one storage flavour (adding scale keys for fp8_scaled)."""
    plain = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if storage in plain:
        return {k: v.to(plain[storage]).contiguous() for k, v in tensors.items()}
    if storage == "mixed":
        return {
            k: v.to(torch.float32 if mixed_fp32(k, v.shape) else torch.float16).contiguous()
            for k, v in tensors.items()
        }
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
            # one fp32 scalar per weight, the shape ComfyUI's scaled-fp8 layers hold (docs/WEIGHTS.md)
            out[stem + "scale_weight"] = scale.reshape(()).float()
            out[stem + "scale_input"] = torch.ones(())
    return out


def file_tensors(entry: TinyFile, source: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The tensors (stored names and dtypes) of one generated file."""
    parts = {"dit": ["base"], "adapter": [entry.adapter], "merged": ["base", entry.adapter]}[entry.content]
    tensors = {k: v for p in parts for k, v in source[p].items()}
    stored = _store(tensors, entry.storage)
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
