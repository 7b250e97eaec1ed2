"""One way to build the InfiniteTalk DiT, used by the command line, the ComfyUI Model Loader and scripts.

    options = ModelOptions(precision="bf16", quantization="fp8_e4m3fn", block_swap="auto")
    plan = plan_dit(paths, options, compute_device="cuda", run=RunShape(480, 832, 81))  # headers only
    model = build_dit(paths, options, device="cpu", plan=plan)                        # reads weights

:func:`plan_dit` checks everything that can be checked before a weight is read: the option names, the
attention backend (``flash``/``sage`` installed, CUDA), the files (layout, adapter fitting the DiT) and,
given the run's shape, memory (:mod:`infinitetalk.preflight`); it resolves ``block_swap="auto"`` and logs
the estimate. :func:`build_dit` then loads (through the layers' own ``load_state_dict``, so any
``operations`` class can create or stream its weights), merges LoRAs, quantises, sets the attention kernel
and compiles the blocks.

:func:`plan_memory` is the one memory decision of a run (block swap, working memory, whether it fits), for
the command line (through :func:`plan_dit`) and the ComfyUI Sampler (which passes the memory ComfyUI can free,
:class:`HostMemory`). :data:`PRECISIONS` is the one precision <-> dtype table; :class:`BlockSwap` the one
block-swap value. :func:`load_pipeline` loads every model of a run this library hosts (the node's models are
loaded and placed by ComfyUI).

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
from .encoders.clip import load_clip_vision
from .encoders.text import load_text_encoder
from .encoders.vae import load_vae
from .errors import InputError
from .loading.dit import inspect_dit, load_dit
from .lora import merge_loras
from .model.ops import casting_operations
from .offload import place_model
from .pipeline import DeviceModelManager, InfiniteTalkPipeline
from .preflight import (
    MemoryEstimate,
    RunShape,
    available_ram,
    check_fits,
    estimate,
    fewest_swapped_blocks,
    free_device_memory,
    gib,
    weight_bytes,
)
from .quant import quantize_dit

log = logging.getLogger(__name__)

# The one table of precision names <-> dtypes (the node's combos, the command line's --dtype, ModelOptions).
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


def precision_dtype(
    precision: str, supported: tuple[torch.dtype, ...] | None = None, device=None
) -> torch.dtype:
    """The dtype of a precision name. ``auto``: the first of bf16, fp16 in ``supported`` (what the host says
    the device computes well; default: bf16 where supported, else fp16, on CUDA, nothing elsewhere), else fp32."""
    if precision not in PRECISIONS:
        raise InputError(f"precision {precision!r} is unknown; choose one of {', '.join(PRECISIONS)}")
    dtype = PRECISIONS[precision]
    if dtype is not None:
        return dtype
    if supported is None:
        cuda = device is not None and torch.device(device).type == "cuda"
        supported = (
            () if not cuda else (torch.bfloat16,) if torch.cuda.is_bf16_supported() else (torch.float16,)
        )
    return next((d for d in (torch.bfloat16, torch.float16) if d in supported), torch.float32)


def precision_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bf16"`` (the inverse of the table)."""
    for name, value in PRECISIONS.items():
        if value == dtype:
            return name
    raise InputError(f"dtype {dtype} has no precision name; use one of bf16, fp16, fp32")


@dataclass(frozen=True)
class BlockSwap:
    """How many DiT blocks stay in host memory and are streamed in: a count, or automatic (the fewest that
    fit). The one value for the node's widget (-1 = auto), the command line's ``N|auto`` and the library."""

    blocks: int | None = 0  # None: automatic

    def __post_init__(self) -> None:
        b = self.blocks
        if not (b is None or (isinstance(b, int) and not isinstance(b, bool) and b >= 0)):
            raise InputError(f"block_swap {b!r} must be a block count (0, 1, ...) or 'auto'")

    @classmethod
    def parse(cls, value: BlockSwap | int | str) -> BlockSwap:
        """``"auto"`` or a count (int or digits); anything else: ``InputError`` naming the value."""
        if isinstance(value, BlockSwap):
            return value
        if value == AUTO:
            return cls(None)
        if isinstance(value, str) and value.strip().isdigit():
            return cls(int(value))
        return cls(value)  # type: ignore[arg-type]  # checked in __post_init__

    @classmethod
    def from_widget(cls, value: int) -> BlockSwap:
        """The node's integer widget: -1 = auto."""
        return cls(None) if value == -1 else cls(int(value))

    @property
    def is_auto(self) -> bool:
        return self.blocks is None

    def __str__(self) -> str:
        return AUTO if self.blocks is None else str(self.blocks)


AUTO_SWAP = BlockSwap(None)
NO_SWAP = BlockSwap(0)


@dataclass(frozen=True)
class ModelOptions:
    """How to build the DiT. Every field has the same name and values in the node and on the command line."""

    precision: str = "auto"  # compute dtype: auto (bf16/fp16 on CUDA, fp32 on CPU) | bf16 | fp16 | fp32
    quantization: str = "none"  # see QUANTIZATIONS
    block_swap: BlockSwap = NO_SWAP  # blocks kept in host memory and streamed in (a count or 'auto')
    attention: str = "auto"  # auto (PyTorch SDPA) | sdpa | flash | sage
    compile: bool = False  # torch.compile every transformer block
    loras: tuple[tuple[str, float], ...] = field(default_factory=tuple)  # merged before quantising

    def __post_init__(self) -> None:
        if not isinstance(self.block_swap, BlockSwap):  # "auto" or a count; a bad value waits for validate()
            try:
                object.__setattr__(self, "block_swap", BlockSwap.parse(self.block_swap))
            except InputError:
                pass

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
        BlockSwap.parse(self.block_swap)  # a value the constructor could not read: its one-line error

    def compute_dtype(self, device: torch.device | str) -> torch.dtype:
        """The activation dtype on ``device`` ('auto': bf16 where supported, else fp16, on CUDA; fp32 elsewhere)."""
        return precision_dtype(self.precision, device=device)

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
    options: ModelOptions = field(default_factory=ModelOptions)  # what was asked (quantization, LoRAs, ...)


@dataclass(frozen=True)
class HostMemory:
    """What the host knows about memory when a run is planned (the node passes ComfyUI's numbers).

    ``free``: bytes the compute device can give the run (what the host can free included); None: unknown,
    no check. ``host_copy``: the whole DiT sits in RAM (ComfyUI's offload device, ``--offload_model``); None:
    only when blocks are swapped. ``other_resident``: other models kept on the device meanwhile.
    ``streams_weights``: the host places the DiT's weights itself (ComfyUI's dynamic VRAM, ``--cpu``): they
    are held already, only the working memory must fit, no block swap. ``streams_unless_swapped``: it does
    so when no block swap is asked (ComfyUI's low-VRAM casting layers). ``weights_loaded``: the weights are
    in RAM already (no RAM check for loading them)."""

    free: int | None
    host_copy: bool | None = False
    other_resident: int = 0
    streams_weights: bool = False
    streams_unless_swapped: bool = False
    weights_loaded: bool = False


@dataclass(frozen=True)
class MemoryPlan:
    """The decision for one run: the blocks to swap, and the estimate it fits in."""

    block_swap: int
    estimate: MemoryEstimate

    @property
    def working(self) -> int:
        """Working memory besides the weights (what a host reserves when it loads the model)."""
        return self.estimate.working


def plan_memory(
    cfg: DiTConfig,
    dtype: torch.dtype,
    quantization: str,
    run: RunShape,
    block_swap: BlockSwap,
    device_type: str,
    host: HostMemory,
    load_buffer: int = 0,
) -> MemoryPlan:
    """The one memory decision of a run: block swap (a given count, or ``auto``: the fewest blocks that fit),
    the working memory, and whether it fits (``InputError`` in one line with the smallest change that fits).
    """
    kw = dict(device_type=device_type, other_resident=host.other_resident, load_buffer=load_buffer)
    preloaded = 0
    if host.streams_weights or (host.streams_unless_swapped and block_swap == NO_SWAP):
        if not (block_swap.is_auto or block_swap == NO_SWAP):
            log.info("block_swap %s ignored: the host places the weights itself here", block_swap)
        blocks = 0
        preloaded = estimate(cfg, dtype, quantization, run, 0, host_copy=True, **kw).weights_resident
    elif device_type == "cpu" or (block_swap.is_auto and host.free is None):
        blocks = 0  # nothing to swap to (CPU), or nothing to fit against
    elif (
        block_swap.is_auto
    ):  # the fewest blocks that fit (all of them when nothing fits: check_fits explains)
        fitted = fewest_swapped_blocks(cfg, dtype, quantization, run, host.free, host_copy=True, **kw)
        blocks = cfg.num_layers if fitted is None else fitted
    else:
        blocks = block_swap.blocks
    host_copy = bool(host.host_copy) or (host.host_copy is None and blocks != 0)
    est = check_fits(cfg, dtype, quantization, run, blocks, host.free, preloaded=preloaded, host_copy=host_copy,
                     **kw)  # fmt: skip
    if device_type != "cpu" and not host.weights_loaded and (host_copy or est.weights_swapped):
        ram = available_ram()
        if ram is not None and est.host_peak > ram:
            raise InputError(
                f"the InfiniteTalk DiT needs about {gib(est.host_peak)} of RAM ({quantization}, block_swap "
                f"{blocks}) but {gib(ram)} is available: use quantization fp8_e4m3fn or close other programs"
            )
    free = "" if host.free is None else f"; {gib(host.free)} free"
    log.info("memory preflight (%s, %s): %s%s", quantization, dtype, est.describe(), free)
    return MemoryPlan(blocks, est)


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
        run: the shape of one model call; without it the memory plan waits for the host (ComfyUI knows
            the size only when the sampler runs: :func:`plan_memory` then).
        free: bytes free on the compute device; -1 measures them now, None skips the check.
        host_copy: the host loads the whole DiT into RAM first (ComfyUI's offload device); None: only
            when blocks are swapped (the command line loads to RAM, then moves the resident blocks).
        other_resident: bytes of other models the host keeps on the compute device meanwhile.

    Raises:
        InputError: unknown option, attention kernel missing, not enough memory (with the smallest fix).
        CheckpointError: missing/unknown/mismatched files.
    """
    options.validate()
    compute_device = torch.device(compute_device)
    attention = resolve_backend(options.attention, compute_device)
    if options.quantization in ("quanto_int8", "quanto_fp8"):
        _require_quanto()
    dtype = options.compute_dtype(compute_device)
    ckpt = inspect_dit(paths.dit, getattr(paths, "adapter", None))
    cfg = ckpt.config
    swap = options.block_swap.blocks
    if swap is not None and swap > cfg.num_layers:
        raise InputError(
            f"block_swap {swap} is out of range: the DiT has {cfg.num_layers} blocks (0..{cfg.num_layers})"
        )
    est = None
    if run is not None:
        if free == -1:
            free = free_device_memory(compute_device)
        host = HostMemory(free, host_copy, other_resident)
        memory = plan_memory(cfg, dtype, options.quantization, run, options.block_swap, compute_device.type, host,
                             ckpt.largest_tensor_bytes)  # fmt: skip
        swap, est = memory.block_swap, memory.estimate
    else:
        if compute_device.type == "cpu" and swap is None:
            swap = 0
        _check_host_ram(cfg, dtype, options, compute_device, host_copy, ckpt.largest_tensor_bytes)
    storage = options.storage_dtype(dtype)
    return DiTPlan(cfg, dtype, storage, attention, swap, est, ckpt.largest_tensor_bytes, options)


def _check_host_ram(cfg, dtype, options, device, host_copy, load_buffer) -> None:
    """Without a run shape: the weights the host loads into RAM must fit the available RAM."""
    if not (host_copy or device.type == "cpu"):
        return
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
    if plan is None:
        plan = plan_dit(paths, options, compute_device or device, run)
    if operations is None and options.quantization == "fp8_e4m3fn":
        operations = casting_operations
    model = load_dit(paths.dit, getattr(paths, "adapter", None), device, plan.storage_dtype, operations)
    if options.loras:
        merge_loras(model, list(options.loras))  # before quantising: quanto weights cannot take a delta
    if options.quantization in ("quanto_int8", "quanto_fp8"):
        quantize_dit(model, options.quantization.removeprefix("quanto_"))
    model.compute_dtype = plan.compute_dtype
    model.attention_backend = plan.attention
    model.build_plan = plan
    if options.compile:
        compile_blocks(model)
    return model.eval().requires_grad_(False)


def load_dit_model(paths, options: ModelOptions, plan: DiTPlan, device: torch.device, offload: bool = False):
    """Build the DiT (LoRAs merged, then quantised) and place it: whole on ``device``, whole in RAM
    (``offload``: moved in by the pipeline's model manager), or with its last ``plan.block_swap`` blocks kept
    in RAM (:mod:`infinitetalk.offload`). Returns ``(model, block placement or None)``."""
    swap = plan.block_swap if device.type == "cuda" else 0
    home = torch.device("cpu") if offload or swap else device
    dit = build_dit(paths, options, device=home, plan=plan)
    placement = None
    if swap:
        placement = place_model(dit, device, swap)
    return dit, placement


def load_pipeline(paths, options: ModelOptions, plan: DiTPlan, device: torch.device, offload: bool = False):
    """The pipeline of a run this library hosts (command line, scripts) over the files of ``paths``
    (:class:`~infinitetalk.weights.WeightPaths`): umT5 and CLIP in the compute dtype (in RAM with
    ``offload``, moved to the device while they run), the VAE in fp32 on the device, the DiT as planned."""

    dtype, home = plan.compute_dtype, torch.device("cpu") if offload else device
    text = load_text_encoder(paths.text_encoder, tokenizer=paths.tokenizer, device=home, dtype=dtype)
    clip = load_clip_vision(paths.clip, device=home, dtype=dtype)
    vae = load_vae(paths.vae, device=device, dtype=torch.float32)
    dit, swap = load_dit_model(paths, options, plan, device, offload)
    manager = None
    if offload:
        managed = {"text_encoder": text, "clip": clip} | ({} if swap is not None else {"dit": dit})
        manager = DeviceModelManager(managed, device)
    return InfiniteTalkPipeline(dit, vae, clip, text, None, device, dtype, model_manager=manager)


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
