"""Tiny GGUF files written from the tiny checkpoints, and their dequantised safetensors twins.

``write_gguf_trees(src, out)`` reads the tiny ComfyUI files under ``src/models`` (written by
:func:`infinitetalk.tiny.write_all`) and writes two ComfyUI trees:

``out/gguf/models/`` (names from :mod:`infinitetalk.weights`)::

    diffusion_models/wan2.1-i2v-14b-480p-Q4_K_M.gguf     city96 layout: "wan", ComfyUI keys; block linears
                                                         Q4_K (Q8_0 where a row is not 256-divisible), the
                                                         rest F32/F16; patch_embedding flattened + orig_shape
    diffusion_models/Wan2_1-InfiniteTalk_Single_Q8.gguf  Kijai's adapter: linears Q8_0, the rest F32
    text_encoders/umt5-xxl-encoder-Q8_0.gguf             llama.cpp T5 names, Q8_0 + F32, tokenizer.ggml.*
    clip_vision/, vae/, audio_encoders/                  the tiny safetensors files, copied

``out/dequant/models/``: the same tree with the GGUF files replaced by safetensors (float32) holding exactly
the values the GGUF files dequantise to (same names as the ComfyUI fp16 files), so a run on either tree must
give the same video.

Q8_0 blocks come from ``gguf.quants.quantize``; Q4_K blocks from :func:`quantize_q4_k` (gguf-py has no K-quant
quantiser): a plain min/max fit per 32 weights, 6-bit scales and mins under float16 super-block scales.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from ..gguf_quants import dequantize
from ..gguf_read import ORIG_SHAPE, T5_BLOCK_NAMES, T5_TOP_NAMES
from ..gguf_tokenizer import spm_fields
from ..loading.state_dict import open_checkpoint
from ..weights import Component, spec

_COPIED = ((Component.CLIP, "comfy"), (Component.VAE, "comfy"), (Component.AUDIO_ENCODER, "kj_fp16"))


def _rel(component: Component, key: str) -> Path:
    return Path("models") / spec(component).published(key).relpath


# ------------------------------------------------------------------------------------------ Q4_K
def quantize_q4_k(x: np.ndarray) -> np.ndarray:
    """Q4_K blocks (``(rows, cols // 256 * 144)`` uint8) of a float array whose rows are 256-divisible."""
    rows, cols = x.shape
    g = x.astype(np.float32).reshape(-1, 8, 32)  # (blocks, groups, weights)
    lo = np.minimum(g.min(-1), 0.0)
    scale = (g.max(-1) - lo) / 15.0
    d = (scale.max(-1, keepdims=True) / 63.0).astype(np.float16)
    dmin = (-lo.min(-1, keepdims=True) / 63.0).astype(np.float16)
    df, dmf = d.astype(np.float32), dmin.astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        sc = np.where(df > 0, np.rint(scale / df), 0).clip(0, 63).astype(np.uint8)
        mn = np.where(dmf > 0, np.rint(-lo / dmf), 0).clip(0, 63).astype(np.uint8)
        step = (df * sc)[..., None]
        q = np.where(step > 0, np.rint((g + (dmf * mn)[..., None]) / step), 0).clip(0, 15).astype(np.uint8)
    packed = np.concatenate(
        [
            sc[:, :4] | ((sc[:, 4:] >> 4) << 6),
            mn[:, :4] | ((mn[:, 4:] >> 4) << 6),
            (sc[:, 4:] & 0x0F) | ((mn[:, 4:] & 0x0F) << 4),
        ],
        axis=-1,
    )
    qs = (q[:, 0::2] | (q[:, 1::2] << 4)).reshape(-1, 128)  # group 2p low nibbles, 2p+1 high
    blocks = np.concatenate([d.view(np.uint8), dmin.view(np.uint8), packed, qs], axis=-1)
    return blocks.reshape(rows, cols // 256 * 144)


# ------------------------------------------------------------------------------------------ writing
class _Writer:
    """A GGUF file being written; remembers the dequantised value of every tensor it stores."""

    def __init__(self, path: Path, arch: str):
        import gguf

        self.gguf = gguf
        path.parent.mkdir(parents=True, exist_ok=True)
        self.w = gguf.GGUFWriter(str(path), arch)
        self.values: dict[str, torch.Tensor] = {}

    def add(self, name: str, t: torch.Tensor, qtype: str, key: str | None = None) -> None:
        """Store ``t`` as ``qtype`` under ``name``; its dequantised value is kept under ``key`` (default name)."""
        from gguf import GGMLQuantizationType as T
        from gguf import quants

        a = t.float().numpy()
        shape = tuple(a.shape)
        if a.ndim > 4:  # GGUF holds 4 dims at most: flatten, real shape in metadata (ComfyUI-GGUF)
            self.w.add_array(ORIG_SHAPE + name, list(shape))
            a = a.reshape(-1)
        if qtype == "F32":
            self.w.add_tensor(name, a.astype(np.float32))
            raw = a.astype(np.float32).view(np.uint8)
        elif qtype == "F16":
            self.w.add_tensor(name, a.astype(np.float16))
            raw = a.astype(np.float16).view(np.uint8)
        else:
            raw = quantize_q4_k(a) if qtype == "Q4_K" else quants.quantize(a, T[qtype])
            self.w.add_tensor(name, raw, raw_dtype=T[qtype])
        self.values[key or name] = dequantize(torch.from_numpy(np.ascontiguousarray(raw)), qtype, shape)

    def close(self) -> None:
        self.w.write_header_to_file()
        self.w.write_kv_data_to_file()
        self.w.write_tensors_to_file()
        self.w.close()


def _linear_type(key: str, t: torch.Tensor, k_quant: bool) -> str:
    if t.dim() != 2 or not key.endswith(".weight") or "norm" in key:
        return "F32"
    if k_quant and t.shape[1] % 256 == 0 and key.startswith("blocks."):
        return "Q4_K"
    return "Q8_0" if t.shape[1] % 32 == 0 else "F16"


def _write_model(src: Path, dst: Path, arch: str, k_quant: bool) -> dict[str, torch.Tensor]:
    with open_checkpoint(src) as reader:
        return write_gguf(dst, {k: reader.get(k, dtype=torch.float32) for k in reader.keys()}, arch, k_quant)


def write_gguf(dst: Path, tensors: dict[str, torch.Tensor], arch: str = "wan", k_quant: bool = True):
    """Write ``tensors`` (ComfyUI key names) as a GGUF file: block linears Q4_K (``k_quant``) or Q8_0 where the
    row fits, 1-D tensors F32; returns the values each tensor dequantises to."""
    w = _Writer(Path(dst), arch)
    for key, t in tensors.items():
        w.add(key, t, _linear_type(key, t, k_quant))
    w.close()
    return w.values


def _t5_name(hf: str) -> str:
    top = {v: k for k, v in T5_TOP_NAMES.items()}
    block = {v: k for k, v in T5_BLOCK_NAMES.items()}
    stem, _, leaf = hf.rpartition(".")
    if stem in top:
        return f"{top[stem]}.{leaf}"
    parts = stem.split(".", 3)  # encoder.block.N.<rest>
    return f"enc.blk.{parts[2]}.{block[parts[3]]}.{leaf}"


def _write_umt5(src: Path, dst: Path) -> dict[str, torch.Tensor]:
    w = _Writer(dst, "t5encoder")
    with open_checkpoint(src) as reader:
        proto = reader.get("spiece_model").numpy().tobytes()
        for key in reader.keys():
            if key in ("spiece_model", "encoder.embed_tokens.weight"):
                continue
            t = reader.get(key, dtype=torch.float32)
            qtype = "F32" if t.dim() != 2 or "norm" in key or "relative_attention_bias" in key else "Q8_0"
            w.add(_t5_name(key), t, qtype, key=key)
    _add_tokenizer(w.w, spm_fields(proto))
    w.close()
    w.values["spiece_model"] = torch.frombuffer(bytearray(proto), dtype=torch.uint8)
    return w.values


def _add_tokenizer(w, f: dict) -> None:
    """The tokenizer as llama.cpp's converter stores a T5 SentencePiece model."""
    w.add_tokenizer_model("t5")
    w.add_token_list(f["tokens"])
    w.add_token_scores(f["scores"])
    w.add_token_types(f["types"])
    w.add_add_space_prefix(f["add_dummy_prefix"])
    w.add_remove_extra_whitespaces(f["remove_extra_whitespaces"])
    if f["charsmap"]:
        w.add_precompiled_charsmap(f["charsmap"])
    w.add_unk_token_id(f["unk_id"])
    w.add_eos_token_id(f["eos_id"])
    w.add_pad_token_id(f["pad_id"])


def write_gguf_trees(src: str | Path, out: str | Path) -> dict[str, Path]:
    """Write ``out/gguf`` and ``out/dequant`` (see the module docstring) from the tiny tree ``src``."""
    src, out = Path(src), Path(out)
    gg, dq = out / "gguf", out / "dequant"
    jobs = (
        ("dit", _rel(Component.DIT, "city96_q4_k_m"), _rel(Component.DIT, "comfy_fp16"),
         lambda s, d: _write_model(s, d, "wan", k_quant=True)),
        ("adapter", _rel(Component.ADAPTER_SINGLE, "kj_gguf_q8"), _rel(Component.ADAPTER_SINGLE, "comfy"),
         lambda s, d: _write_model(s, d, "wan", k_quant=False)),
        ("umt5", _rel(Component.TEXT_ENCODER, "city96_q8_0"), _rel(Component.TEXT_ENCODER, "comfy_fp16"), _write_umt5),
    )  # fmt: skip
    paths = {"gguf": gg, "dequant": dq}
    for name, gguf_rel, st_rel, write in jobs:
        values = write(src / st_rel, gg / gguf_rel)
        (dq / st_rel).parent.mkdir(parents=True, exist_ok=True)
        if name == "umt5":
            values["encoder.embed_tokens.weight"] = values["shared.weight"]
            values = {k: v.clone() for k, v in values.items()}
        save_file({k: v.contiguous() for k, v in values.items()}, str(dq / st_rel))
        paths[name] = gg / gguf_rel
        paths[f"{name}_dequant"] = dq / st_rel
    for component, key in _COPIED:
        rel = _rel(component, key)
        for tree in (gg, dq):
            (tree / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / rel, tree / rel)
    return paths
