"""The first-GPU benchmark: the full-size 14B DiT with random weights at 480p x 81 frames, in one command.

    python bench/gpu.py                  # CUDA GPU 0: the tables below (a few minutes on an H100/H200)
    python bench/gpu.py --tiny           # the same code paths on a tiny model on the CPU (CI runs this)
    python bench/gpu.py --json out.json  # also write every figure as JSON

Prints:

1. seconds per denoising step (bf16, nothing swapped) for 1, 2 and 3 guidance passes, as separate batch-1
   model calls and as one batched call, with the achieved TFLOP/s against the card's peak (dense BF16
   tensor throughput from the vendor's data sheet; ``--peak-tflops`` for cards not in the table). FLOPs
   are counted, not assumed: ``torch.utils.flop_counter`` on fake tensors (matmuls, the patch conv and
   attention; elementwise work is not counted), about 1.8 PFLOP per pass at 480p x 81;
2. peak device memory of one model call for bf16, fp8_e4m3fn (fp8 storage) and quanto_int8 weights with
   0, 20 and 40 blocks swapped (``torch.cuda.max_memory_allocated``), next to the preflight's estimate of
   the same call (weights kept on the device + swap/cast buffers + activations; the sampler's latents and
   the VAE phase, which the preflight adds for a real run, are not run here). "OOM" when it does not fit.

The random model is built without reading a file and without a host copy: modules are created on
``meta``, then each block is materialised on the GPU, filled with N(0, 0.02), converted (fp8 / quanto)
and, if swapped, moved to host memory, one block at a time. Peak host memory is the swapped blocks only.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from infinitetalk.config import DiTConfig  # noqa: E402
from infinitetalk.model.dit import WanInfiniteTalkDiT  # noqa: E402
from infinitetalk.model.ops import casting_operations  # noqa: E402
from infinitetalk.preflight import RunShape, estimate  # noqa: E402

# Dense BF16 tensor TFLOP/s (no sparsity), vendor data sheets. Matched on the device name, first hit wins.
PEAK_BF16_TFLOPS = (
    ("B200", 2250.0), ("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("H800", 989.0),
    ("GH200", 989.0), ("A100", 312.0), ("A800", 312.0), ("L40S", 362.0), ("L40", 181.0), ("L4", 121.0),
    ("A10G", 70.0), ("A10", 125.0), ("RTX 6000 Ada", 364.0), ("A6000", 155.0), ("RTX 5090", 209.0),
    ("RTX 4090", 165.0), ("RTX 4080", 97.0), ("RTX 3090", 71.0),
)  # fmt: skip
QUANTIZATIONS = ("none", "fp8_e4m3fn", "quanto_int8")
TINY = DiTConfig(dim=256, ffn_dim=512, num_heads=2, num_layers=4, text_dim=64, clip_dim=32, audio_blocks=2,
                 audio_channels=32, audio_intermediate_dim=64, audio_output_dim=64)  # fmt: skip


# ============================================================================ the random model
def build_random_dit(cfg: DiTConfig, dtype: torch.dtype, quantization: str, swap: int, device: torch.device):
    """The DiT with random weights, block by block on ``device``; the last ``swap`` blocks in host memory."""
    from infinitetalk.offload import place_model

    ops = casting_operations if quantization == "fp8_e4m3fn" else None
    model = WanInfiniteTalkDiT(cfg, device="meta", dtype=dtype, operations=ops)
    gen = torch.Generator(device=device).manual_seed(0)
    for name, child in model.named_children():
        if name != "blocks":
            _materialise(child, device, gen)
    for name, p in list(model.named_parameters(recurse=False)):
        setattr(
            model,
            name,
            torch.nn.Parameter(torch.empty_like(p, device=device).normal_(0, 0.02, generator=gen)),
        )
    first_swapped = cfg.num_layers - swap
    for i, block in enumerate(model.blocks):
        _materialise(block, device, gen)
        if quantization == "fp8_e4m3fn":
            for module in block.modules():
                if isinstance(module, torch.nn.Linear):
                    module.weight.data = module.weight.data.to(torch.float8_e4m3fn)
        elif quantization.startswith("quanto"):
            _quanto(block, quantization)
        if i >= first_swapped and device.type == "cuda":
            block.to("cpu")
    model.compute_dtype = dtype
    model.eval().requires_grad_(False)
    placement = place_model(model, device, swap) if swap else None
    return model, placement


def _materialise(module: torch.nn.Module, device: torch.device, gen: torch.Generator) -> None:
    module.to_empty(device=device)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            elif p.dim() == 1:
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02, generator=gen)


def _quanto(block: torch.nn.Module, quantization: str) -> None:
    from optimum.quanto import freeze, qfloat8, qint8, quantize

    from infinitetalk.quant import KEEP_PATTERNS

    quantize(block, weights=qint8 if quantization == "quanto_int8" else qfloat8, exclude=list(KEEP_PATTERNS))
    freeze(block)


def model_inputs(cfg: DiTConfig, run: RunShape, batch: int, device, dtype) -> tuple:
    t, h, w = run.latent
    frames = 1 + 4 * (t - 1)
    g = torch.Generator(device=device).manual_seed(1)
    return (
        torch.randn(batch, 16, t, h, w, generator=g, device=device),
        torch.full((batch,), 500.0, device=device),
        torch.randn(batch, 512, cfg.text_dim, generator=g, device=device).to(dtype),
        torch.randn(batch, 257, cfg.clip_dim, generator=g, device=device).to(dtype),
        torch.randn(batch, 20, t, h, w, generator=g, device=device).to(dtype),
        torch.randn(batch, 1, frames, 5, cfg.audio_blocks, cfg.audio_channels, generator=g, device=device).to(dtype),
    )  # fmt: skip


def speed_setting(cfg: DiTConfig, dtype: torch.dtype, run: RunShape, device: torch.device) -> tuple[str, int]:
    """bf16 with nothing swapped when three batched passes fit the card (the preflight says), else the
    fewest swapped blocks in bf16, else fp8 storage with the fewest swapped blocks."""
    from infinitetalk.preflight import fewest_swapped_blocks, free_device_memory

    if device.type != "cuda":
        return "none", 0
    free = free_device_memory(device)
    three = replace(run, batch=3)
    for quantization in ("none", "fp8_e4m3fn"):
        swap = fewest_swapped_blocks(cfg, dtype, quantization, three, free, device_type="cuda")
        if swap is not None:
            return quantization, swap
    return "fp8_e4m3fn", cfg.num_layers


# ============================================================================ FLOPs
def flops_per_pass(cfg: DiTConfig, run: RunShape, dtype: torch.dtype) -> float:
    """FLOPs of one batch-1 model call, counted on fake tensors (1 and 2 blocks, extrapolated)."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils import flop_counter

    _register_cpu_attention_flops(flop_counter)
    counts = []
    for layers in (1, 2):
        with FakeTensorMode(), torch.no_grad():
            model = WanInfiniteTalkDiT(replace(cfg, num_layers=layers), device="cpu", dtype=dtype)
            counter = flop_counter.FlopCounterMode(display=False)
            with counter:
                model(*model_inputs(cfg, run, 1, "cpu", dtype))
            counts.append(counter.get_total_flops())
    return counts[0] + (cfg.num_layers - 1) * (counts[1] - counts[0])


def _register_cpu_attention_flops(flop_counter) -> None:
    """Fake tensors live on the CPU, where SDPA is ``_scaled_dot_product_flash_attention_for_cpu``."""
    op = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    if op in flop_counter.flop_registry or op.default in flop_counter.flop_registry:
        return

    def formula(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
        return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)

    flop_counter.register_flop_formula(op)(formula)


def peak_tflops(device: torch.device, override: float | None) -> tuple[float | None, str]:
    if override:
        return override, "given"
    if device.type != "cuda":
        return None, "n/a on CPU"
    name = torch.cuda.get_device_name(device)
    for key, value in PEAK_BF16_TFLOPS:
        if key in name:
            return value, f"{key} data sheet"
    return None, "unknown card: pass --peak-tflops"


# ============================================================================ measurements
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_step(model, cfg, run, passes: int, batched: bool, repeats: int, device, dtype) -> float:
    """Median wall time of the model calls of one step with ``passes`` guidance branches."""
    calls = (
        [model_inputs(cfg, run, passes, device, dtype)]
        if batched
        else [model_inputs(cfg, run, 1, device, dtype)] * passes
    )
    times = []
    with torch.no_grad():
        for i in range(repeats + 1):  # the first is warm-up
            sync(device)
            start = time.perf_counter()
            for args in calls:
                model(*args)
            sync(device)
            if i:
                times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_call(cfg, run, dtype, quantization, swap, device) -> int:
    """Build the random model and run one batch-1 call; the peak bytes it needed.

    CUDA: ``torch.cuda.max_memory_allocated`` over building and the call. CPU (``--tiny``): RSS is too
    coarse for a tiny model, so the bytes of the weights plus the peak of live tensors during the real
    call, tracked op by op (the accounting ``max_memory_allocated`` does on CUDA).
    """
    from infinitetalk.preflight import _LiveBytes
    from infinitetalk.quant import weight_bytes

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    model, placement = build_random_dit(cfg, dtype, quantization, swap, device)
    try:
        args = model_inputs(cfg, run, 1, device, dtype)
        tracker = _LiveBytes(existing=[*model.parameters(), *model.buffers(), *args])
        with torch.no_grad(), tracker if device.type == "cpu" else _nothing():
            model(*args)
        sync(device)
        if device.type == "cuda":
            return torch.cuda.max_memory_allocated(device)
        return weight_bytes(model) + sum(a.numel() * a.element_size() for a in args) + tracker.peak
    finally:
        if placement is not None:
            placement.remove()


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def memory_case(cfg, run, dtype, quantization, swap, device) -> dict:
    est = estimate(cfg, dtype, quantization, run, swap, device_type=device.type)
    call = est.weights_resident + est.swap_in_flight + est.cast_buffer + est.activations
    result = {"quantization": quantization, "swapped": swap, "estimate": call, "measured": None}
    try:
        result["measured"] = measure_call(cfg, run, dtype, quantization, swap, device)
    except torch.cuda.OutOfMemoryError:
        result["measured"] = "OOM"
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def _si(n: float) -> str:
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M")):
        if n >= factor:
            return f"{n / factor:.3g} {prefix}"
    return f"{n:.3g} "


# ============================================================================ main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny model, 64x64, 9 frames, on the CPU")
    ap.add_argument("--device", default=None, help="default cuda:0 (cpu with --tiny)")
    ap.add_argument("--size", default="480x832", help="HxW of the video (default 480x832)")
    ap.add_argument("--frames", type=int, default=81, help="frames per window (default 81)")
    ap.add_argument("--repeats", type=int, default=2, help="timed repetitions after one warm-up (2)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="the card's dense BF16 TFLOP/s")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--json", help="write the figures to this file")
    args = ap.parse_args(argv)

    cfg = TINY if args.tiny else DiTConfig()
    height, width = (64, 64) if args.tiny else map(int, args.size.lower().split("x"))
    frames = 9 if args.tiny else args.frames
    device = torch.device(args.device or ("cpu" if args.tiny else "cuda:0"))
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: run with --tiny on the CPU, or on a machine with a GPU", file=sys.stderr)
        return 2
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    run = RunShape(height, width, frames)
    swaps = (0, cfg.num_layers // 2, cfg.num_layers)
    t, h, w = run.latent
    tokens = t * (h // 2) * (w // 2)
    flops = flops_per_pass(cfg, run, dtype)
    peak, peak_src = peak_tflops(device, args.peak_tflops)
    params = sum(p.numel() for p in WanInfiniteTalkDiT(cfg, device="meta").parameters())
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    out = {"device": card, "torch": torch.__version__, "params": params, "tokens": tokens, "flops_per_pass": flops,
           "peak_tflops": peak, "speed": [], "memory": []}  # fmt: skip

    print(f"# InfiniteTalk DiT benchmark on {card} ({device}), torch {torch.__version__}")
    print(f"model: {'tiny test config' if args.tiny else 'Wan2.1 I2V 14B + InfiniteTalk adapter'}, random weights, "
          f"{params / 1e9:.2f} B parameters; {width}x{height}, {frames} frames = {tokens} tokens; "
          f"{_si(flops)}FLOP per pass; peak {peak if peak else 'n/a'} TFLOP/s ({peak_src})")  # fmt: skip

    if not args.skip_speed:
        quantization, swap = speed_setting(cfg, dtype, run, device)
        setting = (
            "nothing swapped" if (quantization, swap) == ("none", 0) else f"{quantization}, {swap} swapped"
        )
        print(f"\n## seconds per step ({str(dtype).removeprefix('torch.')}, {setting})\n")
        print(
            "| guidance passes | separate calls s/step | batched s/step | TFLOP/s separate | TFLOP/s batched | % of peak (best) |"
        )
        print("|---|---|---|---|---|---|")  # fmt: skip
        model, placement = build_random_dit(cfg, dtype, quantization, swap, device)
        for passes in (1, 2, 3):
            sep = seconds_per_step(model, cfg, run, passes, False, args.repeats, device, dtype)
            bat = (
                sep
                if passes == 1
                else seconds_per_step(model, cfg, run, passes, True, args.repeats, device, dtype)
            )
            tf_sep, tf_bat = passes * flops / sep / 1e12, passes * flops / bat / 1e12
            pct = f"{100 * max(tf_sep, tf_bat) / peak:.0f} %" if peak else "n/a"
            print(f"| {passes} | {sep:.3f} | {bat:.3f} | {tf_sep:.3g} | {tf_bat:.3g} | {pct} |")
            out["speed"].append({"passes": passes, "separate_s": sep, "batched_s": bat, "tflops_separate": tf_sep,
                                 "tflops_batched": tf_bat, "quantization": quantization, "swapped": swap})  # fmt: skip
        if placement is not None:
            placement.remove()
        del model, placement
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()

    if not args.skip_memory:
        unit = "GiB" if not args.tiny else "MiB"
        scale = 2**30 if not args.tiny else 2**20
        what = "peak allocated" if device.type == "cuda" else "weights + peak live tensors"
        print(f"\n## {what} of one model call, {unit}: measured / preflight estimate\n")
        print("| weights | " + " | ".join(f"{s} blocks swapped" for s in swaps) + " |")
        print("|---|" + "---|" * len(swaps))
        for quantization in QUANTIZATIONS:
            cells = []
            for swap in swaps:
                r = memory_case(cfg, run, dtype, quantization, swap, device)
                out["memory"].append(r)
                got = r["measured"] if r["measured"] == "OOM" else f"{r['measured'] / scale:.1f}"
                cells.append(f"{got} / {r['estimate'] / scale:.1f}")
            label = {"none": str(dtype).removeprefix("torch."), "fp8_e4m3fn": "fp8_e4m3fn (storage)"}.get(
                quantization, quantization
            )
            print(f"| {label} | " + " | ".join(cells) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    print("\ndone")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
