"""Worker of ``test_parallel.py``, started by torchrun on the CPU (gloo): the real pipeline on tiny weights
with the DiT split over the processes, rank 0 saving what it produced for the test to compare.

    python -m torch.distributed.run --standalone --nproc_per_node N -m tests.unit.parallel_worker \\
        TINY_ROOT OUT_DIR JOB [JOB ...]      (from the repository root)

JOB is ``clip:U:R:HEADS:SPEAKERS:ENCODERS`` (one clip-mode window -> OUT/NAME.npz with frames and final
latent; ENCODERS ``tiny``: the tiny umT5/CLIP/VAE, ``standin``: the torch-only stand-ins of
test_pipeline.py, which spare each process the transformers/diffusers imports (seconds per process)),
``resume:U:R`` (uninterrupted, interrupted and resumed streaming runs into OUT/resume_*) or
``cli:U:R`` (``python -m infinitetalk``'s ``main`` -> OUT/cli/out.mkv (FFV1) and OUT/cli_rankN.json with its exit
code and the frames this process wrote; it closes the process group, so it comes last).
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from infinitetalk.config import SpeakerRegions
from infinitetalk.errors import Interrupted
from infinitetalk.loading.dit import load_dit
from infinitetalk.model.dit import WanInfiniteTalkDiT
from infinitetalk.parallel import ParallelSession, SequenceParallel
from infinitetalk.pipeline import InfiniteTalkPipeline
from infinitetalk.sinks import MemorySink, SegmentStore
from infinitetalk.tiny.dit import TINY_DIT, random_source
from tests.unit.test_pipeline import (
    FakeClip,
    FakeText,
    FakeVAE,
    small_config,
    test_image,
    tiny_audio,
    tiny_pipeline,
)

SIZE = (48, 80)  # image (H, W); the video is 80x48: 5x3 tokens per latent frame
CLIP_FRAMES = 9  # one window of 3 latent frames: 45 tokens (2 and 4 processes: padded, partial frames)
REGIONS = SpeakerRegions(bboxes=[(0, 0, 40, 48), (40, 0, 80, 48)])


def clip_config(**kw):
    return small_config(
        **(dict(size="80x48", steps=2, mode="clip", frame_num=CLIP_FRAMES, motion_frame=5) | kw)
    )


def stream_config():
    return small_config(size="80x48", steps=1, frame_num=9, motion_frame=5)  # 13 frames: 2 windows


def dit_with_heads(heads: int, speakers: int) -> WanInfiniteTalkDiT:
    """The tiny DiT with ``heads`` attention heads (the generator's has 2), random weights (seed 0)."""
    cfg = replace(TINY_DIT, num_heads=heads)
    source = random_source(cfg, seed=0)
    model = WanInfiniteTalkDiT(cfg, device="cpu", dtype=torch.float32)
    model.load_state_dict(source["base"] | source["single" if speakers == 1 else "multi"], strict=True)
    return model.eval()


class Widened:
    """A stand-in encoder whose features are tiled to the width the tiny DiT expects."""

    def __init__(self, encoder, width: int):
        self.encoder, self.width = encoder, width

    def encode(self, x):
        out = self.encoder.encode(x)
        if isinstance(out, list):
            return [self._widen(o) for o in out]
        return self._widen(out)

    def _widen(self, t: torch.Tensor) -> torch.Tensor:
        return t.repeat_interleave(-(-self.width // t.shape[-1]), dim=-1)[..., : self.width]


def pipeline(root: Path, heads: int, speakers: int, encoders: str = "tiny") -> InfiniteTalkPipeline:
    """The tiny-weights pipeline (DiT with ``heads`` heads) with tiny or stand-in encoders."""
    if encoders == "tiny":
        pipe = tiny_pipeline(root, speakers)
    else:
        wan = root / "weights" / "Wan2.1-I2V-14B-480P"
        adapter = root / "weights" / "InfiniteTalk" / ("single" if speakers == 1 else "multi")
        dit = load_dit(wan, adapter / "infinitetalk.safetensors", device="cpu", dtype=torch.float32).eval()
        clip, text = Widened(FakeClip(), TINY_DIT.clip_dim), Widened(FakeText(), TINY_DIT.text_dim)
        pipe = InfiniteTalkPipeline(dit, FakeVAE(), clip, text, device="cpu", dtype=torch.float32)
    if heads != pipe.dit.config.num_heads:
        pipe.dit = dit_with_heads(heads, speakers)
    return pipe


def run_clip(pipe, speakers: int, sink, cfg=None) -> torch.Tensor:
    """One clip-mode window into ``sink``; returns the final latent."""
    last = {}

    def keep_latent(event):
        if event.latent_preview is not None:
            last["latent"] = event.latent_preview.clone()

    pipe.generate(
        test_image(*SIZE),
        tiny_audio(CLIP_FRAMES, speakers),
        cfg or clip_config(),
        sink,
        speaker_regions=REGIONS if speakers == 2 else None,
        on_progress=keep_latent,
    )
    return last["latent"]


def session_for(ulysses: int, ring: int) -> ParallelSession:
    strategy = SequenceParallel(ulysses, ring)
    return ParallelSession(dist.get_rank(), dist.get_world_size(), torch.device("cpu"), strategy)


def clip_name(ulysses: int, ring: int, heads: int, speakers: int, encoders: str) -> str:
    return f"clip_u{ulysses}_r{ring}_h{heads}_s{speakers}_{encoders}"


def job_clip(
    root: Path, out: Path, ulysses: str, ring: str, heads: str, speakers: str, encoders: str
) -> None:
    ulysses, ring, heads, speakers = int(ulysses), int(ring), int(heads), int(speakers)
    session = session_for(ulysses, ring)
    pipe = pipeline(root, heads, speakers, encoders)
    session.attach(pipe.dit)
    memory = MemorySink() if session.is_main else None
    latent = run_clip(pipe, speakers, session.output_sink(memory, resumable=False))
    if session.is_main:
        name = clip_name(ulysses, ring, heads, speakers, encoders)
        np.savez(out / f"{name}.npz", frames=memory.frames, latent=latent.numpy())


def job_resume(root: Path, out: Path, ulysses: str, ring: str) -> None:
    session = session_for(int(ulysses), int(ring))
    pipe = pipeline(root, 2, 1)
    session.attach(pipe.dit)
    image, audio = test_image(*SIZE), tiny_audio(13)

    def store(name):
        return session.output_sink(SegmentStore(out / name) if session.is_main else None)

    full = pipe.generate(image, audio, stream_config(), store("resume_full"))
    started = []  # every process cancels at the same point: when window 2 starts
    try:
        pipe.generate(
            image,
            audio,
            stream_config(),
            store("resume_cut"),
            on_progress=lambda ev: started.append(ev.window),
            should_cancel=lambda: 1 in started,
        )
        raise AssertionError("the run was not interrupted")
    except Interrupted:
        pass
    resumed = pipe.generate(image, audio, stream_config(), store("resume_cut"), resume=True)
    report = {"full": full.windows_run, "resumed": resumed.windows_run}
    (out / f"resume_rank{session.rank}.json").write_text(json.dumps(report))


def cli_argv(root: Path, inputs: Path, output: Path) -> list[str]:
    """``python -m infinitetalk`` arguments: inputs/face.png + inputs/speech.wav, one clip window."""
    return [
        *("--weights", str(root / "models"), "--output_path", str(output), "--prompt", "a face"),
        *("--input_path", str(inputs / "face.png"), "--audio_path", str(inputs / "speech.wav")),
        *(
            "--size",
            "80x48",
            "--sample_steps",
            "2",
            "--mode",
            "clip",
            "--frame_num",
            "9",
            "--motion_frame",
            "5",
        ),
        *("--format", "ffv1-mkv"),  # lossless: the decoded frames are the generated ones
    ]


def job_cli(root: Path, out: Path, ulysses: str, ring: str) -> None:
    from infinitetalk.cli import main

    rank, written = dist.get_rank(), []
    original = SegmentStore.write

    def spy(store, frames):  # count the frames this process writes
        written.append(len(frames))
        original(store, frames)

    SegmentStore.write = spy
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        sizes = ["--ulysses_size", ulysses, "--ring_size", ring]
        rc = main(cli_argv(root, out, out / "cli" / "out.mkv") + sizes)  # closes the process group
    SegmentStore.write = original
    report = {"rc": rc, "frames_written": sum(written), "stderr": stderr.getvalue()}
    (out / f"cli_rank{rank}.json").write_text(json.dumps(report))


def main(argv: list[str]) -> None:
    root, out, jobs = Path(argv[0]), Path(argv[1]), argv[2:]
    dist.init_process_group("gloo")
    torch.set_grad_enabled(False)
    for job in jobs:
        kind, *values = job.split(":")
        {"clip": job_clip, "resume": job_resume, "cli": job_cli}[kind](root, out, *values)
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])
