"""Typed configuration objects.

Every model dimension is recovered from checkpoint tensor shapes by the loaders
(:mod:`infinitetalk.loading`); the defaults below are the real 14B values and are only
used when a caller builds a model by hand.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import InputError

_BOX = re.compile(
    r"^\s*(\d+(?:\.\d+)?)\s*,\s*(\d+(?:\.\d+)?)\s*,\s*(\d+(?:\.\d+)?)\s*,\s*(\d+(?:\.\d+)?)\s*$"
)


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
    video_fps: int = 25
    num_layers: int = 12
    hidden_size: int = 768
    do_normalize: bool = False


@dataclass
class SpeakerRegions:
    """Person regions for two-speaker binding, in source-image pixels.

    ``bboxes`` holds one ``(x_min, y_min, x_max, y_max)`` per speaker; when empty, the
    left and right halves of the image are used (shrunk by ``face_scale`` as in the
    reference).
    """

    bboxes: list[tuple[float, float, float, float]] = field(default_factory=list)
    face_scale: float = 0.05

    @classmethod
    def parse(cls, text: str, name: str = "speaker_boxes") -> SpeakerRegions:
        """``'x0,y0,x1,y1; x0,y0,x1,y1'`` (pixels; ``;`` or newlines between people) -> two boxes."""
        parts = [p for p in re.split(r"[;\n]", text) if p.strip()]
        boxes = []
        for part in parts:
            m = _BOX.match(part)
            if m is None:
                raise InputError(
                    f"{name}: '{part.strip()}' is not 'x0,y0,x1,y1' (pixels, e.g. '0,0,416,480')"
                )
            x0, y0, x1, y1 = (float(v) for v in m.groups())
            if x1 <= x0 or y1 <= y0:
                raise InputError(f"{name}: '{part.strip()}' is empty: x1 must exceed x0 and y1 exceed y0")
            boxes.append((x0, y0, x1, y1))
        if len(boxes) != 2:
            raise InputError(f"{name}: give exactly two boxes (person 1; person 2), got {len(boxes)}")
        return cls(bboxes=boxes)

    @classmethod
    def from_masks(cls, masks, name: str = "speaker_masks") -> SpeakerRegions:
        """Two masks ``(2, H, W)`` (values > 0.5 inside) -> their bounding boxes in pixels."""
        import torch

        if masks.ndim != 3 or masks.shape[0] != 2:
            raise InputError(
                f"{name}: expected a batch of 2 masks (person 1, person 2), got shape {tuple(masks.shape)}"
            )
        boxes = []
        for i, mask in enumerate(masks):
            ys, xs = torch.nonzero(mask > 0.5, as_tuple=True)
            if ys.numel() == 0:
                raise InputError(f"{name}: mask {i + 1} is empty: paint the region of person {i + 1}")
            boxes.append((float(xs.min()), float(ys.min()), float(xs.max()) + 1, float(ys.max()) + 1))
        return cls(bboxes=boxes)
