"""Peak memory of the wav2vec2 encoder layers over a long clip, feed-forward whole vs sliced.

    python bench/wav2vec2_ffn_memory.py                 # 5 minutes of 25 Hz frames, base size (12 x 768)
    python bench/wav2vec2_ffn_memory.py --minutes 10

Each case runs in its own process (random weights, random CNN features: the layers do not care what they
encode): ``encode_features`` with ``ffn_chunk_frames`` at its default (sliced) and larger than the clip
(whole), side by side. Prints the peak resident growth (VmHWM above the resident size before the call), the
time, and the largest difference of the features between the two.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
import torch
sys.path.insert(0, {root!r})
from transformers import Wav2Vec2Config, Wav2Vec2Model
from infinitetalk.encoders.wav2vec2 import AudioEncoder

def rss(key):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) / 1024 for l in f if l.startswith(key + ":"))

torch.manual_seed(0)
torch.set_num_threads(2)
encoder = AudioEncoder(Wav2Vec2Model(Wav2Vec2Config(apply_spec_augment=False, mask_time_prob=0.0)).eval(), False)
if {whole}:
    encoder.ffn_chunk_frames = 10**9
frames = int({minutes} * 60 * 25)
features = torch.randn(1, frames, encoder.model.config.conv_dim[-1], generator=torch.Generator().manual_seed(1))
out = torch.empty(frames, encoder.config.num_layers, encoder.config.hidden_size)
out.fill_(0)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = rss("VmRSS")
t0 = time.perf_counter()
with torch.no_grad():
    encoder.encode_features(features, out=out)
seconds = time.perf_counter() - t0
torch.save(out, {path!r})
print(json.dumps(dict(peak=rss("VmHWM") - before, seconds=seconds, attention=encoder.model.config._attn_implementation)))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=5.0)
    args = ap.parse_args()
    import torch

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, whole in (("whole", True), ("sliced", False)):
            path = str(Path(tmp) / f"{name}.pt")
            code = CHILD.format(root=str(ROOT), whole=whole, minutes=args.minutes, path=path)
            line = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
            results[name] = json.loads(line.stdout.strip().splitlines()[-1])
            results[name]["features"] = torch.load(path)
    whole, sliced = results["whole"], results["sliced"]
    diff = (whole["features"] - sliced["features"]).abs().max().item()
    scale = whole["features"].abs().max().item()
    frames = int(args.minutes * 60 * 25)
    print(f"wav2vec2 base layers (attention: {whole['attention']}), {args.minutes:g} min = {frames} frames")
    print("| feed-forward | peak growth | seconds |")
    print("|---|---|---|")
    for name in ("whole", "sliced"):
        r = results[name]
        print(f"| {name} | {r['peak']:.0f} MiB | {r['seconds']:.1f} |")
    print(
        f"peak ratio sliced/whole: {sliced['peak'] / whole['peak']:.2f}; time ratio {sliced['seconds'] / whole['seconds']:.2f}"
    )
    print(f"max |whole - sliced| = {diff:.2e} (features up to {scale:.1f})")


if __name__ == "__main__":
    main()
