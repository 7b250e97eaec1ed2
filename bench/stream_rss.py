"""Peak host memory of streaming generation versus audio length (constant-memory check).

    python bench/stream_rss.py                        # 10 s, 60 s, 300 s of audio, 32x32, 1 step
    python bench/stream_rss.py --seconds 10 60 --size 64x64 --steps 2 --tiny /tmp/tiny
    python bench/stream_rss.py --seconds 10 60 --size 128x128 --telemetry   # with the drift telemetry

1. Tiny random checkpoints (``infinitetalk.tiny``) are written once into a temporary folder (or
   ``--tiny DIR`` is reused).
2. For each length, a fresh child process loads every real module on the tiny weights, encodes a
   synthetic speech signal with wav2vec2, and streams the video into a ``SegmentStore`` (one H.264
   segment per window), then muxes the mp4. It samples its resident memory (``/proc/self/statm``)
   at every denoising step and reports: RSS after loading and audio encoding, the peak RSS sampled
   during the window loop, and ``ru_maxrss`` (the true peak of the whole child, audio encoding
   included).
3. The parent (which never imports torch) prints a table and the growth from the shortest to the
   longest run. Target: the window loop's peak grows by less than 200 MB from 10 s to 300 s.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, os, resource, sys, time
import numpy as np, torch
sys.path.insert(0, {root!r})
from pathlib import Path
from infinitetalk.encoders.clip import load_clip_vision
from infinitetalk.encoders.text import load_text_encoder
from infinitetalk.encoders.vae import load_vae
from infinitetalk.encoders.wav2vec2 import load_audio_encoder
from infinitetalk.loading.dit import load_dit
from infinitetalk.pipeline import GenerationConfig, InfiniteTalkPipeline
from infinitetalk.sinks import SegmentStore

PAGE = os.sysconf("SC_PAGE_SIZE")
def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20

torch.set_num_threads({threads})
root, seconds = Path({tiny!r}), {seconds}
wan = root / "weights" / "Wan2.1-I2V-14B-480P"
start = rss_mb()
audio_encoder = load_audio_encoder(root / "weights" / "chinese-wav2vec2-base", device="cpu", dtype=torch.float32)
sr = 16000
t = np.arange(int(sr * seconds)) / sr
wave = (np.sin(2 * np.pi * 180 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) * 0.3).astype(np.float32)
audio = InfiniteTalkPipeline(None, None, None, None, audio_encoder).prepare_audio([(wave, sr)])
del audio_encoder
pipe = InfiniteTalkPipeline(
    load_dit(wan, root / "weights/InfiniteTalk/single/infinitetalk.safetensors", device="cpu", dtype=torch.float32),
    load_vae(wan / "Wan2.1_VAE.pth", device="cpu", dtype=torch.float32),
    load_clip_vision(wan / "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth", device="cpu", dtype=torch.float32),
    load_text_encoder(wan / "models_t5_umt5-xxl-enc-bf16.pth", device="cpu", dtype=torch.float32),
    device="cpu", dtype=torch.float32)
yy, xx = np.mgrid[0:96, 0:128]
image = np.stack([xx * 2, yy * 2, np.full_like(xx, 120)], -1).astype(np.uint8)
if {telemetry}:  # a real face (scikit-image's astronaut), so every measure runs, the face ones included
    from skimage import data
    image = np.ascontiguousarray(data.astronaut()[::4, ::4])
config = GenerationConfig(prompt="a person talking", size={size!r}, steps={steps}, text_scale=1.0, seed=1)
loaded = rss_mb()
peak = {{"loop": loaded}}
window_rss = []  # RSS when each window starts
def on_progress(event):
    rss = rss_mb()
    peak["loop"] = max(peak["loop"], rss)
    if event.step == 0:
        window_rss.append(rss)
store = SegmentStore({out!r})
if {telemetry}:
    from infinitetalk.report import RunReport
    report = RunReport(image, audio, Path({out!r}))  # report.png / report.json redrawn after every window
    store = report.wrap(store)
t0 = time.time()
result = pipe.generate(image, audio, config, store, on_progress=on_progress)
store.finalize(Path({out!r}) / "out.mp4", audio=(audio.waveform_16k_mix, 16000))
peak["loop"] = max(peak["loop"], rss_mb())
print(json.dumps(dict(seconds=seconds, frames=result.num_frames, windows=result.num_windows,
                      start_mb=start, loaded_mb=loaded, loop_peak_mb=peak["loop"],
                      maxrss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      window_rss_mb=window_rss,
                      wall_s=time.time() - t0)))
"""


def run_child(
    tiny: Path, seconds: float, size: str, steps: int, threads: int, work: Path, telemetry: bool = False
) -> dict:
    out = work / f"run_{seconds:g}s"
    code = CHILD.format(
        root=str(ROOT),
        tiny=str(tiny),
        seconds=seconds,
        size=size,
        steps=steps,
        threads=threads,
        out=str(out),
        telemetry=telemetry,
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"child for {seconds} s failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, nargs="+", default=[10, 60, 300])
    ap.add_argument("--size", default="32x32", help="output size WxH (multiples of 16)")
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tiny", type=Path, default=None, help="reuse tiny checkpoints from this folder")
    ap.add_argument(
        "--telemetry", action="store_true", help="measure drift as the frames stream (infinitetalk.report)"
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tiny = args.tiny
        if tiny is None:
            tiny = work / "tiny"
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "infinitetalk.tiny",
                    "--out",
                    str(tiny),
                    "--only",
                    "dit",
                    "--only",
                    "encoders",
                ],
                cwd=ROOT,
                check=True,
                capture_output=True,
            )
        rows = []
        for s in args.seconds:
            t0 = time.time()
            rows.append(run_child(tiny, s, args.size, args.steps, args.threads, work, args.telemetry))
            print(f"  {s:g} s done in {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    extra = ", drift telemetry on" if args.telemetry else ""
    print(f"\nstreaming RSS, tiny weights, {args.size}, {args.steps} step(s), 2-pass guidance, CPU{extra}")
    print(
        f"{'audio':>7} {'frames':>7} {'windows':>7} {'loaded MB':>10} {'loop peak MB':>13} {'ru_maxrss MB':>13} "
        f"{'loop s':>7}"
    )
    for r in rows:
        print(
            f"{r['seconds']:>6g}s {r['frames']:>7} {r['windows']:>7} {r['loaded_mb']:>10.1f} "
            f"{r['loop_peak_mb']:>13.1f} {r['maxrss_mb']:>13.1f} {r['wall_s']:>7.1f}"
        )
    first, last = rows[0], rows[-1]
    growth = last["loop_peak_mb"] - first["loop_peak_mb"]
    total = last["maxrss_mb"] - first["maxrss_mb"]
    verdict = "OK" if growth < 200 else "OVER TARGET"
    steady = last["window_rss_mb"]
    if len(steady) > 4:
        k = len(steady) // 2
        print(
            f"RSS at window start, {last['seconds']:g} s run: window 3 {steady[2]:.1f} MB, window {k + 1} "
            f"{steady[k]:.1f} MB, last window {steady[-1]:.1f} MB"
        )
    print(
        f"growth {first['seconds']:g} s -> {last['seconds']:g} s: window loop peak {growth:+.1f} MB ({verdict}, "
        f"target < 200 MB); whole-process peak {total:+.1f} MB"
    )


if __name__ == "__main__":
    main()
