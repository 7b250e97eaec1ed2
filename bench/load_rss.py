"""Peak host memory of ``load_dit`` versus the checkpoint size.

    python bench/load_rss.py                 # 1.5 GB bf16 merged DiT+adapter file, load as bf16
    python bench/load_rss.py --size-gb 2 --storage fp16 --keep /tmp/big

1. A child process writes a random DiT+adapter checkpoint in the official key layout (width 1024,
   as many layers as the size asks), streaming tensor by tensor into a temporary folder.
2. A fresh child process imports torch + infinitetalk, notes its resident memory, calls
   ``load_dit(path, dtype=...)`` and reports ``resource.getrusage().ru_maxrss`` and VmHWM.
3. This parent (which never imports torch, so the child's ru_maxrss is its own) prints the peak
   against the file size. Target: peak RSS <= 1.3x the file size.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

GENERATE = r"""
import json, math, struct, sys
from dataclasses import replace
import torch
from infinitetalk.config import DiTConfig
from infinitetalk.loading.dit import dit_key_shapes

path, target, storage = sys.argv[1], float(sys.argv[2]), sys.argv[3]
dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[storage]
base = DiTConfig(dim=1024, ffn_dim=4096, num_heads=8, num_layers=1)
per_layer = sum(math.prod(s) for s in dit_key_shapes(replace(base, num_layers=2)).values()) - sum(
    math.prod(s) for s in dit_key_shapes(base).values())
fixed = sum(math.prod(s) for s in dit_key_shapes(base).values()) - per_layer
layers = max(1, round((target / dtype.itemsize - fixed) / per_layer))
shapes = dit_key_shapes(replace(base, num_layers=layers))
name = {"bf16": "BF16", "fp16": "F16"}[storage]
header, offset = {}, 0
for k, s in shapes.items():
    n = math.prod(s) * dtype.itemsize
    header[k] = {"dtype": name, "shape": list(s), "data_offsets": [offset, offset + n]}
    offset += n
blob = json.dumps(header).encode()
blob += b" " * (-len(blob) % 8)
gen = torch.Generator().manual_seed(0)
with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(blob)) + blob)
    for k, s in shapes.items():  # one tensor in memory at a time
        t = (torch.randn(s, generator=gen) * 0.02).to(dtype)
        f.write(t.contiguous().view(torch.uint8).numpy().tobytes())
print(json.dumps({"layers": layers, "params": sum(math.prod(s) for s in shapes.values())}))
"""

MEASURE = r"""
import json, resource, sys, time
import torch
from infinitetalk.loading.dit import load_dit

def status_kib(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))

base = status_kib("VmRSS")
start = time.perf_counter()
model = load_dit(sys.argv[1], dtype={"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[sys.argv[2]])
seconds = time.perf_counter() - start
kept = sum(p.numel() * p.element_size() for p in model.parameters())
print(json.dumps({"base_kib": base, "ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "vmhwm_kib": status_kib("VmHWM"), "kept_bytes": kept, "seconds": seconds}))
"""


def run(script: str, *args: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", script, *args], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if out.returncode:
        raise SystemExit(f"child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--size-gb", type=float, default=1.5, help="checkpoint size to generate (default 1.5)"
    )
    parser.add_argument(
        "--storage", choices=("bf16", "fp16"), default="bf16", help="dtype stored in the file"
    )
    parser.add_argument(
        "--load-dtype", choices=("bf16", "fp16", "fp32"), default=None, help="default: the storage dtype"
    )
    parser.add_argument("--keep", type=Path, default=None, help="folder to write the checkpoint in (kept)")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="load_rss_"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"dit_infinitetalk_merged_{args.storage}.safetensors"
    try:
        info = run(GENERATE, str(path), str(args.size_gb * 1e9), args.storage)
        info["file_bytes"] = path.stat().st_size
        res = run(MEASURE, str(path), args.load_dtype or args.storage)
    finally:
        if args.keep is None:
            path.unlink(missing_ok=True)
            folder.rmdir()
    report(info, res, args)


def report(info: dict, res: dict, args) -> None:
    file_bytes = info["file_bytes"]
    mib = 1024 * 1024
    peak = res["ru_maxrss_kib"] * 1024
    base = res["base_kib"] * 1024
    print(
        f"checkpoint : {file_bytes / mib:8.0f} MiB  ({info['layers']} layers, {info['params'] / 1e6:.0f} M params, {args.storage})"
    )
    print(
        f"kept       : {res['kept_bytes'] / mib:8.0f} MiB  (model parameters after load, {args.load_dtype or args.storage})"
    )
    print(f"RSS before : {base / mib:8.0f} MiB  (python + torch + infinitetalk imported)")
    print(f"peak RSS   : {peak / mib:8.0f} MiB  (ru_maxrss; VmHWM {res['vmhwm_kib'] / 1024:.0f} MiB)")
    print(f"ratio      : {peak / file_bytes:8.2f}x file size  (target <= 1.3x)")
    print(f"growth     : {(peak - base) / file_bytes:8.2f}x file size  (peak - RSS before)")
    print(f"load time  : {res['seconds']:8.2f} s")


if __name__ == "__main__":
    main()
