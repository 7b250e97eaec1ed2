"""Drift telemetry recovers drift injected into synthetic talking-head videos (tests/drift_videos.py).

Each video goes two ways:
- the generation path: the pipeline (fake models) runs a streamed 10 s job, its ``frame_filter`` puts the
  synthetic frames in place of the generated ones, and the telemetry is fed by the sink wrapper
  (:func:`infinitetalk.telemetry.observe`) window by window, exact frames;
- the file path: the frames are encoded to H.264 (CRF 18, yuv420p) and measured by
  ``python -m infinitetalk.report VIDEO --reference IMAGE [--audio ...]`` (its ``main``).

Tolerances (stated per measure, gen path / file path) cover the Haar box's jitter (a pixel or two on a
50-pixel face) and, for the file, what H.264 does to colour and fine detail.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from infinitetalk.pipeline import AudioEmbedding
from infinitetalk.telemetry import (
    DETECT_EVERY,
    DriftMeter,
    detail,
    feature_activity,
    observe,
    speech_activity,
    speech_for_run,
    window_lengths,
)
from tests import drift_videos as dv
from tests.unit.test_pipeline import fake_pipeline, small_config

N = 250  # 10 s: windows of 81, 72, 72, 25 new frames


class Discard:
    """A sink that drops the frames (the telemetry is what is looked at)."""

    def write(self, frames):
        pass

    def close(self):
        pass


def windows():
    out, start = [], 0
    for n in window_lengths(N):
        out.append(range(start, start + n))
        start += n
    return out


def through_generation(video: dv.Synthetic, speech_tracks=None, speakers=1, features=None) -> dict:
    """A streamed pipeline run whose frames are replaced by ``video``'s; telemetry fed by the sink."""
    h, w = video.image.shape[:2]
    wave = speech_tracks[0] if speech_tracks is not None else np.zeros(N * 640, np.float32)
    feats = features if features is not None else np.random.default_rng(0).random((speakers, N, 3, 8))
    import torch

    audio = AudioEmbedding(torch.as_tensor(feats, dtype=torch.float32), wave if speakers == 1 else None, N)
    meter = DriftMeter(video.image, speech=speech_for_run(audio), fps=25)
    cfg = small_config(size=f"{w}x{h}", steps=1, text_scale=1.0, color_correction_strength=0.0)
    fake_pipeline().generate(
        video.image,
        audio,
        cfg,
        observe(Discard(), meter),
        frame_filter=lambda f, first: np.stack([video.frame(i) for i in range(first, first + len(f))]),
    )
    return meter.summary()


def through_file(video: dv.Synthetic, tmp_path, speech_tracks=None, audio_type="para") -> dict:
    from PIL import Image

    from infinitetalk.media import VideoWriter
    from infinitetalk.report import main

    path, ref = tmp_path / "video.mp4", tmp_path / "reference.png"
    Image.fromarray(video.image).save(ref)
    writer = VideoWriter(path, 25, video.image.shape[1], video.image.shape[0], crf=18)
    for chunk in video.chunks():
        writer.write(chunk)
    writer.close()
    argv = [str(path), "--reference", str(ref), "--out", str(tmp_path / "report")]
    for k, track in enumerate(speech_tracks or []):
        sf.write(tmp_path / f"speech{k}.wav", track, 16000)
        argv += ["--audio" if k == 0 else "--audio2", str(tmp_path / f"speech{k}.wav")]
    argv += ["--audio_type", audio_type]
    assert main(argv) == 0
    summary = json.loads((tmp_path / "report" / "report.json").read_text())
    assert (tmp_path / "report" / "report.png").stat().st_size > 10_000
    return summary


PATHS = ["generation", "file"]


def measure(path, video, tmp_path, speech_tracks=None, **kw):
    if path == "generation":
        return through_generation(video, speech_tracks, **kw)
    return through_file(video, tmp_path, speech_tracks)


def column(summary, name):
    return np.array([r[name] if r[name] is not None else np.nan for r in summary["windows"]], float)


# ----------------------------------------------------------------------------------------------- zero
@pytest.mark.parametrize("path", PATHS)
def test_an_undrifted_video_reports_about_zero(path, tmp_path):
    s = measure(path, dv.undrifted(N), tmp_path)
    assert [r["frames"] for r in s["windows"]] == [81, 72, 72, 25]
    # H.264's chroma rounding moves the mean colour by about 0.1 ΔE, its blocks the detail by about 3%
    assert np.all(column(s, "face_de") < 0.3) and np.all(column(s, "background_de") < 0.3)
    assert np.all(np.abs(column(s, "sharpness") - 1) < 0.05)
    assert np.all(column(s, "face_shift") < 0.02) and np.all(np.abs(column(s, "face_size") - 1) < 0.02)
    assert np.all(np.abs(column(s, "seam_jump")[1:]) < 0.1)
    assert s["warnings"] == []


# ----------------------------------------------------------------------------------------------- colour
@pytest.mark.parametrize("path", PATHS)
def test_colour_ramp_recovers_delta_e_per_minute(path, tmp_path):
    rate = 40.0  # ΔE per minute: 6.7 ΔE after 10 s
    s = measure(path, dv.colour_ramp(rate, N), tmp_path)
    expected = np.array([rate / 60 * np.mean(np.array(w) / 25) for w in windows()])
    # exact frames: per window within 0.1 ΔE + 8% (uint8 rounding; sRGB gamut clipping of the most saturated
    # pixels, which the background has: they cannot shift as far), the trend within 8%. Through H.264 CRF 18
    # 0.15 ΔE + 15%: its coarser chroma quantisation flattens part of a uniform chroma shift (measured 9-14%).
    rel = 0.08 if path == "generation" else 0.15
    assert np.all(np.abs(column(s, "face_de") - expected) < 0.1 + rel * expected)
    assert np.all(np.abs(column(s, "background_de") - expected) < 0.15 + rel * expected)
    assert s["trend_per_minute"]["face_de"] == pytest.approx(rate, rel=rel)
    assert any("face colour drifts" in w and "color_anchor" in w for w in s["warnings"])


# ----------------------------------------------------------------------------------------------- blur
@pytest.mark.parametrize("path", PATHS)
def test_blur_ramp_recovers_the_loss_of_detail(path, tmp_path):
    import cv2

    video = dv.blur_ramp(2.0, N)
    box = dv.face_box(video.image)
    grey = lambda im: cv2.cvtColor(im, cv2.COLOR_RGB2GRAY)  # noqa: E731
    ref = detail(grey(video.image), box)
    expected = np.array([np.mean([detail(grey(video.frame(i)), box) / ref for i in w]) for w in windows()])
    s = measure(path, video, tmp_path)
    got = column(s, "sharpness")
    # the blur takes 93% of the face's detail by the end; each window within 0.05 (gen) / 0.12 (H.264)
    assert np.abs(got - expected).max() < (0.05 if path == "generation" else 0.12)
    assert np.all(np.diff(got) < 0) and got[-1] < 0.2
    assert any("softer" in w and "latent_motion" in w for w in s["warnings"])


# ----------------------------------------------------------------------------------------------- seams
@pytest.mark.parametrize("path", PATHS)
def test_a_jump_at_every_join_is_found_at_the_joins(path, tmp_path):
    jump, flicker = 12.0, 2.0
    s = measure(path, dv.jumps(jump, flicker, N), tmp_path)
    recs = s["windows"]
    assert [r["start"] for r in recs[1:]] == list(dv.JOINS)
    # the excess over an ordinary frame's change is the injected step: within 0.5 grey level on the exact
    # frames, 1.5 through H.264 (which flattens the 2-level flicker)
    assert np.abs(column(s, "seam_jump")[1:] - jump).max() < (0.5 if path == "generation" else 1.5)
    if path == "generation":
        assert np.allclose(column(s, "seam")[1:], (jump + flicker) / flicker, rtol=0.05)
    else:
        assert np.all(column(s, "seam")[1:] > 5)
    assert any("window join jumps" in w and "00:03.2" in w for w in s["warnings"])


def test_no_jump_means_ordinary_seams(tmp_path):
    s = through_generation(dv.jumps(0.0, 2.0, N))
    assert np.allclose(column(s, "seam")[1:], 1.0, atol=0.05)
    assert not any("join" in w for w in s["warnings"])


# ----------------------------------------------------------------------------------------------- face box
@pytest.mark.parametrize("path", PATHS)
def test_a_steadily_moving_face_is_tracked(path, tmp_path):
    v = 0.1  # px per frame: 25 px (half a face width) in 10 s
    video = dv.moving_face(v, N)
    box = dv.face_box(video.image)
    width = box[2] - box[0]
    expected = np.array([v * np.mean([i for i in w if i % DETECT_EVERY == 0]) / width for w in windows()])
    s = measure(path, video, tmp_path)
    # within 0.03 face widths (1.5 px: the detector's box steps); the trend within 5%
    assert np.abs(column(s, "face_dx") - expected).max() < 0.03
    assert s["trend_per_minute"]["face_shift"] == pytest.approx(v * 25 * 60 / width, rel=0.05)
    assert np.all(np.abs(column(s, "face_size") - 1) < 0.05)


# ----------------------------------------------------------------------------------------------- mouths
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("silent_amp, ratio", [(0.0, 0.0), (6.0, 0.5), (12.0, 1.0)])
def test_mouth_moving_in_silence_is_measured_against_speech(path, silent_amp, ratio, tmp_path):
    active = dv.speech_pattern(N)
    video = dv.mouth_moves(active[None], silent_amp, 12.0)
    s = measure(path, video, tmp_path, [dv.speech_wave(active)])
    (m,) = s["mouth"]
    assert m["silent_frames"] + m["speaking_frames"] == N - 1  # every frame change, by the speech's state
    # within 0.08: the speech/silence edges of the 40 ms frames and, for the file, H.264 noise in the mouth
    assert m["silent_ratio"] == pytest.approx(ratio, abs=0.08)
    assert any("mouth moves in silences" in w for w in s["warnings"]) == (ratio > 0.5 + 0.1)


@pytest.mark.parametrize("path", PATHS)
def test_two_speakers_are_counted_separately(path, tmp_path):
    """Person 1 (left) moves their mouth in their silences as much as when speaking, person 2 never."""
    one = dv.speech_pattern(N, 50, 0)
    two = dv.speech_pattern(N, 50, 50)  # they take turns
    video = dv.mouth_moves(np.stack([one, two]), 12.0, 12.0, two=True, silent_amp2=0.0)
    tracks = [dv.speech_wave(one), dv.speech_wave(two)]
    if path == "generation":
        # the node path has no per-speaker 16 kHz tracks: activity from the features (still over silence)
        rng = np.random.default_rng(0)
        feats = rng.random((2, N, 3, 8)).astype(np.float32)
        feats[~np.stack([one, two])] = 0.25
        s = through_generation(video, speakers=2, features=feats)
    else:
        s = through_file(video, tmp_path, tracks)
    first, second = s["mouth"]
    assert first["silent_ratio"] == pytest.approx(1.0, abs=0.1)
    assert second["silent_ratio"] == pytest.approx(0.0, abs=0.08)
    assert [w for w in s["warnings"] if "mouth" in w][0].startswith("speaker 1's mouth")


# ----------------------------------------------------------------------------------------------- speech
def test_speech_activity_follows_the_track():
    active = dv.speech_pattern(N)
    assert np.array_equal(speech_activity(dv.speech_wave(active), N), active)
    late = speech_activity(dv.speech_wave(active), N + 30, start_frame=30)
    assert not late[:30].any() and np.array_equal(late[30:], active)


def test_feature_activity_separates_constant_from_changing_features():
    import torch

    active = dv.speech_pattern(N)
    feats = torch.rand(1, N, 3, 8)
    feats[0, ~torch.from_numpy(active)] = 0.5
    got = feature_activity(feats)[0]
    assert np.mean(got == active) > 0.97  # only the first silent frame after speech differs


# ----------------------------------------------------------------------------------------------- resume
def test_resumed_run_continues_the_telemetry(tmp_path):
    """Cancelled in window 3 and resumed: the records equal an uninterrupted run's (SegmentStore state)."""
    import torch

    from infinitetalk.errors import Interrupted
    from infinitetalk.sinks import SegmentStore

    video = dv.colour_ramp(30.0, N)
    audio = AudioEmbedding(torch.rand(1, N, 3, 8), np.zeros(N * 640, np.float32), N)
    cfg = small_config(size="256x256", steps=1, text_scale=1.0, color_correction_strength=0.0)
    swap = lambda f, first: np.stack([video.frame(i) for i in range(first, first + len(f))])  # noqa: E731
    calls = {"n": 0}

    def cancel_in_window_3():
        calls["n"] += 1
        return calls["n"] == 3  # one step per window: window 3's first check

    first = DriftMeter(video.image)
    with pytest.raises(Interrupted):
        fake_pipeline().generate(
            video.image,
            audio,
            cfg,
            observe(SegmentStore(tmp_path / "a"), first),
            should_cancel=cancel_in_window_3,
            frame_filter=swap,
        )
    assert len(first.records) == 2
    resumed = DriftMeter(video.image)
    result = fake_pipeline().generate(
        video.image,
        audio,
        cfg,
        observe(SegmentStore(tmp_path / "a"), resumed),
        resume=True,
        frame_filter=swap,
    )
    assert result.windows_run == [2, 3]
    whole = DriftMeter(video.image)
    fake_pipeline().generate(
        video.image, audio, cfg, observe(SegmentStore(tmp_path / "b"), whole), frame_filter=swap
    )
    assert resumed.records == whole.records and len(whole.records) == 4
    assert resumed.records[2]["seam"] is not None  # the join into the first resumed window is measured


def test_telemetry_state_is_small_and_refuses_mid_window():
    video = dv.undrifted(20)
    meter = DriftMeter(video.image)
    meter.add(np.stack([video.frame(i) for i in range(10)]))
    with pytest.raises(ValueError, match="end_window"):
        meter.state_dict()
    meter.end_window()
    state = meter.state_dict()
    assert state["frame_index"] == 10 and state["prev_grey"].shape == (256, 256)
