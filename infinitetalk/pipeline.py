"""InfiniteTalk streaming generation: audio-driven video of any length in overlapping windows.

The loop (spec §4), one window at a time, nothing kept across windows but the motion frames::

    check_inputs -> prepare_audio -> encode -> for each window:
        prepare_window -> denoise_window -> decode -> sink (+ commit state for resume)

Window ``k`` covers video frames ``[k * stride, k * stride + frame_num)`` with
``stride = frame_num - motion_frame`` (72 by default). Window 0 starts from the clean latent of the
reference frame and keeps all its frames; window ``k > 0`` starts from the VAE latents of the previous
window's last ``motion_frame`` decoded, colour-corrected frames and contributes the frames after them.

Random numbers (one ``torch.Generator`` on the pipeline device, seeded with ``config.seed``) are drawn
in the reference's order, so a run with the reference's seed draws the same noise: per window the
initial noise ``(16, T, h, w)``; then, in windows ``k > 0`` only, one ``(16, n_motion, h, w)`` draw
before the first step and one after every step (the reference noises a copy of the motion latents
that it overwrites at once; we draw and discard). Nothing else consumes random numbers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .antidrift import anchor_window
from .audio_embedding import AudioEmbedding, ModelManager, prepare_audio
from .buckets import default_shift, image_to_tensor, resize_and_crop_image, resize_and_crop_masks, target_size
from .color import match_colors
from .config import VIDEO_FPS, SpeakerRegions
from .errors import InputError, Interrupted
from .prompts import unused_prompts
from .sampling import COND, DROP_AUDIO, DROP_TEXT, UNCOND, GuidanceState, call_groups, make_sampler
from .sinks import FrameSink, ResumableSink
from .teacache import TeaCache, TeaCacheConfig
from .validation import check_config
from .windows import (
    LATENT_CHANNELS,
    VAE_STRIDE_T,
    ReferenceSource,
    WindowPlan,
    audio_window,
    latent_grid,
    padded_audio_length,
    plan_run,
    window_prompts,
)

logger = logging.getLogger(__name__)


# The reference's default negative prompt for InfiniteTalk: `wan/configs/wan_multitalk_14B.py` replaces the
# shared (Chinese) `sample_neg_prompt` of Wan with this English one, and `infinitetalk-14B` uses that config.
DEFAULT_NEGATIVE_PROMPT = (
    "bright tones, overexposed, static, blurred details, subtitles, style, works, paintings, images, static, "
    "overall gray, worst quality, low quality, JPEG compression residue, ugly, incomplete, extra fingers, "
    "poorly drawn hands, poorly drawn faces, deformed, disfigured, misshapen limbs, fused fingers, still picture, "
    "messy background, three legs, many people in the background, walking backwards"
)


# ============================================================================ public data types
@dataclass
class GenerationConfig:
    """Every generation knob. Defaults are the reference's (``generate_infinitetalk.py``)."""

    prompt: str = ""
    negative_prompt: str | None = None  # None or "": the reference's default negative prompt
    mode: str = "streaming"  # "streaming" (whole audio) or "clip" (one window)
    size: str = "infinitetalk-480"  # bucket name or "WxH" (multiples of 16)
    frame_num: int = 81  # frames per window, 4n+1
    motion_frame: int = 9  # frames carried from one window to the next, 4n+1
    max_frame_num: int | None = None  # streaming cap on the video length (None: the whole audio)
    steps: int = 40
    shift: float | None = None  # None: 7 (480) / 11 (720)
    text_scale: float = 5.0
    audio_scale: float = 4.0
    seed: int = 42
    color_correction_strength: float = 1.0
    sampler: str = "euler"  # euler | unipc | dpm++
    use_apg: bool = False
    apg_momentum: float = -0.75
    apg_norm_threshold: float = 55.0
    use_teacache: bool = False
    teacache_thresh: float = 0.2
    teacache_use_ret_steps: bool = True
    batch_guidance: bool = False  # one model call for the branches that share a speaker count
    face_scale: float = 0.05  # margin of the automatic left/right speaker halves
    # ways to bound drift (infinitetalk.antidrift), off by default: frames then exactly as without them
    latent_motion: bool = False  # carry the motion frames across joins as latents (no decode -> re-encode)
    color_anchor: float = 0.0  # ΔE: anchor face and background colours to the reference past it (0: off)

    @property
    def effective_shift(self) -> float:
        return float(self.shift) if self.shift is not None else default_shift(self.size)

    @property
    def effective_negative_prompt(self) -> str:
        return self.negative_prompt if self.negative_prompt else DEFAULT_NEGATIVE_PROMPT


@dataclass
class ProgressEvent:
    window: int  # 0-based
    num_windows: int
    step: int  # 1..num_steps (0: window started)
    num_steps: int
    latent_preview: torch.Tensor | None = None  # (1, 16, T, h, w) latent after this step (not a copy)


@dataclass
class GenerationResult:
    num_frames: int
    num_windows: int
    windows_run: list[int] = field(default_factory=list)
    reference_frames: list[int] = field(default_factory=list)  # per window run
    fps: int = VIDEO_FPS


class StillImage:
    """A single image as a reference source (image-to-video): every window uses it."""

    is_video = False

    def __init__(self, image: np.ndarray):
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise InputError(f"image {image.dtype} {tuple(image.shape)}: expected uint8 (H, W, 3) RGB")
        self.image = image
        self.num_frames = 1

    def frame(self, i: int) -> np.ndarray:
        return self.image


class DeviceModelManager:
    """Simple offloading: a model is moved to ``device`` when needed and back to the CPU afterwards."""

    def __init__(self, models: dict[str, torch.nn.Module], device: torch.device | str):
        self.models, self.device = models, torch.device(device)

    def load(self, name: str) -> None:
        module = self._module(name)
        if module is not None:
            module.to(self.device)

    def offload(self, name: str) -> None:
        module = self._module(name)
        if module is not None:
            module.to("cpu")

    def _module(self, name: str):
        model = self.models.get(name)
        if model is None:
            return None
        return model if isinstance(model, torch.nn.Module) else getattr(model, "model", None)


# ============================================================================ pure helpers
def condition_mask(frame_num: int, lat_h: int, lat_w: int) -> torch.Tensor:
    """(1, 4, T_lat, h, w) mask channels: 1 on latent frame 0 only, built as the reference."""
    msk = torch.ones(1, frame_num, lat_h, lat_w)
    msk[:, 1:] = 0
    msk = torch.cat([msk[:, :1].repeat_interleave(VAE_STRIDE_T, dim=1), msk[:, 1:]], dim=1)
    msk = msk.view(1, msk.shape[1] // VAE_STRIDE_T, VAE_STRIDE_T, lat_h, lat_w)
    return msk.transpose(1, 2)


def speaker_masks(
    regions: SpeakerRegions | None, src_h: int, src_w: int, face_scale: float = 0.05
) -> torch.Tensor:
    """(3, src_h, src_w) masks: person 1, person 2, background (the complement), in source pixels.

    Boxes are ``(x_min, y_min, x_max, y_max)`` with x horizontal (columns) and y vertical (rows).
    (The reference's JSON ``bbox`` indexes rows by its first pair; the command line converts it.)
    Without boxes: left and right halves, shrunk by ``face_scale`` as the reference.
    """
    people = []
    if regions is not None and regions.bboxes:
        if len(regions.bboxes) != 2:
            raise InputError(f"two speakers need two bounding boxes, got {len(regions.bboxes)}")
        for x0, y0, x1, y1 in regions.bboxes:
            m = torch.zeros(src_h, src_w)
            m[int(y0) : int(y1), int(x0) : int(x1)] = 1
            people.append(m)
    else:
        fs = regions.face_scale if regions is not None else face_scale
        r0, r1 = int(src_h * fs), int(src_h * (1 - fs))
        half = src_w // 2
        for offset in (0, half):
            m = torch.zeros(src_h, src_w)
            m[r0:r1, int(half * fs + offset) : int(half * (1 - fs) + offset)] = 1
            people.append(m)
    background = ((people[0] + people[1]) == 0).float()
    return torch.stack([*people, background])


def frames_to_uint8(video: torch.Tensor) -> np.ndarray:
    """(1, 3, T, H, W) in [-1, 1] -> uint8 (T, H, W, 3), truncating like the reference's writer."""
    x = ((video[0].float() + 1) / 2).permute(1, 2, 3, 0) * 255
    return x.clamp(0, 255).to(torch.uint8).cpu().numpy()


def _hash_tensor(h, t: torch.Tensor, chunk_bytes: int = 64 << 20) -> None:
    """Feed shape, dtype and the C-order bytes of ``t`` to ``h``, at most ``chunk_bytes`` at a time (the
    same digest as hashing one contiguous copy, without the copy)."""
    t = t.detach()
    h.update(str((tuple(t.shape), str(t.dtype))).encode())
    for chunk in _contiguous_chunks(t, chunk_bytes):
        h.update(chunk.cpu().contiguous().reshape(-1).view(torch.uint8).numpy())


def _contiguous_chunks(t: torch.Tensor, limit: int):
    """Consecutive pieces of ``t`` along its leading dimensions, each at most ``limit`` bytes (or one row)."""
    if t.ndim == 0 or t.numel() * t.element_size() <= limit:
        if t.numel():
            yield t
        return
    row = t[0].numel() * t.element_size()
    if row > limit:
        for sub in t:
            yield from _contiguous_chunks(sub, limit)
        return
    step = max(1, limit // row)
    for a in range(0, t.shape[0], step):
        yield t[a : a + step]


# ============================================================================ the pipeline
@dataclass
class _Encoded:
    """Per-run conditioning (computed once)."""

    context: torch.Tensor  # (1, L_p, text_dim)
    context_null: torch.Tensor  # (1, L_n, text_dim)
    features: torch.Tensor  # (S, L, layers, C) audio features (a view: not copied, not padded)
    audio_length: int  # L' of the reference's mirror-padded features (see audio_window)
    masks: torch.Tensor | None  # (3, lat_h, lat_w) for two speakers
    color_reference: torch.Tensor  # (1, 3, 1, H, W) first input frame in [-1, 1]
    size: tuple[int, int]  # (H, W)
    window_contexts: list[torch.Tensor] | None = None  # per window (1, L_p, text_dim), with a prompt schedule
    window_prompts: list[str] | None = None


@dataclass
class _Window:
    """Everything one window's denoising needs."""

    plan: WindowPlan
    noise: torch.Tensor  # (1, 16, T, h, w) float32
    motion_latents: torch.Tensor  # (1, 16, n_motion, h, w)
    y: torch.Tensor  # (1, 20, T, h, w)
    clip: torch.Tensor  # (1, 257, clip_dim)
    audio: torch.Tensor  # (1, S, frame_num, 5, layers, C)


class InfiniteTalkPipeline:
    """Streaming InfiniteTalk generation over components that follow the contracts of ARCHITECTURE.md.

    ``dit(x, t, context, clip_fea, y, audio, ref_target_masks=None, block_cache=None)``,
    ``vae.encode/decode``, ``clip.encode``, ``text_encoder.encode(list[str])``,
    ``audio_encoder.encode(wave_16k)`` (only needed when the audio embedding is not given).
    """

    def __init__(
        self,
        dit,
        vae,
        clip,
        text_encoder,
        audio_encoder=None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.bfloat16,
        model_manager: ModelManager | None = None,
        spill_dir: str | Path | None = None,
    ):
        """``spill_dir``: where audio buffers too large for memory go (:mod:`infinitetalk.spill`; default the
        system's temp folder)."""
        self.dit, self.vae, self.clip = dit, vae, clip
        self.spill_dir = spill_dir
        self.text_encoder, self.audio_encoder = text_encoder, audio_encoder
        self.device, self.dtype = torch.device(device), dtype
        self.model_manager = model_manager
        self._cond_cache: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self.model_calls = 0  # forward calls made (tests, benchmarks)

    # ------------------------------------------------------------------ model placement hooks
    def _load(self, name: str) -> None:
        if self.model_manager is not None:
            self.model_manager.load(name)

    def _offload(self, name: str) -> None:
        if self.model_manager is not None:
            self.model_manager.offload(name)

    # ------------------------------------------------------------------ stage 1: inputs
    def check_inputs(self, source: ReferenceSource, audio: AudioEmbedding, config: GenerationConfig) -> None:
        """Validate early; raise ``InputError`` naming the bad value and the fix."""
        check_config(config)
        if audio.num_speakers not in (1, 2):
            raise InputError(f"audio has {audio.num_speakers} speakers: InfiniteTalk drives one or two")
        if audio.num_frames < 1:
            raise InputError("audio is shorter than one video frame (40 ms): give a longer audio file")
        if source.num_frames < 1:
            raise InputError("the reference video has no frames: give an image or a readable video")

    # ------------------------------------------------------------------ stage 2: audio
    def prepare_audio(
        self,
        speakers: Sequence[tuple[np.ndarray, int]],
        audio_type: str = "para",
        normalize: bool = True,
        noise_floor_db: float | None = None,
    ) -> AudioEmbedding:
        """:func:`infinitetalk.audio_embedding.prepare_audio` with this pipeline's audio encoder, model
        manager and spill folder."""
        return prepare_audio(
            self.audio_encoder,
            speakers,
            audio_type,
            normalize,
            spill_dir=self.spill_dir,
            model_manager=self.model_manager,
            noise_floor_db=noise_floor_db,
        )

    # ------------------------------------------------------------------ stage 3: run-wide conditioning
    def encode(
        self,
        source: ReferenceSource,
        audio: AudioEmbedding,
        config: GenerationConfig,
        plans: list[WindowPlan],
        regions: SpeakerRegions | None = None,
        prompts: Sequence[tuple[int, str]] | None = None,
    ) -> _Encoded:
        """Text contexts (once), padded audio features, speaker masks, colour reference, output size.

        ``prompts``: optional schedule ``(first video frame, prompt)``; each window then uses the prompt
        chosen by :func:`window_prompts` (every distinct prompt is encoded once).
        """
        first = source.frame(0)
        h, w = target_size(config.size, *first.shape[:2])
        self._load("text_encoder")
        context, context_null = self.text_encoder.encode([config.prompt, config.effective_negative_prompt])
        per_window, window_contexts = None, None
        if prompts:
            per_window = window_prompts(prompts, plans, config.prompt)
            for line in unused_prompts(list(prompts), per_window, audio.num_frames):
                logger.warning("prompt schedule: %s", line)
            distinct = sorted(set(per_window))
            encoded = dict(zip(distinct, self.text_encoder.encode(distinct), strict=True))
            window_contexts = [encoded[p][None].to(self.device, self.dtype) for p in per_window]
        self._offload("text_encoder")
        # The features stay where they are (in memory or file-backed), float32 and unpadded: each window
        # reads its rows through the virtual mirror padding and casts them to the model dtype (exact: a
        # cast is per element, so indexing then casting equals casting then indexing).
        features = audio.features[:, : audio.num_frames]
        audio_length = padded_audio_length(audio.num_frames, plans[-1].start + config.frame_num)
        masks = None
        if audio.num_speakers == 2:
            masks = speaker_masks(regions, first.shape[0], first.shape[1], config.face_scale)
            masks = resize_and_crop_masks(masks, (h, w))
            lat = latent_grid(config.frame_num, h, w)[1:]
            masks = (F.interpolate(masks[None], size=lat, mode="nearest")[0] > 0).float().to(self.device)
        color_ref = image_to_tensor(resize_and_crop_image(first, (h, w)))[None, :, None].to(self.device)
        return _Encoded(
            context=context[None].to(self.device, self.dtype),
            context_null=context_null[None].to(self.device, self.dtype),
            features=features,
            audio_length=audio_length,
            masks=masks,
            color_reference=color_ref,
            size=(h, w),
            window_contexts=window_contexts,
            window_prompts=per_window,
        )

    # ------------------------------------------------------------------ stage 4: one window's inputs
    def prepare_window(
        self,
        plan: WindowPlan,
        enc: _Encoded,
        source: ReferenceSource,
        config: GenerationConfig,
        motion_frames: torch.Tensor | None,
        generator: torch.Generator,
    ) -> _Window:
        """Noise (drawn first, as the reference), conditioning of the window's reference frame, motion latents."""
        h, w = enc.size
        lat_t, lat_h, lat_w = latent_grid(config.frame_num, h, w)
        noise = torch.randn(
            (LATENT_CHANNELS, lat_t, lat_h, lat_w),
            generator=generator,
            device=self.device,
            dtype=torch.float32,
        )[None]
        cond_image, y, clip = self._reference_conditioning(plan.reference_frame, enc, source, config)
        self._load("vae")
        if config.latent_motion and motion_frames is not None:  # already latents (antidrift)
            motion_latents = motion_frames.to(self.device).float()
        else:
            pixels = cond_image if motion_frames is None else motion_frames.to(self.device)
            motion_latents = self.vae.encode(pixels.to(self._vae_dtype())).float()  # (1, 16, n_motion, h, w)
        self._offload("vae")
        audio = audio_window(enc.features, plan.start, config.frame_num, enc.audio_length)[None]
        # (1, S, F, 5, layers, C)
        return _Window(plan, noise, motion_latents, y, clip, audio.to(self.device, self.dtype))

    def _vae_dtype(self) -> torch.dtype:
        return getattr(self.vae, "dtype", torch.float32)

    def _reference_conditioning(self, index: int, enc: _Encoded, source, config):
        """(cond image (1,3,1,H,W), y (1,20,T,h,w), clip (1,257,D)) for one source frame; cached per index."""
        if index in self._cond_cache:
            return self._cond_cache[index]
        h, w = enc.size
        cond = image_to_tensor(resize_and_crop_image(source.frame(index), (h, w)))[None, :, None].to(
            self.device
        )
        self._load("clip")
        clip = self.clip.encode(cond[:, :, 0]).to(self.dtype)
        self._offload("clip")
        self._load("vae")
        padded = torch.cat([cond, cond.new_zeros(1, 3, config.frame_num - 1, h, w)], dim=2)
        latents = self.vae.encode(padded.to(self._vae_dtype())).to(self.dtype)
        self._offload("vae")
        msk = condition_mask(config.frame_num, *latent_grid(config.frame_num, h, w)[1:]).to(
            self.device, self.dtype
        )
        y = torch.cat([msk, latents], dim=1)
        self._cond_cache = {index: (cond, y, clip)}  # keep one: constant memory for video sources
        return self._cond_cache[index]

    # ------------------------------------------------------------------ stage 5: denoising
    def denoise_window(
        self,
        win: _Window,
        enc: _Encoded,
        config: GenerationConfig,
        generator: torch.Generator,
        num_windows: int,
        on_progress=None,
        should_cancel=None,
    ) -> torch.Tensor:
        """Run the sampler on one window -> clean latents (1, 16, T, h, w) float32."""
        sampler = make_sampler(config.sampler, config.steps, config.effective_shift, self.device)
        guidance = GuidanceState(
            config.text_scale,
            config.audio_scale,
            config.use_apg,
            config.apg_momentum,
            config.apg_norm_threshold,
        )
        groups = call_groups(guidance.branches, win.audio.shape[1], config.batch_guidance)
        caches = self._make_caches(groups, config)
        motion, n_motion = win.motion_latents, win.motion_latents.shape[2]
        carry_noise = win.plan.index > 0  # the reference's discarded motion-noise draws
        latent = win.noise.clone()
        if carry_noise:
            self._draw_motion_noise(motion, generator)
        self._load("dit")
        for i in range(config.steps):
            if should_cancel is not None and should_cancel():
                raise Interrupted(
                    f"generation cancelled in window {win.plan.index + 1}/{num_windows}, step {i + 1}"
                )
            latent[:, :, :n_motion] = motion
            t = sampler.timesteps[i].reshape(1).to(self.device, torch.float32)
            preds = self._predict(latent, t, win, enc, groups, caches, i)
            latent = sampler.step(latent, guidance.combine(preds), i)
            if carry_noise:
                self._draw_motion_noise(motion, generator)
            latent[:, :, :n_motion] = motion
            if on_progress is not None:
                on_progress(ProgressEvent(win.plan.index, num_windows, i + 1, config.steps, latent))
        self._offload("dit")
        return latent

    def _draw_motion_noise(self, motion: torch.Tensor, generator: torch.Generator) -> None:
        torch.randn(motion.shape[1:], generator=generator, device=self.device, dtype=torch.float32)

    @staticmethod
    def _make_caches(groups, config: GenerationConfig) -> dict[tuple[str, ...], TeaCache] | None:
        if not config.use_teacache:
            return None
        tc = TeaCacheConfig(config.steps, config.teacache_thresh, config.size, config.teacache_use_ret_steps)
        return {g: TeaCache(tc) for g in groups}

    def _branch_inputs(self, branch: str, win: _Window, enc: _Encoded) -> tuple[torch.Tensor, torch.Tensor]:
        """(context (1, L, D), audio (1, S', F, 5, layers, C)) of one guidance branch."""
        silent = torch.zeros_like(win.audio[:, -1:])  # the reference: zeros_like(audio)[-1:]
        return {
            COND: (enc.context, win.audio),
            DROP_TEXT: (enc.context_null, win.audio),
            UNCOND: (enc.context_null, silent),
            DROP_AUDIO: (enc.context, silent),
        }[branch]

    def _predict(self, latent, t, win, enc, groups, caches, step) -> dict[str, torch.Tensor]:
        """Model predictions for every guidance branch, by name."""
        preds = {}
        for group in groups:
            contexts, audios = zip(*(self._branch_inputs(b, win, enc) for b in group), strict=True)
            n = len(group)
            length = max(c.shape[1] for c in contexts)
            context = torch.cat([F.pad(c, (0, 0, 0, length - c.shape[1])) for c in contexts])
            audio = torch.cat(audios)
            cache = None
            if caches is not None:
                cache = caches[group]
                cache.set_step(step)
            out = self.dit(
                latent.to(self.dtype).expand(n, -1, -1, -1, -1),
                t.expand(n),
                context,
                win.clip.expand(n, -1, -1),
                win.y.expand(n, -1, -1, -1, -1),
                audio,
                ref_target_masks=enc.masks if audio.shape[1] == 2 else None,
                block_cache=cache,
            )
            self.model_calls += 1
            for j, branch in enumerate(group):
                preds[branch] = out[j : j + 1].float()
        return preds

    # ------------------------------------------------------------------ stage 6: decoding
    def decode(self, latent: torch.Tensor, enc: _Encoded, config: GenerationConfig) -> torch.Tensor:
        """Latents -> colour-corrected video (1, 3, T, H, W) float32 in [-1, 1]."""
        self._load("vae")
        video = self.vae.decode(latent.to(self._vae_dtype())).float()
        self._offload("vae")
        video = match_colors(video, enc.color_reference, config.color_correction_strength)
        if config.color_anchor > 0:
            video = anchor_window(video, enc.color_reference, config.color_anchor)
        return video

    # ------------------------------------------------------------------ stage 7: output
    @staticmethod
    def sink_window(video: torch.Tensor, plan: WindowPlan, sink: FrameSink, frame_filter=None) -> None:
        """Write the window's new frames (trimmed to the video length) as uint8 to the sink, through
        ``frame_filter(frames, first_frame_index)`` when given (e.g. face-only compositing)."""
        frames = frames_to_uint8(video[:, :, plan.keep_from : plan.keep_from + plan.keep])
        if frame_filter is not None:
            frames = frame_filter(frames, plan.start + plan.keep_from)
        sink.write(frames)

    # ------------------------------------------------------------------ the loop
    @torch.no_grad()
    def generate(
        self,
        source: ReferenceSource | np.ndarray,
        audio: AudioEmbedding,
        config: GenerationConfig,
        sink: FrameSink,
        *,
        speaker_regions: SpeakerRegions | None = None,
        on_progress: Callable[[ProgressEvent], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
        resume: bool = False,
        fingerprint_extra: dict[str, Any] | None = None,
        prompts: Sequence[tuple[int, str]] | None = None,
        frame_filter: Callable[[np.ndarray, int], np.ndarray] | None = None,
        fingerprint: str | None = None,
    ) -> GenerationResult:
        """Generate the whole video into ``sink``, window by window.

        ``resume`` (needs a resumable sink such as :class:`SegmentStore`): continue after the last
        committed window; the output is identical to an uninterrupted run. Raises ``Interrupted`` when
        ``should_cancel()`` returns True (checked before every step); committed windows stay valid.
        ``prompts``: a schedule ``(first video frame, prompt)`` switching the prompt per window (scripts of
        several segments); ``frame_filter(frames, first_index) -> frames`` post-processes the frames before
        the sink (:class:`infinitetalk.dubbing.FaceOnlyCompositor`); neither changes the motion frames.
        ``fingerprint``: the run's, computed by its caller (:class:`infinitetalk.runs.GenerationRun`); without
        it the run is fingerprinted here from the inputs, ``fingerprint_extra``, the prompts and the filter.
        """
        source = StillImage(source) if isinstance(source, np.ndarray) else source
        self.check_inputs(source, audio, config)
        plans, total = plan_run(config, audio.num_frames, source)
        expect_windows = getattr(sink, "expect_windows", None)  # sinks that report progress per window
        if expect_windows is not None:
            expect_windows(len(plans))
        resumable = isinstance(sink, ResumableSink)
        if resume and not resumable:
            raise InputError(f"resume needs a resumable sink (SegmentStore), got {type(sink).__name__}")
        generator = torch.Generator(device=self.device).manual_seed(int(config.seed))
        motion_frames, first = None, 0
        if prompts:
            fingerprint_extra = {**(fingerprint_extra or {}), "prompts": [list(p) for p in prompts]}
        if frame_filter is not None and hasattr(frame_filter, "fingerprint"):
            fingerprint_extra = {**(fingerprint_extra or {}), **frame_filter.fingerprint()}
        if resumable:
            if fingerprint is None:
                fingerprint = self.fingerprint(source, audio, config, speaker_regions, fingerprint_extra)
            state = sink.begin(fingerprint, resume)
            if state is not None:
                first, motion_frames = self._restore(state, generator)
        result = GenerationResult(total, len(plans))
        self._cond_cache = {}
        try:
            enc = self.encode(source, audio, config, plans, speaker_regions, prompts)
            for plan in plans[first:]:
                motion_frames = self._run_window(
                    plan,
                    enc,
                    source,
                    config,
                    motion_frames,
                    generator,
                    sink,
                    len(plans),
                    on_progress,
                    should_cancel,
                    frame_filter,
                )
                result.windows_run.append(plan.index)
                result.reference_frames.append(plan.reference_frame)
            if resumable:
                sink.mark_complete()
        finally:
            self._cond_cache = {}
            sink.close()
        return result

    def _run_window(
        self,
        plan,
        enc,
        source,
        config,
        motion_frames,
        generator,
        sink,
        num_windows,
        on_progress,
        should_cancel,
        frame_filter=None,
    ) -> torch.Tensor:
        logger.info(
            "window %d/%d: frames %d..%d",
            plan.index + 1,
            num_windows,
            plan.start,
            plan.start + config.frame_num - 1,
        )
        if enc.window_contexts is not None:
            logger.info(
                "window %d/%d prompt: %s", plan.index + 1, num_windows, enc.window_prompts[plan.index]
            )
            enc = dataclasses.replace(enc, context=enc.window_contexts[plan.index])
        if on_progress is not None:
            on_progress(ProgressEvent(plan.index, num_windows, 0, config.steps))
        win = self.prepare_window(plan, enc, source, config, motion_frames, generator)
        latent = self.denoise_window(win, enc, config, generator, num_windows, on_progress, should_cancel)
        del win
        video = self.decode(latent, enc, config)  # (1, 3, T, H, W)
        self.sink_window(video, plan, sink, frame_filter)
        motion_frames = video[:, :, -config.motion_frame :].float().contiguous()  # (1, 3, m, H, W)
        if config.latent_motion:  # the window's last latents: (1, 16, (m - 1) // 4 + 1, h, w)
            motion_frames = (
                latent[:, :, -((config.motion_frame - 1) // VAE_STRIDE_T + 1) :].float().contiguous()
            )
        if isinstance(sink, ResumableSink):
            sink.commit(plan.index, self._state(plan, motion_frames, generator))
        return motion_frames

    # ------------------------------------------------------------------ resume
    @staticmethod
    def _state(plan: WindowPlan, motion_frames: torch.Tensor, generator: torch.Generator) -> dict[str, Any]:
        return {
            "window": plan.index,
            "motion_frames": motion_frames.cpu(),
            "rng_state": generator.get_state(),
        }

    def _restore(self, state: dict[str, Any], generator: torch.Generator) -> tuple[int, torch.Tensor]:
        generator.set_state(state["rng_state"])
        logger.info("resuming after window %d", state["window"] + 1)
        return state["window"] + 1, state["motion_frames"].to(self.device)

    def fingerprint(
        self,
        source: ReferenceSource,
        audio: AudioEmbedding,
        config: GenerationConfig,
        regions: SpeakerRegions | None,
        extra: dict[str, Any] | None = None,
    ) -> str:
        """Hash of everything that decides the frames: inputs, config, model shape/dtype, caller extras."""
        h = hashlib.sha256()
        h.update(json.dumps(asdict(config), sort_keys=True, default=str).encode())
        h.update(json.dumps(asdict(regions) if regions else None, default=str).encode())
        h.update(json.dumps(extra or {}, sort_keys=True, default=str).encode())
        h.update(f"{self.dtype}|{getattr(self.dit, 'config', None)}|{source.num_frames}".encode())
        h.update(np.ascontiguousarray(source.frame(0)).tobytes())
        _hash_tensor(h, audio.features)
        return h.hexdigest()
