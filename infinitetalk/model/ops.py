"""Layer factories and the fp32 norms of the Wan DiT.

The norms move their (small) weights to the input's device on the fly, so a host may leave them
in host memory while streaming the large layers (ComfyUI's ``--lowvram`` partial loading).

Modules take ``operations=``: any namespace with ``Linear``, ``Conv3d`` and ``LayerNorm`` classes
accepting ``device=``/``dtype=`` (``torch.nn`` by default, ComfyUI's ``comfy.ops.*`` when hosted),
so a host can inject casting or quantised layers without touching the model code.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import nn

from ..gguf_tensor import GGUFLinearMixin


class CastLinear(nn.Linear):
    """Linear whose weight may be stored in another dtype (fp8): cast to the input's dtype at each call.

    What fp8 storage needs outside ComfyUI (which has ``comfy.ops.manual_cast`` for it): the transient
    copy is one layer's weight, so the stored model keeps half the bytes of bf16.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight.dtype == x.dtype and self.weight.device == x.device:
            return super().forward(x)
        bias = None if self.bias is None else self.bias.to(x.device, x.dtype)
        return F.linear(x, self.weight.to(x.device, x.dtype), bias)


class CastConv3d(nn.Conv3d):
    """Conv3d computing in the input's dtype whatever its weights are stored in."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.device, x.dtype)
        return self._conv_forward(x, self.weight.to(x.device, x.dtype), bias)


class CastLayerNorm(nn.LayerNorm):
    """LayerNorm computing in the input's dtype whatever its weights are stored in."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.to(x.device, x.dtype)
        bias = None if self.bias is None else self.bias.to(x.device, x.dtype)
        return F.layer_norm(x, self.normalized_shape, weight, bias, self.eps)


default_operations = types.SimpleNamespace(Linear=nn.Linear, Conv3d=nn.Conv3d, LayerNorm=nn.LayerNorm)
# fp8 storage without a host: weights stored in another dtype than the activations (block linears as
# float8_e4m3fn, the rest bf16), every layer computing in the activation dtype (ComfyUI: manual_cast)
casting_operations = types.SimpleNamespace(Linear=CastLinear, Conv3d=CastConv3d, LayerNorm=CastLayerNorm)


def resolve_operations(operations):
    return default_operations if operations is None else operations


class RMSNorm(nn.Module):
    """RMS norm computed in float32, result cast back, then scaled (reference order)."""

    def __init__(self, dim: int, eps: float = 1e-5, device=None, dtype=None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        normed = xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight.to(x.device)


class FP32LayerNorm(nn.Module):
    """LayerNorm computed in float32 and cast back to the input dtype (affine optional)."""

    def __init__(self, dim: int, eps: float = 1e-6, affine: bool = False, device=None, dtype=None):
        super().__init__()
        self.dim = dim
        self.eps = eps
        if affine:
            self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))
            self.bias = nn.Parameter(torch.zeros(dim, device=device, dtype=dtype))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = None if self.weight is None else self.weight.to(x.device, torch.float32)
        b = None if self.bias is None else self.bias.to(x.device, torch.float32)
        return F.layer_norm(x.float(), (self.dim,), w, b, self.eps).to(x.dtype)


def gguf_operations(base=None) -> types.SimpleNamespace:
    """``base`` (an operations namespace; casting layers by default) with a GGUF-aware ``Linear``."""
    base = casting_operations if base is None else base
    cached = getattr(base, "_gguf_ops", None)
    if cached is not None:
        return cached
    linear = type("GGUFLinear", (GGUFLinearMixin, base.Linear), {})
    ops = types.SimpleNamespace(**{k: v for k, v in vars(base).items() if not k.startswith("_")})
    ops.Linear = linear
    ops.gguf = True
    try:
        base._gguf_ops = ops
    except AttributeError:  # a module or a frozen namespace: build again next time
        pass
    return ops
