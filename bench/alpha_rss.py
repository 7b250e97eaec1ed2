"""Peak host memory of the alpha output versus video length (constant-memory check).

    python bench/alpha_rss.py                                  # 10 s and 60 s, 240x320, webm-vp9 + matte
    python bench/alpha_rss.py --seconds 10 60 120 --size 480x832 --format prores4444-mov

For each length a fresh child process:
1. streams the synthetic keying scene (tests/unit/keying_scene.py: a subject moving over a drifting green
   backdrop with camera noise) into a ``SegmentStore`` in 81-frame windows (lossless segments, as the
   sampler leaves them for master formats), one window in memory at a time;
2. writes the final file with the keyer on (``SegmentStore.finalize(transform=Presenter(KeySettings()))``):
   decode, key window by window, encode with alpha (and the matte), mux the soundtrack;
3. reports its resident memory sampled at every keyed chunk (peak during the keyed write) and
   ``ru_maxrss`` (the true peak of the whole child).

The parent (which imports neither torch nor numpy) prints a table and the growth from the shortest to the
longest run. Target: both peaks grow by less than 50 MB from 10 s to 60 s (flat: the keyer holds one chunk
and one frame of alpha whatever the length).
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
import json, os, resource, sys, time
sys.path.insert(0, {root!r})
import numpy as np
from pathlib import Path
from infinitetalk.composite import Presenter
from infinitetalk.keying import KeySettings
from infinitetalk.sinks import SegmentStore
from tests.unit.keying_scene import backdrop_colour, subject

PAGE = os.sysconf("SC_PAGE_SIZE")
def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20

seconds, (h, w) = {seconds}, {size!r}
total, window = 25 * seconds, 81
rng = np.random.default_rng(0)
store = SegmentStore(Path({out!r}) / "run", codec="h264-lossless")
store.begin("bench")
for k, start in enumerate(range(0, total, window)):
    n = min(window, total - start)
    frames = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        fg, a = subject(start + i, h, w, ss=1)
        img = a[..., None] * fg + (1 - a[..., None]) * backdrop_colour(start + i, total) + rng.normal(0, 3, fg.shape)
        frames[i] = np.clip(np.round(img), 0, 255)
    store.write(frames)
    store.commit(k)
del frames
store.mark_complete()
sound = (np.zeros((2, 48000 * seconds), np.float32), 48000)
before = rss_mb()
peak = {{"write": before}}

class Sampled(Presenter):
    def __call__(self, chunks):
        for chunk in super().__call__(chunks):
            peak["write"] = max(peak["write"], rss_mb())
            yield chunk

t0 = time.time()
out = store.finalize(Path({out!r}) / "talk", audio=sound, fmt={fmt!r}, transform=Sampled(KeySettings()), matte=True)
print(json.dumps(dict(seconds=seconds, frames=store.frames_written, before_write_mb=round(before, 1),
    write_peak_mb=round(peak["write"], 1), maxrss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    write_s=round(time.time() - t0, 1))))
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=int, nargs="+", default=[10, 60])
    p.add_argument("--size", default="240x320", help="HxW of the frames (240x320)")
    p.add_argument("--format", default="webm-vp9", help="an alpha format (webm-vp9)")
    args = p.parse_args()
    h, w = (int(v) for v in args.size.lower().split("x"))
    rows = []
    for seconds in args.seconds:
        with tempfile.TemporaryDirectory() as tmp:
            code = CHILD.format(root=str(ROOT), seconds=seconds, size=(h, w), out=tmp, fmt=args.format)
            done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
            if done.returncode != 0:
                print(done.stderr[-3000:], file=sys.stderr)
                return 1
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    print(
        f"\n{'seconds':>8} {'frames':>7} {'before MB':>10} {'write peak MB':>14} {'ru_maxrss MB':>13} {'write s':>8}"
    )
    for r in rows:
        print(
            f"{r['seconds']:>8} {r['frames']:>7} {r['before_write_mb']:>10} {r['write_peak_mb']:>14} "
            f"{r['maxrss_mb']:>13} {r['write_s']:>8}"
        )
    growth = rows[-1]["write_peak_mb"] - rows[0]["write_peak_mb"]
    growth_max = rows[-1]["maxrss_mb"] - rows[0]["maxrss_mb"]
    print(
        f"\ngrowth {rows[0]['seconds']} s -> {rows[-1]['seconds']} s: write peak {growth:+.1f} MB, "
        f"ru_maxrss {growth_max:+.1f} MB ({args.format}, {h}x{w}, keyer on, matte on)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
