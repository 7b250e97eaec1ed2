"""What a weight file is, from its content: header keys, shapes and dtypes only.

:func:`identify` opens a file the way the loaders do (:func:`~infinitetalk.loading.state_dict.open_checkpoint`:
the safetensors header, an index json, or a zip ``.pth`` memory-mapped) and reads no tensor data, so a
28 GB DiT is placed in milliseconds. The checks are the loaders' own (``infer_dit_config``, the umT5 /
CLIP / VAE / wav2vec2 config inference): a file that identifies cleanly here has the shapes the loader
needs. File names never decide what a file is; they only tell the single adapter from the multi one
(their keys are the same) and, for a file that cannot be read, which part it was meant to be.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from ..encoders.clip import clip_shapes, infer_clip_config
from ..encoders.text import EMBEDDED_SPIECE, umt5_config
from ..encoders.vae import wan_vae_dims
from ..encoders.wav2vec2 import infer_wav2vec2_config, model_keys
from ..errors import CheckpointError
from ..weights import Component, published_by_name
from .dit import ADAPTER_ANCHOR, DIT_ANCHOR, count_layers, infer_adapter, infer_dit_config, shape_getter
from .state_dict import DEFAULT_PREFIXES, FP8_DTYPES, CheckpointReader, open_checkpoint

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".sft", ".pth", ".pt", ".bin", ".ckpt", ".gguf")
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.bin")
_DTYPE_NAMES = {
    torch.float32: "fp32",
    torch.float16: "fp16",
    torch.bfloat16: "bf16",
    torch.float8_e4m3fn: "fp8_e4m3fn",
    torch.float8_e5m2: "fp8_e5m2",
    torch.float64: "fp64",
}
_W2V_HEADS = ("quantizer.", "project_q.", "project_hid.")
_PREFIXES = (*DEFAULT_PREFIXES, "vae.", "first_stage_model.")


@dataclass(frozen=True)
class Identified:
    """One file or folder, as its content says."""

    path: Path  # canonical: a sharded model's folder, else the file itself
    component: Component | None  # None: not an InfiniteTalk part (see ``problem``)
    layout: str = ""  # "sharded", "single file", "HF folder", "+ prefix", "fp8-scaled" ...
    storage: str = ""  # "bf16", "fp16 + fp32", "fp8_e4m3fn scaled + bf16" ...
    dims: str = ""  # human summary of the shapes
    size: int = 0  # bytes on disk
    problem: str | None = None  # why it cannot be used; None when usable
    named_as: Component | None = None  # what the file name says it is (for unreadable files)
    variant: str = ""  # adapters: "single" | "multi" | "" (not said by the name)
    merged_adapter: bool = False  # a DiT holding the adapter too
    spiece_model: bool = False  # a umT5 file with its tokenizer inside
    numbers: dict = field(default_factory=dict, compare=False)  # dims for the fit checks

    @property
    def usable(self) -> bool:
        return self.component is not None and self.problem is None


# ---------------------------------------------------------------------------------------- walking
def walk(base: Path) -> Iterator[Path]:
    """Candidate entries under ``base``, recursively, in sorted order.

    Weight files, index jsons (their shards are not listed separately), and Hugging Face model folders
    (``config.json`` + weights, listed as one entry). Voice packs (``voices/``) and hidden folders are
    skipped; symlinked folders are followed once.
    """
    base = Path(base)
    if base.is_file():
        yield base
        return
    if not base.is_dir():
        return
    if is_model_folder(base):
        yield base
        return
    visited: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(base, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in visited:
            dirnames[:] = []
            continue
        visited.add(real)
        here = Path(dirpath)
        dirnames[:] = sorted(n for n in dirnames if not n.startswith(".") and n != "voices")
        for name in list(dirnames):
            if is_model_folder(here / name):
                dirnames.remove(name)
                yield here / name
        shards: set[str] = set()
        for name in sorted(filenames):
            if name.endswith(".index.json"):
                shards |= _index_shards(here / name)
                yield here / name
        for name in sorted(filenames):
            if name.lower().endswith(WEIGHT_SUFFIXES) and name not in shards and not name.startswith("."):
                yield here / name


def is_model_folder(path: Path) -> bool:
    """A Hugging Face model folder: ``config.json`` next to ``model.safetensors`` / ``pytorch_model.bin``."""
    return (path / "config.json").is_file() and any((path / n).is_file() for n in HF_WEIGHT_FILES)


def _index_shards(index: Path) -> set[str]:
    try:
        return set(json.loads(index.read_text())["weight_map"].values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return set()


# ---------------------------------------------------------------------------------------- identify
def identify(path: str | os.PathLike) -> Identified:
    """What ``path`` is (cached per path, size and modification time)."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError as err:
        return Identified(path, None, problem=f"cannot read: {err.strerror}")
    return _identify_cached(str(path), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=4096)
def _identify_cached(path_str: str, mtime_ns: int, size: int) -> Identified:
    path = Path(path_str)
    named = _named_as(path)
    try:
        return _identify(path, named)
    except CheckpointError as err:
        return Identified(path, None, size=_size(path), problem=_one_line(err), named_as=named)


def _named_as(path: Path) -> Component | None:
    hits = published_by_name(path.name)
    return hits[0][0] if hits else None


def _identify(path: Path, named: Component | None) -> Identified:
    if path.is_dir():
        return _identify_folder(path, named)
    name = path.name.lower()
    if name.endswith(".gguf"):
        return Identified(
            path, None, size=_size(path), named_as=named,
            problem="GGUF files are not supported: use the .safetensors version (fp16, bf16 or fp8)",
        )  # fmt: skip
    if name.endswith((".pth", ".pt")) and (path.parent / "config.json").is_file():
        tts = _kokoro(path)
        if tts is not None:
            return tts
    if name.endswith(".index.json"):
        indexes = list(path.parent.glob("*.index.json"))
        canonical = path.parent if len(indexes) == 1 else path
        with open_checkpoint(path, prefixes=_PREFIXES) as reader:
            info = _classify(reader, canonical, named)
        return _replace(info, size=_size(canonical), layout="sharded (official)")
    with open_checkpoint(path, prefixes=_PREFIXES) as reader:
        return _classify(reader, path, named)


def _identify_folder(path: Path, named: Component | None) -> Identified:
    if not is_model_folder(path):
        indexes = sorted(path.glob("*.index.json"))
        if indexes:
            return _identify(indexes[0], named)
        return Identified(path, None, named_as=named, problem="folder without weights or index json")
    config = _read_json(path / "config.json")
    weights = next(path / n for n in HF_WEIGHT_FILES if (path / n).is_file())
    with open_checkpoint(weights, prefixes=()) as reader:
        info = _classify(reader, path, named)
    if info.component is Component.AUDIO_ENCODER and config.get("model_type") not in (None, "wav2vec2"):
        return _replace(
            info, component=None, problem=f"config.json model_type is {config.get('model_type')!r}"
        )
    return _replace(info, size=_size(path), layout="HF folder")


def _kokoro(path: Path) -> Identified | None:
    config = _read_json(path.parent / "config.json")
    if "istftnet" not in config or "plbert" not in config:
        return None
    voices = path.parent / "voices"
    count = len(list(voices.glob("*.pt"))) if voices.is_dir() else 0
    problem = None if count else f"no voices/*.pt next to {path.name}"
    return Identified(
        path, Component.TTS, layout="Kokoro folder", storage="fp16", dims=f"{count} voices",
        size=_size(path), problem=problem,
    )  # fmt: skip


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# ---------------------------------------------------------------------------------------- classify
def _classify(reader: CheckpointReader, path: Path, named: Component | None) -> Identified:
    keys = set(reader.keys())
    base = dict(
        path=path,
        size=_size(path),
        named_as=named,
        storage=storage_summary(reader),
        layout=_layout(reader),
    )
    for check in (_as_dit, _as_adapter, _as_lora, _as_umt5, _as_clip, _as_vae, _as_wav2vec2):
        found = check(reader, keys, path)
        if found is not None:
            return Identified(**(base | found))
    return Identified(
        **base,
        component=None,
        problem=f"not an InfiniteTalk part ({len(keys)} tensors, e.g. '{min(keys, default='')}')",
    )


def _replace(info: Identified, **changes) -> Identified:
    return replace(info, **changes)


def _as_dit(reader: CheckpointReader, keys: set[str], path: Path) -> dict | None:
    if DIT_ANCHOR not in keys:
        return None
    dim, in_dim = tuple(reader.shape(DIT_ANCHOR))[:2]
    wrong = None
    if "img_emb.proj.0.weight" not in keys:
        wrong = "a Wan text-to-video DiT (no image embedding)"
    elif "img_emb.emb_pos" in keys:
        wrong = "a Wan first-last-frame DiT (img_emb.emb_pos)"
    elif in_dim != 36:
        wrong = f"a DiT with {in_dim} input channels"
    if wrong:
        return dict(
            component=None,
            problem=f"wrong model: {wrong}; InfiniteTalk needs the Wan2.1 I2V 14B DiT (36 input channels)",
        )
    cfg = infer_dit_config(reader.shapes(), source=str(path))
    merged = ADAPTER_ANCHOR in keys
    dims = (
        f"dim {cfg.dim}, {cfg.num_layers} layers, in {cfg.in_dim}, text {cfg.text_dim}, clip {cfg.clip_dim}"
    )
    numbers = dict(dim=cfg.dim, layers=cfg.num_layers, text_dim=cfg.text_dim, clip_dim=cfg.clip_dim)
    if merged:
        dims += ", adapter merged"
    return dict(component=Component.DIT, dims=dims, merged_adapter=merged, numbers=numbers)


def _as_adapter(reader: CheckpointReader, keys: set[str], path: Path) -> dict | None:
    if ADAPTER_ANCHOR not in keys:
        return None
    shapes = reader.shapes()
    src = str(path)
    a = infer_adapter(shapes, shape_getter(shapes, src), None, src)  # the loader's own reading
    layers = count_layers(shapes, src, needle=".audio_cross_attn.q_linear.weight")
    dim = tuple(reader.shape("blocks.0.audio_cross_attn.q_linear.weight"))[0]
    name = f"{path.parent.name}/{path.name}".lower()  # the official files say it in the folder name
    variant = "multi" if "multi" in name else "single" if "single" in name else ""
    comp = Component.ADAPTER_MULTI if variant == "multi" else Component.ADAPTER_SINGLE
    feat = a["audio_blocks"] * a["audio_channels"]
    dims = (
        f"dim {dim}, {layers} layers, {feat} audio features/frame, intermediate {a['audio_intermediate_dim']}, "
        f"{a['audio_context_tokens']} tokens x {a['audio_output_dim']}"
    )
    numbers = dict(dim=dim, layers=layers, audio_features=feat)
    return dict(component=comp, variant=variant, dims=dims, numbers=numbers)


def _as_lora(reader: CheckpointReader, keys: set[str], path: Path) -> dict | None:
    lora = [k for k in keys if ".lora_" in k or "lora_down" in k or "lora_up" in k or k.endswith(".diff")]
    if not lora:
        return None
    wan = any("blocks." in k or "blocks_" in k for k in lora)
    if not wan:
        return dict(component=None, problem="a LoRA for another model (no Wan 'blocks.N' modules)")
    ranks = {tuple(reader.shape(k))[0] for k in keys if k.endswith(("lora_down.weight", "lora_A.weight"))}
    dims = f"{len(lora)} LoRA tensors" + (f", rank {max(ranks)}" if ranks else "")
    return dict(component=Component.LORA, dims=dims)


def _as_umt5(reader: CheckpointReader, keys: set[str], path: Path) -> dict | None:
    if not ({"shared.weight", "token_embedding.weight"} & keys or any(".shared.weight" in k for k in keys)):
        return None
    cfg = umt5_config(reader)  # raises for T5 v1.1 and other encoders: a clear "wrong model"
    spiece = EMBEDDED_SPIECE in keys
    dims = f"d_model {cfg.d_model}, {cfg.num_layers} layers, {cfg.num_heads} heads, vocab {cfg.vocab_size}"
    numbers = dict(d_model=cfg.d_model)
    return dict(component=Component.TEXT_ENCODER, dims=dims, spiece_model=spiece, numbers=numbers)


def _as_clip(reader: CheckpointReader, keys: set[str], path: Path) -> dict | None:
    if not ({"visual.patch_embedding.weight", "vision_model.embeddings.patch_embedding.weight"} & keys):
        return None
    cfg = infer_clip_config(clip_shapes(reader), path)
    dims = f"width {cfg.hidden_size}, {cfg.num_hidden_layers} layers, patch {cfg.patch_size}, {cfg.image_size} px"
    return dict(component=Component.CLIP, dims=dims, numbers=dict(width=cfg.hidden_size))


def _as_vae(reader: CheckpointReader, keys: set[str], path: Path) -> dict | None:
    if not ({"encoder.conv1.weight", "encoder.conv_in.weight"} & keys):
        return None
    d = wan_vae_dims(reader)
    return dict(component=Component.VAE, dims=f"base width {d['base_dim']}, {d['z_dim']} latent channels")


def _as_wav2vec2(reader: CheckpointReader, keys: set[str], path: Path) -> dict | None:
    found = model_keys(list(keys))
    if not found:
        return None
    cfg = infer_wav2vec2_config(found, reader)
    heads = any(k.startswith(_W2V_HEADS) for k in keys)
    dims = f"hidden {cfg.hidden_size}, {cfg.num_hidden_layers} layers" + (
        ", pre-training heads" if heads else ""
    )
    numbers = dict(hidden=cfg.hidden_size, layers=cfg.num_hidden_layers)
    return dict(component=Component.AUDIO_ENCODER, dims=dims, numbers=numbers)


# ---------------------------------------------------------------------------------------- summaries
def storage_summary(reader: CheckpointReader) -> str:
    """Stored dtypes by share of bytes, e.g. ``fp16 97% + fp32 3%``; ``scaled`` for fp8 with scales."""
    totals: dict[str, int] = {}
    for key in reader.keys():
        dtype = reader.dtype(key)
        if not dtype.is_floating_point:
            continue
        n = reader.shape(key).numel() * dtype.itemsize
        name = _DTYPE_NAMES.get(dtype, str(dtype).replace("torch.", ""))
        if dtype in FP8_DTYPES and reader.is_scaled:
            name += " scaled"
        totals[name] = totals.get(name, 0) + n
    if not totals:
        return "no floating tensors"
    whole = sum(totals.values())
    ranked = sorted(totals.items(), key=lambda kv: -kv[1])
    if len(ranked) == 1:
        return ranked[0][0]
    return " + ".join(f"{name} {max(1, round(100 * n / whole))}%" for name, n in ranked)


def _layout(reader: CheckpointReader) -> str:
    parts = ["single file"]
    if reader.prefix:
        parts.append(f"prefix '{reader.prefix}'")
    if reader.is_scaled:
        parts.append("fp8-scaled")
    return ", ".join(parts)


def _size(path: Path) -> int:
    try:
        if path.is_dir():
            return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        return path.stat().st_size
    except OSError:
        return 0


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())
