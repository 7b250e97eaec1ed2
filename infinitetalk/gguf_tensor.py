"""Quantised GGUF weights kept as stored, and the linear layer that dequantises them per call.

:class:`GGUFWeight` is a uint8 tensor holding a weight's raw GGUF blocks, with its quantisation type
(``qtype``) and the weight's real shape (``gguf_shape``). Being a real tensor of bytes, it moves with
``.to()`` / ``pin_memory()`` / ``Module.to()`` (block swap, ComfyUI's model patcher), and
``numel() * element_size()`` is the number of bytes it really occupies (what ComfyUI's memory accounting
and the block-swap planner count). Moving or detaching it keeps the type and the two attributes; any
other operation gives a plain tensor.

:func:`gguf_operations` extends a host's operations namespace (``torch.nn``-like, ComfyUI's ``comfy.ops``
or :data:`~infinitetalk.model.ops.casting_operations`) with a ``Linear`` that takes a :class:`GGUFWeight`
from the state dict as it is and, at each call, moves the bytes to the input's device, dequantises them in
the input's dtype (:func:`~infinitetalk.gguf_quants.dequantize`), adds any LoRA deltas (``gguf_patches``,
and the host's ``weight_function`` list), and runs ``F.linear``. Layers whose weight is not quantised
behave exactly as the host's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .gguf_quants import dequantize

_KEEP_TYPE = {
    torch.Tensor.to,
    torch.Tensor.cpu,
    torch.Tensor.cuda,
    torch.Tensor.detach,
    torch.Tensor.clone,
    torch.Tensor.pin_memory,
    torch.Tensor.contiguous,
    torch.Tensor.requires_grad_,
    torch.Tensor.share_memory_,
    torch.Tensor.__deepcopy__,
}


class GGUFWeight(torch.Tensor):
    """Raw GGUF blocks (uint8) of one weight, with ``qtype`` and the real ``gguf_shape``."""

    qtype: str
    gguf_shape: torch.Size

    @staticmethod
    def __new__(cls, raw: torch.Tensor, qtype: str, shape) -> GGUFWeight:
        t = torch.Tensor._make_subclass(cls, raw, False)
        t.qtype = qtype
        t.gguf_shape = torch.Size(shape)
        return t

    def __init__(self, raw, qtype, shape):  # attributes set in __new__
        super().__init__()

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        with torch._C.DisableTorchFunctionSubclass():
            result = func(*args, **kwargs)
        if func in _KEEP_TYPE and isinstance(result, torch.Tensor) and result.dtype == torch.uint8:
            src = args[0]
            out = result.as_subclass(GGUFWeight)
            out.qtype, out.gguf_shape = src.qtype, src.gguf_shape
            return out
        return result

    def __reduce_ex__(self, proto):
        return (GGUFWeight, (self.as_subclass(torch.Tensor), self.qtype, tuple(self.gguf_shape)))

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The weight's values as ``dtype`` on the tensor's device."""
        return dequantize(self.as_subclass(torch.Tensor), self.qtype, self.gguf_shape, dtype)

    def __repr__(self) -> str:
        return (
            f"GGUFWeight({self.qtype}, shape={tuple(self.gguf_shape)}, {self.numel()} bytes, {self.device})"
        )


def real_shape(t: torch.Tensor) -> torch.Size:
    """The weight's shape: ``gguf_shape`` for a :class:`GGUFWeight`, else ``t.shape``."""
    return t.gguf_shape if isinstance(t, GGUFWeight) else t.shape


def values(t: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """The values of a plain or GGUF tensor (``dtype`` default: float32 for GGUF, as stored otherwise)."""
    if isinstance(t, GGUFWeight):
        return t.dequantize(dtype or torch.float32)
    return t if dtype is None else t.to(dtype)


def has_gguf_weights(module: nn.Module) -> bool:
    return any(isinstance(p, GGUFWeight) for p in module.parameters())


def gguf_bytes(module: nn.Module) -> dict[str, int]:
    """Bytes of the module's parameters by storage type (``Q4_K``, ``F32``, ``bf16`` ...)."""
    out: dict[str, int] = {}
    for p in module.parameters():
        name = p.qtype if isinstance(p, GGUFWeight) else str(p.dtype).replace("torch.", "")
        out[name] = out.get(name, 0) + p.numel() * p.element_size()
    return out


class GGUFLinearMixin:
    """Mixed in before a host's ``Linear``: quantised weights stay quantised and are expanded per call."""

    gguf_patches: list  # [(delta, scale)] added to the dequantised weight (LoRA)

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        weight = state_dict.get(prefix + "weight")
        if not isinstance(weight, GGUFWeight):
            return super()._load_from_state_dict(
                state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
            )
        want = (self.out_features, self.in_features)
        if tuple(weight.gguf_shape) != want:
            error_msgs.append(f"size mismatch for {prefix}weight: GGUF {tuple(weight.gguf_shape)} vs {want}")
            return
        self.weight = nn.Parameter(weight, requires_grad=False)
        bias = state_dict.get(prefix + "bias")
        if bias is not None:
            self.bias = nn.Parameter(bias, requires_grad=False)
        elif getattr(self, "bias", None) is not None or getattr(self, "comfy_need_lazy_init_bias", False):
            missing_keys.append(prefix + "bias")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        if not isinstance(w, GGUFWeight):
            return super().forward(x)
        weight = w.to(x.device, non_blocking=True).dequantize(x.dtype)
        for delta, scale in getattr(self, "gguf_patches", ()):
            weight = weight + (delta.to(x.device, torch.float32) * scale).to(x.dtype)
        host_patch = getattr(self, "gguf_weight_patch", None)  # ComfyUI's LoRA patches (nodes/_gguf.py)
        if host_patch is not None:
            weight = host_patch(weight)
        for fn in getattr(self, "weight_function", ()) or ():
            weight = fn(weight)
        bias = None if self.bias is None else self.bias.to(x.device, x.dtype)
        for fn in (getattr(self, "bias_function", ()) or ()) if bias is not None else ():
            bias = fn(bias)
        return F.linear(x, weight, bias)

    def add_gguf_patch(self, delta: torch.Tensor, scale: float = 1.0) -> None:
        """Add ``delta * scale`` to the dequantised weight at every call (a LoRA on a quantised layer)."""
        if tuple(delta.shape) != tuple(self.weight.gguf_shape):
            delta = delta.reshape(self.weight.gguf_shape)
        self.gguf_patches = [*getattr(self, "gguf_patches", []), (delta, float(scale))]
