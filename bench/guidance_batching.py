"""Guidance branches: one batched model call vs separate calls, measured side by side.

    python bench/guidance_batching.py [--dim 512 --layers 4 --hw 16x24 --frames 21 --repeats 3]

Prints the median wall time of (a) cond + drop_text as two B=1 calls and (b) one B=2 call, on a
random DiT of the given size, interleaving the two so machine noise hits both equally.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from infinitetalk.config import DiTConfig
from infinitetalk.model import WanInfiniteTalkDiT


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hw", default="16x24", help="latent height x width")
    ap.add_argument("--frames", type=int, default=21, help="latent frames")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="bfloat16" if torch.cuda.is_available() else "float32")
    args = ap.parse_args()
    h, w = map(int, args.hw.split("x"))
    dtype = getattr(torch, args.dtype)
    cfg = DiTConfig(dim=args.dim, ffn_dim=args.dim * 2, num_heads=args.dim // 128, num_layers=args.layers,
                    text_dim=64, clip_dim=32, audio_blocks=2, audio_channels=32,
                    audio_intermediate_dim=64, audio_output_dim=64)  # fmt: skip
    model = WanInfiniteTalkDiT(cfg, device=args.device, dtype=dtype).eval()
    frames_video = (args.frames - 1) * 4 + 1
    dev = args.device
    x = torch.randn(2, 16, args.frames, h, w, device=dev)
    y = torch.randn(2, 20, args.frames, h, w, device=dev)
    t = torch.full((2,), 500.0, device=dev)
    ctx = torch.randn(2, 20, 64, device=dev)
    clip = torch.randn(2, 257, 32, device=dev)
    audio = torch.randn(2, 1, frames_video, 5, 2, 32, device=dev)

    def sync():
        if dev.startswith("cuda"):
            torch.cuda.synchronize()

    def separate():
        for i in range(2):
            model(x[i : i + 1], t[i : i + 1], ctx[i : i + 1], clip[i : i + 1], y[i : i + 1], audio[i : i + 1])

    def batched():
        model(x, t, ctx, clip, y, audio)

    times = {"separate": [], "batched": []}
    with torch.no_grad():
        separate(), batched()  # warm-up
        for _ in range(args.repeats):
            for name, fn in (("separate", separate), ("batched", batched)):
                sync()
                start = time.perf_counter()
                fn()
                sync()
                times[name].append(time.perf_counter() - start)
    tokens = args.frames * h * w // 4
    sep, bat = statistics.median(times["separate"]), statistics.median(times["batched"])
    print(f"device={dev} dtype={args.dtype} dim={args.dim} layers={args.layers} tokens/sample={tokens}")
    print(f"two B=1 calls : {sep * 1000:8.1f} ms (median of {args.repeats})")
    print(f"one B=2 call  : {bat * 1000:8.1f} ms")
    print(f"ratio separate/batched: {sep / bat:.2f}")


if __name__ == "__main__":
    main()
