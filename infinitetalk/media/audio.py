"""Audio loading and speech preparation (no torchaudio).

Waveforms are ``np.ndarray float32``: ``(C, N)`` for multi-channel audio, ``(N,)`` for mono. The speech path
follows the reference (spec §3): mono, resample to 16 kHz, then loudness-normalise to -23 LUFS unless the
measured loudness is beyond ±100 LUFS (silence).
"""

from __future__ import annotations

import logging
from fractions import Fraction
from math import gcd
from pathlib import Path

import av
import numpy as np
import pyloudnorm
import soundfile
from scipy.signal import resample_poly

from ..errors import InputError

logger = logging.getLogger(__name__)

SPEECH_SR = 16000  # wav2vec2 input rate
VIDEO_FPS = 25  # the model's video rate
_SOUNDFILE_EXTS = {".wav", ".flac", ".ogg", ".oga", ".aif", ".aiff", ".w64", ".rf64", ".caf"}
_METER_BLOCK_S = 0.4  # pyloudnorm's default gating block


def load_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Read an audio file (or the first audio track of a video) as ``(float32 (C, N), sample_rate)``.

    wav/flac/ogg/aiff go through soundfile; anything else (mp3, m4a/aac, mp4/mkv/mov/webm tracks) through
    PyAV. A file soundfile cannot read falls back to PyAV.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"audio file '{path}' does not exist: check the path or pick another file")
    wave, sr = None, 0
    if path.suffix.lower() in _SOUNDFILE_EXTS:
        try:
            data, sr = soundfile.read(str(path), dtype="float32", always_2d=True)  # (N, C)
            wave = np.ascontiguousarray(data.T)
        except (soundfile.LibsndfileError, RuntimeError) as err:
            logger.debug("soundfile cannot read %s (%s); trying PyAV", path, err)
    if wave is None:
        wave, sr = _load_with_av(path)
    if wave.shape[-1] == 0:
        raise InputError(f"audio file '{path}' holds no samples: pick a file with sound in it")
    return wave, int(sr)


def _load_with_av(path: Path) -> tuple[np.ndarray, int]:
    try:
        container = av.open(str(path))
    except av.FFmpegError as err:
        raise InputError(
            f"'{path}' is not a readable audio or video file ({err}): convert it to wav"
        ) from err
    with container:
        if not container.streams.audio:
            raise InputError(f"'{path}' has no audio stream: pick a file with a sound track")
        stream = container.streams.audio[0]
        resampler = None  # built from the first frame: float planar, same layout and rate
        chunks = []
        try:
            for frame in container.decode(stream):
                if resampler is None:
                    resampler = av.AudioResampler(format="fltp", layout=frame.layout, rate=frame.sample_rate)
                chunks.extend(f.to_ndarray() for f in resampler.resample(frame))  # (C, n) each
            if resampler is not None:
                chunks.extend(f.to_ndarray() for f in resampler.resample(None))
        except av.FFmpegError as err:
            raise InputError(f"audio of '{path}' cannot be decoded ({err}): convert it to wav") from err
        if resampler is None or not chunks:
            raise InputError(f"audio stream of '{path}' holds no samples: pick a file with sound in it")
        channels = chunks[0].shape[0]
        wave = np.concatenate([c.reshape(channels, -1) for c in chunks], axis=1).astype(np.float32)
        return wave, resampler.rate


def to_mono(wave: np.ndarray) -> np.ndarray:
    """Average the channels: ``(C, N)`` or ``(N,)`` -> ``(N,)`` float32."""
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim == 1:
        return wave
    if wave.ndim != 2 or wave.shape[0] > 8:
        raise InputError(
            f"audio waveform has shape {wave.shape}: expected (N,) or (channels, N), channels first"
        )
    return wave.mean(axis=0, dtype=np.float32)


MAX_RATIO_TERM = 4096  # polyphase filter length grows with the reduced ratio's terms (20 taps each)


def resample_ratio(sr_in: int, sr_out: int) -> tuple[int, int]:
    """``(up, down)`` for ``sr_in -> sr_out``: the reduced ratio, or for an odd rate (a reduced term above
    ``MAX_RATIO_TERM``, e.g. 44101 Hz) the closest ratio with ``down <= MAX_RATIO_TERM``: a timing error
    below 1e-6, where the exact ratio would need a filter of millions of taps (minutes per second of audio)."""
    g = gcd(int(sr_in), int(sr_out))
    up, down = int(sr_out) // g, int(sr_in) // g
    if max(up, down) > MAX_RATIO_TERM:
        ratio = Fraction(int(sr_out), int(sr_in)).limit_denominator(MAX_RATIO_TERM)
        up, down = ratio.numerator, ratio.denominator
    return up, down


def resample(wave: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Polyphase resampling along the last axis (float32), ``ceil(N * sr_out / sr_in)`` samples long."""
    if sr_in <= 0 or sr_out <= 0:
        raise InputError(f"sample rates must be positive, got {sr_in} -> {sr_out}")
    wave = np.asarray(wave, dtype=np.float32)
    if sr_in == sr_out:
        return wave
    up, down = resample_ratio(sr_in, sr_out)
    out = resample_poly(wave, up, down, axis=-1).astype(np.float32)
    if up * int(sr_in) != down * int(sr_out):  # approximated ratio: exact length
        n = -(-wave.shape[-1] * int(sr_out) // int(sr_in))
        pad = [(0, 0)] * (out.ndim - 1) + [(0, max(0, n - out.shape[-1]))]
        out = np.pad(out[..., :n], pad)
    return out


def measure_loudness(wave_mono: np.ndarray, sr: int) -> float:
    """Integrated loudness (LUFS, ITU-R BS.1770). Audio shorter than one 0.4 s gating block is tiled
    (repeated) up to one block for the measurement, which keeps its mean power; ``-inf`` for silence."""
    wave = np.asarray(wave_mono, dtype=np.float64)
    if wave.size == 0:
        return float("-inf")
    need = int(np.ceil(_METER_BLOCK_S * sr)) + 1
    if wave.size < need:
        wave = np.tile(wave, -(-need // wave.size))
    return float(pyloudnorm.Meter(sr).integrated_loudness(wave))


def loudness_normalize(wave_mono: np.ndarray, sr: int, target_lufs: float = -23.0) -> np.ndarray:
    """Scale mono audio to ``target_lufs`` like the reference; silence (|loudness| > 100) is returned as is.

    The gain is applied without clipping (the reference does not clip either); samples may exceed ±1.
    """
    wave = np.asarray(wave_mono, dtype=np.float32)
    loudness = measure_loudness(wave, sr)
    if not np.isfinite(loudness) or abs(loudness) > 100:
        logger.debug("loudness %.1f LUFS: treated as silence, not normalised", loudness)
        return wave
    gain = 10.0 ** ((target_lufs - loudness) / 20.0)
    return (wave * gain).astype(np.float32)


def prepare_speech(wave: np.ndarray, sr: int, normalize: bool = True) -> np.ndarray:
    """Any waveform -> float32 mono 16 kHz, loudness-normalised after resampling (as the reference)."""
    mono = resample(to_mono(wave), sr, SPEECH_SR)  # (N16,)
    if normalize:
        mono = loudness_normalize(mono, SPEECH_SR)
    return np.ascontiguousarray(mono, dtype=np.float32)


def audio_num_frames(num_samples_16k: int) -> int:
    """Video frames (25 fps) covered by 16 kHz audio, computed exactly as the reference does.

    The reference takes ``int(n / 16000 * 25)`` in floating point, which for some lengths is one
    frame below the exact ``n * 25 // 16000`` (e.g. 18560 samples -> 28, not 29). We follow the
    reference so that the wav2vec2 features, the window schedule and the output length match it.
    """
    return int(int(num_samples_16k) / SPEECH_SR * VIDEO_FPS)


def combine_speakers(
    wave1: np.ndarray | None, wave2: np.ndarray | None, mode: str = "para"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two prepared 16 kHz mono tracks -> ``(track1, track2, mix)`` of equal length (spec §3).

    ``para``: both speak at once; the shorter track is zero-padded at the end. ``add``: speaker 1 first,
    then speaker 2: track 1 is followed by zeros of speaker 2's length, track 2 preceded by zeros of speaker
    1's length. A missing speaker (``None``) is silent for the other's length, as in the reference.
    ``mix`` (the soundtrack) is the sum of the two tracks.
    """
    if mode not in ("para", "add"):
        raise InputError(f"two-speaker audio mode '{mode}' is unknown: use 'para' or 'add'")
    if wave1 is None and wave2 is None:
        raise InputError("two-speaker audio: both tracks are missing: give at least one speaker's audio")
    w1 = None if wave1 is None else to_mono(wave1)
    w2 = None if wave2 is None else to_mono(wave2)
    w1 = np.zeros_like(w2) if w1 is None else w1
    w2 = np.zeros_like(w1) if w2 is None else w2
    n1, n2 = len(w1), len(w2)
    if mode == "para":
        n = max(n1, n2)
        t1, t2 = np.pad(w1, (0, n - n1)), np.pad(w2, (0, n - n2))
    else:
        t1, t2 = np.pad(w1, (0, n2)), np.pad(w2, (n1, 0))
    return t1, t2, (t1 + t2).astype(np.float32)
