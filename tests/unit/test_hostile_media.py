"""Hostile media the library takes (and how): rotated phone video, variable frame rate, RGBA / greyscale /
16-bit / 8k images, decompression bombs, 8 kHz to 96 kHz and 6-channel audio, an hour of audio streamed
(not loaded whole); outputs that cannot escape their folder and are written atomically; run folders and
the partial video."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile
from PIL import Image

from infinitetalk.errors import InputError
from infinitetalk.media import VideoReader, read_image
from tests import hostile as H

REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------------- video
def test_rotated_phone_video_comes_upright(tmp_path):
    plain = VideoReader(H.video(tmp_path, "plain.mp4", frames=4))
    for degrees, expected in ((90, 90), (-90, 270), (180, 180)):
        reader = VideoReader(H.video(tmp_path, f"r{degrees}.mp4", frames=4, rotation=degrees))
        assert reader.rotation == expected
        assert reader.size == ((48, 64) if expected in (90, 270) else (64, 48))
        frame = reader.frame(2)
        np.testing.assert_allclose(  # what a player shows: the stored picture turned counter-clockwise
            frame.astype(int), np.rot90(plain.frame(2), k=expected // 90).astype(int), atol=0
        )


def test_variable_frame_rate_follows_timestamps(tmp_path):
    times = [0.0, 0.1, 0.15, 0.5, 0.52, 0.9]  # seconds; frame k is marked 8k in its corner
    reader = VideoReader(H.video(tmp_path, "vfr.mp4", frames=6, times=times))
    assert reader.num_frames == 24  # the last frame (0.9 s) is reached, whatever the header says
    shown = [int(round(reader.frame(i)[:4, :4].mean() / 8)) for i in range(reader.num_frames)]
    expected = [max(k for k, t in enumerate(times) if t <= i / 25 + 1e-9) for i in range(24)]
    assert shown == expected


# ------------------------------------------------------------------------------------------- images
def test_image_modes_are_converted(tmp_path):
    rgb = read_image(H.png(tmp_path, "rgb.png"))
    rgba = read_image(H.png(tmp_path, "rgba.png", mode="RGBA"))
    assert (rgba[:, :32] == 255).all() and np.array_equal(rgba[:, 32:], rgb[:, 32:])  # transparent -> white
    grey = read_image(H.png(tmp_path, "grey.png", mode="L"))
    assert grey.shape == (48, 64, 3) and np.array_equal(grey[..., 0], rgb[..., 0])
    deep = read_image(H.png(tmp_path, "deep.png", mode="I;16"))  # 16-bit: scaled, not clipped to white
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    np.testing.assert_array_equal(deep[..., 0], rgb[..., 0])


def test_8k_image_is_taken_and_a_bomb_is_refused(tmp_path):
    from infinitetalk.buckets import resize_and_crop_image, target_size

    big = np.zeros((4320, 7680, 3), np.uint8)
    big[:, :, 1] = 200
    Image.fromarray(big).save(tmp_path / "8k.png", compress_level=1)
    image = read_image(tmp_path / "8k.png")
    out = resize_and_crop_image(image, target_size("infinitetalk-480", *image.shape[:2]))
    assert out.shape == (448, 896, 3) and out[..., 1].min() == 200  # the 16:9 bucket of 480p
    bomb = tmp_path / "bomb.png"
    Image.new("L", (20000, 20000)).save(bomb, optimize=False, compress_level=9)  # 400 Mpx, small file
    with pytest.raises(InputError) as err:
        read_image(bomb)
    assert "bomb.png' is too large to decode safely" in str(err.value) and "downscale" in str(err.value)


def test_small_image_warns_about_upscaling(caplog):
    from infinitetalk.validation import warn_if_upscaled

    with caplog.at_level(logging.WARNING):
        assert warn_if_upscaled(120, 160, 480, 832) == pytest.approx(5.2)
    assert "image is 160x120, smaller than the 832x480 output: it is enlarged 5.2x" in caplog.text
    caplog.clear()
    warn_if_upscaled(400, 700, 480, 832)
    assert caplog.text == ""


# ------------------------------------------------------------------------------------------- audio
@pytest.mark.parametrize(("sr", "channels"), [(8000, 1), (96000, 6), (44100, 2), (22050, 1)])
def test_speech_of_any_rate_and_channel_count(tmp_path, sr, channels):
    from infinitetalk.media.stream import load_speech, read_audio

    path = H.wav(tmp_path, "s.wav", 1.3, sr, channels)
    speech = load_speech(path)
    assert speech.shape == (20800,) and speech.dtype == np.float32  # 1.3 s at 16 kHz
    t = np.arange(20800) / 16000
    ref = 0.3 * np.sin(2 * np.pi * 200 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    assert np.abs(speech[800:-800] - ref[800:-800]).max() < 0.01  # the same speech, whatever the rate
    wave, rate = read_audio(path, 0.5, 0.5)
    assert rate == sr and wave.shape == (channels, sr // 2)


_HOUR = textwrap.dedent(
    """
    import sys, torch  # torch: what the CLI has loaded anyway
    sys.path.insert(0, {root!r})
    from infinitetalk.media.stream import load_speech

    def status(key):  # kB
        return int(next(ln for ln in open("/proc/self/status") if ln.startswith(key)).split()[1])

    base = status("VmRSS:")
    open("/proc/self/clear_refs", "w").write("5")  # the peak (VmHWM) restarts from here
    speech = load_speech({path!r})
    print(speech.shape[0], (status("VmHWM:") - base) * 1024, float(abs(speech).max()))
    """
)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="peak memory is read from Linux /proc")
def test_an_hour_of_stereo_audio_is_streamed_not_loaded_whole(tmp_path):
    sr, hour = 48000, 3600
    block = np.zeros((sr * 10, 2), np.int16)
    for k in range(0, sr * 10, 4096):  # a slow square wave: FLAC keeps the hour in ~25 MB
        block[k : k + 4096] = 3000 if (k // 4096) % 2 else -3000
    path = tmp_path / "hour.flac"
    with soundfile.SoundFile(path, "w", sr, 2, format="FLAC", subtype="PCM_16") as f:
        for _ in range(hour // 10):
            f.write(block)
    whole = hour * sr * 2 * 4  # bytes of the file as float32, what loading it whole would hold (1.38 GB)
    proc = subprocess.run(
        [sys.executable, "-c", _HOUR.format(root=str(REPO), path=str(path))],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    samples, grown, peak = proc.stdout.split()
    assert int(samples) == hour * 16000
    assert int(grown) < 0.3 * whole, proc.stdout  # the 16 kHz mono result (230 MB) and a block, not the file
    assert 0.05 < float(peak) < 0.2


# ------------------------------------------------------------------------------------------- outputs
@pytest.mark.parametrize(
    ("prefix", "needle"),
    [
        ("../x", "climbs out"),
        ("a/../../x", "climbs out"),
        ("a\\..\\..\\x", "climbs out"),
        ("/etc/x", "absolute path"),
        ("C:/x", "absolute path"),
        ("\\\\server\\share\\x", "absolute path"),
        ("~root/x", "absolute path"),
        ("a\x00b", "NUL character"),
        ("  ", "is empty"),
    ],
)
def test_safe_output_path_refuses(tmp_path, prefix, needle):
    from infinitetalk.validation import safe_output_path

    with pytest.raises(InputError) as err:
        safe_output_path(prefix, tmp_path)
    assert needle in str(err.value) and "filename_prefix" in str(err.value)


def test_safe_output_path_accepts_subfolders(tmp_path):
    from infinitetalk.validation import safe_output_path

    assert safe_output_path("InfiniteTalk/video", tmp_path) == tmp_path / "InfiniteTalk" / "video"
    assert safe_output_path("a..b/c", tmp_path) == tmp_path / "a..b" / "c"  # dots in a name are fine


def test_mux_is_atomic(tmp_path, monkeypatch):
    import importlib

    from infinitetalk.media import Mp4Writer, mux

    mux_module = importlib.import_module("infinitetalk.media.mux")

    with Mp4Writer(tmp_path / "seg.mp4", 25, 32, 32) as w:
        w.write(np.zeros((5, 32, 32, 3), np.uint8))
    final = tmp_path / "final.mp4"
    final.write_bytes(b"the previous video")

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(mux_module, "_write", broken)
    with pytest.raises(OSError):
        mux([tmp_path / "seg.mp4"], final)
    assert final.read_bytes() == b"the previous video"  # never half-written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final.mp4", "seg.mp4"]  # no temporary left
    monkeypatch.undo()
    mux([tmp_path / "seg.mp4"], final)
    with av.open(str(final)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 5


# ------------------------------------------------------------------------------------------- runs
def _store(folder: Path, windows: int, complete: bool):
    from infinitetalk.sinks import SegmentStore

    store = SegmentStore(folder)
    store.begin("f")
    for k in range(windows):
        store.write(np.full((4, 32, 32, 3), 40 * k, np.uint8))
        store.commit(k, {"window": k})
    if complete:
        store.mark_complete()
    return store


def test_sweep_keeps_only_runs_that_can_resume(tmp_path):
    from infinitetalk.runs import run_status, sweep

    _store(tmp_path / "done", 2, complete=True)
    _store(tmp_path / "halfway", 2, complete=False)
    _store(tmp_path / "nothing", 0, complete=False)
    (tmp_path / "crashed").mkdir()  # killed before the first window was committed
    _store(tmp_path / "in_use", 1, complete=True)
    assert [run_status(tmp_path / n) for n in ("done", "halfway", "nothing", "crashed")] == [
        "complete", "resumable", "empty", "empty",
    ]  # fmt: skip
    removed = sweep(tmp_path, keep=[tmp_path / "in_use"])
    assert sorted(p.name for p in removed) == ["crashed", "done", "nothing"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["halfway", "in_use"]


def test_partial_video_follows_committed_windows(tmp_path):
    from infinitetalk.pipeline import ProgressEvent
    from infinitetalk.runs import PartialVideo, partial_path

    store = _store(tmp_path / "run", 2, complete=False)
    partial = PartialVideo(
        partial_path(tmp_path / "talk.mp4"), store, audio=(np.zeros(16000, np.float32), 16000)
    )
    assert partial.path == tmp_path / "talk_partial.mp4"
    partial.on_progress(ProgressEvent(2, 5, 0, 3))  # window 3 starts: windows 1-2 are committed
    with av.open(str(partial.path)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 8 and c.streams.audio
    partial.on_progress(ProgressEvent(2, 5, 1, 3))  # a step: nothing new committed, nothing rewritten
    assert partial.written == 2
    partial.discard()
    assert not partial.path.exists()
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert len(manifest["segments"]) == 2  # the run folder is untouched by the partial video
