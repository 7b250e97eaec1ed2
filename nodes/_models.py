"""Wrap library models for ``comfy.model_management``.

Every model a loader returns is a :class:`Managed`: the library object (what the pipeline calls) plus a
``comfy.model_patcher.ModelPatcher`` around its ``torch.nn.Module``. Before a node uses a model it calls
:func:`load`, which hands the patcher to ``comfy.model_management.load_models_gpu``: ComfyUI then moves
it to the compute device, offloads other models when memory is short, honours ``--cpu``/``--lowvram``
and applies LoRA patches. Modules built with ComfyUI's casting layers (``comfy.ops``; the DiT) may be
loaded partially in low-VRAM mode; the others are always loaded whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import comfy.model_management as mm
import comfy.model_patcher
import torch

ROLES = ("diffusion", "text", "vision", "vae", "audio", "tts")


def devices(role: str) -> tuple[torch.device, torch.device]:
    """(load device, offload device) for a model role, as ComfyUI picks them."""
    if role == "text":
        return mm.text_encoder_device(), mm.text_encoder_offload_device()
    if role == "vae":
        return mm.vae_device(), mm.vae_offload_device()
    return mm.get_torch_device(), mm.unet_offload_device()


def torch_module(obj: Any) -> torch.nn.Module:
    """The ``nn.Module`` inside a library object (the object itself, or its ``.model``/``.module``)."""
    if isinstance(obj, torch.nn.Module):
        return obj
    for name in ("model", "module", "net"):
        inner = getattr(obj, name, None)
        if isinstance(inner, torch.nn.Module):
            return inner
    raise TypeError(f"{type(obj).__name__} holds no torch.nn.Module to manage")


@dataclass
class Managed:
    """A library model plus the ``ModelPatcher`` that ComfyUI's memory manager moves around."""

    obj: Any
    patcher: comfy.model_patcher.ModelPatcher
    role: str
    source: str  # file or folder it was loaded from (shown in errors and logs)
    partial_ok: bool = False  # True when built with comfy.ops casting layers
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def load_device(self) -> torch.device:
        return self.patcher.load_device

    def clone(self) -> Managed:
        """Same weights, separate patch list (LoRA nodes patch a clone)."""
        return Managed(
            self.obj, self.patcher.clone(), self.role, self.source, self.partial_ok, dict(self.options)
        )


class _Holder(torch.nn.Module):
    """Container for modules with a read-only ``device`` property (transformers models): ModelPatcher sets
    ``model.device``, so it patches this holder, which moves the inner module with it."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner
        self.device = None


def _patchable(module: torch.nn.Module) -> torch.nn.Module:
    if isinstance(getattr(type(module), "device", None), property):
        return _Holder(module)
    return module


def wrap(obj: Any, role: str, source: str, partial_ok: bool = False, **options: Any) -> Managed:
    module = _patchable(torch_module(obj))
    load_device, offload_device = devices(role)
    patcher = comfy.model_patcher.ModelPatcher(
        module, load_device=load_device, offload_device=offload_device, size=mm.module_size(module)
    )
    return Managed(obj, patcher, role, source, partial_ok, options)


def load(*models: Managed | None, memory_required: int = 0) -> None:
    """Bring models to their compute device through ComfyUI (offloading others if needed)."""
    present = [m for m in models if m is not None]
    whole = [m.patcher for m in present if not m.partial_ok]
    if whole:
        mm.load_models_gpu(whole, memory_required=memory_required, force_full_load=True)
    partial = [m.patcher for m in present if m.partial_ok]
    if partial:
        mm.load_models_gpu(partial, memory_required=memory_required)


class BlockSwapPlacement:
    """Block swap for the DiT (library ``infinitetalk.offload``): the last N blocks stay in host memory and
    are streamed in while the model runs. ComfyUI's memory manager is asked to make room first; LoRA patches
    are merged into the host weights for the run and removed afterwards."""

    def __init__(self, managed: Managed, blocks_to_swap: int):
        self.managed, self.blocks_to_swap = managed, blocks_to_swap
        self.swap = None
        self.patched = False

    def activate(self) -> None:
        if self.swap is not None:
            return
        from ..infinitetalk.offload import place_model

        patcher = self.managed.patcher
        mm.unload_all_models()  # the DiT takes the device; ComfyUI reloads the encoders when they are needed
        mm.soft_empty_cache()
        if patcher.patches:
            patcher.patch_model(device_to=patcher.offload_device)
            self.patched = True
        self.swap = place_model(patcher.model, self.managed.load_device, self.blocks_to_swap)

    def release(self) -> None:
        patcher = self.managed.patcher
        if self.swap is not None:
            self.swap.remove()
            patcher.model.to(patcher.offload_device)
            self.swap = None
        if self.patched:
            patcher.unpatch_model(patcher.offload_device)
            self.patched = False
        mm.soft_empty_cache()


def block_swap_for(managed: Managed) -> BlockSwapPlacement | None:
    """A block-swap placement when the model asks for one and runs on a GPU, else None."""
    count = int(managed.options.get("block_swap", 0))
    if count <= 0 or mm.is_device_cpu(managed.load_device):
        return None
    return BlockSwapPlacement(managed, count)


def pick_dtype(role: str, wanted: str, device: torch.device | None = None) -> torch.dtype:
    """Resolve a precision combo ('auto', 'bf16', 'fp16', 'fp32') for a role on its load device."""
    if wanted != "auto":
        return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[wanted]
    device = device if device is not None else devices(role)[0]
    if mm.is_device_cpu(device):
        return torch.float32
    if mm.should_use_bf16(device):
        return torch.bfloat16
    if mm.should_use_fp16(device):
        return torch.float16
    return torch.float32
