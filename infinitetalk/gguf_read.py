"""GGUF files as checkpoint sources (memory-mapped with llama.cpp's ``gguf`` package).

:class:`GGUFFile` gives :class:`~infinitetalk.loading.state_dict.CheckpointReader` the same lazy key -> tensor
interface as a safetensors file: ``keys()``, ``shape()`` (the weight's real shape), ``dtype()`` (float32 for
quantised tensors: what they dequantise to), ``nbytes()`` (bytes as stored), ``read()`` (values) and
``read_stored()`` (a :class:`~infinitetalk.gguf_tensor.GGUFWeight` for a quantised tensor: its blocks, kept).

What the file is comes from its content:

- a Wan DiT (``general.architecture`` "wan", city96's ComfyUI-GGUF files) or an InfiniteTalk adapter
  (Kijai's GGUF files): keys as in ComfyUI's safetensors; tensors of more than 4 dims are stored flattened
  with their shape in the ``comfy.gguf.orig_shape.<name>`` INT32 array (ComfyUI-GGUF's convention);
- a umT5 encoder (``general.architecture`` "t5" / "t5encoder", city96's ``umt5-xxl-encoder-*.gguf``):
  llama.cpp T5 names (``enc.blk.N.attn_q`` ...) are renamed to the Hugging Face names the text encoder
  loads, and the SentencePiece tokenizer is rebuilt from ``tokenizer.ggml.*`` and offered as the
  ``spiece_model`` key (as ComfyUI's umT5 files carry it).

A truncated file, or a tensor of a type :mod:`infinitetalk.gguf_quants` cannot dequantise, is refused when
the file is opened, in one line naming the file and the tensor.
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path

import numpy as np
import torch

from .errors import CheckpointError
from .gguf_quants import BLOCKS, FLOAT_TYPES, check_supported, dequantize
from .gguf_tensor import GGUFWeight
from .gguf_tokenizer import spm_proto_from_gguf

log = logging.getLogger(__name__)

MAGIC = b"GGUF"
ORIG_SHAPE = "comfy.gguf.orig_shape."
TEXT_ARCHS = ("t5", "t5encoder")
SPIECE_KEY = "spiece_model"  # infinitetalk.encoders.text.EMBEDDED_SPIECE

# llama.cpp T5 encoder names -> Hugging Face T5 names (per block: enc.blk.N.<part>)
T5_BLOCK_NAMES = {
    "attn_q": "layer.0.SelfAttention.q",
    "attn_k": "layer.0.SelfAttention.k",
    "attn_v": "layer.0.SelfAttention.v",
    "attn_o": "layer.0.SelfAttention.o",
    "attn_rel_b": "layer.0.SelfAttention.relative_attention_bias",
    "attn_norm": "layer.0.layer_norm",
    "ffn_gate": "layer.1.DenseReluDense.wi_0",
    "ffn_up": "layer.1.DenseReluDense.wi_1",
    "ffn_down": "layer.1.DenseReluDense.wo",
    "ffn_norm": "layer.1.layer_norm",
}
T5_TOP_NAMES = {"token_embd": "shared", "enc.output_norm": "encoder.final_layer_norm"}


def is_gguf(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == MAGIC
    except OSError:
        return False


def t5_to_hf(name: str) -> str:
    """``enc.blk.3.attn_q.weight`` -> ``encoder.block.3.layer.0.SelfAttention.q.weight`` (others unchanged)."""
    stem, dot, leaf = name.rpartition(".")
    if stem in T5_TOP_NAMES:
        return T5_TOP_NAMES[stem] + dot + leaf
    parts = stem.split(".")
    if len(parts) == 4 and parts[:2] == ["enc", "blk"] and parts[3] in T5_BLOCK_NAMES:
        return f"encoder.block.{parts[2]}.{T5_BLOCK_NAMES[parts[3]]}{dot}{leaf}"
    return name


class GGUFFile:
    """One GGUF file, memory-mapped: tensors by (renamed) key, read one at a time."""

    def __init__(self, path: Path):
        import gguf

        self.path = Path(path)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.reader = gguf.GGUFReader(str(self.path), "r")
        except (ValueError, OSError, IndexError, KeyError, struct_error()) as exc:
            if "cannot reshape" in str(exc) or isinstance(exc, IndexError):  # the memory map ends early
                raise CheckpointError(
                    f"{self.path}: file truncated: its tensor data ends before the last tensor "
                    f"({self.path.stat().st_size} bytes); download the file again"
                ) from None
            raise CheckpointError(
                f"{self.path}: unreadable GGUF file ({_short(exc)}); the file is truncated or corrupt, download it again"
            ) from None
        self.architecture = self.field("general.architecture") or ""
        self.is_text = self.architecture in TEXT_ARCHS
        self.entries: dict[str, tuple[object, str, torch.Size]] = {}
        size = self.path.stat().st_size
        for t in self.reader.tensors:
            qtype = t.tensor_type.name
            check_supported(qtype, t.name, str(self.path))
            end = int(t.data_offset) + int(t.n_bytes)
            if end > size:
                raise CheckpointError(
                    f"{self.path}: file truncated: tensor '{t.name}' ends at byte {end} but the file has {size}; "
                    "download the file again"
                )
            shape = self._orig_shape(t.name) or torch.Size(int(d) for d in reversed(t.shape.tolist()))
            key = t5_to_hf(t.name) if self.is_text else t.name
            self.entries[key] = (t, qtype, shape)
        self._spiece: torch.Tensor | None = None
        if self.is_text and self.field("tokenizer.ggml.model") is not None:
            self._spiece = torch.empty(0, dtype=torch.uint8)  # built on first read

    # -- metadata ---------------------------------------------------------------------------
    def field(self, key: str):
        """A metadata value: str / int / float / bool, a list for arrays, None when absent."""
        f = self.reader.get_field(key)
        if f is None:
            return None
        value = f.contents()
        return value

    def _orig_shape(self, name: str) -> torch.Size | None:
        value = self.field(ORIG_SHAPE + name)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, int) for v in value):
            raise CheckpointError(
                f"{self.path}: metadata {ORIG_SHAPE}{name} is not an integer array: {value!r}"
            )
        return torch.Size(value)

    def qtype(self, key: str) -> str:
        return "U8" if key == SPIECE_KEY else self.entries[key][1]

    def qtypes(self) -> dict[str, int]:
        """Quantisation type -> tensor count."""
        out: dict[str, int] = {}
        for _, qtype, _ in self.entries.values():
            out[qtype] = out.get(qtype, 0) + 1
        return out

    # -- the source interface -----------------------------------------------------------------
    def keys(self) -> list[str]:
        return [*self.entries, *([SPIECE_KEY] if self._spiece is not None else [])]

    def shape(self, key: str) -> torch.Size:
        if key == SPIECE_KEY:
            return torch.Size([len(self._tokenizer_proto())])
        return self.entries[key][2]

    def dtype(self, key: str) -> torch.dtype:
        if key == SPIECE_KEY:
            return torch.uint8
        return FLOAT_TYPES.get(self.entries[key][1], torch.float32)

    def nbytes(self, key: str) -> int:
        if key == SPIECE_KEY:
            return len(self._tokenizer_proto())
        return int(self.entries[key][0].n_bytes)

    def is_quantized(self, key: str) -> bool:
        return key in self.entries and self.entries[key][1] not in FLOAT_TYPES

    def _raw(self, key: str) -> torch.Tensor:
        t = self.entries[key][0]
        data = np.asarray(t.data).reshape(-1).view(np.uint8)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # read-only memory map: never written
            return torch.from_numpy(data)

    def read(self, key: str, scratch: torch.Tensor | None = None) -> torch.Tensor:
        """The tensor's values (float types as stored, quantised ones dequantised to float32), in RAM."""
        if key == SPIECE_KEY:
            return torch.frombuffer(bytearray(self._tokenizer_proto()), dtype=torch.uint8)
        _, qtype, shape = self.entries[key]
        return dequantize(self._raw(key).clone(), qtype, shape, self.dtype(key))

    def read_stored(self, key: str) -> torch.Tensor:
        """A quantised tensor as a :class:`GGUFWeight` (its blocks copied to RAM), else its values."""
        if not self.is_quantized(key):
            return self.read(key)
        _, qtype, shape = self.entries[key]
        return GGUFWeight(self._raw(key).clone(), qtype, shape)

    def _tokenizer_proto(self) -> bytes:
        if self._spiece is None:
            raise KeyError(SPIECE_KEY)
        if not self._spiece.numel():
            self._spiece = torch.frombuffer(
                bytearray(spm_proto_from_gguf(self.field, self.path)), dtype=torch.uint8
            )
        return self._spiece.numpy().tobytes()

    def close(self) -> None:
        """The memory map is released when the reader is dropped."""


def struct_error():
    import struct

    return struct.error


def _short(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:160]}"


def summary(path: Path) -> tuple[str, dict[str, int]]:
    """(architecture, {qtype: bytes}) of a GGUF file, from its header only."""
    f = GGUFFile(path)
    out: dict[str, int] = {}
    for t, qtype, _ in f.entries.values():
        out[qtype] = out.get(qtype, 0) + int(t.n_bytes)
    return f.architecture, out


def storage_text(by_type: dict[str, int]) -> str:
    """``GGUF Q4_K 81% + F32 12% + Q6_K 7%`` (shares of bytes)."""
    whole = sum(by_type.values()) or 1
    ranked = sorted(by_type.items(), key=lambda kv: -kv[1])
    if len(ranked) == 1:
        return f"GGUF {ranked[0][0]}"
    return "GGUF " + " + ".join(f"{q} {max(1, round(100 * n / whole))}%" for q, n in ranked)


def numel(shape) -> int:
    return math.prod(int(d) for d in shape)


__all__ = ["BLOCKS", "GGUFFile", "is_gguf", "summary", "storage_text", "t5_to_hf"]
