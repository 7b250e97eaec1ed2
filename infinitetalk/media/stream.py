"""Audio files of any length, read in blocks: probe the header, decode block by block, and turn speech into
16 kHz mono without ever holding the whole file at its own rate and channel count.

An hour of 48 kHz stereo is 1.4 GB as float32 and a 5.1 track four times that; the 16 kHz mono speech
signal the audio encoder needs is 230 MB. :func:`load_speech` streams the file through a polyphase
resampler that gives the same samples as :func:`scipy.signal.resample_poly` on the whole signal (what
:func:`~infinitetalk.media.audio.prepare_speech` uses), block by block.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from math import ceil
from pathlib import Path

import av
import numpy as np
import soundfile
from scipy.signal import firwin, upfirdn

from ..errors import InputError
from ..spill import empty_array
from ..validation import MAX_CHANNELS, check_sample_rate, check_seconds
from .audio import SOUNDFILE_EXTS, SPEECH_SR, resample_ratio

logger = logging.getLogger(__name__)

BLOCK_S = 10.0  # seconds decoded at a time
# A header's length is a claim: a few-KB file may say it holds hours. Buffers are sized up front for no more
# audio than the file could carry at this bit rate (below that of any speech codec in use; Opus's floor is
# 6 kbit/s), and grow while decoding when a file really holds more.
MIN_BITRATE = 6000  # bits per second


@dataclass(frozen=True)
class AudioInfo:
    """What the header says about an audio file (or a video's first audio track)."""

    path: Path
    sample_rate: int
    channels: int
    duration: float  # seconds (0.0 when the header does not say)
    codec: str
    backend: str  # "soundfile" or "av": which library decodes it


def probe_audio(path: str | Path, *, name: str = "audio file") -> AudioInfo:
    """Read only the header; ``InputError`` naming ``name`` for a missing, unreadable or sound-less file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{name} '{path}' does not exist: check the path or pick another file")
    if path.suffix.lower() in SOUNDFILE_EXTS:
        try:
            info = soundfile.info(str(path))
            return AudioInfo(
                path, int(info.samplerate), int(info.channels), float(info.duration), info.format, "soundfile"
            )
        except (soundfile.LibsndfileError, RuntimeError) as err:
            logger.debug("soundfile cannot read %s (%s); trying PyAV", path, err)
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise InputError(f"{name} '{path}' has no audio stream: pick a file with a sound track")
            stream = container.streams.audio[0]
            if stream.duration and stream.time_base:
                duration = float(stream.duration * stream.time_base)
            else:
                duration = float(container.duration or 0) / av.time_base
            ctx = stream.codec_context
            return AudioInfo(
                path, int(ctx.sample_rate or 0), int(ctx.channels or 0), duration, ctx.name, "av"
            )
    except av.FFmpegError as err:
        raise InputError(
            f"{name} '{path}' is not a readable audio or video file ({err}): convert it to wav"
        ) from err


def believable_samples(info: AudioInfo) -> int:
    """Samples per channel the file can hold by its size at :data:`MIN_BITRATE` (the cap on what a buffer is
    sized for before decoding)."""
    try:
        size = info.path.stat().st_size
    except OSError:
        size = 0
    return int(size * 8 / MIN_BITRATE * info.sample_rate) + 1


def iter_audio(
    path: str | Path, block_s: float = BLOCK_S, *, name: str = "audio file"
) -> Iterator[tuple[np.ndarray, int]]:
    """Decode ``path`` block by block: yields ``(float32 (C, n), sample_rate)``; memory is one block."""
    path = Path(path)
    info = probe_audio(path, name=name)
    if info.backend == "soundfile":
        try:
            block = max(1, int(block_s * info.sample_rate))
            for data in soundfile.blocks(str(path), blocksize=block, dtype="float32", always_2d=True):
                yield np.ascontiguousarray(data.T), info.sample_rate  # (C, n)
            return
        except (soundfile.LibsndfileError, RuntimeError) as err:
            raise InputError(f"{name} '{path}' cannot be decoded ({err}): convert it to wav") from err
    yield from _iter_av(path, block_s, name)


def _iter_av(path: Path, block_s: float, name: str) -> Iterator[tuple[np.ndarray, int]]:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        resampler, pending, count = None, [], 0
        try:
            for frame in container.decode(stream):
                if resampler is None:
                    resampler = av.AudioResampler(format="fltp", layout=frame.layout, rate=frame.sample_rate)
                for f in resampler.resample(frame):
                    pending.append(f.to_ndarray())
                    count += pending[-1].shape[-1]
                if count >= block_s * resampler.rate:
                    yield np.concatenate(pending, axis=1).astype(np.float32), resampler.rate
                    pending, count = [], 0
            if resampler is not None:
                pending += [f.to_ndarray() for f in resampler.resample(None)]
        except av.FFmpegError as err:
            raise InputError(f"{name} '{path}' cannot be decoded ({err}): convert it to wav") from err
        if pending:
            yield np.concatenate(pending, axis=1).astype(np.float32), resampler.rate


def read_audio(
    path: str | Path,
    start_s: float = 0.0,
    duration_s: float = 0.0,
    *,
    name: str = "audio file",
    spill_dir: str | Path | None = None,
) -> tuple[np.ndarray, int]:
    """``(float32 (C, N), sample_rate)`` of ``[start_s, start_s + duration_s)`` (``duration_s`` 0: to the
    end), decoded block by block into one buffer: what is skipped is never stored, and no block list or
    transposed copy doubles the memory of a long file. A buffer above :func:`~infinitetalk.spill.
    spill_threshold` is file-backed in ``spill_dir`` (an ``np.memmap``; default: the temp folder)."""
    start_s = check_seconds(start_s, name="start_seconds")  # NaN, negative and 1e300 refused
    duration_s = check_seconds(duration_s, name="duration_seconds")
    info = probe_audio(path, name=name)
    check_sample_rate(info.sample_rate, name=f"{name} '{Path(path).name}'")
    if info.channels > MAX_CHANNELS:
        raise InputError(
            f"{name} '{Path(path).name}' has {info.channels} channels: at most {MAX_CHANNELS} are read; "
            "downmix it to stereo"
        )
    first = int(round(start_s * info.sample_rate))
    wanted = int(round(duration_s * info.sample_rate)) if duration_s > 0 else None
    if info.backend == "av" and info.duration:  # the decoder's end padding (AAC: up to 1023 samples) is cut
        end = max(1, round(info.duration * info.sample_rate))
        wanted = max(0, end - first) if wanted is None else min(wanted, max(0, end - first))
    size = wanted if wanted is not None else max(0, int(info.duration * info.sample_rate) - first + 1)
    size = min(size, believable_samples(info))  # the header's claim against the file's size
    out = empty_array((max(1, info.channels), size), np.float32, spill_dir)
    pos, filled = 0, 0  # samples of the file seen, samples stored
    for block, _ in iter_audio(path, name=name):
        lo, hi = max(first - pos, 0), block.shape[1]
        if wanted is not None:
            hi = min(hi, lo + wanted - filled)
        pos += block.shape[1]
        if hi <= lo:
            if wanted is not None and filled >= wanted:
                break
            continue
        piece = block[:, lo:hi]
        if filled + piece.shape[1] > out.shape[1]:  # more than the header said (or than was believed)
            grown = empty_array(
                (out.shape[0], filled + max(out.shape[1], piece.shape[1])), np.float32, spill_dir
            )
            grown[:, :filled] = out[:, :filled]
            out = grown
        out[: piece.shape[0], filled : filled + piece.shape[1]] = piece
        filled += piece.shape[1]
    return out[:, :filled] if filled < out.shape[1] else out, info.sample_rate


class StreamResampler:
    """Block-wise polyphase resampling equal to ``resample_poly(x, up, down)`` on the whole signal
    (same Kaiser-windowed filter, same alignment): ``push(block)`` returns the output that is complete,
    ``finish()`` the rest."""

    def __init__(self, sr_in: int, sr_out: int):
        self.up, self.down = resample_ratio(sr_in, sr_out)
        self.identity = int(sr_in) == int(sr_out)
        self.n_in = 0
        if self.identity:
            return
        max_rate = max(self.up, self.down)
        half_len = 10 * max_rate
        taps = firwin(2 * half_len + 1, 1.0 / max_rate, window=("kaiser", 5.0)) * self.up
        pre_pad = self.down - half_len % self.down
        self.h = np.concatenate([np.zeros(pre_pad), taps])
        self.skip = (half_len + pre_pad) // self.down  # outputs of the filter's lead-in
        self.buf = np.zeros(0, np.float64)
        self.start = 0  # input index of buf[0], a multiple of `down`
        self.next_m = self.skip  # next output of the full convolution to emit

    def push(self, block: np.ndarray) -> np.ndarray:
        self.n_in += len(block)
        if self.identity:
            return np.asarray(block, np.float32)
        self.buf = np.concatenate([self.buf, np.asarray(block, np.float64)])
        end = self.start + len(self.buf)
        last = ceil(end * self.up / self.down)  # outputs m < last have all their inputs
        return self._emit(last)

    def finish(self) -> np.ndarray:
        """The remaining output: ``ceil(N * up / down)`` samples in all, as ``resample_poly``."""
        if self.identity:
            return np.zeros(0, np.float32)
        n_out = ceil(self.n_in * self.up / self.down)
        pad = np.zeros(len(self.h) // self.up + self.down + 1)
        self.buf = np.concatenate([self.buf, pad])
        return self._emit(self.skip + n_out)

    def _emit(self, last: int) -> np.ndarray:
        if last <= self.next_m:
            return np.zeros(0, np.float32)
        y = upfirdn(self.h, self.buf, self.up, self.down)
        offset = self.start * self.up // self.down  # output index of y[0]
        out = y[self.next_m - offset : last - offset]
        self.next_m = last
        # drop inputs no later output needs: output m reads x[n] for n > (m * down - len(h)) / up
        need = max(0, (self.next_m * self.down - len(self.h)) // self.up)
        drop = (min(need, self.start + len(self.buf)) - self.start) // self.down * self.down
        if drop > 0:
            self.buf = self.buf[drop:]
            self.start += drop
        return out.astype(np.float32)


def load_speech(path: str | Path, *, name: str = "audio file") -> np.ndarray:
    """``path`` as float32 mono at 16 kHz (channels averaged, then resampled), decoded block by block.

    Equals ``resample(to_mono(load_audio(path)[0]), sr, 16000)`` within float rounding, at a fraction of
    the memory for long or multi-channel files.
    """
    info = probe_audio(path, name=name)
    check_sample_rate(info.sample_rate, name=f"{name} '{Path(path).name}'")
    resampler: StreamResampler | None = None
    believed = min(info.duration, believable_samples(info) / max(1, info.sample_rate))
    expected = int(believed * SPEECH_SR) + SPEECH_SR if info.duration else 0
    out = np.empty(expected, np.float32)
    filled = 0

    def put(chunk: np.ndarray) -> None:
        nonlocal out, filled
        if filled + len(chunk) > len(out):  # header was short or absent: grow geometrically
            out = np.resize(out, max(2 * len(out), filled + len(chunk)))
        out[filled : filled + len(chunk)] = chunk
        filled += len(chunk)

    for block, sr in iter_audio(path, name=name):
        if resampler is None:
            resampler = StreamResampler(sr, SPEECH_SR)
        if block.shape[0] > 1:
            block = block.mean(axis=0, dtype=np.float32)[None]
        put(resampler.push(block[0]))
    if resampler is None:
        raise InputError(f"{name} '{path}' holds no samples: pick a file with sound in it")
    put(resampler.finish())
    exact = -(-resampler.n_in * SPEECH_SR // sr)  # what resample() gives, also for an approximated ratio
    if filled < exact:
        put(np.zeros(exact - filled, np.float32))
    return out[:exact]  # a view: copying would double the peak (the header's rounding slack is 1 s)
