"""Speech audio check and clean-up: loudness, loudness range, peaks and clipping, noise, silence, rate.

``check_audio(wave, sr) -> AudioReport`` measures (thresholds in ``LIMITS``; docs/PRODUCTION.md):

- integrated loudness (LUFS, ITU-R BS.1770, equal to pyloudnorm's) and loudness range (LU, EBU Tech 3342:
  3 s short-term loudness every 0.1 s, gated at -70 LUFS and 20 LU below the gated mean, 95th minus
  10th percentile);
- sample peak (dBFS) and the ratio of clipped samples (``|x| >= 0.999`` of full scale);
- noise floor: the 10th percentile of the power of 20 ms frames (dBFS); speech level: the mean power of
  the active (non-silent) frames; SNR = speech level - noise floor;
- silence ratio: frames quieter than ``max(noise floor + 6 dB, loudest frames - 40 dB)``;
- sample rate and duration.

``clean_audio(wave, sr)`` applies the optional clean-up: a high-pass filter (rumble, handling noise) and
loudness normalisation (BS.1770, as the speech path), then pulls the peak back under -1 dBFS if the gain pushed it over.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import InputError
from .media.audio import measure_loudness
from .media.loudness import k_weighting

FRAME_S = 0.02  # frame length of the noise/silence analysis
CLIP_LEVEL = 0.999  # |sample| at or above this fraction of full scale counts as clipped
FLOOR_DB = -120.0  # level given to digital silence

LIMITS = {
    "min_sample_rate": 16000,  # Hz: the audio encoder's rate
    "min_duration_s": 1.0,
    "lufs_range": (-30.0, -12.0),
    "max_lra": 15.0,  # LU
    "max_peak_dbfs": -0.1,
    "max_clipped": 0.001,  # ratio of samples
    "min_snr_db": 20.0,
    "max_noise_dbfs": -45.0,
    "max_silence": 0.5,  # ratio of frames
}

MESSAGES = {
    "sample_rate": "sample rate {sr} Hz is below 16 kHz: record or export at 16 kHz or more (44.1/48 kHz)",
    "short": "audio is {dur} s long: give at least 1 s of speech",
    "quiet": "integrated loudness {lufs} LUFS is very low: record closer to the microphone or raise the gain "
    "(normalising also raises the noise)",
    "loud": "integrated loudness {lufs} LUFS is very high: lower the gain (aim for -23 to -16 LUFS)",
    "lra": "loudness range {lra} LU: the level swings a lot; keep a steady distance to the microphone or "
    "compress the audio",
    "peak": "peak {peak} dBFS touches full scale: leave headroom (peaks under -1 dBFS)",
    "clipped": "{pct}% of the samples are clipped: re-record with a lower gain (clipping cannot be undone)",
    "noisy": "signal-to-noise ratio {snr} dB: record in a quieter room, closer to the microphone, or denoise",
    "noise_floor": "noise floor {noise} dBFS is high: background hum or hiss; use the high-pass clean-up or "
    "denoise",
    "silence": "{pct}% of the audio is silence: trim long pauses (the video keeps talking-head motion "
    "during silence)",
}


@dataclass
class AudioReport:
    sample_rate: int
    duration_s: float
    lufs: float
    lra: float
    peak_dbfs: float
    clipped_ratio: float
    noise_floor_dbfs: float
    speech_dbfs: float
    snr_db: float
    silence_ratio: float
    warnings: list[str] = field(default_factory=list)
    codes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.warnings

    def text(self) -> str:
        lines = [
            f"sample rate: {self.sample_rate} Hz, duration: {self.duration_s:.2f} s",
            f"integrated loudness: {self.lufs:.1f} LUFS, loudness range: {self.lra:.1f} LU",
            f"peak: {self.peak_dbfs:.1f} dBFS, clipped samples: {100 * self.clipped_ratio:.2f}%",
            f"noise floor: {self.noise_floor_dbfs:.1f} dBFS, speech: {self.speech_dbfs:.1f} dBFS, "
            f"SNR: {self.snr_db:.1f} dB",
            f"silence: {100 * self.silence_ratio:.0f}%",
        ]
        lines += [f"WARNING: {w}" for w in self.warnings] or ["all audio checks passed"]
        return "\n".join(lines)


def _mono(wave: np.ndarray) -> np.ndarray:
    wave = np.asarray(wave, dtype=np.float64)
    if wave.ndim == 2:
        wave = wave.mean(axis=0)
    if wave.ndim != 1 or wave.size == 0:
        raise InputError(
            f"audio of shape {wave.shape}: expected (samples,) or (channels, samples) with samples"
        )
    return wave


def _db(power: np.ndarray | float) -> np.ndarray | float:
    return np.maximum(10 * np.log10(np.maximum(power, 1e-30)), FLOOR_DB)


def frame_levels(wave: np.ndarray, sr: int, frame_s: float = FRAME_S) -> np.ndarray:
    """Mean power of consecutive frames in dBFS (a full-scale sine is -3 dBFS)."""
    n = max(1, int(round(frame_s * sr)))
    frames = wave[: len(wave) // n * n].reshape(-1, n) if len(wave) >= n else wave[None]
    return _db((frames**2).mean(axis=1))


def loudness_range(wave: np.ndarray, sr: int) -> float:
    """EBU Tech 3342 loudness range (LU) of mono audio; 0 for audio shorter than one 3 s window."""
    from scipy.signal import sosfilt

    weighted = sosfilt(k_weighting(sr), np.asarray(wave, np.float64))
    win, hop = int(3.0 * sr), int(0.1 * sr)
    if len(weighted) < win:
        return 0.0
    csum = np.concatenate([[0.0], np.cumsum(weighted**2)])
    starts = np.arange(0, len(weighted) - win + 1, hop)
    short_term = -0.691 + 10 * np.log10(np.maximum((csum[starts + win] - csum[starts]) / win, 1e-30))
    gated = short_term[short_term > -70.0]
    if gated.size == 0:
        return 0.0
    relative = 10 * np.log10(np.mean(10 ** (gated / 10))) - 20.0
    gated = gated[gated > relative]
    return float(np.percentile(gated, 95) - np.percentile(gated, 10))


def check_audio(wave: np.ndarray, sr: int) -> AudioReport:
    """Measure speech ``wave`` (float, ``(N,)`` or ``(C, N)``, full scale 1.0) at ``sr`` Hz."""
    if not isinstance(sr, (int, np.integer)) or sr <= 0:
        raise InputError(f"sample rate {sr!r} must be a positive integer (Hz)")
    mono = _mono(wave)
    levels = frame_levels(mono, sr)
    noise = float(np.percentile(levels, 10))
    loudest = float(np.percentile(levels, 95))
    silent = levels < max(noise + 6.0, loudest - 40.0)
    active = levels[~silent]
    speech = float(_db(np.mean(10 ** (active / 10)))) if active.size else FLOOR_DB
    peak = float(np.abs(mono).max())
    report = AudioReport(
        sample_rate=int(sr),
        duration_s=len(mono) / sr,
        lufs=float(measure_loudness(mono, sr)),
        lra=loudness_range(mono, sr),
        peak_dbfs=float(20 * np.log10(max(peak, 1e-6))),
        clipped_ratio=float(np.mean(np.abs(mono) >= CLIP_LEVEL)),
        noise_floor_dbfs=noise,
        speech_dbfs=speech,
        snr_db=speech - noise,
        silence_ratio=float(silent.mean()),
    )
    _warn_all(report)
    return report


def _warn_all(r: AudioReport) -> None:
    lim = LIMITS

    def warn(code: str, **values) -> None:
        r.codes.append(code)
        r.warnings.append(MESSAGES[code].format(**values))

    if r.sample_rate < lim["min_sample_rate"]:
        warn("sample_rate", sr=r.sample_rate)
    if r.duration_s < lim["min_duration_s"]:
        warn("short", dur=f"{r.duration_s:.2f}")
    if np.isfinite(r.lufs) and r.lufs < lim["lufs_range"][0]:
        warn("quiet", lufs=f"{r.lufs:.1f}")
    elif np.isfinite(r.lufs) and r.lufs > lim["lufs_range"][1]:
        warn("loud", lufs=f"{r.lufs:.1f}")
    if r.lra > lim["max_lra"]:
        warn("lra", lra=f"{r.lra:.1f}")
    if r.clipped_ratio > lim["max_clipped"]:
        warn("clipped", pct=f"{100 * r.clipped_ratio:.2f}")
    elif r.peak_dbfs > lim["max_peak_dbfs"]:
        warn("peak", peak=f"{r.peak_dbfs:.1f}")
    if r.snr_db < lim["min_snr_db"]:
        warn("noisy", snr=f"{r.snr_db:.1f}")
    if r.noise_floor_dbfs > lim["max_noise_dbfs"]:
        warn("noise_floor", noise=f"{r.noise_floor_dbfs:.1f}")
    if r.silence_ratio > lim["max_silence"]:
        warn("silence", pct=f"{100 * r.silence_ratio:.0f}")


def clean_audio(
    wave: np.ndarray, sr: int, highpass_hz: float = 80.0, target_lufs: float | None = -23.0
) -> np.ndarray:
    """High-pass (4th-order Butterworth, zero phase; 0 = off) then loudness-normalise to ``target_lufs``
    (None = keep the level). Peaks are pulled back under -1 dBFS if the gain pushed them over.
    Returns float32 of the input's shape."""
    from scipy.signal import butter, sosfiltfilt

    wave = np.asarray(wave, dtype=np.float64)
    if wave.ndim not in (1, 2) or wave.shape[-1] == 0:
        raise InputError(f"audio of shape {wave.shape}: expected (samples,) or (channels, samples)")
    if highpass_hz and highpass_hz > 0:
        if not 0 < highpass_hz < sr / 2:
            raise InputError(
                f"high-pass {highpass_hz} Hz must lie between 0 and half the sample rate ({sr / 2})"
            )
        sos = butter(4, highpass_hz, btype="highpass", fs=sr, output="sos")
        wave = sosfiltfilt(sos, wave, axis=-1)
    if target_lufs is not None:
        loudness = measure_loudness(_mono(wave), sr)
        if np.isfinite(loudness) and abs(loudness) <= 100:  # silence stays as it is
            wave = wave * 10 ** ((target_lufs - loudness) / 20)
    peak = np.abs(wave).max()
    limit = 10 ** (-1 / 20)
    if peak > limit:
        wave = wave * (limit / peak)
    return wave.astype(np.float32)
