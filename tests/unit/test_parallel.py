"""Sequence parallelism (docs/MULTI_GPU.md): the DiT forward split over 2 and 4 processes started by
torchrun (gloo on the CPU) gives the frames of the single-process run, for one and two speakers.

The multi-process runs happen in two torchrun launches (tests/unit/parallel_worker.py), shared by the
tests of this file; the single-process references run here, on the same tiny weights and inputs.
Video: 80x48 (5x3 tokens per latent frame), one clip window of 9 frames = 45 tokens: 2 and 4 processes
hold padded shards that cut latent frames, and latent frame 0 (the speaker-binding keys) spans two
processes when there are 4.

Tolerance: the split changes only the order of floating-point sums (heads of another process, ring
blocks merged by log-sum-exp), about 1e-7 relative per forward. After 2 steps x 3 guidance passes the
final latent agrees to 1e-5 of its largest value, and the uint8 frames (VAE-decoded, truncated like
the reference) differ by at most one level in at most 1% of the values. A wrong shard, frame mapping
or binding position gives errors of order one.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest
import torch

from infinitetalk.cli import main
from infinitetalk.errors import InputError
from infinitetalk.loading.dit import dit_heads
from infinitetalk.model.dit import AudioCrossAttention
from infinitetalk.parallel import SINGLE_PROCESS, ParallelSession, TokenSpan, check_sizes
from infinitetalk.parallel.launch import process_device
from infinitetalk.sinks import MemorySink
from infinitetalk.tiny.dit import TINY_DIT
from tests.unit.parallel_worker import cli_argv, clip_name, pipeline, run_clip
from tests.unit.test_cli import _inputs

REPO = Path(__file__).resolve().parents[2]


def torchrun(nproc: int, root: Path, out: Path, *jobs: str) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    cmd += ["-m", "tests.unit.parallel_worker", str(root), str(out), *jobs]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]


@pytest.fixture(scope="module")
def two_processes(tiny_root, tmp_path_factory) -> Path:
    """2 processes: Ulysses 2 and ring 2 with the tiny encoders, resume, and the command line."""
    out = tmp_path_factory.mktemp("sp2")
    _inputs(out, seconds=0.6, h=48, w=80)
    jobs = [f"clip:{u}:{r}:2:{s}:tiny" for u, r in ((2, 1), (1, 2)) for s in (1, 2)]
    torchrun(2, tiny_root, out, *jobs, "resume:2:1", "cli:2:1")
    return out


@pytest.fixture(scope="module")
def four_processes(tiny_root, tmp_path_factory) -> Path:
    """4 processes (stand-in encoders: no transformers/diffusers import in each process):
    Ulysses 2 x ring 2 and ring 4 on the tiny DiT (2 heads), Ulysses 4 on a 4-head tiny DiT; then the
    command line asked for Ulysses 4 on the 2-head DiT (an error)."""
    out = tmp_path_factory.mktemp("sp4")
    jobs = [f"clip:2:2:2:{s}:standin" for s in (1, 2)] + [f"clip:4:1:4:{s}:standin" for s in (1, 2)]
    torchrun(4, tiny_root, out, *jobs, "clip:1:4:2:2:standin", "cli:4:1")
    return out


_references: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


@contextlib.contextmanager
def one_thread():
    """One CPU thread, like every worker (OMP_NUM_THREADS=1): the same kernels, and no thread spinning
    on a busy machine (several times faster there)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def single_process(root: Path, heads: int, speakers: int, encoders: str) -> tuple[np.ndarray, np.ndarray]:
    """(frames, final latent) of the same clip in this process, unsplit."""
    key = (heads, speakers, encoders)
    if key not in _references:
        pipe, sink = pipeline(root, heads, speakers, encoders), MemorySink()
        assert pipe.dit.parallel is SINGLE_PROCESS
        with one_thread():
            latent = run_clip(pipe, speakers, sink)
        _references[key] = sink.frames, latent.numpy()
    return _references[key]


def assert_same_clip(result: Path, reference: tuple[np.ndarray, np.ndarray]) -> None:
    got = np.load(result)
    frames, latent = reference
    assert got["latent"].shape == latent.shape and got["frames"].shape == frames.shape == (9, 48, 80, 3)
    assert np.abs(got["latent"] - latent).max() <= 1e-5 * np.abs(latent).max()
    diff = np.abs(got["frames"].astype(np.int16) - frames)
    assert diff.max() <= 1 and (diff > 0).mean() <= 0.01


# ============================================================================ 2 and 4 processes
@pytest.mark.parametrize("speakers", [1, 2])
@pytest.mark.parametrize("ulysses, ring", [(2, 1), (1, 2)], ids=["ulysses2", "ring2"])
def test_two_processes_give_the_single_process_frames(two_processes, tiny_root, ulysses, ring, speakers):
    result = two_processes / f"{clip_name(ulysses, ring, 2, speakers, 'tiny')}.npz"
    assert_same_clip(result, single_process(tiny_root, 2, speakers, "tiny"))


@pytest.mark.parametrize(
    "ulysses, ring, heads, speakers",
    [(2, 2, 2, 1), (2, 2, 2, 2), (4, 1, 4, 1), (4, 1, 4, 2), (1, 4, 2, 2)],
    ids=["ulysses2xring2-1spk", "ulysses2xring2-2spk", "ulysses4-1spk", "ulysses4-2spk", "ring4-2spk"],
)
def test_four_processes_give_the_single_process_frames(
    four_processes, tiny_root, ulysses, ring, heads, speakers
):
    result = four_processes / f"{clip_name(ulysses, ring, heads, speakers, 'standin')}.npz"
    assert_same_clip(result, single_process(tiny_root, heads, speakers, "standin"))


def test_resume_under_torchrun_is_identical(two_processes):
    """Cancelled in window 2 then resumed: rank 0 reads the state and hands it to rank 1."""
    for rank in (0, 1):
        report = json.loads((two_processes / f"resume_rank{rank}.json").read_text())
        assert report == {"full": [0, 1], "resumed": [1]}
    full, cut = (
        json.loads((two_processes / d / "manifest.json").read_text()) for d in ("resume_full", "resume_cut")
    )
    assert cut["complete"] and cut["frames_written"] == full["frames_written"] == 13
    assert [s["sha256"] for s in cut["segments"]] == [s["sha256"] for s in full["segments"]]  # raw frames


def test_cli_under_torchrun_rank0_writes_the_video(two_processes, tiny_root, tmp_path):
    ranks = [json.loads((two_processes / f"cli_rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["rc"] for r in ranks] == [0, 0]
    assert [r["frames_written"] for r in ranks] == [9, 0]  # rank 1 writes nothing
    # the video and its drift report (on by default), no partial file or run folder left
    assert sorted(p.name for p in (two_processes / "cli").iterdir()) == [
        "out.mkv",
        "out.report.json",
        "out.report.png",
    ]
    single = tmp_path / "single.mkv"
    with one_thread():
        assert main(cli_argv(tiny_root, two_processes, single)) == 0

    def frames(path):
        with av.open(str(path)) as c:
            return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)]).astype(np.int16)

    # FFV1 keeps the generated frames exactly, so the files compare as the raw clips do (an H.264 encoder
    # turns a one-level difference into changed decisions, and the decoded pixels drift chaotically)
    a, b = frames(two_processes / "cli" / "out.mkv"), frames(single)
    assert a.shape == b.shape == (9, 48, 80, 3)
    diff = np.abs(a - b)
    assert diff.max() <= 1 and (diff > 0).mean() <= 0.01


def test_cli_under_torchrun_refuses_ulysses_not_dividing_heads(four_processes):
    for rank in range(4):
        report = json.loads((four_processes / f"cli_rank{rank}.json").read_text())
        assert report["rc"] == 2 and report["frames_written"] == 0
        assert "--ulysses_size 4 does not divide the DiT's 2 attention heads" in report["stderr"]


# ============================================================================ one process
def test_sizes_are_checked_with_the_fix():
    check_sizes(1, 1, 1)
    check_sizes(2, 2, 4, num_heads=40)
    with pytest.raises(InputError, match=r"needs 2 processes: start it with 'torchrun --nproc_per_node 2"):
        check_sizes(2, 1, 1)
    with pytest.raises(InputError, match=r"= 2, but torchrun started 4 processes"):
        check_sizes(2, 1, 4)
    with pytest.raises(InputError, match=r"--ring_size 0 must be at least 1"):
        check_sizes(1, 0, 1)
    with pytest.raises(
        InputError, match=r"does not divide the DiT's 40 attention heads: use a divisor \(1, 2, 4, 5\)"
    ):
        check_sizes(3, 2, 6, num_heads=40)


def test_cli_without_torchrun_says_how_to_start_it(capsys):
    assert main(["--input_path", "x.png", "--audio_path", "a.wav", "--ulysses_size", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "torchrun --nproc_per_node 2 -m infinitetalk" in err


def test_heads_are_checked_from_the_file_before_loading(tiny_root):
    session = ParallelSession(0, 4, strategy=SimpleNamespace(ulysses_size=4, ring_size=1))
    dit = tiny_root / "models" / "diffusion_models" / "wan2.1_i2v_480p_14B_fp16.safetensors"
    with pytest.raises(InputError, match="does not divide the DiT's 2 attention heads"):
        session.check_heads(dit_heads(dit))
    ParallelSession().check_heads(dit_heads(dit))  # one process: nothing to check


def test_process_device_under_torchrun():
    assert process_device("cpu", 4, 3) == torch.device("cpu")
    assert process_device("cuda:1", 1, 0) == torch.device("cuda:1")  # one process: as given
    with pytest.raises(InputError, match="LOCAL_RANK; pass --device cuda"):
        process_device("cuda:1", 2, 0)


def test_token_span_groups_partial_frames():
    span = TokenSpan(start=7, count=12, total=24, frame_tokens=5)  # tokens 7..18 of frames 1..3
    assert span.valid == 12 and span.frames == (1, 4)
    x = torch.arange(1, 13, dtype=torch.float32)[None, :, None]  # (1, 12, 1)
    grouped = span.to_frames(x)  # (3 frames, 5, 1): 2 zeros in front, 1 behind
    assert grouped.shape == (3, 5, 1) and grouped[0, :2].abs().sum() == 0 and grouped[2, 4] == 0
    assert torch.equal(span.from_frames(grouped, 1), x)
    tail = TokenSpan(start=18, count=9, total=24, frame_tokens=5)  # 6 real tokens + 3 padding
    assert tail.valid == 6 and tail.frames == (3, 5)
    back = tail.from_frames(tail.to_frames(torch.ones(1, 9, 2)), 1)
    assert back[:, :6].eq(1).all() and back[:, 6:].eq(0).all()
    assert TokenSpan.whole(24, 3) == TokenSpan(0, 24, 24, 8)


@pytest.mark.parametrize("start, count", [(0, 30), (7, 11), (10, 10), (25, 8)])
def test_audio_cross_attention_on_a_span_is_the_slice_of_the_whole(start, count):
    """Each token attends to its own latent frame's audio, wherever the shard boundaries fall."""
    torch.manual_seed(0)
    layer = AudioCrossAttention(TINY_DIT, torch.nn, {"device": None, "dtype": None}).eval()
    frames, per_frame = 3, 10
    x = torch.randn(1, frames * per_frame, TINY_DIT.dim)
    audio = torch.randn(1, frames, 64, TINY_DIT.audio_output_dim)
    positions = torch.rand(1, frames * per_frame) * 24
    with torch.no_grad():
        for pos in (None, positions):
            whole = layer(x, audio, frames, "sdpa", pos)
            padded = torch.cat([x, torch.zeros(1, 3, TINY_DIT.dim)], dim=1)[:, start : start + count]
            shard_pos = (
                None if pos is None else torch.cat([pos, torch.zeros(1, 3)], 1)[:, start : start + count]
            )
            span = TokenSpan(start, count, frames * per_frame, per_frame)
            part = layer(padded, audio, frames, "sdpa", shard_pos, span)
            real = span.valid
            torch.testing.assert_close(part[:, :real], whole[:, start : start + real], rtol=1e-5, atol=1e-6)
