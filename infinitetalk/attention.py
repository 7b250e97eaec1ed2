"""One attention entry point; kernels are picked here, never inside the model.

Layout everywhere: ``(B, L, H, D)`` (batch, tokens, heads, head_dim), like flash-attn.
"""

from __future__ import annotations

import functools
import importlib.util
import logging

import torch
import torch.nn.functional as F

from .errors import InputError

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "sdpa", "flash", "sage")


@functools.cache
def available_backends() -> tuple[str, ...]:
    """Backends usable in this environment (``sdpa`` always is)."""
    found = ["sdpa"]
    if torch.cuda.is_available():
        if importlib.util.find_spec("flash_attn") is not None:
            found.append("flash")
        if importlib.util.find_spec("sageattention") is not None:
            found.append("sage")
    return tuple(found)


def resolve_backend(backend: str, device: torch.device | str | None = None) -> str:
    """Map ``auto`` to a kernel and refuse unknown or missing ones, before any weight is read.

    ``auto`` is PyTorch SDPA (which itself picks flash/memory-efficient kernels on CUDA): the flash-attn
    and SageAttention packages change numerics, so they are opt-in. ``flash`` and ``sage`` need the package
    and a CUDA ``device`` (when one is given).
    """
    if backend not in BACKENDS:
        raise InputError(f"attention backend {backend!r} is unknown; choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        return "sdpa"
    if backend != "sdpa" and device is not None and torch.device(device).type != "cuda":
        raise InputError(
            f"attention backend {backend!r} runs on CUDA only but the model computes on "
            f"{torch.device(device).type}; choose 'sdpa'"
        )
    if backend not in available_backends():
        raise InputError(
            f"attention backend {backend!r} is not installed here (available: "
            f"{', '.join(available_backends())}); install it or choose 'sdpa'"
        )
    return backend


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str = "sdpa") -> torch.Tensor:
    """Softmax attention with scale ``1/sqrt(D)``.

    q: (B, Lq, H, D), k/v: (B, Lk, H, D) -> (B, Lq, H, D) in q's dtype.
    """
    if backend == "flash":
        from flash_attn import flash_attn_func

        half = q.dtype if q.dtype in (torch.float16, torch.bfloat16) else torch.bfloat16
        out = flash_attn_func(q.to(half), k.to(half), v.to(half))
        return out.to(q.dtype)
    if backend == "sage":
        from sageattention import sageattn

        half = q.dtype if q.dtype in (torch.float16, torch.bfloat16) else torch.bfloat16
        out = sageattn(q.to(half), k.to(half), v.to(half), tensor_layout="NHD")
        return out.to(q.dtype)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2)
