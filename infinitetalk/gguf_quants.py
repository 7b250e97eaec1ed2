"""GGUF (ggml) block formats and their dequantisation in torch.

A quantised tensor is stored as rows of fixed-size *blocks*: each block packs ``block_size`` weights into
``type_size`` bytes (scales as float16, then the bit-packed integers). :func:`dequantize` turns a uint8 tensor
of whole blocks into values of the asked dtype, on whatever device the bytes are (vectorised: one pass of
integer shifts and masks, then one multiply-add per weight; no Python loop over blocks).

The layouts follow ggml (``ggml-common.h``); llama.cpp's gguf-py ``quants.py`` (numpy) is the reference the
tests compare with, bit for bit in float32. Supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K,
Q3_K, Q4_K, Q5_K, Q6_K. Any other type is refused by :func:`check_supported` in one line naming the type
and the tensor.

The arithmetic runs in the asked dtype (float32 in the tests; the run's bf16/fp16 at inference, as the
quantised integers and 6-bit scales are exact there and only the float16 block scale rounds).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .errors import CheckpointError

QK_K = 256  # weights per K-quant super-block

# name -> (weights per block, bytes per block); ggml's type ids are in GGML_TYPE_IDS
BLOCKS: dict[str, tuple[int, int]] = {
    "F32": (1, 4),
    "F16": (1, 2),
    "BF16": (1, 2),
    "Q8_0": (32, 34),
    "Q4_0": (32, 18),
    "Q4_1": (32, 20),
    "Q5_0": (32, 22),
    "Q5_1": (32, 24),
    "Q2_K": (QK_K, 84),
    "Q3_K": (QK_K, 110),
    "Q4_K": (QK_K, 144),
    "Q5_K": (QK_K, 176),
    "Q6_K": (QK_K, 210),
}
GGML_TYPE_IDS: dict[str, int] = {
    "F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q5_0": 6, "Q5_1": 7, "Q8_0": 8,
    "Q2_K": 10, "Q3_K": 11, "Q4_K": 12, "Q5_K": 13, "Q6_K": 14, "BF16": 30,
}  # fmt: skip
FLOAT_TYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def bits_per_weight(qtype: str) -> float:
    """Stored bits per weight of ``qtype`` (scales included), e.g. Q4_K 4.5, Q8_0 8.5."""
    n, size = BLOCKS[qtype]
    return 8 * size / n


def check_supported(qtype: str, tensor: str = "", source: str = "") -> None:
    """One-line ``CheckpointError`` for a type this module cannot dequantise."""
    if qtype not in BLOCKS:
        where = f"{source}: " if source else ""
        raise CheckpointError(
            f"{where}tensor '{tensor}' is stored as GGUF type {qtype}, which is not supported "
            f"(supported: {', '.join(BLOCKS)}); use a file quantised with one of these types"
        )


def stored_bytes(qtype: str, numel: int) -> int:
    """Bytes that ``numel`` weights take as ``qtype`` (whole blocks)."""
    n, size = BLOCKS[qtype]
    return -(-numel // n) * size


def dequantize(
    raw: torch.Tensor, qtype: str, shape: tuple[int, ...] | torch.Size, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Values of ``shape`` from ``raw`` (uint8 bytes of whole blocks, any leading shape) as ``dtype``.

    Raises:
        CheckpointError: ``qtype`` is not supported, or ``raw`` holds the wrong number of bytes.
    """
    check_supported(qtype)
    numel = 1
    for d in shape:
        numel *= int(d)
    n, size = BLOCKS[qtype]
    if raw.numel() != stored_bytes(qtype, numel) or numel % n:
        raise CheckpointError(
            f"GGUF {qtype}: {raw.numel()} bytes do not hold {tuple(shape)} ({stored_bytes(qtype, numel)} expected)"
        )
    raw = raw.reshape(-1)
    if qtype in FLOAT_TYPES:
        return raw.view(FLOAT_TYPES[qtype]).to(dtype).reshape(shape)
    blocks = raw.reshape(-1, size)
    return _KERNELS[qtype](blocks, dtype).reshape(shape)


# ------------------------------------------------------------------------------------------ helpers
def _half(blocks: torch.Tensor, start: int, dtype: torch.dtype) -> torch.Tensor:
    """The float16 at byte ``start`` of every block, as ``(n, 1)`` in ``dtype``."""
    return blocks[:, start : start + 2].contiguous().view(torch.float16).to(dtype)


def _shifted(b: torch.Tensor, shifts: tuple[int, ...], mask: int) -> torch.Tensor:
    """``(b[..., None, :] >> s) & mask`` for each shift: ``(..., len(shifts), k)``."""
    s = torch.tensor(shifts, dtype=torch.uint8, device=b.device).reshape(len(shifts), 1)
    return (b.unsqueeze(-2) >> s) & mask


def _bits(b: torch.Tensor) -> torch.Tensor:
    """Bit ``j`` of a little-endian bit field of ``k`` bytes: ``(..., 8 * k)`` (bytes in order)."""
    s = torch.arange(8, dtype=torch.uint8, device=b.device)
    return ((b.unsqueeze(-1) >> s) & 1).flatten(-2)


def _nibbles(qs: torch.Tensor) -> torch.Tensor:
    """32-weight groups stored as 16 bytes: low nibbles are weights 0..15, high nibbles 16..31."""
    n = qs.shape[0]
    return _shifted(qs.reshape(n, -1, 16), (0, 4), 0x0F).reshape(n, -1)


# ------------------------------------------------------------------------------------------ 32-weight blocks
def _q8_0(blocks: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    d = _half(blocks, 0, dtype)
    return blocks[:, 2:].contiguous().view(torch.int8).to(dtype) * d


def _q4_0(blocks: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    d = _half(blocks, 0, dtype)
    q = _nibbles(blocks[:, 2:]).to(torch.int16) - 8
    return d * q.to(dtype)


def _q4_1(blocks: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    d, m = _half(blocks, 0, dtype), _half(blocks, 2, dtype)
    return d * _nibbles(blocks[:, 4:]).to(dtype) + m


def _q5(blocks: torch.Tensor, qh_at: int) -> torch.Tensor:
    """5-bit values 0..31: low nibbles after the 4 high-bit bytes at ``qh_at``."""
    low = _nibbles(blocks[:, qh_at + 4 :])
    high = _bits(blocks[:, qh_at : qh_at + 4])
    return low | (high << 4)


def _q5_0(blocks: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    d = _half(blocks, 0, dtype)
    q = _q5(blocks, 2).to(torch.int16) - 16
    return d * q.to(dtype)


def _q5_1(blocks: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    d, m = _half(blocks, 0, dtype), _half(blocks, 2, dtype)
    return d * _q5(blocks, 4).to(dtype) + m


# ------------------------------------------------------------------------------------------ K-quants (256 weights)
def _q2_k(blocks: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    # scales[16] (low nibble: scale, high: min) | qs[64] (2 bits) | d | dmin
    n = blocks.shape[0]
    scales = blocks[:, :16]
    d, dmin = _half(blocks, 80, dtype), _half(blocks, 82, dtype)
    dl = (d * (scales & 0x0F).to(dtype)).unsqueeze(-1)  # (n, 16, 1)
    ml = (dmin * (scales >> 4).to(dtype)).unsqueeze(-1)
    q = _shifted(blocks[:, 16:80].reshape(n, 2, 32), (0, 2, 4, 6), 0x03).reshape(n, 16, 16)
    return (dl * q.to(dtype) - ml).reshape(n, QK_K)


def _q3_k(blocks: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    # hmask[32] | qs[64] (low 2 bits) | scales[12] (16 x 6 bits) | d
    n = blocks.shape[0]
    d = _half(blocks, 108, dtype)
    sc = blocks[:, 96:108]
    low = _shifted(sc[:, :8], (0, 4), 0x0F).reshape(n, 16)
    high = _shifted(sc[:, 8:12], (0, 2, 4, 6), 0x03).reshape(n, 16)
    scale = ((low | (high << 4)).to(torch.int16) - 32).to(dtype)
    dl = (d * scale).unsqueeze(-1)  # (n, 16, 1)
    ql = _shifted(blocks[:, 32:96].reshape(n, 2, 32), (0, 2, 4, 6), 0x03).reshape(n, 16, 16)
    hm = _shifted(blocks[:, :32].reshape(n, 1, 32), tuple(range(8)), 0x01).reshape(n, 16, 16)
    q = ql.to(torch.int16) - ((hm ^ 1).to(torch.int16) << 2)  # a clear high bit subtracts 4
    return (dl * q.to(dtype)).reshape(n, QK_K)


def _scale_min_k4(sc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The 8 six-bit scales and 8 six-bit mins packed in 12 bytes (Q4_K, Q5_K)."""
    a, b, c = sc[:, 0:4], sc[:, 4:8], sc[:, 8:12]
    scale = torch.cat([a & 0x3F, (c & 0x0F) | ((a >> 2) & 0x30)], dim=-1)
    mins = torch.cat([b & 0x3F, (c >> 4) | ((b >> 2) & 0x30)], dim=-1)
    return scale, mins


def _k4_affine(blocks: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    d, dmin = _half(blocks, 0, dtype), _half(blocks, 2, dtype)
    scale, mins = _scale_min_k4(blocks[:, 4:16])
    return (d * scale.to(dtype)).unsqueeze(-1), (dmin * mins.to(dtype)).unsqueeze(-1)  # (n, 8, 1)


def _q4_k(blocks: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    # d | dmin | scales[12] | qs[128]: 8 groups of 32, low nibbles then high nibbles of 32 bytes
    n = blocks.shape[0]
    dl, ml = _k4_affine(blocks, dtype)
    q = _shifted(blocks[:, 16:].reshape(n, 4, 32), (0, 4), 0x0F).reshape(n, 8, 32)
    return (dl * q.to(dtype) - ml).reshape(n, QK_K)


def _q5_k(blocks: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    # d | dmin | scales[12] | qh[32] (bit g of byte i: group g, weight i) | qs[128]
    n = blocks.shape[0]
    dl, ml = _k4_affine(blocks, dtype)
    low = _shifted(blocks[:, 48:].reshape(n, 4, 32), (0, 4), 0x0F).reshape(n, 8, 32)
    high = _shifted(blocks[:, 16:48].reshape(n, 1, 32), tuple(range(8)), 0x01).reshape(n, 8, 32)
    q = low | (high << 4)
    return (dl * q.to(dtype) - ml).reshape(n, QK_K)


def _q6_k(blocks: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    # ql[128] (low 4 bits) | qh[64] (high 2 bits) | scales[16] (int8) | d
    n = blocks.shape[0]
    d = _half(blocks, 208, dtype)
    scale = blocks[:, 192:208].contiguous().view(torch.int8).to(dtype)
    dl = (d * scale).unsqueeze(-1)  # (n, 16, 1)
    low = _shifted(blocks[:, :128].reshape(n, 2, 64), (0, 4), 0x0F).reshape(n, 8, 32)
    high = _shifted(blocks[:, 128:192].reshape(n, 2, 32), (0, 2, 4, 6), 0x03).reshape(n, 8, 32)
    q = (low | (high << 4)).to(torch.int16) - 32
    return (dl * q.reshape(n, 16, 16).to(dtype)).reshape(n, QK_K)


_KERNELS: dict[str, Callable[[torch.Tensor, torch.dtype], torch.Tensor]] = {
    "Q8_0": _q8_0,
    "Q4_0": _q4_0,
    "Q4_1": _q4_1,
    "Q5_0": _q5_0,
    "Q5_1": _q5_1,
    "Q2_K": _q2_k,
    "Q3_K": _q3_k,
    "Q4_K": _q4_k,
    "Q5_K": _q5_k,
    "Q6_K": _q6_k,
}
