"""Typed configuration objects.

Every model dimension is recovered from checkpoint tensor shapes by the loaders
(:mod:`infinitetalk.loading`); the defaults below are the real 14B values and are only
used when a caller builds a model by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field

VIDEO_FPS = 25  # InfiniteTalk's video rate: frames per second of every video it makes


@dataclass(frozen=True)
class DiTConfig:
    """Shape of a Wan2.1 I2V DiT carrying the InfiniteTalk audio adapter.

    Field names follow the reference ``WanModel`` arguments where one exists.
    """

    # --- Wan2.1 I2V backbone -------------------------------------------------------------
    dim: int = 5120
    ffn_dim: int = 13824
    freq_dim: int = 256
    num_heads: int = 40
    num_layers: int = 40
    in_dim: int = 36  # 16 noisy latent + 4 mask + 16 conditioning latent channels
    out_dim: int = 16
    patch_size: tuple[int, int, int] = (1, 2, 2)
    text_len: int = 512
    text_dim: int = 4096
    clip_dim: int = 1280
    num_image_tokens: int = 257  # CLIP ViT-H/14 at 224px: 16*16 patches + class token
    eps: float = 1e-6
    qk_norm: bool = True
    cross_attn_norm: bool = True

    # --- InfiniteTalk audio adapter ------------------------------------------------------
    audio_window: int = 5  # audio frames around each video frame (-2..+2)
    vae_scale: int = 4  # video frames per latent frame (VAE temporal stride)
    audio_blocks: int = 12  # wav2vec2 transformer layers stacked per audio frame
    audio_channels: int = 768  # wav2vec2 hidden size
    audio_intermediate_dim: int = 512
    audio_output_dim: int = 768  # width of the audio tokens fed to audio cross-attention
    audio_context_tokens: int = 32  # tokens per latent frame per speaker
    norm_output_audio: bool = True
    norm_input_visual: bool = True
    class_range: int = 24  # L-RoPE speaker-binding range
    class_interval: int = 4

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def audio_window_vf(self) -> int:
        """Audio frames per later latent frame: 3 + 2 middle centres + 3 = window + scale - 1."""
        return self.audio_window + self.vae_scale - 1

    def __post_init__(self) -> None:
        if self.dim % self.num_heads:
            raise ValueError(f"DiT dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if self.head_dim % 2:
            raise ValueError(f"DiT head_dim {self.head_dim} must be even for RoPE")


@dataclass(frozen=True)
class AudioEncoderConfig:
    """What the pipeline needs to know about the wav2vec2 encoder."""

    sample_rate: int = 16000
    video_fps: int = VIDEO_FPS
    num_layers: int = 12
    hidden_size: int = 768
    do_normalize: bool = False


@dataclass
class SpeakerRegions:
    """Person regions for two-speaker binding, in source-image pixels.

    ``bboxes`` holds one ``(x_min, y_min, x_max, y_max)`` per speaker; when empty, the
    left and right halves of the image are used (shrunk by ``face_scale`` as in the
    reference). :func:`infinitetalk.validation.speaker_regions` and
    :func:`~infinitetalk.validation.parse_speaker_regions` build them from box text or masks.
    """

    bboxes: list[tuple[float, float, float, float]] = field(default_factory=list)
    face_scale: float = 0.05
