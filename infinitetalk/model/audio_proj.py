"""InfiniteTalk audio projection: wav2vec2 windows -> 32 audio tokens per latent frame.

Audio features arrive per video frame as a window of ``audio_window`` (5) wav2vec2 frames at
offsets -2..+2, each holding ``blocks`` (12) stacked layer outputs of ``channels`` (768).
Latent frame 0 covers video frame 0 alone; every later latent frame covers ``vae_scale`` (4)
video frames, summarised by 8 audio frames: offsets -2,-1,0 of its first frame, the centre of
each middle frame, and 0,+1,+2 of its last frame.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import DiTConfig
from .ops import FP32LayerNorm, resolve_operations


def split_audio_windows(audio: torch.Tensor, vae_scale: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, F_video, W, blocks, C) -> first (N, 1, W, blocks, C), later (N, T-1, W+scale-1, blocks, C).

    ``F_video`` must be ``1 + vae_scale * (T - 1)`` for T latent frames.
    """
    n, frames, window, blocks, ch = audio.shape
    if (frames - 1) % vae_scale:
        raise ValueError(f"audio covers {frames} video frames; expected 1 + {vae_scale}*k")
    mid = window // 2
    first = audio[:, :1]
    groups = audio[:, 1:].reshape(n, (frames - 1) // vae_scale, vae_scale, window, blocks, ch)
    head = groups[:, :, 0, : mid + 1]  # (N, T-1, mid+1, blocks, C): offsets -2..0 of the first frame
    middle = groups[:, :, 1:-1, mid]  # (N, T-1, scale-2, blocks, C): centre of each middle frame
    tail = groups[:, :, -1, mid:]  # (N, T-1, window-mid, blocks, C): offsets 0..+2 of the last frame
    return first, torch.cat([head, middle, tail], dim=2)


class AudioProjModel(nn.Module):
    """Keys: ``proj1`` (first latent frame), ``proj1_vf`` (later frames), ``proj2``, ``proj3``, ``norm``."""

    def __init__(self, config: DiTConfig, device=None, dtype=None, operations=None):
        super().__init__()
        ops = resolve_operations(operations)
        kw = {"device": device, "dtype": dtype}
        per_frame = config.audio_blocks * config.audio_channels
        inter = config.audio_intermediate_dim
        self.context_tokens = config.audio_context_tokens
        self.output_dim = config.audio_output_dim
        self.proj1 = ops.Linear(config.audio_window * per_frame, inter, **kw)
        self.proj1_vf = ops.Linear(config.audio_window_vf * per_frame, inter, **kw)
        self.proj2 = ops.Linear(inter, inter, **kw)
        self.proj3 = ops.Linear(inter, config.audio_context_tokens * config.audio_output_dim, **kw)
        if config.norm_output_audio:
            self.norm = FP32LayerNorm(config.audio_output_dim, eps=1e-5, affine=True, **kw)
        else:
            self.norm = nn.Identity()

    def forward(self, first: torch.Tensor, later: torch.Tensor) -> torch.Tensor:
        """first (N, 1, 5, blocks, C), later (N, T-1, 8, blocks, C) -> (N, T, tokens, out_dim)."""
        n = first.shape[0]
        h_first = torch.relu(self.proj1(first.flatten(2)))  # (N, 1, inter)
        h_later = torch.relu(self.proj1_vf(later.flatten(2)))  # (N, T-1, inter)
        h = torch.relu(self.proj2(torch.cat([h_first, h_later], dim=1)))  # (N, T, inter)
        tokens = self.proj3(h).unflatten(-1, (self.context_tokens, self.output_dim))
        return self.norm(tokens).reshape(n, -1, self.context_tokens, self.output_dim)
