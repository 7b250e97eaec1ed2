"""Sequence parallelism: seconds per DiT forward and bytes exchanged, for 1, 2 and 4 processes, side by side.

    python bench/sequence_parallel.py [--dim 1024 --layers 2 --hw 24x24 --frames 21 --repeats 2 --speakers 1]

Launches ``torchrun --standalone --nproc_per_node N`` for every layout (1; Ulysses 2, ring 2; Ulysses 4,
Ulysses 2 x ring 2, ring 4) on the same random DiT (seeded, identical in every process) and inputs,
gloo on the CPU or NCCL on GPUs (``--device cuda``). Each process runs ``--threads`` CPU threads
(1: one process per core, like one process per GPU). Prints a Markdown table: median seconds per
forward, speed-up over one process, bytes the busiest process received per forward (counted by the
collectives, and computed by the formula of docs/MULTI_GPU.md), and the largest difference from the
one-process output. A denoising step is 3 forwards with text guidance (2 with text scale 1).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
LAYOUTS = [(1, 1), (2, 1), (1, 2), (4, 1), (2, 2), (1, 4)]  # (ulysses, ring)
OUT_CHANNELS = 64  # head output per token: patch 1x2x2 x 16 channels, float32


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dim", type=int, default=1024, help="model width (heads = dim / 128)")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--hw", default="24x24", help="latent height x width (tokens: half of each)")
    ap.add_argument("--frames", type=int, default=21, help="latent frames (21: an 81-frame window)")
    ap.add_argument("--repeats", type=int, default=2, help="timed forwards per layout (after one warm-up)")
    ap.add_argument("--speakers", type=int, default=1, choices=(1, 2))
    ap.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (NCCL, one GPU per process)")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads per process")
    ap.add_argument("--layouts", default=",".join(f"{u}x{r}" for u, r in LAYOUTS), help="ULYSSESxRING,...")
    ap.add_argument("--worker", help=argparse.SUPPRESS)  # internal: run one layout under torchrun
    ap.add_argument("--out", help=argparse.SUPPRESS)  # internal: where the workers leave their results
    return ap.parse_args()


# ============================================================================ formula
def bytes_per_forward(args, ulysses: int, ring: int, elem: int) -> int:
    """Bytes the busiest process receives per forward (batch 1; docs/MULTI_GPU.md)."""
    h, w = map(int, args.hw.split("x"))
    frame_tokens = (h // 2) * (w // 2)
    n_proc = ulysses * ring
    shard = math.ceil(args.frames * frame_tokens / n_proc)  # tokens per process
    block = 4 * shard * args.dim * elem * (ulysses - 1) // ulysses  # q, k, v out; attention back
    block += 2 * shard * args.dim * elem * (ring - 1)  # k, v blocks around the ring
    if args.speakers == 2 and n_proc > 1:
        block += frame_tokens * args.dim * elem  # frame-0 keys, on the processes not holding them
        block += 3 * shard * elem * (n_proc - 1)  # the (3, L) attention map
    head = shard * OUT_CHANNELS * 4 * (n_proc - 1)  # gather of the head output
    return args.layers * block + head


# ============================================================================ one layout (torchrun worker)
def worker(args) -> None:
    import torch.distributed as dist

    from infinitetalk.config import DiTConfig
    from infinitetalk.model import WanInfiniteTalkDiT
    from infinitetalk.parallel import SequenceParallel

    ulysses, ring = map(int, args.worker.split("x"))
    world = int(os.environ.get("WORLD_SIZE", 1))
    cuda = args.device == "cuda"
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(args.threads)
    dist.init_process_group("nccl" if cuda else "gloo")
    dtype = torch.bfloat16 if cuda else torch.float32
    cfg = DiTConfig(dim=args.dim, ffn_dim=int(args.dim * 2.7), num_heads=args.dim // 128, num_layers=args.layers,
                    text_dim=64, clip_dim=32, audio_blocks=2, audio_channels=32,
                    audio_intermediate_dim=64, audio_output_dim=64)  # fmt: skip
    torch.manual_seed(0)  # the same weights and inputs in every process
    model = WanInfiniteTalkDiT(cfg, device=device, dtype=dtype).eval()
    sp = SequenceParallel(ulysses, ring) if world > 1 else None
    if sp is not None:
        sp.check_model(cfg.num_heads, model.attention_backend)
        model.parallel = sp
    inputs = make_inputs(args, device)

    def sync():
        if cuda:
            torch.cuda.synchronize()
        if world > 1:
            dist.barrier()

    times = []
    with torch.no_grad():
        out = model(*inputs)  # warm-up
        if sp is not None:
            sp.stats.reset()
        for _ in range(args.repeats):
            sync()
            start = time.perf_counter()
            out = model(*inputs)
            sync()
            times.append(time.perf_counter() - start)
    received = torch.tensor([sp.stats.total // args.repeats if sp is not None else 0])
    if world > 1:
        dist.all_reduce(received, op=dist.ReduceOp.MAX)  # the busiest process
    if dist.get_rank() == 0:
        result = {"seconds": statistics.median(times), "threads": torch.get_num_threads()}
        result["received"] = int(received)
        reference = Path(args.out) / "reference.pt"
        if world == 1:
            torch.save(out.cpu(), reference)
        else:
            ref = torch.load(reference)
            result["max_rel_diff"] = float((out.cpu() - ref).abs().max() / ref.abs().max())
        (Path(args.out) / f"{args.worker}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


def make_inputs(args, device):
    g = torch.Generator().manual_seed(1)
    h, w = map(int, args.hw.split("x"))
    s = args.speakers
    x = torch.randn(1, 16, args.frames, h, w, generator=g)
    y = torch.randn(1, 20, args.frames, h, w, generator=g)
    t = torch.full((1,), 500.0)
    context = torch.randn(1, 120, 64, generator=g)
    clip = torch.randn(1, 257, 32, generator=g)
    audio = torch.randn(1, s, (args.frames - 1) * 4 + 1, 5, 2, 32, generator=g)
    masks = None
    if s == 2:
        masks = torch.zeros(3, h * 8, w * 8)
        masks[0, :, : w * 4], masks[1, :, w * 4 :] = 1, 1
        masks[2] = 1 - masks[0] - masks[1]
    return [v.to(device) for v in (x, t, context, clip, y, audio)] + [
        None if masks is None else masks.to(device)
    ]


# ============================================================================ launcher
def main() -> None:
    args = parse()
    if args.worker:
        worker(args)
        return
    layouts = [tuple(map(int, s.split("x"))) for s in args.layouts.split(",")]
    if (1, 1) not in layouts:
        layouts.insert(0, (1, 1))  # the reference output and time
    h, w = map(int, args.hw.split("x"))
    tokens = args.frames * (h // 2) * (w // 2)
    elem = 2 if args.device == "cuda" else 4
    heads = args.dim // 128
    skipped = [f"{u}x{r}" for u, r in layouts if heads % u]
    layouts = [(u, r) for u, r in layouts if heads % u == 0]
    rows = []
    with tempfile.TemporaryDirectory() as out:
        for ulysses, ring in sorted(layouts, key=lambda lr: lr[0] * lr[1]):
            n = ulysses * ring
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}"]
            cmd += [__file__, *sys.argv[1:], "--worker", f"{ulysses}x{ring}", "--out", out]
            env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
            env["OMP_NUM_THREADS"] = str(args.threads)
            subprocess.run(cmd, check=True, env=env, cwd=REPO, stdout=subprocess.DEVNULL)
            result = json.loads((Path(out) / f"{ulysses}x{ring}.json").read_text())
            rows.append((ulysses, ring, result))
    base = rows[0][2]["seconds"]
    print(f"DiT dim {args.dim} ({args.dim // 128} heads), {args.layers} layers, {tokens} tokens "
          f"({args.frames} latent frames x {h // 2}x{w // 2}), {args.speakers} speaker(s), {args.device}, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end")  # fmt: skip
    if skipped:
        print(f"skipped (Ulysses size does not divide {heads} heads): {', '.join(skipped)}")
    print()
    print("| processes | Ulysses x ring | threads each | s / forward | speed-up | received / forward "
          "(measured) | received / forward (formula) | max rel. diff vs 1 |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for ulysses, ring, r in rows:
        n = ulysses * ring
        formula = bytes_per_forward(args, ulysses, ring, elem) if n > 1 else 0
        diff = f"{r['max_rel_diff']:.1e}" if "max_rel_diff" in r else "-"
        print(f"| {n} | {ulysses} x {ring} | {r['threads']} | {r['seconds']:.2f} | {base / r['seconds']:.2f} "
              f"| {r['received'] / 2**20:.1f} MiB | {formula / 2**20:.1f} MiB | {diff} |")  # fmt: skip


if __name__ == "__main__":
    main()
