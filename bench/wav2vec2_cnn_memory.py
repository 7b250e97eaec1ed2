"""Peak RSS of the wav2vec2 CNN feature encoder over long audio: whole clip vs chunked.

    python bench/wav2vec2_cnn_memory.py [--seconds 120]

Uses the real chinese-wav2vec2-base CNN shape (7 convs, 512 channels, GroupNorm after the first)
with random weights; each variant runs in its own subprocess so peaks do not mix.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

CHILD = r"""
import resource, sys, time, torch
from transformers import Wav2Vec2Config
from transformers.models.wav2vec2.modeling_wav2vec2 import Wav2Vec2FeatureEncoder
from infinitetalk.encoders.wav2vec2 import conv_features
torch.manual_seed(0)
enc = Wav2Vec2FeatureEncoder(Wav2Vec2Config(feat_extract_norm="group")).eval()
x = torch.randn(1, int(float(sys.argv[1]) * 16000)) * 0.1
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
with torch.no_grad():
    out = enc(x) if sys.argv[2] == "whole" else conv_features(enc, x, 1500)
dt = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(f"{(peak - base) / 1024:.0f} {dt:.2f} {out.float().abs().mean().item():.6f}")
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=120.0)
    args = ap.parse_args()
    rows = {}
    for mode in ("whole", "chunked"):
        out = subprocess.run([sys.executable, "-c", CHILD, str(args.seconds), mode], capture_output=True,
                             text=True, check=True).stdout.split()  # fmt: skip
        rows[mode] = (float(out[0]), float(out[1]), out[2])
    print(f"wav2vec2 CNN over {args.seconds:.0f} s of 16 kHz audio (growth of peak RSS during the call)")
    for mode, (mb, sec, check) in rows.items():
        print(f"  {mode:8s}: +{mb:7.0f} MB  {sec:6.2f} s  (mean |feature| {check})")
    print(f"  memory ratio whole/chunked: {rows['whole'][0] / max(rows['chunked'][0], 1):.1f}x")


if __name__ == "__main__":
    main()
