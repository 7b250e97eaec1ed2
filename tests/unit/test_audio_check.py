"""Audio check figures against known values on synthesised speech with known noise, clipping and pauses."""

from __future__ import annotations

import numpy as np
import pytest

from infinitetalk.audio_check import MESSAGES, check_audio, clean_audio, loudness_range
from infinitetalk.errors import InputError

SR = 16000


def voiced(seconds: float, pause: float = 0.4, sr: int = SR) -> tuple[np.ndarray, np.ndarray]:
    """Speech-like audio: a gliding 140 Hz voice with 19 harmonics and a syllable envelope, in words of
    ``1 - pause`` s followed by ``pause`` s of digital silence. Returns (wave, speech mask)."""
    t = np.arange(int(seconds * sr)) / sr
    f0 = 140 + 20 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voice = sum(np.sin(k * phase) / k for k in range(1, 20))
    envelope = 0.4 + 0.6 * np.abs(np.sin(2 * np.pi * 2.5 * t))
    on = (t % 1.0) < 1 - pause
    return voice * envelope * on, on


def noisy_speech(speech_db: float, noise_db: float, seconds: float = 12.0, pause: float = 0.4, seed: int = 0):
    wave, on = voiced(seconds, pause)
    wave = wave / np.sqrt(np.mean(wave[on] ** 2)) * 10 ** (speech_db / 20)  # speech RMS: speech_db dBFS
    noise = np.random.default_rng(seed).standard_normal(len(wave)) * 10 ** (noise_db / 20)
    return wave + noise, on


def test_noise_floor_snr_and_silence_within_tolerance():
    wave, on = noisy_speech(-20.0, -50.0)
    r = check_audio(wave, SR)
    known_speech = 10 * np.log10(np.mean(wave[on] ** 2))
    assert abs(r.noise_floor_dbfs - (-50.0)) < 1.5  # 10th percentile of 20 ms frames of white noise
    assert abs(r.speech_dbfs - known_speech) < 1.0
    assert abs(r.snr_db - (known_speech + 50.0)) < 2.0
    assert abs(r.silence_ratio - 0.4) < 0.03  # 0.4 s of every second
    assert r.sample_rate == SR and abs(r.duration_s - 12.0) < 1e-9
    assert r.ok, r.warnings


def test_noisy_recording_warns_with_the_fix():
    wave, _ = noisy_speech(-30.0, -42.0)
    r = check_audio(wave, SR)
    assert abs(r.snr_db - 12.0) < 2.0
    assert "noisy" in r.codes and "noise_floor" in r.codes
    assert r.warnings[r.codes.index("noisy")].startswith("signal-to-noise ratio 1")
    assert "quieter room" in r.warnings[r.codes.index("noisy")]


def test_clipping_ratio_and_peak_are_exact():
    wave, _ = noisy_speech(-20.0, -60.0)
    loud = wave * 8
    known = float(np.mean(np.abs(loud) >= 0.999))
    r = check_audio(np.clip(loud, -1, 1), SR)
    assert 0.05 < known < 0.3
    assert abs(r.clipped_ratio - known) < 1e-9
    assert abs(r.peak_dbfs) < 1e-6
    assert "clipped" in r.codes
    assert r.warnings[r.codes.index("clipped")] == MESSAGES["clipped"].format(pct=f"{100 * known:.2f}")


def test_integrated_loudness_of_a_known_sine():
    """BS.1770: a 997 Hz sine at amplitude A reads 20 log10(A) - 3.01 LUFS (K-weighting ~ +0.07 dB there)."""
    t = np.arange(5 * SR) / SR
    r = check_audio(0.1 * np.sin(2 * np.pi * 997 * t), SR)
    assert abs(r.lufs - (-23.0)) < 0.15
    assert abs(r.peak_dbfs - (-20.0)) < 0.01
    assert r.lra < 0.1  # a steady tone has no loudness range


def test_loudness_range_of_alternating_levels():
    """10 s at -23 LUFS then 10 s at -33 LUFS, three times: LRA = 10 LU (EBU Tech 3342)."""
    t = np.arange(10 * SR) / SR
    tone = np.sin(2 * np.pi * 997 * t)
    wave = np.concatenate([0.1 * tone, 0.1 * 10 ** (-10 / 20) * tone] * 3)
    assert abs(loudness_range(wave, SR) - 10.0) < 0.5
    assert "lra" not in check_audio(wave, SR).codes
    louder = np.concatenate([0.1 * tone, 0.1 * 10 ** (-20 / 20) * tone] * 3)
    r = check_audio(louder, SR)
    assert abs(r.lra - 20.0) < 0.5 and "lra" in r.codes


def test_low_rate_short_quiet_and_silent_audio():
    wave, _ = voiced(0.5, pause=0.0, sr=8000)
    r = check_audio(wave * 0.001, 8000)
    assert {"sample_rate", "short", "quiet"} <= set(r.codes)
    silent = check_audio(np.zeros(SR * 2), SR)
    assert silent.silence_ratio == 1.0 and not np.isfinite(silent.lufs)
    with pytest.raises(InputError, match="sample rate"):
        check_audio(wave, 0)


def test_clean_up_high_pass_and_loudness():
    wave, _ = noisy_speech(-35.0, -70.0)
    t = np.arange(len(wave)) / SR
    hum = 0.05 * np.sin(2 * np.pi * 30 * t)  # rumble below the voice
    out = clean_audio(wave + hum, SR, highpass_hz=80.0, target_lufs=-23.0)
    assert out.dtype == np.float32 and out.shape == wave.shape
    assert abs(check_audio(out, SR).lufs - (-23.0)) < 0.1
    spectrum = np.abs(np.fft.rfft(out))
    freqs = np.fft.rfftfreq(len(out), 1 / SR)
    before = np.abs(np.fft.rfft(wave + hum))
    band = (freqs > 28) & (freqs < 32)
    gain = 10 ** ((-23.0 - check_audio(wave + hum, SR).lufs) / 20)
    assert spectrum[band].max() < 0.05 * gain * before[band].max()  # 30 Hz down by more than 26 dB
    stereo = clean_audio(np.stack([wave, wave]), SR, highpass_hz=0, target_lufs=None)
    assert np.allclose(stereo[0], wave, atol=1e-6)  # both off: unchanged
    loud = clean_audio(np.clip(wave * 300, -1, 1), SR, highpass_hz=0, target_lufs=-5.0)
    assert np.abs(loud).max() <= 10 ** (-1 / 20) + 1e-6  # peak pulled back under -1 dBFS
    with pytest.raises(InputError, match="high-pass"):
        clean_audio(wave, SR, highpass_hz=9000)
