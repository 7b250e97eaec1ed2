"""The ways to bound drift: off by default (frames bit-identical to before they existed), and each changes only
what it says (infinitetalk.antidrift)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from infinitetalk.antidrift import add_silence_noise_floor, anchor_window
from infinitetalk.color import region_drift
from infinitetalk.errors import InputError, Interrupted
from infinitetalk.sinks import MemorySink, SegmentStore
from infinitetalk.telemetry import DriftMeter, observe
from tests import drift_videos as dv
from tests.unit.test_pipeline import audio_embedding, fake_pipeline, small_config, test_image

FRAMES = 81 + 72 * 2  # three windows

# sha256 of the uint8 frames of these runs, recorded before the options existed (fake models, CPU float32)
GOLDEN = {
    1: "cd4ae04a2e9a6af6c443db2cfe43cbbcb5318bdd4ea2f6844f34fd81975ab05d",
    2: "2521c8aa30da7683c50475f2551bfdd21f2188f243e6e14eea0141d85102e447",
}


def frames_of(config, speakers=1, pipe=None, sink=None) -> np.ndarray:
    memory = MemorySink()
    (pipe or fake_pipeline()).generate(
        test_image(), audio_embedding(FRAMES, speakers), config, sink(memory) if sink else memory
    )
    return memory.frames


@pytest.mark.parametrize("speakers", [1, 2])
def test_defaults_give_todays_frames_bit_for_bit(speakers):
    frames = frames_of(small_config(), speakers)
    assert hashlib.sha256(frames.tobytes()).hexdigest() == GOLDEN[speakers]


def test_telemetry_does_not_touch_the_frames():
    meter = DriftMeter(test_image())
    frames = frames_of(small_config(), sink=lambda inner: observe(inner, meter))
    assert hashlib.sha256(frames.tobytes()).hexdigest() == GOLDEN[1]
    assert [r["frames"] for r in meter.records] == [81, 72, 72]


# ----------------------------------------------------------------------------------------- latent motion
def test_latent_motion_carries_the_last_latents_and_skips_the_motion_encode():
    default_pipe, latent_pipe = fake_pipeline(), fake_pipeline()
    default = frames_of(small_config(), pipe=default_pipe)
    carried = frames_of(small_config(latent_motion=True), pipe=latent_pipe)
    motion_encodes = lambda p: [s for s in p.vae.encode_calls if s[2] == 9]  # noqa: E731 - (1, 3, 9, H, W)
    assert len(motion_encodes(default_pipe)) == 2 and motion_encodes(latent_pipe) == []
    assert np.array_equal(carried[:81], default[:81])  # window 1 is the same
    # (the fake denoiser mixes nothing across latent frames, so its later frames do not show the carried
    # latents; what each window is fed is checked below)


def record(pipe, monkeypatch):
    seen, made = [], []
    prepare, denoise = pipe.prepare_window, pipe.denoise_window

    def record_prepare(*args, **kw):
        win = prepare(*args, **kw)
        seen.append(win.motion_latents.clone())
        return win

    def record_denoise(*args, **kw):
        latent = denoise(*args, **kw)
        made.append(latent.clone())
        return latent

    monkeypatch.setattr(pipe, "prepare_window", record_prepare)
    monkeypatch.setattr(pipe, "denoise_window", record_denoise)
    return seen, made


def test_latent_motion_feeds_the_next_window_its_own_latents(monkeypatch):
    pipe, default_pipe = fake_pipeline(), fake_pipeline()
    seen, made = record(pipe, monkeypatch)
    default_seen, _ = record(default_pipe, monkeypatch)
    frames_of(small_config(latent_motion=True), pipe=pipe)
    frames_of(small_config(), pipe=default_pipe)
    assert torch.equal(seen[0], default_seen[0])  # window 1 starts from the reference either way
    for k in (1, 2):  # 9 motion frames = 3 latent frames
        assert torch.equal(seen[k], made[k - 1][:, :, -3:])
        assert not torch.equal(seen[k], default_seen[k])  # not the decode -> re-encode of the frames


def test_latent_motion_resumes_to_the_same_frames(tmp_path):
    cfg, audio = small_config(latent_motion=True), audio_embedding(FRAMES)
    calls = {"n": 0}

    def cancel_in_window_3():
        calls["n"] += 1
        return calls["n"] == 5  # two steps per window

    with pytest.raises(Interrupted):
        fake_pipeline().generate(
            test_image(), audio, cfg, SegmentStore(tmp_path / "a"), should_cancel=cancel_in_window_3
        )
    fake_pipeline().generate(test_image(), audio, cfg, SegmentStore(tmp_path / "a"), resume=True)
    fake_pipeline().generate(test_image(), audio, cfg, SegmentStore(tmp_path / "b"))
    import json

    hashes = lambda d: [s["sha256"] for s in json.loads((d / "manifest.json").read_text())["segments"]]  # noqa: E731
    assert hashes(tmp_path / "a") == hashes(tmp_path / "b")


# ----------------------------------------------------------------------------------------- colour anchor
def _drifted_window(shift: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A 4-frame window of the face photo whose face is shifted in Lab by ``shift`` (along a*) while the
    background is not: a whole-frame colour match cannot undo that, a regional one can."""
    import cv2

    from infinitetalk.faces import feathered_mask

    image = dv.base_image()[::2, ::2].copy()  # 128x128: the colour maths runs per pixel in torch
    box = dv.face_box(dv.base_image())
    mask = feathered_mask([v / 2 for v in box], 128, 128, grow=0.1, feather=3)
    lab = cv2.cvtColor(image.astype(np.float32) / 255, cv2.COLOR_RGB2Lab)
    lab[..., 1] += shift * mask
    drifted = np.clip(cv2.cvtColor(lab, cv2.COLOR_Lab2RGB), 0, 1)
    to_t = lambda im: torch.from_numpy(np.ascontiguousarray(im)).float().permute(2, 0, 1)[:, None] * 2 - 1  # noqa: E731
    video = to_t(drifted)[None].repeat(1, 1, 4, 1, 1)  # (1, 3, 4, H, W)
    reference = to_t(image.astype(np.float32) / 255)[None]  # (1, 3, 1, H, W)
    return video, reference


def test_colour_anchor_pulls_a_drifted_face_back():
    from infinitetalk.color import match_colors

    video, reference = _drifted_window(12.0)
    video = match_colors(video, reference, 1.0)  # what the pipeline has done before anchoring
    from infinitetalk.faces import feathered_mask

    box = [v / 2 for v in dv.face_box(dv.base_image())]
    face = torch.from_numpy(feathered_mask(box, 128, 128, grow=0.1, feather=6))
    before = region_drift(video, reference, face)
    anchored = anchor_window(video, reference, threshold=3.0)
    after = region_drift(anchored, reference, face)
    assert before[0] > 5.0  # the whole-frame match left the face several ΔE off
    # the anchor finds its own face region on the reference (a detected box, not the injected mask), so up to
    # 2 ΔE stays at the region's soft edge; the face's drift falls to well under half
    assert after[0] < min(2.0, 0.4 * before[0]) and after[1] < 1.0


def test_colour_anchor_under_its_threshold_changes_nothing():
    video, reference = _drifted_window(2.0)
    assert anchor_window(video, reference, threshold=50.0) is video
    frames = frames_of(small_config(color_anchor=50.0))  # the fake run drifts far less than 50 ΔE
    assert hashlib.sha256(frames.tobytes()).hexdigest() == GOLDEN[1]


def test_colour_anchor_acts_on_the_windows_past_it():
    loose = small_config(color_correction_strength=0.0)
    plain = frames_of(loose)
    anchored = frames_of(small_config(color_correction_strength=0.0, color_anchor=0.5))
    assert not np.array_equal(plain, anchored)


def test_bad_colour_anchor_is_refused():
    with pytest.raises(InputError, match="color_anchor"):
        frames_of(small_config(color_anchor=-1.0))


# ----------------------------------------------------------------------------------------- noise floor
def test_noise_floor_fills_silences_only():
    active = dv.speech_pattern(250)
    wave = dv.speech_wave(active)
    out = add_silence_noise_floor(wave, -45.0)
    frames = out.reshape(250, 640)
    inner = np.ones(250, bool)
    edges = np.flatnonzero(np.diff(active.astype(int)))
    inner[np.concatenate([edges, edges + 1])] = False  # frames next to a speech/silence edge hold the fades
    speaking, silent = active & inner, ~active & inner
    assert np.array_equal(frames[speaking], wave.reshape(250, 640)[speaking])
    rms = np.sqrt((frames[silent].astype(np.float64) ** 2).mean())
    assert rms == pytest.approx(10 ** (-45 / 20), rel=0.05)
    assert np.array_equal(
        out, add_silence_noise_floor(wave, -45.0)
    )  # seeded: the same run, the same features


def test_noise_floor_changes_only_the_silent_features():
    from infinitetalk.audio_embedding import prepare_audio
    from tests.unit.test_pipeline import FakeAudioEncoder

    active = dv.speech_pattern(250)
    wave = dv.speech_wave(active)
    plain = prepare_audio(FakeAudioEncoder(), [(wave, 16000)], normalize=False)
    floored = prepare_audio(FakeAudioEncoder(), [(wave, 16000)], normalize=False, noise_floor_db=-45.0)
    default = prepare_audio(FakeAudioEncoder(), [(wave, 16000)], normalize=False, noise_floor_db=None)
    assert torch.equal(plain.features, default.features)
    assert not torch.equal(plain.features, floored.features)
    assert np.array_equal(plain.waveform_16k_mix, floored.waveform_16k_mix)  # the sound is untouched


def test_bad_noise_floor_is_refused():
    with pytest.raises(InputError, match="silence_noise_floor"):
        add_silence_noise_floor(np.zeros(16000, np.float32), 0.0)
