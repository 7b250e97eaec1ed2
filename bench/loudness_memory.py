"""Peak memory and time of delivery loudness on long soundtracks: whole-array (before) versus block-wise.

    python bench/loudness_memory.py                  # 10 and 60 minutes of 48 kHz stereo
    python bench/loudness_memory.py --minutes 1 10 --dir /big/disk

1. For each length a synthetic speech-like 48 kHz stereo soundtrack (syllable bursts, pauses, a quiet
   passage, clicks above the ceiling) is written block by block to a float32 WAV in ``--dir`` (default:
   the temp folder; 1.4 GB per hour).
2. Each case runs in a fresh child process, which reports its wall time, the peak of its anonymous
   resident memory (``RssAnon``, sampled every 5 ms: what the process must hold) and ``VmHWM`` (all
   resident pages, file-backed ones included: the pages of a memmap count while the kernel keeps them,
   and it keeps them while memory is free):
   - ``old measure``: the whole file read (``soundfile.read``), ``pyloudnorm.Meter.integrated_loudness``
     (what ``measure_loudness`` did);
   - ``new measure (stream)``: ``measure_loudness`` on ``media.stream.iter_audio`` blocks;
   - ``new measure (memmap)``: ``measure_loudness`` on an ``np.memmap`` of the WAV's samples;
   - ``old delivery``: the whole file read, then the whole-array ``normalize_delivery`` of before (pyloudnorm
     measures, gain, whole-array 4x oversampled limiter, twice, and a final measure and true-peak scan);
   - ``new delivery``: ``normalize_delivery`` on the memmap, its result a spill buffer beside the WAV
     (``infinitetalk.spill``: file-backed above 256 MiB, i.e. from about 12 minutes of 48 kHz stereo on).
3. The old and new delivery results are compared (largest sample difference) and the new result's
   loudness and true peak are printed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile

ROOT = Path(__file__).resolve().parents[1]
SR = 48000

CHILD = r"""
import json, sys, threading, time
sys.path.insert(0, {root!r})
import numpy as np, soundfile, pyloudnorm
from scipy.ndimage import minimum_filter1d, uniform_filter1d
from scipy.signal import resample_poly

peak = {{"anon": 0}}
def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key)) / 1024  # MiB
def sample():
    while True:
        peak["anon"] = max(peak["anon"], status("RssAnon:"))
        time.sleep(0.005)
threading.Thread(target=sample, daemon=True).start()

def wav_memmap(path):  # (C, N) view of a float32 WAV's samples, nothing read
    info = soundfile.info(path)
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    pos = 12
    while head[pos : pos + 4] != b"data":
        pos += 8 + int.from_bytes(head[pos + 4 : pos + 8], "little")
    return np.memmap(path, np.float32, "r", offset=pos + 8, shape=(info.frames, info.channels)).T

def old_peaks(wave, chunk=1 << 20, pad=64):  # the whole-array scan of before (chunked oversampling)
    n = wave.shape[1]; peaks = np.empty(n, np.float32)
    for start in range(0, n, chunk):
        end = min(n, start + chunk); lo, hi = max(0, start - pad), min(n, end + pad)
        over = resample_poly(wave[:, lo:hi], 4, 1, axis=-1)
        over = np.abs(over[:, (start - lo) * 4 : (end - lo) * 4]).reshape(wave.shape[0], end - start, 4)
        peaks[start:end] = np.maximum(over.max(axis=(0, 2)), np.abs(wave[:, start:end]).max(axis=0))
    return peaks

def old_measure(wave, sr):
    return float(pyloudnorm.Meter(sr).integrated_loudness(np.asarray(wave, np.float64).T))

def old_limit(wave, sr, ceiling_dbtp):
    ceiling = 10.0 ** (ceiling_dbtp / 20.0)
    need = np.minimum(1.0, ceiling / np.maximum(old_peaks(wave), 1e-12)).astype(np.float32)
    if need.min() >= 1.0:
        return wave
    reach = 2 * max(1, round(0.01 * sr)) + 1
    gain = uniform_filter1d(minimum_filter1d(need, reach, mode="nearest"), reach, mode="nearest")
    limited = wave * gain[None]
    excess = float(old_peaks(limited).max()) / ceiling
    return (limited / max(1.0, excess)).astype(np.float32)

def old_delivery(wave, sr, target, ceiling_dbtp):
    for _ in range(2):
        wave = old_limit(wave * np.float32(10.0 ** ((target - old_measure(wave, sr)) / 20.0)), sr, ceiling_dbtp)
    old_measure(wave, sr), old_peaks(wave).max()  # the final log line measured both
    return wave

from infinitetalk.media.audio import measure_loudness, normalize_delivery
from infinitetalk.media.stream import iter_audio

case, path, result_path = {case!r}, {path!r}, {result!r}
t0 = time.time()
extra = {{}}
if case == "old measure":
    data, sr = soundfile.read(path, dtype="float32", always_2d=True)
    extra["lufs"] = old_measure(np.ascontiguousarray(data.T), sr)
elif case == "new measure (stream)":
    extra["lufs"] = measure_loudness((block for block, _ in iter_audio(path)), {sr})
elif case == "new measure (memmap)":
    extra["lufs"] = measure_loudness(wav_memmap(path), {sr})
elif case == "old delivery":
    data, sr = soundfile.read(path, dtype="float32", always_2d=True)
    out = old_delivery(np.ascontiguousarray(data.T), sr, -16.0, -1.0)
    np.save(result_path, out)
elif case == "new delivery":
    out = normalize_delivery((wav_memmap(path), {sr}), -16.0, -1.0).wave
    extra["memmap"] = isinstance(out, np.memmap)
    result = np.lib.format.open_memmap(result_path, "w+", np.float32, out.shape)
    for s in range(0, out.shape[1], 1 << 20):
        result[:, s : s + (1 << 20)] = out[:, s : s + (1 << 20)]
    result.flush()
wall = time.time() - t0
peak["anon"] = max(peak["anon"], status("RssAnon:"))
print(json.dumps(dict(case=case, wall_s=wall, anon_mb=peak["anon"], hwm_mb=status("VmHWM:"), **extra)))
"""

CASES = ["old measure", "new measure (stream)", "new measure (memmap)", "old delivery", "new delivery"]


def write_soundtrack(path: Path, minutes: float) -> None:
    """Speech-like stereo written 10 s at a time (the generator never holds the whole track)."""
    rng = np.random.default_rng(0)
    n, block = round(minutes * 60 * SR), 10 * SR
    with soundfile.SoundFile(path, "w", SR, 2, subtype="FLOAT") as f:
        for start in range(0, n, block):
            t = np.arange(start, min(n, start + block)) / SR
            syllables = (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)) ** 2 * (t % 1.3 < 0.9)
            level = np.where((t % 300) < 30, 0.05, 1.0)  # 30 s of every 5 minutes much quieter
            voice = syllables * level * (np.sin(2 * np.pi * 140 * t) + 0.3 * np.sin(2 * np.pi * 2500 * t))
            wave = np.stack([0.25 * voice, 0.2 * voice]) + 0.002 * rng.standard_normal((2, t.size))
            wave[:, (t % 7.0) < 0.0005] = 0.9  # a click every 7 s
            f.write(wave.T.astype(np.float32))


def run_case(case: str, path: Path, result: Path) -> dict:
    code = CHILD.format(root=str(ROOT), case=case, path=str(path), result=str(result), sr=SR)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{case} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, nargs="+", default=[10, 60])
    ap.add_argument("--dir", type=Path, default=None, help="folder for the WAV files (default: temp folder)")
    ap.add_argument("--cases", nargs="+", default=CASES, choices=CASES)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for minutes in args.minutes:
            path = Path(tmp) / f"soundtrack_{minutes:g}min.wav"
            write_soundtrack(path, minutes)
            results = {}
            for case in args.cases:
                results[case] = Path(tmp) / f"{case.split()[0]}_{minutes:g}.npy"
                t0 = time.time()
                rows.append(dict(minutes=minutes, **run_case(case, path, results[case])))
                print(f"  {minutes:g} min, {case}: {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
            if {"old delivery", "new delivery"} <= set(args.cases):
                old, new = (
                    np.load(results["old delivery"], mmap_mode="r"),
                    np.load(results["new delivery"], mmap_mode="r"),
                )
                diff = max(
                    float(np.abs(old[:, s : s + SR * 60] - new[:, s : s + SR * 60]).max())
                    for s in range(0, old.shape[1], SR * 60)
                )
                rows[-1]["max_diff"] = diff
            path.unlink()
    print("\ndelivery loudness (-16 LUFS, -1 dBTP) of 48 kHz stereo, one child process per case")
    print(f"{'audio':>7}  {'case':<22} {'wall s':>7} {'peak RssAnon MB':>16} {'VmHWM MB':>9}  notes")
    for r in rows:
        notes = []
        if "lufs" in r:
            notes.append(f"{r['lufs']:.4f} LUFS")
        if "max_diff" in r:
            notes.append(f"max |new - old| {r['max_diff']:.1e}")
        if r.get("memmap"):
            notes.append("result file-backed")
        print(
            f"{r['minutes']:>5g}m  {r['case']:<22} {r['wall_s']:>7.1f} {r['anon_mb']:>16.0f} {r['hwm_mb']:>9.0f}  "
            + ", ".join(notes)
        )


if __name__ == "__main__":
    main()
