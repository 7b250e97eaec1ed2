"""Ways to bound drift over long runs: training-free, each off by default (frames are then exactly today's).

- :func:`add_silence_noise_floor` (``--silence_noise_floor DB``, Audio Embed ``silence_noise_floor``): low
  white noise added to the 16 kHz speech where it is silent, before wav2vec2. Digital silence gives the audio
  adapter features it rarely saw in training, and mouths keep moving through it (InfiniteTalk #146); a noise
  floor makes silence look like a quiet room. kijai's wrapper adds noise to the whole track
  (``add_noise_floor``); here only the silent 40 ms frames get it, with 10 ms fades, seeded (the same run
  gives the same features, so resume still matches). Changes the audio features only in silent stretches.
- ``GenerationConfig.latent_motion`` (``--latent_motion``, Sampler Options ``latent_motion``): the motion
  frames cross each window join as the window's own last latents instead of being decoded, colour-corrected
  and encoded again by the VAE. Skips one VAE encode per window and the round trip's loss (a little colour
  and detail at every join, Wan2GP #2132). Approximate: the VAE is causal, so the first carried latent
  summarises frames 69-72 of the window (with 9 motion frames) where a fresh encode starts from frame 72
  alone; and the colour correction then acts on the output frames only, not on what the next window sees.
  Changes windows 2 onwards; window 1 is the same.
- ``GenerationConfig.color_anchor`` (``--color_anchor DE``, Sampler Options ``color_anchor``): after the usual
  colour correction, each window's face and background colours are measured against the reference's (ΔE76 of
  the region means, :func:`infinitetalk.color.region_drift`); when either passes ``DE``, the window is
  anchored region by region (:func:`infinitetalk.color.anchor_regions`: the face takes the reference face's Lab
  statistics, the background the reference background's). Windows under the threshold are untouched.

What each does to real weights' output cannot be measured without the weights: ``python bench/drift_options.py
--weights DIR`` runs one long job with and without each option and prints the telemetry side by side.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from .color import anchor_regions, region_drift
from .errors import InputError
from .faces import detect_faces, feathered_mask
from .telemetry import frame_rms

logger = logging.getLogger(__name__)

SPEECH_FRAME = 640  # 16 kHz samples per video frame
FADE = 160  # 10 ms fades at the edges of the noise
NOISE_SEED = 24


def check_noise_floor(db: float | None, *, name: str = "silence_noise_floor") -> None:
    if db is not None and not -90.0 <= db <= -20.0:
        raise InputError(f"{name} {db} dBFS is outside -90..-20: use about -45 (quiet room), or leave it off")


def add_silence_noise_floor(wave_16k: np.ndarray, db: float, seed: int = NOISE_SEED) -> np.ndarray:
    """``wave_16k`` with white noise of RMS ``db`` dBFS in its silent 40 ms frames (RMS under 10% of the
    track's loud level, or -60 dBFS), faded in and out over 10 ms; a new float32 array, speech untouched."""
    check_noise_floor(db)
    wave = np.asarray(wave_16k, np.float32)
    rms = frame_rms(wave)
    loud = float(np.percentile(rms, 95)) if len(rms) else 0.0
    silent = rms <= max(0.1 * loud, 1e-3)
    from scipy.signal import oaconvolve

    gain = np.repeat(silent.astype(np.float32), SPEECH_FRAME)[: len(wave)]
    kernel = np.hanning(2 * FADE + 1).astype(np.float32)
    gain = oaconvolve(gain, kernel / kernel.sum(), mode="same").astype(np.float32)  # 10 ms fades
    gain = np.where(gain < 1e-4, 0.0, np.minimum(gain, 1.0)).astype(np.float32)  # speech stays exact
    noise = np.random.default_rng(seed).standard_normal(len(wave)).astype(np.float32) * 10 ** (db / 20)
    out = wave + noise * gain
    logger.info("noise floor %.0f dBFS in %.1f s of silence", db, silent.sum() * 0.04)
    return out


def anchor_window(video: torch.Tensor, reference: torch.Tensor, threshold: float) -> torch.Tensor:
    """``video (1, 3, T, H, W)`` in [-1, 1], anchored region by region to ``reference (1, 3, 1, H, W)`` when its
    face or background colour is more than ``threshold`` ΔE from the reference's; else ``video`` itself."""

    ref_rgb = ((reference[0, :, 0].float().permute(1, 2, 0) + 1) * 127.5).clamp(0, 255).byte().cpu().numpy()
    faces = detect_faces(ref_rgb, landmarks=False)
    h, w = ref_rgb.shape[:2]
    if faces:
        face = torch.from_numpy(feathered_mask(faces[0].box, h, w, grow=0.1, feather=6)).to(video.device)
    else:
        face = torch.zeros(h, w, device=video.device)
    de_face, de_bg = region_drift(video, reference, face)
    if max(de_face, de_bg) <= threshold:
        return video
    logger.info(
        "colour anchoring: face ΔE %.1f, background ΔE %.1f > %.1f: anchored to the reference",
        de_face,
        de_bg,
        threshold,
    )
    return anchor_regions(video, reference, face)
