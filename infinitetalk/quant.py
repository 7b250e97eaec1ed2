"""Weight quantisation of the DiT with optimum-quanto (int8 or fp8 weights, like the reference).

Only the linear layers inside the transformer blocks are quantised: self-attention, text/image
cross-attention, audio cross-attention and FFN (about 97 % of the 14B weights). Everything the
reference keeps in higher precision stays as loaded: patch/text/time/image embeddings, the audio
projection (``audio_proj``), the head, every norm, and the modulation tables.

Weights are quantised per output channel (quanto's default), then frozen: the float weights are
replaced by int8 / float8_e4m3fn data plus scales, and activations stay in the compute dtype.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from .errors import InputError

log = logging.getLogger(__name__)

QUANT_MODES: tuple[str, ...] = ("int8", "fp8")
# Module name patterns (fnmatch) kept in higher precision inside the quantised blocks.
KEEP_PATTERNS: tuple[str, ...] = ("*norm*",)


def quantize_dit(model: nn.Module, mode: str) -> nn.Module:
    """Quantise the block linear layers of ``model`` in place (``"int8"`` or ``"fp8"``); return it.

    Raises:
        InputError: unknown ``mode``.
    """
    if mode not in QUANT_MODES:
        raise InputError(f"quantization '{mode}' is not supported; choose one of {', '.join(QUANT_MODES)}")
    from optimum.quanto import freeze, qfloat8, qint8, quantize

    blocks = getattr(model, "swappable_blocks", "blocks")
    qtype = qint8 if mode == "int8" else qfloat8
    quantize(model, weights=qtype, include=[f"{blocks}.*"], exclude=list(KEEP_PATTERNS))
    freeze(model)
    names = quantized_modules(model)
    log.info("quantised %d linear layers of %s to %s", len(names), type(model).__name__, mode)
    return model


def quantized_modules(model: nn.Module) -> list[str]:
    """Names of the modules holding quantised weights."""
    from optimum.quanto import QModuleMixin

    return [name for name, m in model.named_modules() if isinstance(m, QModuleMixin)]


def weight_bytes(model: nn.Module) -> int:
    """Bytes of parameter storage (a quantised weight counts its int8/fp8 data and its scales)."""
    return sum(_tensor_bytes(p) for p in model.parameters())


def _tensor_bytes(t: torch.Tensor) -> int:
    from optimum.quanto import QTensor

    if isinstance(t, QTensor):
        names, _ = t.__tensor_flatten__()
        return sum(_tensor_bytes(getattr(t, n)) for n in names)
    return t.numel() * t.element_size()
