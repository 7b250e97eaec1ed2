"""Loudness and true peak of audio of any length, block by block, in bounded memory.

The public functions live in :mod:`infinitetalk.media.audio` (``measure_loudness``, ``loudness_normalize``,
``true_peak``, ``limit_true_peak``, ``normalize_delivery``); this module is their engine. Nothing here
holds more than one block (``BLOCK`` samples per channel, plus a few thousand samples of context) of the
signal, so an ``np.memmap`` of an hour of audio is measured and limited without being paged in whole.

- :class:`LoudnessMeter`: ITU-R BS.1770-4 integrated loudness equal to ``pyloudnorm.Meter(sr)
  .integrated_loudness`` (the oracle of the tests): the same K-weighting biquads (pyloudnorm designs them),
  their state carried from block to block (one ``sosfilt`` cascade; it differs from pyloudnorm's two ``lfilter`` passes by ~1e-13 relative), and the mean square of each 400 ms gating block taken
  over exactly pyloudnorm's sample ranges (``int(0.4 * (j * 0.25) * sr)``, which also holds at rates where
  0.1 s is not a whole number of samples). It keeps one float per 100 ms step (288 KB per hour) for the
  two gates.
- :func:`peak_scan`, :func:`limit_into`: the 4x oversampled true-peak measurement and look-ahead limiter,
  each block computed from its samples plus the context its filters reach, so that every output sample
  equals the whole-array computation.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import numpy as np
import pyloudnorm
from scipy.ndimage import minimum_filter1d, uniform_filter1d
from scipy.signal import resample_poly, sosfilt

from ..errors import InputError

BLOCK = 1 << 18  # samples per channel processed at a time (5.5 s at 48 kHz)
GATE_S = 0.4  # gating block (ITU-R BS.1770-4)
_OVERLAP = 0.75
_STEP = 1.0 - _OVERLAP  # as pyloudnorm computes it
_CHANNEL_WEIGHTS = (1.0, 1.0, 1.0, 1.41, 1.41)  # L, R, C, Ls, Rs (pyloudnorm's values)
_ABSOLUTE_GATE = -70.0  # LUFS
_RELATIVE_GATE = -10.0  # LU below the absolutely gated loudness
OVERSAMPLING = 4  # ITU-R BS.1770-4 Annex 2: 4x for 48 kHz material
_PEAK_CONTEXT = 64  # input samples either side that the 4x interpolation filter may reach (it uses 10)
LOOKAHEAD_S = 0.01  # the limiter's gain falls over 10 ms before a peak and recovers over 10 ms after it


def min_measure_samples(sr: int) -> int:
    """Shorter audio is tiled (repeated) up to this length before it is measured (keeps its mean power)."""
    return math.ceil(GATE_S * sr) + 1


def iter_blocks(wave: np.ndarray) -> Iterator[np.ndarray]:
    """``(C, N)`` or ``(N,)`` -> views of at most ``BLOCK`` samples per channel (no copy of a memmap)."""
    for start in range(0, wave.shape[-1], BLOCK):
        yield wave[..., start : start + BLOCK]


def k_weighting(sr: int) -> np.ndarray:
    """pyloudnorm's K-weighting as ``(2, 6)`` second-order sections for ``sosfilt``: a high shelf (+4 dB
    above 1.5 kHz), then a 38 Hz high pass."""
    shelf = pyloudnorm.IIRfilter(4.0, 1 / np.sqrt(2), 1500.0, sr, "high_shelf")
    high_pass = pyloudnorm.IIRfilter(0.0, 0.5, 38.0, sr, "high_pass")
    return np.stack([np.r_[f.passband_gain * f.b, f.a] / f.a[0] for f in (shelf, high_pass)])


class LoudnessMeter:
    """Integrated loudness (LUFS) of a signal fed in blocks: ``add(block)`` any number of times with
    ``(C, n)`` or ``(n,)`` blocks (C <= 5, float), then :meth:`integrated`. ``-inf`` for silence."""

    def __init__(self, sr: int):
        self.sr = int(sr)
        self._sos = k_weighting(self.sr)
        self._state: np.ndarray | None = None  # (2 stages, C, 2): the biquads' state between blocks
        self._weights: np.ndarray | None = None
        self._n = 0  # samples seen
        self._head: list[np.ndarray] = []  # the first samples, kept until there are enough to measure
        self._steps: list[float] = []  # weighted energy of each finished 100 ms step
        self._open = 0.0  # energy of the step in progress
        self._next = 1  # index of the next step boundary to cross

    def add(self, block: np.ndarray) -> None:
        x = np.asarray(block, np.float64)
        x = x[None] if x.ndim == 1 else x  # (C, n)
        if self._state is None:
            if x.ndim != 2 or not 1 <= x.shape[0] <= len(_CHANNEL_WEIGHTS):
                raise InputError(
                    f"loudness of audio shaped {x.shape}: expected (N,) or (channels, N) with 1-5 "
                    "channels; downmix wider audio first"
                )
            self._state = np.zeros((len(self._sos), x.shape[0], 2))
            self._weights = np.asarray(_CHANNEL_WEIGHTS[: x.shape[0]])
        elif x.shape[0] != len(self._weights):
            raise InputError(
                f"audio block has {x.shape[0]} channels after {len(self._weights)}: keep one layout"
            )
        if self._n < min_measure_samples(self.sr):
            self._head.append(x.copy())
        x, self._state = sosfilt(self._sos, x, axis=-1, zi=self._state)  # K-weighted (C, n)
        self._accumulate(np.einsum("c,cn,cn->n", self._weights, x, x))  # (n,) channel-weighted energy
        self._n += x.shape[1]
        if self._n >= min_measure_samples(self.sr):
            self._head.clear()  # long enough: measured as it is

    def _accumulate(self, energy: np.ndarray) -> None:
        """Split the energy at the 100 ms step boundaries pyloudnorm uses and sum each piece."""
        end = self._n + len(energy)
        last = int(end / (GATE_S * _STEP * self.sr)) + 2  # past any boundary below `end`
        bounds = self._bounds(np.arange(self._next, last + 1))
        cuts = bounds[bounds < end] - self._n  # (k,) strictly increasing, in [0, n)
        if len(cuts) == 0:
            self._open += float(energy.sum())
            return
        self._steps.append(self._open + float(energy[: cuts[0]].sum()))
        pieces = np.add.reduceat(energy, cuts)
        self._steps.extend(pieces[:-1].tolist())
        self._open = float(pieces[-1])
        self._next += len(cuts)

    def _bounds(self, j: np.ndarray) -> np.ndarray:
        return (GATE_S * (j * _STEP) * self.sr).astype(np.int64)  # pyloudnorm's int(T_g * (j * step) * rate)

    def integrated(self) -> float:
        if self._n == 0:
            return float("-inf")
        if self._n < min_measure_samples(self.sr):  # shorter than one gating block: measure it tiled
            head = np.concatenate(self._head, axis=1)
            tiled = LoudnessMeter(self.sr)
            tiled.add(np.tile(head, (1, -(-min_measure_samples(self.sr) // self._n))))
            return tiled.integrated()
        count = int(np.round((self._n / self.sr - GATE_S) / (GATE_S * _STEP))) + 1  # gating blocks
        steps = np.zeros(count + 3)
        done = np.asarray(self._steps + [self._open])[: count + 3]
        steps[: len(done)] = done
        z = (steps[:-3] + steps[1:-2] + steps[2:-1] + steps[3:]) / (GATE_S * self.sr)  # (count,)
        with np.errstate(divide="ignore", invalid="ignore"):
            block_lufs = -0.691 + 10.0 * np.log10(z)
            kept = z[block_lufs >= _ABSOLUTE_GATE]
            relative = -0.691 + 10.0 * np.log10(kept.mean()) + _RELATIVE_GATE if len(kept) else np.nan
            kept = z[(block_lufs > relative) & (block_lufs > _ABSOLUTE_GATE)]
            return float(-0.691 + 10.0 * np.log10(kept.mean() if len(kept) else 0.0))


def integrated_loudness(blocks: Iterable[np.ndarray], sr: int) -> float:
    """Integrated loudness of a signal given as blocks (see :class:`LoudnessMeter`)."""
    meter = LoudnessMeter(sr)
    for block in blocks:
        meter.add(block)
    return meter.integrated()


# ============================================================================ true peak and limiter
def _with_context(src: np.ndarray, reach: int) -> Iterator[tuple[int, int, int, np.ndarray]]:
    """``(start, end, lo, ctx)`` per block of ``(C, N)`` ``src``: ``ctx`` is a float32 copy of the original
    ``src[:, lo:hi]`` with ``lo = max(0, start - reach)``, ``hi = min(N, end + reach)``. It stays right when
    the caller writes ``src[:, start:end]`` in place (the look-behind is kept from the previous block)."""
    n, behind = src.shape[1], None
    for start in range(0, n, BLOCK):
        end = min(n, start + BLOCK)
        lo, hi = max(0, start - reach), min(n, end + reach)
        ahead = np.array(src[:, start:hi], np.float32)
        ctx = (
            ahead if lo == start else np.concatenate([behind[:, behind.shape[1] - (start - lo) :], ahead], 1)
        )
        behind = ctx[:, max(lo, end - reach) - lo : end - lo].copy()
        yield start, end, lo, ctx


def _sample_peaks(x: np.ndarray, first: int, last: int) -> np.ndarray:
    """``(last - first,)``: for each sample of ``x[:, first:last]`` the largest magnitude over channels of
    the 4x oversampled signal within its sample period (and of the sample itself). ``x`` must extend
    ``_PEAK_CONTEXT`` samples past ``[first, last)`` on each side that is not the signal's own edge."""
    lo, hi = max(0, first - _PEAK_CONTEXT), min(x.shape[1], last + _PEAK_CONTEXT)
    over = resample_poly(x[:, lo:hi], OVERSAMPLING, 1, axis=-1)  # (C, 4 * (hi - lo))
    over = np.abs(over[:, (first - lo) * OVERSAMPLING : (last - lo) * OVERSAMPLING])
    over = over.reshape(x.shape[0], last - first, OVERSAMPLING)
    return np.maximum(over.max(axis=(0, 2)), np.abs(x[:, first:last]).max(axis=0)).astype(np.float32)


def peak_scan(wave: np.ndarray) -> float:
    """Largest 4x oversampled magnitude of ``(C, N)`` audio (linear; 0.0 for silence or no samples)."""
    top = 0.0
    for start, end, lo, ctx in _with_context(wave, _PEAK_CONTEXT):
        top = max(top, float(_sample_peaks(ctx, start - lo, end - lo).max()))
    return top


def limit_into(src: np.ndarray, dst: np.ndarray, sr: int, ceiling: float, gain: float = 1.0) -> float:
    """``dst = limiter(src * gain)`` for ``(C, N)`` float32 arrays (``dst`` may be ``src``): a look-ahead
    limiter that keeps every true peak at or below ``ceiling`` (linear).

    The gain each sample needs is min-filtered over ±10 ms (it falls before a peak) and then averaged over
    the same span; the average of values that are each at most the need is itself at most the need, so the
    ceiling holds at every sample while the gain moves without clicks. The gain is applied per sample while
    peaks are measured between samples: a residue above the ceiling is removed by one more plain gain.
    Returns the true peak of ``dst`` (linear)."""
    half = max(1, round(LOOKAHEAD_S * sr))  # the filters reach `half` samples either side
    reach, n = 2 * half + 1, src.shape[1]
    top = 0.0
    for start, end, lo, ctx in _with_context(src, 2 * _PEAK_CONTEXT + 2 * half):
        x = ctx * np.float32(gain) if gain != 1.0 else ctx
        # the needed gain where the smoothed gain of [start - 64, end + 64) depends on it
        a, b = max(0, start - _PEAK_CONTEXT - 2 * half), min(n, end + _PEAK_CONTEXT + 2 * half)
        need = np.minimum(1.0, ceiling / np.maximum(_sample_peaks(x, a - lo, b - lo), 1e-12)).astype(
            np.float32
        )
        smooth = uniform_filter1d(minimum_filter1d(need, reach, mode="nearest"), reach, mode="nearest")
        c, d = max(0, start - _PEAK_CONTEXT), min(n, end + _PEAK_CONTEXT)
        limited = x[:, c - lo : d - lo] * smooth[None, c - a : d - a]  # (C, d - c)
        top = max(top, float(_sample_peaks(limited, start - c, end - c).max()))
        dst[:, start:end] = limited[:, start - c : end - c]
    excess = top / ceiling
    if excess > 1.0:
        for start in range(0, n, BLOCK):
            dst[:, start : start + BLOCK] = dst[:, start : start + BLOCK] / excess
    return top / max(1.0, excess)


def scale_into(src: np.ndarray, dst: np.ndarray, gain: float) -> None:
    """``dst = (src * gain)`` as float32, block by block (``dst`` may be ``src``)."""
    for start in range(0, src.shape[-1], BLOCK):
        dst[..., start : start + BLOCK] = src[..., start : start + BLOCK] * gain
