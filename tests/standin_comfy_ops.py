"""Stand-in for the layers of ComfyUI's newest ``comfy/ops.py`` with dynamic VRAM on.

Written from a reading of ``comfy/ops.py`` in ComfyUI v0.38.1 and later commits on GitHub
(``Comfy-Org/ComfyUI``); nothing is copied. With comfy-aimdo installed, torch >= 2.8 and an NVIDIA GPU,
``main.py`` turns dynamic VRAM on (``comfy.memory_management.aimdo_enabled``) and:

- ``disable_weight_init.Linear.__init__`` creates **no weight and no bias** (``weight = bias = None``),
  remembers whether it wants a bias and the dtype it was asked for (``weight_comfy_model_dtype``);
- the weights appear only in its own ``_load_from_state_dict``: each state-dict tensor becomes the
  parameter (as is with ``assign=True``, cloned otherwise); a weight that is not there is zero-filled
  and reported as a missing key, any other key as unexpected. No shape is checked;
- the other layers (Conv3d, LayerNorm) are plain torch layers whose ``reset_parameters`` does nothing;
- every layer's forward first calls ``run_every_op()``, which raises ComfyUI's interrupt exception when
  the user pressed Cancel (not while ``torch.compile`` traces);
- ``comfy_cast_weights`` (set by ``manual_cast``, or by the model patcher when it streams a layer) and the
  ``weight_function`` / ``bias_function`` lists (LoRA patches applied on the fly) make the forward cast the
  weight to the input's device and dtype and apply those functions first.

A loader that builds its key list from ``model.state_dict()`` and assigns tensors itself never calls the
hook, so ``load_state_dict(strict=True)`` fails with "Missing key(s)": the bug of issue #16.
"""

from __future__ import annotations

import types
from collections.abc import Callable

import torch
import torch.nn.functional as F


class StandInInterrupt(Exception):
    """What ``run_every_op`` raises in library tests (ComfyUI raises ``InterruptProcessingException``)."""


def make_operations(
    check_interrupt: Callable[[], None] | None = None, cast: bool = False
) -> types.SimpleNamespace:
    """An operations namespace (``Linear``, ``Conv3d``, ``LayerNorm``) behaving like dynamic-VRAM ComfyUI.

    ``check_interrupt`` is ``run_every_op``'s body (default: count the op, raise nothing);
    ``cast=True`` behaves like ``manual_cast`` (weights cast to the input dtype at every call).
    The namespace's ``ops_run`` counts forwards; ``interrupt_after(n)`` makes op number ``n`` raise
    :class:`StandInInterrupt` (library tests).
    """
    state = types.SimpleNamespace(ops_run=0, interrupt_at=None)

    def run_every_op() -> None:
        if torch.compiler.is_compiling():
            return
        state.ops_run += 1
        if check_interrupt is not None:
            check_interrupt()
        if state.interrupt_at is not None and state.ops_run >= state.interrupt_at:
            raise StandInInterrupt(f"interrupted at op {state.ops_run}")

    class CastOp:
        comfy_cast_weights = cast
        weight_function: list = []
        bias_function: list = []

        def _cast_weights(self, x):
            weight = self.weight.to(x.device, x.dtype)
            for f in self.weight_function:
                weight = f(weight)
            bias = None
            if self.bias is not None:
                bias = self.bias.to(x.device, x.dtype)
                for f in self.bias_function:
                    bias = f(bias)
            return weight, bias

        def _wants_cast(self) -> bool:
            return bool(self.comfy_cast_weights or self.weight_function or self.bias_function)

    class Linear(torch.nn.Linear, CastOp):
        def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
            torch.nn.Module.__init__(self)  # no torch.empty: nothing is allocated, not even on meta
            self.in_features, self.out_features = in_features, out_features
            self.weight = None
            self.bias = None
            self.comfy_need_lazy_init_bias = bias
            self.weight_comfy_model_dtype = dtype
            self.bias_comfy_model_dtype = dtype

        def reset_parameters(self):
            return None

        def _load_from_state_dict(
            self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        ):
            assign = local_metadata.get("assign_to_params_buffers", False)
            for key, value in state_dict.items():
                name = key[len(prefix) :]
                if name == "weight":
                    self.weight = torch.nn.Parameter(value if assign else value.clone(), requires_grad=False)
                elif name == "bias" and self.comfy_need_lazy_init_bias and value is not None:
                    self.bias = torch.nn.Parameter(value if assign else value.clone(), requires_grad=False)
                else:
                    unexpected_keys.append(key)
            if self.weight is None:
                self.weight = torch.nn.Parameter(
                    torch.zeros(self.out_features, self.in_features), requires_grad=False
                )
                missing_keys.append(prefix + "weight")
            if self.comfy_need_lazy_init_bias and self.bias is None:
                self.bias = torch.nn.Parameter(torch.zeros(self.out_features), requires_grad=False)
                missing_keys.append(prefix + "bias")

        def forward(self, x):
            run_every_op()
            if self._wants_cast():
                return F.linear(x, *self._cast_weights(x))
            return super().forward(x)

    class Conv3d(torch.nn.Conv3d, CastOp):
        def reset_parameters(self):
            return None

        def forward(self, x):
            run_every_op()
            if self._wants_cast():
                return self._conv_forward(x, *self._cast_weights(x))
            return super().forward(x)

    class LayerNorm(torch.nn.LayerNorm, CastOp):
        def reset_parameters(self):
            return None

        def forward(self, x):
            run_every_op()
            if self._wants_cast() and self.weight is not None:
                return F.layer_norm(x, self.normalized_shape, *self._cast_weights(x), self.eps)
            return super().forward(x)

    def interrupt_after(n: int | None) -> None:
        state.interrupt_at = None if n is None else state.ops_run + n

    return types.SimpleNamespace(
        Linear=Linear, Conv3d=Conv3d, LayerNorm=LayerNorm, state=state, interrupt_after=interrupt_after
    )
