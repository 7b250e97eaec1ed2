"""``bench/gpu.py --tiny``: the GPU benchmark runs to the end on the CPU (same code paths as on a GPU: random
model built block by block, fp8 storage, quanto int8, block swap 0/half/all, FLOP count, batched guidance),
so the first GPU run is a formality."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_benchmark_runs_tiny_on_cpu(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu.py"), "--tiny", "--repeats", "1", "--json", str(tmp_path / "r.json")],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    assert text.rstrip().endswith("done")
    rows = re.findall(r"^\| ([123]) \| ([\d.]+) \| ([\d.]+) \|", text, flags=re.M)
    assert [r[0] for r in rows] == ["1", "2", "3"] and all(float(r[1]) > 0 and float(r[2]) > 0 for r in rows)
    for label in ("float32", "fp8_e4m3fn (storage)", "quanto_int8"):
        cells = re.search(rf"^\| {re.escape(label)} \| (.*) \|$", text, flags=re.M).group(1).split(" | ")
        assert len(cells) == 3 and all(re.fullmatch(r"[\d.]+ / [\d.]+", c) for c in cells), (label, cells)
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["flops_per_pass"] > 1e6 and len(result["memory"]) == 9
    for r in result["memory"]:  # weights + live tensors vs the preflight's estimate of the same call
        assert 0.8 < r["estimate"] / r["measured"] < 1.25, r
    fp8 = {r["swapped"]: r["measured"] for r in result["memory"] if r["quantization"] == "fp8_e4m3fn"}
    bf = {r["swapped"]: r["measured"] for r in result["memory"] if r["quantization"] == "none"}
    assert fp8[0] < 0.6 * bf[0]  # fp8 storage: about half the bytes of the float weights
