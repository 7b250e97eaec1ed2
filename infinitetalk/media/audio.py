"""Audio loading, speech preparation (no torchaudio) and the soundtrack of the final video.

Waveforms are ``np.ndarray float32``: ``(C, N)`` for multi-channel audio, ``(N,)`` for mono.

Two signals leave this module and they never mix:

- the **speech** path follows the reference (spec §3): mono, resample to 16 kHz, then loudness-normalise to
  -23 LUFS unless the measured loudness is beyond ±100 LUFS (silence). It only feeds wav2vec2;
- the **soundtrack** is the user's own audio, at its own rate, channels and level (:class:`Soundtrack`):
  two speakers are mixed (``para``) or placed one after the other exactly as the frames are timed (``add``).
  Its loudness only changes when a delivery target is asked for (:func:`normalize_delivery`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from fractions import Fraction
from math import gcd
from pathlib import Path
from typing import NamedTuple

import av
import numpy as np
import soundfile
from scipy.signal import resample_poly

from .. import spill
from ..config import VIDEO_FPS
from ..errors import InputError
from . import loudness

logger = logging.getLogger(__name__)

SPEECH_SR = 16000  # wav2vec2 input rate
SOUNDFILE_EXTS = {".wav", ".flac", ".ogg", ".oga", ".aif", ".aiff", ".w64", ".rf64", ".caf"}
_LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}
AAC_MAX_CHANNELS = 6  # FFmpeg's AAC encoder: mono, stereo, 2.1, quad, 5.0, 5.1


def load_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Read an audio file (or the first audio track of a video) as ``(float32 (C, N), sample_rate)``.

    wav/flac/ogg/aiff go through soundfile; anything else (mp3, m4a/aac, mp4/mkv/mov/webm tracks) through
    PyAV. A file soundfile cannot read falls back to PyAV.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"audio file '{path}' does not exist: check the path or pick another file")
    wave, sr = None, 0
    if path.suffix.lower() in SOUNDFILE_EXTS:
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
        if stream.duration and stream.time_base:  # drop the encoder's end padding (AAC: up to 1023 samples)
            wave = wave[:, : max(1, round(stream.duration * stream.time_base * resampler.rate))]
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


def measure_loudness(wave: np.ndarray | Iterator[np.ndarray], sr: int) -> float:
    """Integrated loudness (LUFS, ITU-R BS.1770-4) of ``(N,)`` mono or ``(C, N)`` audio (an ``np.memmap`` is
    read block by block, never whole), or of an iterator of such blocks (e.g. ``block for block, _ in
    stream.iter_audio(path)``). Equal to pyloudnorm within 1e-6 LU (:class:`~.loudness.LoudnessMeter`).
    Audio shorter than one 0.4 s gating block is tiled (repeated) up to one block for the measurement, which
    keeps its mean power; ``-inf`` for silence. More than five channels are measured on a stereo downmix
    (BS.1770 weights five)."""
    blocks = wave if isinstance(wave, Iterator) else loudness.iter_blocks(np.asarray(wave))
    meter = loudness.LoudnessMeter(sr)
    for block in blocks:
        meter.add(downmix_stereo(block, sr) if block.ndim == 2 and block.shape[0] > 5 else block)
    return meter.integrated()


def loudness_normalize(
    wave_mono: np.ndarray, sr: int, target_lufs: float = -23.0, out: np.ndarray | None = None
) -> np.ndarray:
    """Scale mono audio to ``target_lufs`` like the reference; silence (|loudness| > 100) is returned as is.

    The gain is applied without clipping (the reference does not clip either); samples may exceed ±1. It is
    applied block by block into ``out`` (a new array; an ``np.memmap`` when the input is one).
    """
    wave = np.asarray(wave_mono, dtype=np.float32)
    measured = measure_loudness(wave, sr)
    if not np.isfinite(measured) or abs(measured) > 100:
        logger.debug("loudness %.1f LUFS: treated as silence, not normalised", measured)
        return wave
    out = _output_like(wave_mono, wave.shape, out)
    loudness.scale_into(wave, out, 10.0 ** ((target_lufs - measured) / 20.0))
    return out


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


# ============================================================================ the soundtrack
class Soundtrack(NamedTuple):
    """The audio of the final video: the user's own samples, channels first, at their own rate.

    A ``NamedTuple``, so it unpacks as ``wave, sample_rate`` wherever ``(wave, sr)`` pairs are accepted.
    """

    wave: np.ndarray  # (C, N) float32
    sample_rate: int

    @property
    def channels(self) -> int:
        return int(self.wave.shape[0])

    @property
    def num_samples(self) -> int:
        return int(self.wave.shape[1])

    @property
    def duration(self) -> float:
        return self.num_samples / self.sample_rate


def as_soundtrack(audio: tuple[np.ndarray, int]) -> Soundtrack:
    """``(wave (N,) or (C, N), sample_rate)`` -> :class:`Soundtrack` (no copy for float32 ``(C, N)``)."""
    wave, sr = audio
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim == 1:
        wave = wave[None]
    if wave.ndim != 2 or not 1 <= wave.shape[0] <= 8:
        raise InputError(
            f"soundtrack has shape {wave.shape}: expected (N,) or (channels, N), channels first, 1-8 channels"
        )
    if int(sr) <= 0:
        raise InputError(f"soundtrack sample rate {sr} must be positive")
    return Soundtrack(wave, int(sr))


def channel_layout(channels: int) -> str:
    """FFmpeg's default layout name for a channel count (1 mono, 2 stereo, 6 5.1, ...)."""
    if channels not in _LAYOUTS:
        raise InputError(f"{channels} audio channels: 1 to 8 are supported; downmix the file first")
    return _LAYOUTS[channels]


def downmix(wave: np.ndarray, sr: int, channels: int = 2) -> np.ndarray:
    """``(C, N)`` -> ``(channels, N)`` with FFmpeg's standard downmix matrix (libswresample); mono to stereo
    is duplicated."""
    wave = np.asarray(wave, dtype=np.float32)
    if wave.shape[0] == channels:
        return wave
    if wave.shape[0] == 1 and channels == 2:
        return np.repeat(wave, 2, axis=0)
    resampler = av.AudioResampler(format="fltp", layout=channel_layout(channels), rate=sr)
    # interleaved input: one plane whatever the channel count (PyAV's planar frames stop at 7 channels)
    frame = av.AudioFrame.from_ndarray(
        np.ascontiguousarray(wave.T).reshape(1, -1), format="flt", layout=channel_layout(wave.shape[0])
    )
    frame.sample_rate, frame.pts = sr, 0
    out = [f.to_ndarray() for f in resampler.resample(frame)] + [
        f.to_ndarray() for f in resampler.resample(None)
    ]
    return np.concatenate(out, axis=1)[:, : wave.shape[1]].astype(np.float32)


def downmix_stereo(wave: np.ndarray, sr: int) -> np.ndarray:
    """``(C, N)`` -> ``(2, N)`` (see :func:`downmix`)."""
    return downmix(wave, sr, 2)


def fit_aac_channels(wave: np.ndarray, sr: int) -> np.ndarray:
    """AAC (FFmpeg's encoder) carries mono to 5.1: wider soundtracks (6.1, 7.1) are downmixed to 5.1."""
    if wave.shape[0] <= AAC_MAX_CHANNELS:
        return wave
    logger.info("%d-channel soundtrack downmixed to 5.1 for AAC", wave.shape[0])
    return downmix(wave, sr, AAC_MAX_CHANNELS)


def _match_channels(waves: list[np.ndarray], sr: int) -> list[np.ndarray]:
    counts = {w.shape[0] for w in waves}
    if len(counts) == 1:
        return waves
    target = max(counts)
    if counts == {1, target}:  # mono next to a wider track: the mono voice goes to every channel
        return [np.repeat(w, target, axis=0) if w.shape[0] == 1 else w for w in waves]
    logger.info("soundtracks with %s channels: mixed in stereo", sorted(counts))
    return [downmix_stereo(w, sr) for w in waves]


def combine_soundtracks(
    speakers: Sequence[tuple[np.ndarray, int]], mode: str = "para", speaker2_start: float | None = None
) -> Soundtrack:
    """The final video's audio from one or two speakers' own recordings (not the 16 kHz speech).

    One speaker: that recording, untouched. Two speakers: both at the higher of their sample rates and the
    wider of their layouts (a mono track is copied to every channel), summed without any gain change;
    ``para``: both start at 0; ``add``: speaker 2 starts at ``speaker2_start`` seconds (default: when
    speaker 1's recording ends; :meth:`~infinitetalk.pipeline.InfiniteTalkPipeline.prepare_audio` passes the
    frame timing of the 16 kHz tracks so that picture and sound agree to the sample).
    """
    if mode not in ("para", "add"):
        raise InputError(f"two-speaker audio mode '{mode}' is unknown: use 'para' or 'add'")
    tracks = [as_soundtrack(s) for s in speakers]
    if not 1 <= len(tracks) <= 2:
        raise InputError(f"{len(tracks)} audio tracks given: InfiniteTalk drives one or two speakers")
    if len(tracks) == 1:
        return tracks[0]
    rate = max(t.sample_rate for t in tracks)
    waves = _match_channels([resample(t.wave, t.sample_rate, rate) for t in tracks], rate)
    if mode == "para":
        offset = 0
    else:
        start = tracks[0].duration if speaker2_start is None else float(speaker2_start)
        offset = max(0, round(start * rate))
    n = max(waves[0].shape[1], offset + waves[1].shape[1])
    mix = np.zeros((waves[0].shape[0], n), np.float32)
    mix[:, : waves[0].shape[1]] += waves[0]
    mix[:, offset : offset + waves[1].shape[1]] += waves[1]
    return Soundtrack(mix, rate)


def fit_length(soundtrack: Soundtrack, seconds: float) -> Soundtrack:
    """Cut, or pad with silence, to ``round(seconds * rate)`` samples (the video's length)."""
    n = round(seconds * soundtrack.sample_rate)
    wave = soundtrack.wave[:, :n]
    if wave.shape[1] < n:
        wave = np.pad(wave, ((0, 0), (0, n - wave.shape[1])))
    return Soundtrack(wave, soundtrack.sample_rate)


# ============================================================================ delivery loudness
def true_peak(wave: np.ndarray, sr: int) -> float:
    """Maximum true peak in dBTP (4x oversampled, ITU-R BS.1770-4 Annex 2); ``-inf`` for silence. Computed
    block by block (an ``np.memmap`` is never read whole)."""
    peak = loudness.peak_scan(as_soundtrack((wave, sr)).wave)
    return 20 * np.log10(peak) if peak > 0 else float("-inf")


def limit_true_peak(
    wave: np.ndarray, sr: int, ceiling_dbtp: float = -1.0, out: np.ndarray | None = None
) -> np.ndarray:
    """A look-ahead limiter (:func:`~.loudness.limit_into`): ``(C, N)`` or ``(N,)`` scaled by a smooth gain
    so that no true peak exceeds the ceiling; unchanged where nothing peaks. Block by block into ``out`` (a
    new array; an ``np.memmap`` when the input is one; ``out`` may be ``wave`` itself)."""
    track = as_soundtrack((wave, sr))
    dst = _output_like(wave, track.wave.shape, out)
    loudness.limit_into(track.wave, dst, sr, 10.0 ** (ceiling_dbtp / 20.0))
    return dst if np.ndim(wave) == 2 else dst[0]


def normalize_delivery(
    soundtrack: tuple[np.ndarray, int],
    target_lufs: float,
    true_peak_dbtp: float = -1.0,
    out: np.ndarray | None = None,
) -> Soundtrack:
    """Bring a soundtrack to a delivery loudness (e.g. -16 LUFS for the web, -23 for EBU R128 broadcast)
    with a true-peak ceiling: measure, apply the gain, limit the peaks, and measure again (limiting lowers
    the loudness a little, so the gain is corrected once). Silence is returned as is.

    Block by block in bounded memory: the result is written into ``out`` (a new ``(C, N)`` float32 array,
    an ``np.memmap`` when the soundtrack is one, or the soundtrack's own array to work in place)."""
    track = as_soundtrack(soundtrack)
    if not -70.0 <= target_lufs <= 0.0:
        raise InputError(
            f"loudness target {target_lufs} LUFS is out of range: use e.g. -16 (web) or -23 (EBU R128)"
        )
    if true_peak_dbtp > 0.0:
        raise InputError(f"true-peak ceiling {true_peak_dbtp} dBTP must be at most 0 (e.g. -1)")
    sr, wave, peak = track.sample_rate, track.wave, 0.0
    for _ in range(2):
        measured = measure_loudness(wave, sr)
        if not np.isfinite(measured) or measured < -70.0:
            logger.info("soundtrack is silent (%.1f LUFS): loudness target not applied", measured)
            return track
        out = _output_like(soundtrack[0], wave.shape, out)
        gain = float(np.float32(10.0 ** ((target_lufs - measured) / 20.0)))
        peak = loudness.limit_into(wave, out, sr, 10.0 ** (true_peak_dbtp / 20.0), gain)
        wave = out
    logger.info(
        "soundtrack at %.1f LUFS, true peak %.1f dBTP (target %.1f LUFS, ceiling %.1f dBTP)",
        measure_loudness(wave, sr),
        20 * np.log10(max(peak, 1e-12)),
        target_lufs,
        true_peak_dbtp,
    )
    return Soundtrack(wave, sr)


def _output_like(source: object, shape: tuple[int, ...], out: np.ndarray | None) -> np.ndarray:
    """``out`` checked, or a new float32 array; when ``source`` is file-backed (an ``np.memmap`` or a view
    of one), a :mod:`~infinitetalk.spill` buffer beside its file (file-backed above the spill threshold)."""
    if out is not None:
        if out.shape != tuple(shape) or out.dtype != np.float32:
            raise InputError(
                f"output array is {out.dtype} {out.shape}: give a float32 array shaped {tuple(shape)}"
            )
        return out
    while isinstance(source, np.ndarray) and not isinstance(source, np.memmap):
        source = source.base
    if not isinstance(source, np.memmap):
        return np.empty(shape, np.float32)
    folder = Path(source.filename).parent if source.filename else None
    writable = folder is not None and os.access(folder, os.W_OK)
    return spill.empty_array(tuple(shape), np.float32, folder if writable else None)
