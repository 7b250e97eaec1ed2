"""Audio conditioning of a run: speech tracks -> wav2vec2 features at the video rate, without a pipeline.

:func:`prepare_audio` needs only an audio encoder (``feature_shape(n)`` and ``encode(wave_16k, out=)``):
the command line and the Audio Embed node call it before any video model is loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from . import spill
from .antidrift import add_silence_noise_floor
from .errors import InputError
from .media.audio import combine_soundtracks, combine_speakers, prepare_speech


@dataclass
class AudioEmbedding:
    """wav2vec2 features per speaker at 25 fps, the 16 kHz speech mix they were computed from, and the
    soundtrack of the final video: the user's own audio at its own rate and channels (``soundtrack``
    ``(C, N)`` at ``soundtrack_rate``; two speakers mixed or sequenced exactly as the frames are timed)."""

    features: torch.Tensor  # (S, L, layers, C)
    waveform_16k_mix: np.ndarray | None = None  # (N,) float32, the embedding path only
    num_frames: int = 0  # L (0: taken from features)
    soundtrack: np.ndarray | None = None  # (C, N) float32, the user's audio
    soundtrack_rate: int = 0

    def __post_init__(self) -> None:
        if self.features.ndim != 4:
            raise InputError(
                f"audio features have shape {tuple(self.features.shape)}: expected (speakers, frames, layers, channels)"
            )
        if not self.num_frames:
            self.num_frames = int(self.features.shape[1])

    @property
    def num_speakers(self) -> int:
        return int(self.features.shape[0])

    @property
    def soundtrack_audio(self) -> tuple[np.ndarray, int] | None:
        """``(wave (C, N), rate)`` for the final video: the user's audio, or the 16 kHz mix when an
        embedding was built without it (then the sound is the speech path's, not the user's)."""
        if self.soundtrack is not None:
            return self.soundtrack, self.soundtrack_rate
        if self.waveform_16k_mix is not None:
            return self.waveform_16k_mix[None], 16000
        return None


class ModelManager(Protocol):
    """Host hooks to move models between devices: names 'dit', 'vae', 'clip', 'text_encoder', 'audio_encoder'."""

    def load(self, name: str) -> None: ...

    def offload(self, name: str) -> None: ...


@torch.no_grad()
def prepare_audio(
    audio_encoder,
    speakers: Sequence[tuple[np.ndarray, int]],
    audio_type: str = "para",
    normalize: bool = True,
    *,
    spill_dir: str | Path | None = None,
    model_manager: ModelManager | None = None,
    noise_floor_db: float | None = None,
) -> AudioEmbedding:
    """One or two ``(wave, sample_rate)`` tracks -> wav2vec2 features at 25 fps, the 16 kHz speech mix,
    and the soundtrack (the tracks themselves, mixed for ``para``, one after the other for ``add``).

    The encoder writes each speaker's features straight into one ``(S, L, layers, C)`` buffer; that
    buffer, the mix and a two-speaker soundtrack are file-backed above :func:`spill.spill_threshold`
    (in ``spill_dir``; default the system's temp folder). A one-speaker soundtrack is the caller's own
    array, kept as given. ``model_manager`` (optional) moves the encoder in (``load("audio_encoder")``)
    and out around the encoding. ``noise_floor_db``: white noise at this level in the silences of each speech
    track before wav2vec2 (:func:`infinitetalk.antidrift.add_silence_noise_floor`; None: off); the 16 kHz mix
    and the soundtrack are untouched.
    """
    if not 1 <= len(speakers) <= 2:
        raise InputError(f"{len(speakers)} audio tracks given: InfiniteTalk drives one or two speakers")
    if audio_encoder is None:
        raise InputError("no audio encoder was given: load wav2vec2 or pass an AudioEmbedding")
    tracks = [prepare_speech(w, sr, normalize=normalize) for w, sr in speakers]
    # add: speaker 2's speech starts after speaker 1's 16 kHz track, so does their sound
    soundtrack = combine_soundtracks(speakers, audio_type, speaker2_start=len(tracks[0]) / 16000)
    if len(tracks) == 2:
        t1, t2, mix = combine_speakers(tracks[0], tracks[1], audio_type)
        tracks = [t1, t2]
    else:
        mix = tracks[0]
    if noise_floor_db is not None:
        tracks = [add_silence_noise_floor(t, noise_floor_db) for t in tracks]
    mix = spill.spill_array(np.asarray(mix, np.float32), spill_dir)
    wave = soundtrack.wave if len(speakers) == 1 else spill.spill_array(soundtrack.wave, spill_dir)
    shape = audio_encoder.feature_shape(len(tracks[0]))  # (L, layers, C), all tracks alike
    feats = spill.empty_tensor((len(tracks), *shape), torch.float32, spill_dir)
    if model_manager is not None:
        model_manager.load("audio_encoder")
    for track, out in zip(tracks, feats, strict=True):
        audio_encoder.encode(np.asarray(track, np.float32), out=out)
    if model_manager is not None:
        model_manager.offload("audio_encoder")
    return AudioEmbedding(feats, mix, int(feats.shape[1]), wave, soundtrack.sample_rate)
