"""SegmentStore: one segment per window, manifest, atomic commits, resume bookkeeping, final mux."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest
import torch

from infinitetalk.errors import InputError
from infinitetalk.sinks import MemorySink, ResumableSink, SegmentStore


def _frames(n, value, h=32, w=48):
    return np.full((n, h, w, 3), value, np.uint8)


def test_segments_manifest_and_readback(tmp_path):
    store = SegmentStore(tmp_path / "run")
    assert isinstance(store, ResumableSink) and not isinstance(MemorySink(), ResumableSink)
    assert store.begin("abc") is None
    for k, n in enumerate((5, 3)):
        store.write(_frames(n, 40 + 100 * k))
        store.commit(k, {"window": k, "x": torch.full((2,), float(k))})
    store.mark_complete()
    store.close()
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert [s["frames"] for s in manifest["segments"]] == [5, 3] and manifest["frames_written"] == 8
    assert manifest["complete"] and manifest["size"] == [48, 32] and manifest["state"] == "state_00001.pt"
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "manifest.json",
        "segment_00000.mp4",
        "segment_00001.mp4",
        "state_00001.pt",
    ]
    frames = list(store.iter_frames())
    assert (
        len(frames) == 8 and abs(int(frames[0].mean()) - 40) <= 2 and abs(int(frames[-1].mean()) - 140) <= 2
    )


def test_resume_drops_uncommitted_files_and_returns_state(tmp_path):
    store = SegmentStore(tmp_path)
    store.begin("fp")
    store.write(_frames(4, 10))
    store.commit(0, {"window": 0, "v": torch.arange(3)})
    store.write(_frames(4, 20))  # window 1 interrupted before its commit
    (tmp_path / "state_00007.pt").write_bytes(b"junk")
    again = SegmentStore(tmp_path)
    state = again.begin("fp", resume=True)
    assert state["window"] == 0 and torch.equal(state["v"], torch.arange(3)) and state["complete"] is False
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "manifest.json",
        "segment_00000.mp4",
        "state_00000.pt",
    ]
    assert again.frames_written == 4


def test_resume_with_other_fingerprint_is_a_clear_error(tmp_path):
    store = SegmentStore(tmp_path)
    store.begin("one")
    store.write(_frames(2, 0))
    store.commit(0, {"window": 0})
    with pytest.raises(InputError, match="other inputs or settings"):
        SegmentStore(tmp_path).begin("two", resume=True)


def test_fresh_start_clears_own_files_only(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    store = SegmentStore(tmp_path)
    store.begin("x")
    store.write(_frames(2, 0))
    store.commit(0, None)
    SegmentStore(tmp_path).begin("y", resume=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    assert SegmentStore(tmp_path / "new").begin("z", resume=True) is None  # nothing to resume: fresh


def test_finalize_muxes_segments_with_aac(tmp_path):
    store = SegmentStore(tmp_path / "seg")
    store.begin("f")
    for k in range(3):
        store.write(_frames(25, 60 * k))
        store.commit(k, None)
    wave = (np.sin(np.arange(48000) / 16000 * 2 * np.pi * 220) * 0.2).astype(np.float32)  # 3 s
    out = store.finalize(tmp_path / "out.mp4", audio=(wave, 16000))
    with av.open(str(out)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        assert a.codec_context.name == "aac" and v.average_rate == 25
        assert sum(1 for _ in c.decode(video=0)) == 75
    with av.open(str(out)) as c:
        audio_s = sum(f.samples for f in c.decode(audio=0)) / c.streams.audio[0].rate
    assert abs(audio_s - 3.0) < 0.05


def test_bad_frames_rejected(tmp_path):
    store = SegmentStore(tmp_path)
    store.begin("f")
    with pytest.raises(InputError, match="uint8"):
        store.write(np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(InputError, match="no committed"):
        store.finalize(tmp_path / "o.mp4")
