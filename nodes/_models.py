"""Wrap library models for ``comfy.model_management``.

Every model a loader returns is a :class:`Managed`: the library object (what the pipeline calls) plus a
model patcher around its ``torch.nn.Module``. The patcher is the one the running ComfyUI uses for its own
models: ``comfy.model_patcher.CoreModelPatcher`` (newer ComfyUI points it at ``ModelPatcherDynamic`` when
dynamic VRAM is on, and that class hands CPU models to the plain ``ModelPatcher`` itself), or
``ModelPatcher`` where it does not exist (0.3.75). Before a node uses a model it calls :func:`load`, which
hands the patcher to ``comfy.model_management.load_models_gpu``: ComfyUI then moves it to the compute
device, offloads other models when memory is short, honours ``--cpu``/``--lowvram`` and applies LoRA
patches. Modules built with ComfyUI's casting layers (``comfy.ops``; the DiT) may be loaded partially in
low-VRAM mode; the others are always loaded whole.

The DiT's run is planned by :func:`prepare_dit` when the sampler knows the output size: it passes what
ComfyUI knows (the memory it can free, whether it places the weights itself) to the library's one memory
plan (``infinitetalk.build.plan_memory``) and gets the decision back: block swap, and the working memory
reserved when ComfyUI loads the model.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import comfy.model_management as mm
import comfy.model_patcher
import torch

log = logging.getLogger(__name__)

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
    dtype: torch.dtype = torch.float32  # compute dtype
    plan: Any = None  # the DiT: infinitetalk.build.DiTPlan (its ModelOptions: quantization, block swap, ...)
    adapter: str = ""  # the DiT: the adapter it was built with (file, or core's model patch)
    loras: tuple[tuple[str, float], ...] = ()  # the DiT: LoRAs patched in by InfiniteTalk LoRA nodes

    @property
    def load_device(self) -> torch.device:
        return self.patcher.load_device

    def clone(self) -> Managed:
        """Same weights, separate patch list (LoRA nodes patch a clone)."""
        return dataclasses.replace(self, patcher=self.patcher.clone())


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


def patcher_class() -> type:
    """The model patcher class the running ComfyUI uses for its own models."""
    return getattr(comfy.model_patcher, "CoreModelPatcher", comfy.model_patcher.ModelPatcher)


def wrap(obj: Any, role: str, source: str, partial_ok: bool = False, **typed: Any) -> Managed:
    """``typed``: the :class:`Managed` fields past ``partial_ok`` (dtype, plan, adapter)."""
    module = _patchable(torch_module(obj))
    archive = getattr(mm, "archive_model_dtypes", None)
    if archive is not None:  # newer ComfyUI: loaders record each weight's stored dtype (fp8 stays fp8)
        archive(module)
    load_device, offload_device = devices(role)
    patcher = patcher_class()(
        module, load_device=load_device, offload_device=offload_device, size=mm.module_size(module)
    )
    return Managed(obj, patcher, role, source, partial_ok, **typed)


def is_dynamic(managed: Managed) -> bool:
    """True when ComfyUI streams this model's weights itself (dynamic VRAM, ``ModelPatcherDynamic``)."""
    check = getattr(managed.patcher, "is_dynamic", None)
    return bool(check()) if callable(check) else False


def load(*models: Managed | None, memory_required: int = 0) -> None:
    """Bring models to their compute device through ComfyUI (offloading others if needed).

    ``memory_required``: bytes of working memory the caller needs besides the weights (the DiT's
    activations): ComfyUI frees that much before loading, and loads fewer weights in low-VRAM mode.
    """
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


@dataclass
class DiTRun:
    """How the DiT runs in one sampler call: its block swap (or None) and the working memory to reserve."""

    swap: BlockSwapPlacement | None
    memory_required: int
    estimate: Any  # infinitetalk.preflight.MemoryEstimate


def prepare_dit(managed: Managed, config, height: int, width: int, speakers: int) -> DiTRun:
    """Memory plan of a sampler run, before the DiT is moved to the device: ComfyUI's numbers in, the
    library's decision (``infinitetalk.build.plan_memory``) out. Raises ``InputError`` (one line, with the
    smallest change that fits) when the run cannot fit. ComfyUI's dynamic VRAM (and ``--cpu``) place the
    weights themselves: no block swap there.
    """
    from ..infinitetalk.build import HostMemory, plan_memory
    from ..infinitetalk.preflight import RunShape

    device, options = managed.load_device, managed.plan.options
    host = HostMemory(
        free=_freeable_memory(device),
        host_copy=True,  # the loader keeps the whole DiT on ComfyUI's offload device
        streams_weights=mm.is_device_cpu(device) or is_dynamic(managed),
        streams_unless_swapped=managed.partial_ok,  # comfy.ops layers: low-VRAM mode streams the weights
        weights_loaded=True,
    )
    run = RunShape.for_generation(config, height, width, speakers)
    memory = plan_memory(
        managed.patcher.model.config, managed.dtype, options.quantization, run, options.block_swap,
        "cpu" if mm.is_device_cpu(device) else device.type, host,
    )  # fmt: skip
    swap = BlockSwapPlacement(managed, memory.block_swap) if memory.block_swap else None
    return DiTRun(swap, memory.working, memory.estimate)


def _freeable_memory(device: torch.device) -> int:
    """Free memory on ``device`` plus what ComfyUI's loaded models hold there (it unloads them on demand)."""
    free = int(mm.get_free_memory(device))
    if mm.is_device_cpu(device):
        return free  # unloading a model to the CPU frees no RAM
    for loaded in getattr(mm, "current_loaded_models", []):
        if getattr(loaded, "device", None) == device:
            try:
                free += int(loaded.model_loaded_memory())
            except (AttributeError, ReferenceError) as err:  # its patcher was garbage-collected: nothing held
                log.debug("loaded model size unavailable: %s", err)
    return free


def pick_dtype(role: str, wanted: str, device: torch.device | None = None) -> torch.dtype:
    """A precision combo ('auto', 'bf16', 'fp16', 'fp32') for a role: the library's table, 'auto' from what
    ComfyUI says the load device computes well."""
    from ..infinitetalk.build import AUTO, precision_dtype

    if wanted != AUTO:
        return precision_dtype(wanted)
    device = device if device is not None else devices(role)[0]
    supported = () if mm.is_device_cpu(device) else tuple(
        d for d, ok in ((torch.bfloat16, mm.should_use_bf16(device)), (torch.float16, mm.should_use_fp16(device))) if ok
    )  # fmt: skip
    return precision_dtype(AUTO, supported)
