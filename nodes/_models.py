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

The DiT's run is planned by :func:`prepare_dit` when the sampler knows the output size: the memory
preflight (``infinitetalk.preflight``) is logged, ``block_swap = auto`` is resolved against the memory
ComfyUI can free, and the activation memory is reserved when ComfyUI loads the model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import comfy.model_management as mm
import comfy.model_patcher
import torch

from ..infinitetalk.gguf_tensor import has_gguf_weights
from ._gguf import gguf_patcher_class

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


def patcher_class() -> type:
    """The model patcher class the running ComfyUI uses for its own models."""
    return getattr(comfy.model_patcher, "CoreModelPatcher", comfy.model_patcher.ModelPatcher)


def wrap(obj: Any, role: str, source: str, partial_ok: bool = False, **options: Any) -> Managed:
    module = _patchable(torch_module(obj))
    archive = getattr(mm, "archive_model_dtypes", None)
    if archive is not None:  # newer ComfyUI: loaders record each weight's stored dtype (fp8 stays fp8)
        archive(module)
    load_device, offload_device = devices(role)
    cls = gguf_patcher_class(patcher_class()) if has_gguf_weights(module) else patcher_class()
    patcher = cls(
        module, load_device=load_device, offload_device=offload_device, size=mm.module_size(module)
    )
    return Managed(obj, patcher, role, source, partial_ok, options)


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
    """Memory preflight of a sampler run, before the DiT is moved to the device.

    Logs the estimate; resolves ``block_swap`` (``"auto"``: the fewest blocks that fit what ComfyUI can
    free); raises ``InputError`` (one line, with the smallest change that fits) when the run cannot fit.
    ComfyUI's dynamic VRAM (and ``--cpu``) place the weights themselves: no block swap there.
    """
    from ..infinitetalk.preflight import RunShape, check_fits, estimate, fewest_swapped_blocks, gib

    model = managed.patcher.model
    cfg, device = model.config, managed.load_device
    dtype = managed.options.get("dtype", torch.float32)
    quantization = managed.options.get("quantization", "none")
    run = RunShape.for_generation(config, height, width, speakers)
    wanted = managed.options.get("block_swap", 0)
    kw = {"device_type": device.type, "host_copy": True}
    free = _freeable_memory(device)
    streamed = mm.is_device_cpu(device) or is_dynamic(managed) or (wanted == 0 and managed.partial_ok)
    if streamed:
        # the weights are in RAM already (CPU) or ComfyUI streams them (dynamic VRAM, low-VRAM mode of the
        # comfy.ops layers): what must fit is the working memory
        if wanted not in (0, "auto"):
            log.info("block_swap %s ignored: ComfyUI places the weights itself here", wanted)
        resident = estimate(cfg, dtype, quantization, run, 0, **kw).weights_resident
        est = check_fits(cfg, dtype, quantization, run, 0, free, preloaded=resident, **kw)
        wanted = 0
    else:
        if wanted == "auto":
            fitted = fewest_swapped_blocks(cfg, dtype, quantization, run, free, **kw)
            wanted = cfg.num_layers if fitted is None else fitted
        est = check_fits(cfg, dtype, quantization, run, int(wanted), free, **kw)
    log.info("InfiniteTalk memory preflight (%s free on %s): %s", gib(free), device, est.describe())
    swap = BlockSwapPlacement(managed, int(wanted)) if wanted else None
    return DiTRun(swap, est.working, est)


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
