"""Memory preflight against measured peak RSS: one real sampler step per configuration, on the CPU.

    python bench/preflight_rss.py              # the three configurations of the test, one table
    python bench/preflight_rss.py --default-malloc   # without fixing glibc's mmap threshold (see below)

For each configuration a random DiT checkpoint (real key layout, bf16) is written, then a fresh child
process: runs a tiny warm-up of the same code (so library code pages and thread pools are resident),
notes its RSS, plans (``plan_dit``: the preflight estimate), builds the DiT from the file (``build_dit``)
and runs one window of one step through ``InfiniteTalkPipeline`` (real DiT; VAE, CLIP and text encoder are
cheap stand-ins: their memory is not what is estimated). It reports ``VmHWM - VmRSS before loading``
(Linux ``/proc``; VmHWM is reset with ``/proc/self/clear_refs``) next to the estimate's host peak.

Children run with ``MALLOC_MMAP_THRESHOLD_=131072``: glibc then returns every freed tensor to the system,
so RSS shows the live tensors that the estimate counts. With glibc's default (dynamic threshold) freed
working memory stays in the heap and the measured peak is up to 1.7x the estimate; the preflight's
fit check budgets that on the CPU (``CPU_HEAP_FACTOR``) but the estimate itself counts live bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Case:
    name: str
    precision: str  # compute dtype on the CPU
    quantization: str
    height: int
    width: int
    frame_num: int
    speakers: int = 1
    batch_guidance: bool = False


# A 512-wide, 2-block DiT with the real text/CLIP widths and a small audio adapter: weights ~60 MB in
# bf16, so activations (what the fake-tensor run estimates) are a large part of the peak.
DIT = dict(dim=512, ffn_dim=2048, num_heads=4, num_layers=2, audio_blocks=2, audio_channels=32,
           audio_intermediate_dim=64, audio_output_dim=64)  # fmt: skip
CASES = (
    Case("fp32, 1 pass per call", "fp32", "none", 384, 672, 9),
    Case("bf16, batched guidance (2 per call)", "bf16", "none", 256, 448, 17, batch_guidance=True),
    Case("fp8_e4m3fn storage, 2 speakers", "bf16", "fp8_e4m3fn", 384, 384, 17, speakers=2),
)

CHILD = r"""
import json, sys
import numpy as np
import torch
from types import SimpleNamespace
from infinitetalk.build import ModelOptions, build_dit, plan_dit
from infinitetalk.pipeline import AudioEmbedding, GenerationConfig, InfiniteTalkPipeline, StillImage
from infinitetalk.preflight import RunShape

case, dit_path, tiny_path = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
cfg_dim, tiny_dim = json.loads(sys.argv[4]), json.loads(sys.argv[5])

def kib(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))

class Vae:  # 16-channel latents at 1/8 size, 4x in time; outputs zeros (not what is measured)
    dtype = torch.float32
    def encode(self, v):
        return torch.zeros(v.shape[0], 16, (v.shape[2] - 1) // 4 + 1, v.shape[3] // 8, v.shape[4] // 8)
    def decode(self, z):
        return torch.zeros(z.shape[0], 3, 4 * z.shape[2] - 3, z.shape[3] * 8, z.shape[4] * 8)

class Clip:
    def __init__(self, dim): self.dim = dim
    def encode(self, image): return torch.zeros(image.shape[0], 257, self.dim)

class Text:  # 512 tokens: the longest prompt, which the estimate assumes
    def __init__(self, dim): self.dim = dim
    def encode(self, prompts): return [torch.zeros(512, self.dim) for _ in prompts]

class NullSink:
    def write(self, frames): pass
    def close(self): pass

def run(path, c, text_dim, clip_dim, blocks, channels, measure):
    options = ModelOptions(precision=c["precision"], quantization=c["quantization"])
    config = GenerationConfig(mode="clip", size=f"{c['width']}x{c['height']}", frame_num=c["frame_num"],
                              steps=1, text_scale=1.0, batch_guidance=c["batch_guidance"], motion_frame=1,
                              color_correction_strength=0.0)
    run = RunShape.for_generation(config, c["height"], c["width"], c["speakers"])
    files = SimpleNamespace(dit=path, adapter=None)
    frames = c["frame_num"]
    feats = torch.randn(c["speakers"], frames, blocks, channels)
    audio = AudioEmbedding(feats, np.zeros(frames * 640, np.float32), frames)
    image = StillImage(np.full((c["height"], c["width"], 3), 128, np.uint8))
    regions = None
    if measure:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM
        base = kib("VmRSS")
    plan = plan_dit(files, options, "cpu", run, free=None)
    dit = build_dit(files, options, plan=plan)
    pipe = InfiniteTalkPipeline(dit, Vae(), Clip(clip_dim), Text(text_dim), None, "cpu", plan.compute_dtype)
    pipe.generate(image, audio, config, NullSink())
    if measure:
        est = plan.estimate
        return dict(measured=(kib("VmHWM") - base) * 1024, estimate=est.host_peak,
                    weights=est.weights_resident, activations=est.activations, working=est.working)

import torch
run(tiny_path, dict(case, height=64, width=64, frame_num=5), tiny_dim["text_dim"], tiny_dim["clip_dim"],
    tiny_dim["audio_blocks"], tiny_dim["audio_channels"], measure=False)  # warm-up
print(json.dumps(run(dit_path, case, 4096, 1280, cfg_dim["audio_blocks"], cfg_dim["audio_channels"], measure=True)))
"""


def write_checkpoint(path: Path, **dims) -> None:
    """A random DiT+adapter file in the official key layout (bf16), written tensor by tensor."""
    import torch
    from safetensors.torch import save_file

    from infinitetalk.config import DiTConfig
    from infinitetalk.loading.dit import dit_key_shapes

    gen = torch.Generator().manual_seed(0)
    tensors = {
        k: (torch.randn(s, generator=gen) * 0.02).bfloat16()
        for k, s in dit_key_shapes(DiTConfig(**dims)).items()
    }
    save_file(tensors, str(path))


def measure(case: Case, folder: Path, default_malloc: bool = False) -> dict:
    from dataclasses import asdict

    from infinitetalk.tiny.dit import TINY_DIT

    dit = folder / "dit.safetensors"
    tiny = folder / "tiny.safetensors"
    tiny_dims = {k: getattr(TINY_DIT, k) for k in (*DIT, "text_dim", "clip_dim")}
    if not dit.exists():
        write_checkpoint(dit, **DIT)
        write_checkpoint(tiny, **tiny_dims)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    if not default_malloc:
        env["MALLOC_MMAP_THRESHOLD_"] = "131072"
    out = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(asdict(case)), str(dit), str(tiny), json.dumps(DIT),
         json.dumps(tiny_dims)],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    if out.returncode:
        raise RuntimeError(f"{case.name}: child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--default-malloc", action="store_true", help="leave glibc's mmap threshold dynamic")
    args = ap.parse_args()
    mib = 1024**2
    print(f"{'configuration':40s} {'estimate':>9s} {'measured':>9s} {'ratio':>6s}  (MiB; activations est.)")
    with tempfile.TemporaryDirectory() as tmp:
        for case in CASES:
            start = time.perf_counter()
            r = measure(case, Path(tmp), args.default_malloc)
            r["seconds"] = time.perf_counter() - start
            print(f"{case.name:40s} {r['estimate'] / mib:9.0f} {r['measured'] / mib:9.0f} "
                  f"{r['estimate'] / r['measured']:6.2f}  ({r['activations'] / mib:.0f}; {r['seconds']:.0f} s)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
