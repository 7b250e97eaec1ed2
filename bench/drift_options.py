"""What the ways to bound drift do on real weights: one long run with and without each, telemetry side by side.

    python bench/drift_options.py --weights DIR --input_path face.png --audio_path speech_5min.wav
    python bench/drift_options.py --weights DIR --input_path face.png --audio_path s.wav --runs baseline latent

Their effect cannot be measured without the real weights (the tiny random checkpoints of the tests make noise,
not faces): this is the measurement for a machine that has them. Each run is ``python -m infinitetalk`` with
the same inputs, seed and settings plus one option (docs/TELEMETRY.md):

- ``baseline``: the defaults (the reference's behaviour);
- ``noise_floor``: ``--silence_noise_floor -45``;
- ``latent``: ``--latent_motion``;
- ``anchor``: ``--color_anchor 4``;
- ``all``: the three together.

Every run writes its video and ``NAME.report.json`` / ``.png`` into ``--out`` (default ``drift_bench/``); the
script then prints, per run, the worst and the trend per minute of each measure, the mouth-in-silence ratio per
speaker, and the wall time. Extra arguments after ``--`` go to every run (e.g. ``-- --size infinitetalk-720
--sample_steps 8 --lora distill.safetensors``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

RUNS = {
    "baseline": [],
    "noise_floor": ["--silence_noise_floor", "-45"],
    "latent": ["--latent_motion"],
    "anchor": ["--color_anchor", "4"],
    "all": ["--silence_noise_floor", "-45", "--latent_motion", "--color_anchor", "4"],
}
MEASURES = ("face_de", "background_de", "sharpness", "face_shift", "face_size", "seam")


def run_one(name: str, args, extra: list[str]) -> dict:
    out = Path(args.out) / f"{name}.mp4"
    cmd = [
        sys.executable, "-m", "infinitetalk", "--weights", args.weights, "--input_path", args.input_path,
        "--audio_path", args.audio_path, "--output_path", str(out), "--seed", str(args.seed), "--no_live",
        *(["--audio_path2", args.audio_path2] if args.audio_path2 else []), *RUNS[name], *extra,
    ]  # fmt: skip
    t0 = time.time()
    proc = subprocess.run(cmd)
    if proc.returncode != 0:
        raise SystemExit(f"run '{name}' failed ({proc.returncode}): {' '.join(cmd)}")
    summary = json.loads(out.with_suffix(".report.json").read_text())
    summary["wall_s"] = time.time() - t0
    return summary


def cell(summary: dict, name: str) -> str:
    worst = summary["worst"].get(name)
    trend = summary["trend_per_minute"].get(name)
    if worst is None:
        return "-"
    return f"{worst['value']:.2f}" + (f" ({trend:+.2f}/min)" if trend is not None else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--input_path", required=True)
    ap.add_argument("--audio_path", required=True, help="a long speech (minutes) with pauses")
    ap.add_argument("--audio_path2")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", default="drift_bench")
    ap.add_argument("--runs", nargs="+", choices=tuple(RUNS), default=list(RUNS))
    args, extra = ap.parse_known_args()
    extra = [a for a in extra if a != "--"]
    Path(args.out).mkdir(parents=True, exist_ok=True)
    results = {name: run_one(name, args, extra) for name in args.runs}
    print("\nworst window (trend per minute) per measure; lower is better except sharpness (1 = as sharp)")
    print(f"{'run':<12}" + "".join(f"{m:>22}" for m in MEASURES) + f"{'mouth in silence':>20}{'wall s':>9}")
    for name, s in results.items():
        mouths = " ".join(f"{m['silent_ratio']:.2f}" for m in s["mouth"] if m["silent_ratio"] is not None)
        row = f"{name:<12}" + "".join(f"{cell(s, m):>22}" for m in MEASURES)
        print(row + f"{mouths or '-':>20}{s['wall_s']:>9.0f}")
    print(f"\ncharts: {Path(args.out).resolve()}/*.report.png")


if __name__ == "__main__":
    main()
