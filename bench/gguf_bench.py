"""GGUF: dequantisation throughput per type against the matmul it feeds, and peak memory of a Q4_K run
against the same run from fp16, with the memory preflight's estimate next to each measured figure.

    python bench/gguf_bench.py                 # both parts; the GPU too when torch sees one
    python bench/gguf_bench.py --part dequant --rows 5120 --cols 5120 --tokens 4096
    python bench/gguf_bench.py --part memory

Part 1 (dequant): for each supported type, a ``rows x cols`` weight of random valid blocks is dequantised to
the compute dtype (:func:`infinitetalk.gguf_quants.dequantize`, what the GGUF linear does at every call) and
fed to ``F.linear`` with ``tokens`` input rows; each figure is the best of ``--repeat`` runs. ``ratio`` is
dequantisation time / matmul time: the share of a layer's time the on-the-fly expansion adds.

Part 2 (memory): a random DiT (``--dim``, ``--layers``; real key layout) is written as fp16 safetensors and as
GGUF (block linears Q4_K, the rest F32, what city96's Q4_K files hold), then each is built (``plan_dit`` +
``build_dit``, bf16 compute) and run for one sampler step in a fresh child process (cheap stand-in encoders).
Reported: the child's maximum RSS (``os.wait4``'s rusage: what ``/usr/bin/time`` prints; it includes the
libraries, about 0.7 GiB of torch & co.), its peak above the RSS once the libraries are loaded (``VmHWM``
reset through ``/proc/self/clear_refs``, glibc returning freed blocks: ``MALLOC_MMAP_THRESHOLD_``) next to the
preflight's host peak for the same run, and the bytes of the DiT's parameters as they sit in memory next to
the preflight's resident weights.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from infinitetalk.gguf_quants import BLOCKS, dequantize  # noqa: E402

_SCALES = {"Q8_0": (0,), "Q4_0": (0,), "Q4_1": (0, 2), "Q5_0": (0,), "Q5_1": (0, 2), "Q2_K": (80, 82),
           "Q3_K": (108,), "Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,)}  # fmt: skip


def random_raw(qtype: str, rows: int, cols: int, rng: np.random.Generator) -> torch.Tensor:
    n, size = BLOCKS[qtype]
    if qtype in ("F32", "F16", "BF16"):
        values = torch.from_numpy(rng.standard_normal((rows, cols)).astype(np.float32) * 0.02)
        dtype = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}[qtype]
        return values.to(dtype).view(torch.uint8).reshape(-1)
    blocks = rng.integers(0, 256, size=(rows * cols // n, size), dtype=np.uint8)
    for at in _SCALES[qtype]:
        blocks[:, at : at + 2] = (
            (rng.standard_normal(len(blocks)) * 0.001).astype(np.float16).view(np.uint8).reshape(-1, 2)
        )
    return torch.from_numpy(blocks.reshape(-1))


def _best(fn, repeat: int, device: torch.device) -> float:
    times = []
    for _ in range(repeat + 1):  # the first call warms up
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return min(times[1:])


def bench_dequant(
    device: torch.device, dtype: torch.dtype, rows: int, cols: int, tokens: int, repeat: int
) -> None:
    rng = np.random.default_rng(0)
    x = torch.randn(tokens, cols, device=device, dtype=dtype)
    w = torch.randn(rows, cols, device=device, dtype=dtype)
    t_mm = _best(lambda: F.linear(x, w), repeat, device)
    print(f"\n{device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), {dtype}, "
          f"weight {rows}x{cols}, input {tokens} tokens: matmul {t_mm * 1e3:.2f} ms")  # fmt: skip
    print(
        f"{'type':6s} {'bits/w':>6s} {'dequant ms':>10s} {'Mweights/s':>11s} {'GB/s read':>9s} {'ratio':>6s}"
    )
    for qtype in BLOCKS:
        raw = random_raw(qtype, rows, cols, rng).to(device)
        t = _best(lambda raw=raw, q=qtype: dequantize(raw, q, (rows, cols), dtype), repeat, device)
        bits = 8 * BLOCKS[qtype][1] / BLOCKS[qtype][0]
        print(f"{qtype:6s} {bits:6.2f} {t * 1e3:10.2f} {rows * cols / t / 1e6:11.0f} {raw.numel() / t / 1e9:9.2f} "
              f"{t / t_mm:6.2f}")  # fmt: skip


# ------------------------------------------------------------------------------------------ memory
CHILD = r"""
import json, sys, numpy as np, torch
from types import SimpleNamespace
from infinitetalk.build import ModelOptions, build_dit, plan_dit
from infinitetalk.pipeline import AudioEmbedding, GenerationConfig, InfiniteTalkPipeline, StillImage
from infinitetalk.preflight import RunShape
from infinitetalk.gguf_tensor import gguf_bytes

path, dims, shape = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])

def kib(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))

class Vae:
    dtype = torch.float32
    def encode(self, v):
        return torch.zeros(v.shape[0], 16, (v.shape[2] - 1) // 4 + 1, v.shape[3] // 8, v.shape[4] // 8)
    def decode(self, z):
        return torch.zeros(z.shape[0], 3, 4 * z.shape[2] - 3, z.shape[3] * 8, z.shape[4] * 8)
class Clip:
    def encode(self, image): return torch.zeros(image.shape[0], 257, dims["clip_dim"])
class Text:
    def encode(self, prompts): return [torch.zeros(512, dims["text_dim"]) for _ in prompts]
class NullSink:
    def write(self, frames): pass
    def close(self): pass

h, w, frames = shape
options = ModelOptions(precision="bf16")
config = GenerationConfig(mode="clip", size=f"{w}x{h}", frame_num=frames, steps=1, text_scale=1.0, motion_frame=1,
                          color_correction_strength=0.0)
run = RunShape.for_generation(config, h, w, 1)
files = SimpleNamespace(dit=path, adapter=None)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset VmHWM: measure from here (libraries loaded)
base = kib("VmRSS")
plan = plan_dit(files, options, "cpu", run, free=None)
dit = build_dit(files, options, plan=plan)
feats = torch.randn(1, frames, dims["audio_blocks"], dims["audio_channels"])
audio = AudioEmbedding(feats, np.zeros(frames * 640, np.float32), frames)
image = StillImage(np.full((h, w, 3), 128, np.uint8))
pipe = InfiniteTalkPipeline(dit, Vae(), Clip(), Text(), None, "cpu", plan.compute_dtype)
pipe.generate(image, audio, config, NullSink())
est = plan.estimate
print(json.dumps(dict(above_imports=(kib("VmHWM") - base) * 1024, params=sum(gguf_bytes(dit).values()), by_type=gguf_bytes(dit), est_weights=est.weights_resident,
                      est_host_peak=est.host_peak)))
sys.stdout.flush()
import os
os._exit(0)  # skip the interpreter's teardown: freeing the modules briefly raises RSS, not part of a run
"""


def write_pair(folder: Path, dims: dict) -> tuple[Path, Path]:
    from safetensors.torch import save_file

    from infinitetalk.config import DiTConfig
    from infinitetalk.loading.dit import dit_key_shapes
    from infinitetalk.tiny.gguf import write_gguf

    gen = torch.Generator().manual_seed(0)
    tensors = {k: torch.randn(s, generator=gen) * 0.02 for k, s in dit_key_shapes(DiTConfig(**dims)).items()}
    fp16, q4 = folder / "dit_fp16.safetensors", folder / "dit-Q4_K.gguf"
    save_file({k: v.half() for k, v in tensors.items()}, str(fp16))
    write_gguf(q4, tensors, "wan", k_quant=True)
    return fp16, q4


# A small launcher runs the child: a forked process's maximum RSS counts what it shares with its parent
# before exec, so the child is started from a process that holds nothing (not from this one).
LAUNCH = r"""
import json, os, subprocess, sys
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, text=True)
out = proc.stdout.read()
_, status, usage = os.wait4(proc.pid, 0)
print(out.strip().splitlines()[-1] if out.strip() else "{}")
print(json.dumps(dict(exit=os.waitstatus_to_exitcode(status), maxrss_kib=usage.ru_maxrss)))
"""


def child_run(path: Path, dims: dict, shape: tuple[int, int, int]) -> tuple[dict, int]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), MALLOC_MMAP_THRESHOLD_="131072")
    cmd = [
        sys.executable,
        "-c",
        LAUNCH,
        sys.executable,
        "-c",
        CHILD,
        str(path),
        json.dumps(dims),
        json.dumps(shape),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    lines = out.stdout.strip().splitlines()
    usage = json.loads(lines[-1]) if lines else {"exit": out.returncode}
    if usage["exit"] or out.returncode:
        raise RuntimeError(f"{path.name}: child failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-2]), usage["maxrss_kib"] * 1024


def bench_memory(dim: int, layers: int, shape: tuple[int, int, int]) -> None:
    dims = dict(dim=dim, ffn_dim=4 * dim, num_heads=dim // 128, num_layers=layers, text_dim=512, clip_dim=256,
                audio_blocks=2, audio_channels=32, audio_intermediate_dim=64, audio_output_dim=64)  # fmt: skip
    mib = 1024**2
    with tempfile.TemporaryDirectory() as tmp:
        fp16, q4 = write_pair(Path(tmp), dims)
        print(f"\npeak memory, DiT dim {dim}, {layers} blocks, one step at {shape[1]}x{shape[0]}, {shape[2]} frames, "
              f"bf16 compute on the CPU (MiB; file sizes {fp16.stat().st_size / mib:.0f} / {q4.stat().st_size / mib:.0f})")  # fmt: skip
        print(f"{'file':22s} {'max RSS':>8s} {'peak-imports':>12s} {'est. host peak':>14s} {'params':>7s} "
              f"{'est. weights':>12s}  params by type")  # fmt: skip
        for path in (fp16, q4):
            r, peak = child_run(path, dims, shape)
            types = json.dumps({k: round(v / mib, 1) for k, v in r["by_type"].items()})
            print(f"{path.name:22s} {peak / mib:8.0f} {r['above_imports'] / mib:12.0f} {r['est_host_peak'] / mib:14.0f} "
                  f"{r['params'] / mib:7.1f} {r['est_weights'] / mib:12.1f}  {types}")  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=("all", "dequant", "memory"), default="all")
    ap.add_argument("--rows", type=int, default=3072)
    ap.add_argument("--cols", type=int, default=3072)
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=4)
    args = ap.parse_args()
    if args.part in ("all", "dequant"):
        bench_dequant(torch.device("cpu"), torch.float32, args.rows, args.cols, args.tokens, args.repeat)
        bench_dequant(torch.device("cpu"), torch.bfloat16, args.rows, args.cols, args.tokens, args.repeat)
        if torch.cuda.is_available():
            bench_dequant(
                torch.device("cuda"), torch.bfloat16, args.rows, args.cols, args.tokens, args.repeat
            )
    if args.part in ("all", "memory"):
        bench_memory(args.dim, args.layers, (128, 128, 9))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
