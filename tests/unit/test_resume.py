"""Resume: a run killed (SIGKILL) after window 2's commit continues to the identical video."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from infinitetalk.errors import InputError, Interrupted
from infinitetalk.sinks import SegmentStore
from tests.unit.test_pipeline import audio_embedding, fake_pipeline, small_config, test_image

FRAMES = 81 + 72 * 4  # 5 windows

_RUN = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, {root!r})
    from tests.unit.test_pipeline import audio_embedding, fake_pipeline, small_config, test_image
    from infinitetalk.sinks import SegmentStore

    class KillAfter(SegmentStore):
        def commit(self, window, state=None):
            super().commit(window, state)
            if window == 2:
                os.kill(os.getpid(), signal.SIGKILL)

    fake_pipeline().generate(test_image(), audio_embedding({frames}), small_config(), KillAfter({out!r}))
    """
)


def _frames(store_dir: Path) -> np.ndarray:
    store = SegmentStore(store_dir)
    manifest = json.loads((store_dir / "manifest.json").read_text())
    store.segments, store.size = manifest["segments"], tuple(manifest["size"])
    return np.stack(list(store.iter_frames()))


def _hashes(store_dir: Path) -> list[str]:
    return [s["sha256"] for s in json.loads((store_dir / "manifest.json").read_text())["segments"]]


def test_sigkill_after_window_2_then_resume_is_identical(tmp_path):
    killed, full = tmp_path / "killed", tmp_path / "full"
    script = _RUN.format(root=str(Path(__file__).parents[2]), frames=FRAMES, out=str(killed))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=Path(__file__).parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    manifest = json.loads((killed / "manifest.json").read_text())
    assert [s["window"] for s in manifest["segments"]] == [0, 1, 2] and not manifest["complete"]

    result = fake_pipeline().generate(
        test_image(), audio_embedding(FRAMES), small_config(), SegmentStore(killed), resume=True
    )
    assert result.windows_run == [3, 4]
    fake_pipeline().generate(test_image(), audio_embedding(FRAMES), small_config(), SegmentStore(full))
    assert _hashes(killed) == _hashes(full)  # raw uint8 frames of every window, bit for bit
    a, b = _frames(killed), _frames(full)
    assert a.shape == (FRAMES, 64, 64, 3) and np.array_equal(a, b)


def test_cancel_then_resume_is_identical(tmp_path):
    calls = {"n": 0}

    def cancel_in_window_2():
        calls["n"] += 1
        return calls["n"] == 6  # steps=2: checks 1-2 window 0, 3-4 window 1, 5 window 2 step 1, 6 -> cancel

    audio, cfg = audio_embedding(FRAMES), small_config()
    with pytest.raises(Interrupted):
        fake_pipeline().generate(
            test_image(), audio, cfg, SegmentStore(tmp_path / "a"), should_cancel=cancel_in_window_2
        )
    assert sorted(p.name for p in (tmp_path / "a").iterdir())[-1] == "state_00001.pt"
    fake_pipeline().generate(test_image(), audio, cfg, SegmentStore(tmp_path / "a"), resume=True)
    fake_pipeline().generate(test_image(), audio, cfg, SegmentStore(tmp_path / "b"))
    assert _hashes(tmp_path / "a") == _hashes(tmp_path / "b")


def test_cancel_then_resume_with_lossless_segments_decodes_to_the_exact_frames(tmp_path):
    """Lossless segments across a resume: what the store gives back (and so every master format) is, bit for
    bit, what the pipeline made in one uninterrupted run (a MemorySink)."""
    from infinitetalk.sinks import MemorySink

    calls = {"n": 0}

    def cancel_in_window_2():
        calls["n"] += 1
        return calls["n"] == 6

    audio, cfg = audio_embedding(FRAMES), small_config()
    with pytest.raises(Interrupted):
        fake_pipeline().generate(
            test_image(),
            audio,
            cfg,
            SegmentStore(tmp_path, codec="h264-lossless"),
            should_cancel=cancel_in_window_2,
        )
    store = SegmentStore(tmp_path, codec="h264-lossless")
    assert fake_pipeline().generate(test_image(), audio, cfg, store, resume=True).windows_run == [2, 3, 4]
    memory = MemorySink()
    fake_pipeline().generate(test_image(), audio, cfg, memory)
    assert json.loads((tmp_path / "manifest.json").read_text())["codec"] == "h264-lossless"
    assert np.array_equal(np.stack(list(store.iter_frames())), memory.frames)


def test_resume_with_changed_config_is_refused(tmp_path):
    audio = audio_embedding(200)
    with pytest.raises(Interrupted):
        fake_pipeline().generate(
            test_image(),
            audio,
            small_config(),
            SegmentStore(tmp_path),
            should_cancel=iter([False, False, True]).__next__,
        )
    with pytest.raises(InputError, match="other inputs or settings"):
        fake_pipeline().generate(
            test_image(), audio, small_config(seed=8), SegmentStore(tmp_path), resume=True
        )
    with pytest.raises(InputError, match="other inputs or settings"):
        fake_pipeline().generate(
            test_image(seed=1), audio, small_config(), SegmentStore(tmp_path), resume=True
        )


def test_resume_of_a_complete_run_runs_nothing(tmp_path):
    audio = audio_embedding(100)
    fake_pipeline().generate(test_image(), audio, small_config(), SegmentStore(tmp_path))
    pipe = fake_pipeline()
    result = pipe.generate(test_image(), audio, small_config(), SegmentStore(tmp_path), resume=True)
    assert result.windows_run == [] and pipe.model_calls == 0


def test_resume_needs_a_resumable_sink():
    from infinitetalk.sinks import MemorySink

    with pytest.raises(InputError, match="resumable"):
        fake_pipeline().generate(test_image(), audio_embedding(50), small_config(), MemorySink(), resume=True)
