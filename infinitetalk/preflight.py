"""Memory preflight: will a run fit, decided before a single weight is read.

The estimate is built from the DiT config (read from the file headers) and the run's shape:

- **weights**, by dtype, exactly as the loader stores them (:func:`infinitetalk.loading.dit.target_dtype`:
  fp32 policy modules, fp8 block linears, optimum-quanto's int8/fp8 data plus one scale per output
  channel), split into what stays on the compute device and the blocks block swap keeps in host memory;
- **activations**: the peak of live tensors during one model call, measured by running the real model
  code once on fake tensors (``FakeTensorMode``: shapes and dtypes only, no memory, no compute; about a
  second for the 14B at 480p) with a one-block model; every block has the same working set, so one block
  gives the peak of forty. It follows the code as it is: the float64 RoPE, the attention kernels' outputs,
  the FFN's intermediate, the two-speaker attention map, batched guidance;
- **transients** the fake run cannot see: two swapped blocks in flight (the running one and the prefetched
  next), one layer's weight cast to the compute dtype (fp8 storage, quanto), the sampler's own per-window
  tensors (latents, noise, conditioning, predictions of each guidance branch), and the window's pixel
  tensors around the VAE (conditioning video, decoded video and its conversion to frames), which peak
  outside the DiT call.

:func:`estimate` returns a :class:`MemoryEstimate`; :func:`fewest_swapped_blocks` is ``block_swap = auto``;
:func:`check_fits` raises one line with the smallest change that fits. What the estimate leaves out: the
CUDA context (outside the free memory already), the VAE's internal working memory inside encode/decode
(ComfyUI unloads the DiT for the VAE when it must; the command line keeps the VAE weights resident: see
``other_resident``) and allocator slack, which the fit
check covers with a margin (:data:`CUDA_MARGIN`; on the CPU glibc's heap keeps freed activation memory,
so twice the live working bytes are budgeted). ``python -m infinitetalk.preflight`` prints the table of
the README's memory guide.
"""

from __future__ import annotations

import functools
import logging
import math
import weakref
from dataclasses import dataclass, replace

import torch

from .config import DiTConfig
from .errors import InputError
from .loading.dit import dit_key_shapes, target_dtype
from .loading.state_dict import SAFETENSORS_SUFFIXES, open_checkpoint
from .model.dit import WanInfiniteTalkDiT
from .sampling import call_groups, guidance_branches
from .windows import latent_grid

log = logging.getLogger(__name__)

GIB = 1024**3
QUANTO = {"quanto_int8": torch.int8, "quanto_fp8": torch.float8_e4m3fn}
CUDA_MARGIN = (1.05, 512 * 1024**2)  # fit check on CUDA: estimate x 1.05 + 512 MiB (allocator slack)
CPU_HEAP_FACTOR = 2.0  # fit check on the CPU: glibc keeps freed working memory (measured up to 1.7x)
TEXT_TOKENS = 512  # the DiT pads every prompt to text_len


# ============================================================================ the run's shape
@dataclass(frozen=True)
class RunShape:
    """What one model call processes: output size, window length, guidance passes per call, speakers."""

    height: int = 480
    width: int = 832
    frame_num: int = 81
    batch: int = 1  # guidance branches computed in one call (batched guidance), else 1
    speakers: int = 1

    @property
    def latent(self) -> tuple[int, int, int]:
        """(T, h, w) latent grid of one window."""
        return latent_grid(self.frame_num, self.height, self.width)

    def describe(self) -> str:
        calls = f", {self.batch} passes per call" if self.batch > 1 else ""
        spk = ", 2 speakers" if self.speakers == 2 else ""
        return f"{self.width}x{self.height}, {self.frame_num} frames{calls}{spk}"

    @classmethod
    def for_generation(cls, config, height: int, width: int, speakers: int) -> RunShape:
        """The shape of a pipeline run (``GenerationConfig``) at its output size."""
        groups = call_groups(guidance_branches(config.text_scale), speakers, config.batch_guidance)
        return cls(height, width, config.frame_num, max(len(g) for g in groups), speakers)


# ============================================================================ the estimate
@dataclass(frozen=True)
class MemoryEstimate:
    """Peak bytes of the sampling phase. ``device_peak`` is on the compute device, ``host_peak`` in RAM."""

    device_type: str  # "cuda" | "cpu" | ...
    run: RunShape
    block_swap: int
    weights_resident: int  # weights kept on the compute device
    weights_swapped: int  # blocks kept in host memory by block swap
    swap_in_flight: int  # device copies of swapped blocks being used / prefetched
    cast_buffer: int  # one layer's weight cast to the compute dtype (fp8 storage, quanto)
    activations: int  # peak of live tensors in one model call
    pipeline_state: int  # the sampler's per-window tensors
    pixels: int = 0  # the window's pixel tensors: conditioning video, decoded video and its conversions
    other_resident: int = 0  # other models the host keeps on the device (command line)
    host_copy: bool = False  # the whole DiT sits in host memory (ComfyUI's offload device)
    load_buffer: int = 0  # the loader's read buffer (largest tensor as stored)

    @property
    def sampling(self) -> int:
        """Working memory while the DiT runs."""
        return self.swap_in_flight + self.cast_buffer + self.activations + self.pipeline_state

    @property
    def working(self) -> int:
        """Working memory besides the weights: the larger of the sampling and the pixel phases."""
        return max(self.sampling, self.pixels + self.pipeline_state)

    @property
    def device_peak(self) -> int:
        if self.device_type == "cpu":
            return self.host_peak
        return self.weights_resident + self.other_resident + self.working

    @property
    def host_peak(self) -> int:
        if self.device_type == "cpu":
            weights = self.weights_resident + self.weights_swapped + self.other_resident
            return weights + max(self.load_buffer, self.working)
        held = self.weights_resident + self.weights_swapped if self.host_copy else self.weights_swapped
        return held + self.load_buffer

    def budget(self) -> int:
        """What the fit check compares with the free memory (estimate plus allocator margin)."""
        if self.device_type == "cpu":
            return self.host_peak + int((CPU_HEAP_FACTOR - 1) * self.working)
        scale, extra = CUDA_MARGIN
        return int(self.device_peak * scale) + extra

    def describe(self) -> str:
        where = "RAM" if self.device_type == "cpu" else f"{self.device_type} memory"
        swap = (
            f", {self.block_swap} blocks swapped ({gib(self.weights_swapped)} in RAM)"
            if self.block_swap
            else ""
        )
        other = f" + other models {gib(self.other_resident)}" if self.other_resident else ""
        return (
            f"{self.run.describe()}{swap}: peak {where} about {gib(self.device_peak)} (weights "
            f"{gib(self.weights_resident)}{other} + working {gib(self.working)}: activations "
            f"{gib(self.activations)}, transfers/casts {gib(self.swap_in_flight + self.cast_buffer)}, "
            f"sampler {gib(self.pipeline_state)}, pixels {gib(self.pixels)})"
        )


def gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB" if n >= 0.1 * GIB else f"{n / 1024**2:.0f} MiB"


def estimate(
    cfg: DiTConfig,
    compute_dtype: torch.dtype,
    quantization: str,
    run: RunShape,
    block_swap: int = 0,
    device_type: str = "cuda",
    other_resident: int = 0,
    host_copy: bool = False,
    load_buffer: int = 0,
) -> MemoryEstimate:
    """Peak memory of sampling with the DiT ``cfg`` stored as ``quantization`` and ``block_swap`` blocks
    swapped, for one model call of shape ``run`` (see the module docstring for what is counted)."""
    if not 0 <= block_swap <= cfg.num_layers:
        raise InputError(f"block_swap {block_swap} is out of range: the model has {cfg.num_layers} blocks")
    non_block, per_block = weight_bytes(cfg, compute_dtype, quantization)
    swapped = per_block * block_swap
    cast = 0
    if quantization != "none":
        cast = cfg.dim * cfg.ffn_dim * compute_dtype.itemsize  # the largest block linear, cast per call
    if device_type == "cpu":
        block_swap, swapped, in_flight = 0, 0, 0  # nothing to swap to: everything is in RAM already
    else:
        in_flight = per_block * min(2, block_swap)
    return MemoryEstimate(
        device_type=device_type,
        run=run,
        block_swap=block_swap,
        weights_resident=non_block + per_block * cfg.num_layers - swapped,
        weights_swapped=swapped,
        swap_in_flight=in_flight,
        cast_buffer=cast,
        activations=activation_bytes(cfg, compute_dtype, run),
        pipeline_state=pipeline_state_bytes(cfg, compute_dtype, run),
        pixels=pixel_bytes(run),
        other_resident=other_resident,
        host_copy=host_copy,
        load_buffer=load_buffer,
    )


def weight_bytes(cfg: DiTConfig, compute_dtype: torch.dtype, quantization: str) -> tuple[int, int]:
    """(bytes outside the blocks, bytes of one block) as the loader and quantiser store them."""
    storage = torch.float8_e4m3fn if quantization == "fp8_e4m3fn" else compute_dtype
    fp32 = WanInfiniteTalkDiT.fp32_modules
    non_block, block0 = 0, 0
    for key, shape in dit_key_shapes(cfg).items():
        dtype = target_dtype(key, shape, storage, fp32)
        numel = math.prod(shape)
        if quantization in QUANTO and _is_block_linear(key, shape) and dtype == compute_dtype:
            size = numel * QUANTO[quantization].itemsize + shape[0] * dtype.itemsize  # data + scale per row
        else:
            size = numel * dtype.itemsize
        if key.startswith("blocks.0."):
            block0 += size
        elif not key.startswith("blocks."):
            non_block += size
    return non_block, block0


def _is_block_linear(key: str, shape) -> bool:
    return key.startswith("blocks.") and key.endswith(".weight") and len(shape) == 2


def pipeline_state_bytes(cfg: DiTConfig, compute_dtype: torch.dtype, run: RunShape) -> int:
    """The sampler's tensors on the device during a window (they live outside the model call)."""
    t, h, w = run.latent
    latent = 16 * t * h * w * 4  # float32
    # latent, noise, motion latents, the step's input, 3 branch predictions, guided flow, 2 solver temps
    state = 10 * latent
    state += 20 * t * h * w * compute_dtype.itemsize  # y: mask + conditioning latents
    state += 2 * TEXT_TOKENS * cfg.text_dim * compute_dtype.itemsize  # prompt and negative contexts
    state += 257 * cfg.clip_dim * compute_dtype.itemsize
    frames = 1 + cfg.vae_scale * (t - 1)
    audio = run.speakers * frames * cfg.audio_window * cfg.audio_blocks * cfg.audio_channels
    state += 2 * audio * compute_dtype.itemsize  # the window's audio + the silent branch's
    state += 2 * 3 * run.height * run.width * 4  # conditioning image, colour reference (float32)
    return state


def pixel_bytes(run: RunShape) -> int:
    """The pipeline's own pixel-space tensors of a window (float32): the conditioning video (reference frame
    + zero frames, concatenated: 2 copies) before encoding, and after decoding the decoded video with the
    two float temporaries and the uint8 frames of its conversion (3.25 copies). The VAE's own working
    memory inside ``encode``/``decode`` is not counted (it is the VAE's, placed by its host)."""
    video = 3 * run.frame_num * run.height * run.width * 4
    return int(video * 3.25)


# ============================================================================ activations (fake tensors)
def activation_bytes(cfg: DiTConfig, compute_dtype: torch.dtype, run: RunShape) -> int:
    """Peak bytes of live tensors created by one model call of shape ``run`` (inputs included).

    Measured on fake tensors; should that fail (a torch without ``FakeTensorMode`` support for an op),
    a formula fitted to the fake-tensor results is used instead and a warning logged.
    """
    try:
        return _activation_bytes(cfg, compute_dtype, run)
    except Exception as err:  # an estimate must never stop a generation: fall back, loudly
        log.warning("memory preflight: fake-tensor run failed (%s); using the fitted formula", err)
        return _activation_formula(cfg, compute_dtype, run)


def _activation_formula(cfg: DiTConfig, compute_dtype: torch.dtype, run: RunShape) -> int:
    """About (8 x itemsize + 15) bytes per token and channel (the float64 RoPE of q and k, the FFN's
    intermediate, the attention output): within 5 % of the fake-tensor run for the 14B in bf16 and fp32."""
    t, h, w = run.latent
    tokens = t * (h // 2) * (w // 2)
    per_sample = tokens * cfg.dim * (8 * compute_dtype.itemsize + 15)
    context = (TEXT_TOKENS + cfg.num_image_tokens) * cfg.dim * compute_dtype.itemsize
    return run.batch * (per_sample + context)


@functools.lru_cache(maxsize=64)
def _activation_bytes(cfg: DiTConfig, compute_dtype: torch.dtype, run: RunShape) -> int:
    from torch._subclasses.fake_tensor import FakeTensorMode

    one_block = replace(cfg, num_layers=1)
    b, (t, h, w) = run.batch, run.latent
    frames = 1 + cfg.vae_scale * (t - 1)
    with FakeTensorMode(), torch.no_grad():
        model = WanInfiniteTalkDiT(one_block, device="cpu", dtype=compute_dtype)
        tracker = _LiveBytes(existing=[*model.parameters(), *model.buffers()])
        with tracker:
            x = torch.empty(b, 16, t, h, w)
            y = torch.empty(b, 20, t, h, w, dtype=compute_dtype)
            context = torch.empty(b, TEXT_TOKENS, cfg.text_dim, dtype=compute_dtype)
            clip = torch.empty(b, cfg.num_image_tokens, cfg.clip_dim, dtype=compute_dtype)
            audio_shape = (b, run.speakers, frames, cfg.audio_window, cfg.audio_blocks, cfg.audio_channels)
            audio = torch.empty(audio_shape, dtype=compute_dtype)
            masks = torch.ones(3, h * 8, w * 8) if run.speakers == 2 else None
            out = model(x, torch.full((b,), 500.0), context, clip, y, audio, ref_target_masks=masks)
            del out
    return tracker.peak


class _LiveBytes(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts the bytes of tensor storages alive at each op (views share their base's storage)."""

    def __init__(self, existing=()):
        super().__init__()
        from torch.utils.weak import WeakIdKeyDictionary

        self._seen = WeakIdKeyDictionary()
        for t in existing:  # the model's own weights are counted elsewhere
            self._seen[t.untyped_storage()] = 0
        self.current = 0
        self.peak = 0

    def _track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        if storage in self._seen:
            return
        size = storage.nbytes()
        self._seen[storage] = size
        self.current += size
        self.peak = max(self.peak, self.current)
        weakref.finalize(storage, self._release, size)

    def _release(self, size: int) -> None:
        self.current -= size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self._track(t)
        return out


# ============================================================================ fitting
def fewest_swapped_blocks(
    cfg: DiTConfig, compute_dtype: torch.dtype, quantization: str, run: RunShape, free: int, **kw
) -> int | None:
    """``block_swap = auto``: the fewest blocks to keep in host memory so the run fits ``free`` bytes
    (None when even all blocks swapped do not fit)."""
    for n in range(cfg.num_layers + 1):
        if estimate(cfg, compute_dtype, quantization, run, n, **kw).budget() <= free:
            return n
    return None


def check_fits(
    cfg: DiTConfig,
    compute_dtype: torch.dtype,
    quantization: str,
    run: RunShape,
    block_swap: int,
    free: int | None,
    what: str = "the InfiniteTalk DiT",
    preloaded: int = 0,
    **kw,
) -> MemoryEstimate:
    """Return the estimate; raise ``InputError`` (one line, with the smallest change that fits) when the
    run needs more than ``free`` bytes. ``free=None`` (unknown) skips the check. ``preloaded``: bytes of
    the estimate already held (weights a host loaded earlier or can stream out), counted as available."""
    est = estimate(cfg, compute_dtype, quantization, run, block_swap, **kw)
    if free is None or est.budget() <= free + preloaded:
        return est
    where = "RAM" if est.device_type == "cpu" else f"{est.device_type} memory"
    fix = smallest_fix(cfg, compute_dtype, quantization, run, block_swap, free + preloaded, **kw)
    held = f" (+ {gib(preloaded)} held by the DiT's weights)" if preloaded else ""
    raise InputError(
        f"{what} needs about {gib(est.budget())} of {where} ({est.run.describe()}, {quantization}, "
        f"block_swap {block_swap}) but {gib(free)} is free{held}: {fix}"
    )


def smallest_fix(
    cfg: DiTConfig, dtype: torch.dtype, quantization: str, run: RunShape, block_swap: int, free: int, **kw
) -> str:
    """The least intrusive change that makes the run fit, as advice for the error message: block swap
    first (same result, slower), then batched guidance off, fp8 storage, shorter windows, the 480p bucket;
    the later ones are added on top of the earlier ones until the run fits."""
    device_type = kw.get("device_type", "cuda")
    swaps = device_type != "cpu"

    def fits(quant: str, shape: RunShape) -> int | None:
        n = fewest_swapped_blocks(cfg, dtype, quant, shape, free, **kw)
        return n if swaps or n == 0 else None

    if swaps and (n := fits(quantization, run)) is not None:
        return f"set block_swap to {n} (or auto)"
    steps: list[tuple[str, object]] = []
    if run.batch > 1:
        steps.append(("turn batched guidance off", lambda q, r: (q, replace(r, batch=1))))
    if quantization == "none":
        steps.append(("use quantization fp8_e4m3fn", lambda q, r: ("fp8_e4m3fn", r)))
    for frames in (49, 33, 17):
        if frames < run.frame_num:
            steps.append(
                (f"lower frame_num to {frames}", lambda q, r, f=frames: (q, replace(r, frame_num=f)))
            )
    if run.height * run.width > 480 * 832:
        scale = lambda v: max(16, v * 2 // 3 // 16 * 16)  # noqa: E731 - the 720p -> 480p bucket ratio
        steps.append(
            (
                "use size infinitetalk-480",
                lambda q, r: (q, replace(r, height=scale(r.height), width=scale(r.width))),
            )
        )
    quant, shape, advice = quantization, run, []
    for text, apply in steps:
        quant, shape = apply(quant, shape)
        if text.startswith("lower frame_num") and advice and advice[-1].startswith("lower frame_num"):
            advice[-1] = text
        else:
            advice.append(text)
        n = fits(quant, shape)
        if n is not None:
            swap = f" with block_swap {n}" if n else ""
            return " and ".join(advice) + swap
    more = "a GPU with more memory" if swaps else "more RAM"
    return f"even the smallest settings do not fit: free memory (close other programs) or use {more}"


def checkpoint_bytes(path, dtype: torch.dtype) -> int:
    """Bytes a model file takes once loaded in ``dtype``: from the safetensors header (no tensor read);
    other formats (``.pth``) count their size on disk."""
    from pathlib import Path

    path = Path(path)
    if path.is_file() and path.name.lower().endswith(SAFETENSORS_SUFFIXES):
        with open_checkpoint(path) as reader:
            return sum(
                math.prod(reader.shape(k)) * (dtype.itemsize if reader.dtype(k).is_floating_point else 1)
                for k in reader.keys()
            )
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size if path.exists() else 0


# ============================================================================ free memory
def free_device_memory(device: torch.device | str) -> int | None:
    """Bytes the compute device can still give (CUDA: free + torch's reusable cache; CPU: available RAM)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    if device.type == "cpu":
        return available_ram()
    return None


def available_ram() -> int | None:
    """Available host memory (Linux ``MemAvailable``; psutil elsewhere when installed), or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil
    except ImportError:
        return None
    return int(psutil.virtual_memory().available)


# ============================================================================ the README table
def guide_table(cfg: DiTConfig | None = None) -> str:
    """Markdown table of estimated peak GPU memory for the 14B model (the README's memory guide)."""
    cfg = cfg or DiTConfig()
    rows = ["| size, frames | passes per call | bf16 | fp8_e4m3fn | quanto_int8 | bf16, 20 swapped | fp8, 40 swapped |",
            "|---|---|---|---|---|---|---|"]  # fmt: skip
    for (h, w), frames in (((480, 832), 81), ((720, 1280), 81), ((480, 832), 49)):
        for batch in (1, 3):
            run = RunShape(h, w, frames, batch)
            cells = [
                gib(estimate(cfg, torch.bfloat16, q, run, swap).device_peak)
                for q, swap in (("none", 0), ("fp8_e4m3fn", 0), ("quanto_int8", 0), ("none", 20), ("fp8_e4m3fn", 40))
            ]  # fmt: skip
            rows.append(f"| {w}x{h}, {frames} | {batch} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main() -> int:
    print(guide_table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
