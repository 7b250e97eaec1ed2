"""One way to build the InfiniteTalk DiT, used by the command line, the ComfyUI Model Loader and scripts.

    options = ModelOptions(precision="bf16", quantization="fp8_e4m3fn", block_swap="auto")
    plan = plan_dit(paths, options, compute_device="cuda", run=RunShape(480, 832, 81))  # headers only
    model = build_dit(paths, options, device="cpu", plan=plan)                        # reads weights

:func:`plan_dit` checks everything that can be checked before a weight is read: the option names, the
attention backend (``flash``/``sage`` installed, CUDA), the files (layout, adapter fitting the DiT) and,
given the run's shape, memory (:mod:`infinitetalk.preflight`); it resolves ``block_swap="auto"`` and logs
the estimate. :func:`build_dit` then loads (through the layers' own ``load_state_dict``, so any
``operations`` class can create or stream its weights), merges LoRAs, quantises, sets the attention kernel
and compiles the blocks. Placing the model on the device (block swap) stays with the host.

Quantization names (the same in the node and on the command line):

- ``none``: weights in the compute precision;
- ``fp8_e4m3fn``: *fp8 storage*: the block linear weights are stored as ``float8_e4m3fn`` (straight from an
  fp8 file, or rounded once at load) and cast to the compute dtype layer by layer (half the memory of
  bf16; ComfyUI's "fp8_e4m3fn weight dtype");
- ``quanto_int8`` / ``quanto_fp8``: optimum-quanto weight quantisation with one scale per output channel,
  what the reference's ``--quant int8`` / ``--quant fp8`` do.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from .attention import BACKENDS, resolve_backend
from .config import DiTConfig
from .errors import InputError
from .preflight import MemoryEstimate, RunShape, available_ram, check_fits, fewest_swapped_blocks, gib

log = logging.getLogger(__name__)

PRECISIONS: dict[str, torch.dtype | None] = {
    "auto": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "fp32": torch.float32,
}
QUANTIZATIONS: dict[str, str] = {
    "none": "weights in the compute precision",
    "fp8_e4m3fn": "fp8 storage: block linear weights stored as float8_e4m3fn, cast to the compute dtype per "
    "layer (half the memory of bf16)",
    "quanto_int8": "optimum-quanto int8 weights, one scale per output channel (the reference's --quant int8)",
    "quanto_fp8": "optimum-quanto float8 weights, one scale per output channel (the reference's --quant fp8)",
}
AUTO = "auto"


@dataclass(frozen=True)
class ModelOptions:
    """How to build the DiT. Every field has the same name and values in the node and on the command line."""

    precision: str = "auto"  # compute dtype: auto (bf16/fp16 on CUDA, fp32 on CPU) | bf16 | fp16 | fp32
    quantization: str = "none"  # see QUANTIZATIONS
    block_swap: int | str = 0  # blocks kept in host memory and streamed in; "auto": the fewest that fit
    attention: str = "auto"  # auto (PyTorch SDPA) | sdpa | flash | sage
    compile: bool = False  # torch.compile every transformer block
    loras: tuple[tuple[str, float], ...] = field(default_factory=tuple)  # merged before quantising

    def validate(self) -> None:
        """One-line ``InputError`` for any unknown name (no file is touched)."""
        if self.precision not in PRECISIONS:
            raise InputError(
                f"precision {self.precision!r} is unknown; choose one of {', '.join(PRECISIONS)}"
            )
        if self.quantization not in QUANTIZATIONS:
            raise InputError(
                f"quantization {self.quantization!r} is unknown; choose one of {', '.join(QUANTIZATIONS)} "
                "(fp8_e4m3fn = fp8 storage; quanto_int8 / quanto_fp8 = optimum-quanto)"
            )
        if self.attention not in BACKENDS:
            raise InputError(f"attention {self.attention!r} is unknown; choose one of {', '.join(BACKENDS)}")
        swap = self.block_swap
        if not (swap == AUTO or (isinstance(swap, int) and not isinstance(swap, bool) and swap >= 0)):
            raise InputError(f"block_swap {swap!r} must be a block count (0, 1, ...) or 'auto'")

    def compute_dtype(self, device: torch.device | str) -> torch.dtype:
        """The activation dtype on ``device`` ('auto': bf16 where supported, else fp16, on CUDA; fp32 elsewhere)."""
        dtype = PRECISIONS[self.precision]
        if dtype is not None:
            return dtype
        device = torch.device(device)
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32

    def storage_dtype(self, compute: torch.dtype) -> torch.dtype:
        """Dtype handed to the loader: fp8 for fp8 storage, else the compute dtype (quanto quantises after)."""
        return torch.float8_e4m3fn if self.quantization == "fp8_e4m3fn" else compute


@dataclass(frozen=True)
class DiTPlan:
    """Everything decided before the weights are read."""

    config: DiTConfig
    compute_dtype: torch.dtype
    storage_dtype: torch.dtype
    attention: str  # the resolved kernel
    block_swap: int | None  # resolved count; None = "auto" left to the host (no run shape yet)
    estimate: MemoryEstimate | None
    largest_tensor_bytes: int


def plan_dit(
    paths,
    options: ModelOptions,
    compute_device: torch.device | str = "cpu",
    run: RunShape | None = None,
    free: int | None = -1,
    host_copy: bool | None = False,
    other_resident: int = 0,
) -> DiTPlan:
    """Validate options and files and (given ``run``) memory, reading only file headers.

    Args:
        paths: anything with ``.dit`` and ``.adapter`` (None when the DiT file holds the adapter).
        compute_device: where the model will compute.
        run: the shape of one model call; without it the memory check and ``block_swap="auto"`` wait
            for the host (ComfyUI knows the size only when the sampler runs).
        free: bytes free on the compute device; -1 measures them now, None skips the check.
        host_copy: the host loads the whole DiT into RAM first (ComfyUI's offload device); None: only
            when blocks are swapped (the command line loads to RAM, then moves the resident blocks).
        other_resident: bytes of other models the host keeps on the compute device meanwhile.

    Raises:
        InputError: unknown option, attention kernel missing, not enough memory (with the smallest fix).
        CheckpointError: missing/unknown/mismatched files.
    """
    from .loading.dit import inspect_dit

    options.validate()
    compute_device = torch.device(compute_device)
    attention = resolve_backend(options.attention, compute_device)
    if options.quantization in ("quanto_int8", "quanto_fp8"):
        _require_quanto()
    dtype = options.compute_dtype(compute_device)
    ckpt = inspect_dit(paths.dit, getattr(paths, "adapter", None))
    cfg = ckpt.config
    if ckpt.stored_bytes is not None and options.quantization != "none":
        raise InputError(
            f"quantization {options.quantization!r} cannot re-quantise a GGUF DiT ({paths.dit}): it is already "
            "quantised; use quantization none"
        )
    swap = None if options.block_swap == AUTO else int(options.block_swap)
    if swap is not None and swap > cfg.num_layers:
        raise InputError(
            f"block_swap {swap} is out of range: the DiT has {cfg.num_layers} blocks (0..{cfg.num_layers})"
        )
    est = None
    if run is not None:
        swap, est = _plan_memory(cfg, dtype, options, run, swap, compute_device, free, host_copy, other_resident,
                                 ckpt.largest_tensor_bytes, ckpt.stored_bytes)  # fmt: skip
    else:
        if compute_device.type == "cpu" and swap is None:
            swap = 0
        _check_host_ram(cfg, dtype, options, compute_device, host_copy, ckpt.largest_tensor_bytes)
    plan = DiTPlan(cfg, dtype, options.storage_dtype(dtype), attention, swap, est, ckpt.largest_tensor_bytes)
    if est is not None:
        log.info("memory preflight (%s, %s): %s", options.quantization, dtype, est.describe())
    return plan


def _plan_memory(cfg, dtype, options, run, swap, device, free, host_copy, other_resident, load_buffer, stored=None):
    kw = dict(device_type=device.type, other_resident=other_resident, load_buffer=load_buffer, stored=stored)
    kw["host_copy"] = bool(host_copy) or (host_copy is None and swap != 0)
    if free == -1:
        from .preflight import free_device_memory

        free = free_device_memory(device)
    if swap is None:  # auto: the fewest blocks that fit (all of them when nothing fits: check_fits explains)
        fitted = (
            None if free is None else fewest_swapped_blocks(cfg, dtype, options.quantization, run, free, **kw)
        )
        swap = 0 if free is None else (fitted if fitted is not None else cfg.num_layers)
        if device.type == "cpu":
            swap = 0
        kw["host_copy"] = bool(host_copy) or (host_copy is None and swap != 0)
    est = check_fits(cfg, dtype, options.quantization, run, swap, free, **kw)
    if device.type != "cpu" and (kw["host_copy"] or est.weights_swapped):
        ram = available_ram()
        if ram is not None and est.host_peak > ram:
            raise InputError(
                f"the InfiniteTalk DiT needs about {gib(est.host_peak)} of RAM ({options.quantization}, block_swap "
                f"{swap}) but {gib(ram)} is available: use quantization fp8_e4m3fn or close other programs"
            )
    return swap, est


def _check_host_ram(cfg, dtype, options, device, host_copy, load_buffer) -> None:
    """Without a run shape: the weights the host loads into RAM must fit the available RAM."""
    if not (host_copy or device.type == "cpu"):
        return
    from .preflight import weight_bytes

    non_block, per_block = weight_bytes(cfg, dtype, options.quantization)
    need = non_block + per_block * cfg.num_layers + load_buffer
    ram = available_ram()
    if ram is not None and need > ram:
        fix = "use quantization fp8_e4m3fn" if options.quantization == "none" else "close other programs"
        raise InputError(
            f"the InfiniteTalk DiT needs about {gib(need)} of RAM to load ({options.quantization}, {dtype}) but "
            f"{gib(ram)} is available: {fix}"
        )


def _require_quanto() -> None:
    import importlib.util

    if importlib.util.find_spec("optimum") is None or importlib.util.find_spec("optimum.quanto") is None:
        raise InputError(
            "quanto quantization needs optimum-quanto: pip install optimum-quanto, or use fp8_e4m3fn"
        )


def build_dit(
    paths,
    options: ModelOptions,
    operations=None,
    *,
    device: torch.device | str = "cpu",
    compute_device: torch.device | str | None = None,
    plan: DiTPlan | None = None,
    run: RunShape | None = None,
):
    """Build the DiT + adapter as ``options`` say; returns a ``WanInfiniteTalkDiT`` (on ``device``).

    ``operations``: a host's layer namespace (ComfyUI's ``comfy.ops``); without one, fp8 storage uses
    :data:`infinitetalk.model.ops.casting_operations`. ``plan``: from :func:`plan_dit` (made here when
    not given, with ``compute_device`` and ``run``). The model carries ``plan`` as ``model.build_plan``.
    """
    from .loading.dit import load_dit
    from .model.ops import casting_operations

    if plan is None:
        plan = plan_dit(paths, options, compute_device or device, run)
    if operations is None and options.quantization == "fp8_e4m3fn":
        operations = casting_operations
    model = load_dit(paths.dit, getattr(paths, "adapter", None), device, plan.storage_dtype, operations)
    if options.loras:
        from .lora import merge_loras

        merge_loras(model, list(options.loras))  # before quantising: quanto weights cannot take a delta
    if options.quantization in ("quanto_int8", "quanto_fp8"):
        from .quant import quantize_dit

        quantize_dit(model, options.quantization.removeprefix("quanto_"))
    model.compute_dtype = plan.compute_dtype
    model.attention_backend = plan.attention
    model.build_plan = plan
    if options.compile:
        compile_blocks(model)
    return model.eval().requires_grad_(False)


def compile_blocks(model, **compile_kwargs) -> int:
    """``torch.compile`` the forward of every transformer block (hooks, e.g. block swap, stay eager).

    The block has no graph break (checked by the tests with ``torch._dynamo.explain``), so each block is
    one graph; blocks share their code, so one compilation serves all of them. Returns the block count.
    """
    blocks = getattr(model, getattr(model, "swappable_blocks", "blocks"))
    for block in blocks:
        block.forward = torch.compile(block.forward, **compile_kwargs)
    log.info("torch.compile: %d transformer blocks compile on their first call", len(blocks))
    return len(blocks)
