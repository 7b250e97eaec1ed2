"""Block-wise loudness, true peak and limiter (``infinitetalk.media.loudness``) against whole-array oracles.

Oracles: pyloudnorm's ``Meter.integrated_loudness`` for the loudness, and the whole-array true-peak
limiter this pack used before streaming (transcribed below: scipy filters over the whole signal).
Blocks are made tiny (``BLOCK`` patched) so that every signal crosses many block boundaries, some of them
inside peaks and inside the limiter's look-ahead.
"""

from __future__ import annotations

import numpy as np
import pyloudnorm
import pytest
from scipy.ndimage import minimum_filter1d, uniform_filter1d
from scipy.signal import resample_poly

from infinitetalk.errors import InputError
from infinitetalk.media import audio, loudness
from infinitetalk.media.audio import (
    downmix_stereo,
    limit_true_peak,
    loudness_normalize,
    measure_loudness,
    normalize_delivery,
    true_peak,
)

LU_TOL = 1e-6  # the bound; the block sums differ from pyloudnorm's only in summation order (~1e-13)
SAMPLE_TOL = 1e-7  # float32 outputs: the same float32 operations per sample, block by block


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(loudness, "BLOCK", 997)  # a prime: boundaries fall anywhere in the 100 ms steps


def speechlike(sr: int, seconds: float, channels: int = 1, seed: int = 0) -> np.ndarray:
    """Syllable bursts over a noise floor, a quiet passage (for the relative gate) and a few clicks."""
    rng = np.random.default_rng(seed)
    n = round(seconds * sr)
    t = np.arange(n) / sr
    envelope = (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)) ** 2 * (t % 1.3 < 0.9)
    envelope[(t > seconds * 0.4) & (t < seconds * 0.55)] *= 0.02  # a passage 34 dB down
    chans = []
    for c in range(channels):
        tone = np.sin(2 * np.pi * (150 + 40 * c) * t) + 0.3 * np.sin(2 * np.pi * (2300 + 100 * c) * t)
        chans.append(0.2 * envelope * tone + 0.002 * rng.standard_normal(n))
    wave = np.stack(chans).astype(np.float32)
    for at in rng.integers(0, n - 8, 5):
        wave[:, at : at + 3] = 0.95  # clicks far above the rest
    return wave


def oracle_lufs(wave: np.ndarray, sr: int) -> float:
    return float(pyloudnorm.Meter(sr).integrated_loudness(wave.T.astype(np.float64)))


# ============================================================================ integrated loudness
@pytest.mark.parametrize(
    "sr, channels, seconds",
    [
        (16000, 1, 7.3),
        (24000, 2, 3.01),
        (44100, 5, 2.77),
        (48000, 2, 4.0),
        (22050, 2, 3.333),
        (11025, 1, 5.05),
    ],
)
def test_streamed_loudness_equals_pyloudnorm(small_blocks, sr, channels, seconds):
    wave = speechlike(sr, seconds, channels)
    want = oracle_lufs(wave, sr)
    assert abs(measure_loudness(wave, sr) - want) < LU_TOL
    # an iterator of blocks of irregular sizes (as a decoder yields them)
    cuts = np.cumsum(np.random.default_rng(1).integers(1, 5000, 400))
    blocks = iter(np.split(wave, cuts[cuts < wave.shape[1]], axis=1))
    assert abs(measure_loudness(blocks, sr) - want) < LU_TOL
    if channels == 1:
        assert abs(measure_loudness(wave[0], sr) - want) < LU_TOL


def test_loudness_of_silence_short_audio_and_wide_layouts(small_blocks):
    sr = 48000
    assert measure_loudness(np.zeros((2, 3 * sr), np.float32), sr) == float("-inf")
    assert measure_loudness(np.zeros((2, 0), np.float32), sr) == float("-inf")
    # silence with one burst: blocks under -70 LUFS are gated out, as pyloudnorm does
    burst = np.zeros((1, 4 * sr), np.float32)
    burst[:, sr : sr + 3000] = speechlike(sr, 3000 / sr)
    assert abs(measure_loudness(burst, sr) - oracle_lufs(burst, sr)) < LU_TOL
    # shorter than one gating block: tiled up to one block, whether given whole or in pieces
    short = speechlike(sr, 0.15, 2)
    tiled = np.tile(short, (1, -(-(int(np.ceil(0.4 * sr)) + 1) // short.shape[1])))
    assert abs(measure_loudness(short, sr) - oracle_lufs(tiled, sr)) < LU_TOL
    assert abs(measure_loudness(iter(np.array_split(short, 7, axis=1)), sr) - oracle_lufs(tiled, sr)) < LU_TOL
    # 5.1: measured on the stereo downmix (BS.1770 weights five channels)
    wide = speechlike(sr, 2.5, 6)
    assert abs(measure_loudness(wide, sr) - oracle_lufs(downmix_stereo(wide, sr), sr)) < LU_TOL
    with pytest.raises(InputError, match="channels"):
        loudness.integrated_loudness([np.zeros((2, 100)), np.zeros((3, 100))], sr)


def test_loudness_of_a_memmap_reads_blocks(tmp_path, small_blocks):
    sr = 22050
    wave = speechlike(sr, 3.0, 2)
    mapped = np.memmap(tmp_path / "a.f32", np.float32, "w+", shape=wave.shape)
    mapped[:] = wave
    assert abs(measure_loudness(mapped, sr) - oracle_lufs(wave, sr)) < LU_TOL


def test_loudness_of_a_decoded_stream(tmp_path, monkeypatch):
    import soundfile

    from infinitetalk.media.stream import iter_audio

    sr, wave = 44100, speechlike(44100, 2.5, 2)
    soundfile.write(tmp_path / "a.wav", wave.T, sr, subtype="FLOAT")
    blocks = (block for block, _ in iter_audio(tmp_path / "a.wav", block_s=0.37))
    assert abs(measure_loudness(blocks, sr) - oracle_lufs(wave, sr)) < LU_TOL


# ============================================================================ true peak and limiter
def old_sample_peaks(wave: np.ndarray) -> np.ndarray:
    """The whole-array peak scan (one chunk): 4x oversampled magnitude per sample period."""
    over = np.abs(resample_poly(wave, 4, 1, axis=-1)).reshape(wave.shape[0], wave.shape[1], 4)
    return np.maximum(over.max(axis=(0, 2)), np.abs(wave).max(axis=0)).astype(np.float32)


def old_limit(wave: np.ndarray, sr: int, ceiling_dbtp: float) -> np.ndarray:
    ceiling = 10.0 ** (ceiling_dbtp / 20.0)
    need = np.minimum(1.0, ceiling / np.maximum(old_sample_peaks(wave), 1e-12)).astype(np.float32)
    if need.min() >= 1.0:
        return wave
    reach = 2 * max(1, round(0.01 * sr)) + 1
    gain = uniform_filter1d(minimum_filter1d(need, reach, mode="nearest"), reach, mode="nearest")
    limited = wave * gain[None]
    excess = float(old_sample_peaks(limited).max()) / ceiling
    return (limited / max(1.0, excess)).astype(np.float32)


def old_normalize_delivery(wave: np.ndarray, sr: int, target: float, ceiling_dbtp: float) -> np.ndarray:
    for _ in range(2):
        measured = oracle_lufs(wave, sr)
        wave = old_limit(wave * np.float32(10.0 ** ((target - measured) / 20.0)), sr, ceiling_dbtp)
    return wave


def clicky(sr: int, seconds: float, channels: int) -> np.ndarray:
    """Speech with peaks placed across block boundaries (multiples of 997) and inside the look-ahead."""
    wave = speechlike(sr, seconds, channels)
    for at in (997 * 5 - 2, 997 * 11 - 40, 997 * 20 + 3, 997 * 21 - 700, wave.shape[1] - 4):
        wave[:, at : at + 6] = np.float32(-0.99)
    return wave


@pytest.mark.parametrize("sr, channels", [(48000, 2), (22050, 1), (44100, 5)])
def test_streamed_limiter_equals_the_whole_array_limiter(small_blocks, sr, channels):
    wave = clicky(sr, 1.5, channels)
    want = old_limit(wave, sr, -1.0)
    assert not np.array_equal(want, wave)  # the limiter really acted
    got = limit_true_peak(wave, sr, -1.0)
    np.testing.assert_allclose(got, want, rtol=0, atol=SAMPLE_TOL)
    assert true_peak(got, sr) <= -1.0 + 1e-4
    assert abs(true_peak(wave, sr) - 20 * np.log10(old_sample_peaks(wave).max())) < 1e-6
    # in place: the look-behind of each block is read before that block is overwritten
    inplace = wave.copy()
    assert limit_true_peak(inplace, sr, -1.0, out=inplace) is inplace
    np.testing.assert_allclose(inplace, want, rtol=0, atol=SAMPLE_TOL)
    if channels == 1:  # (N,) in, (N,) out
        np.testing.assert_allclose(limit_true_peak(wave[0], sr, -1.0), want[0], rtol=0, atol=SAMPLE_TOL)


def test_limiter_leaves_audio_under_the_ceiling_unchanged(small_blocks):
    wave = speechlike(48000, 1.0, 2) * np.float32(0.3)
    np.testing.assert_array_equal(limit_true_peak(wave, 48000, -1.0), wave)


@pytest.mark.parametrize("target", [-16.0, -23.0])
def test_streamed_delivery_loudness_equals_the_whole_array_one(small_blocks, target):
    sr = 48000
    wave = clicky(sr, 2.0, 2)
    want = old_normalize_delivery(wave, sr, target, -1.0)
    got = normalize_delivery((wave, sr), target, -1.0)
    np.testing.assert_allclose(got.wave, want, rtol=0, atol=SAMPLE_TOL)
    assert abs(measure_loudness(got.wave, sr) - target) < 0.5 and true_peak(got.wave, sr) <= -1.0 + 1e-4


def test_memmap_in_memmap_out(tmp_path, small_blocks, monkeypatch):
    monkeypatch.setenv("INFINITETALK_SPILL_MB", "0")  # spill any size (the default spills above 256 MiB)
    sr = 44100
    wave = clicky(sr, 1.2, 2)
    mapped = np.memmap(tmp_path / "track.f32", np.float32, "w+", shape=wave.shape)
    mapped[:] = wave
    got = normalize_delivery((mapped, sr), -16.0, -1.0)
    assert isinstance(got.wave, np.memmap)  # file-backed: resident memory stays one block
    np.testing.assert_allclose(
        got.wave, old_normalize_delivery(wave, sr, -16.0, -1.0), rtol=0, atol=SAMPLE_TOL
    )
    np.testing.assert_array_equal(mapped, wave)  # the source is not touched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["track.f32"]  # the result's file is unlinked
    speech = loudness_normalize(mapped[0], sr)
    assert isinstance(speech, np.memmap)
    gain = 10.0 ** ((-23.0 - oracle_lufs(wave[:1], sr)) / 20.0)
    np.testing.assert_allclose(speech, (wave[0] * gain).astype(np.float32), rtol=0, atol=SAMPLE_TOL)
    with pytest.raises(InputError, match="output array"):
        normalize_delivery((wave, sr), -16.0, out=np.empty((1, 5), np.float32))


def test_output_array_is_allocated_only_for_file_backed_input():
    wave = np.zeros((2, 10), np.float32)
    assert type(audio._output_like(wave, wave.shape, None)) is np.ndarray
