"""Two-speaker binding (L-RoPE) of InfiniteTalk.

Every video token is given a 1-D position from how strongly it attends to each person's region
of the reference frame: person 1 tokens land in ``[0, interval]``, person 2 tokens in
``[range - interval, range]`` and background tokens at ``range / 2``. Audio tokens of person 1 sit
at the centre of person 1's range, those of person 2 at the centre of person 2's range, so
rotary attention binds each face to its own voice.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def token_masks(masks: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
    """(classes, H, W) region masks -> (classes, h*w) float {0,1} on the token grid (nearest)."""
    resized = F.interpolate(masks[None].float(), size=grid_hw, mode="nearest")[0]
    return (resized > 0).flatten(1).float()


def reference_attention_map(q: torch.Tensor, k: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Mean-over-heads attention mass that each token puts on each region of the reference frame.

    q: (B, L, H, D) all video tokens; k: (B, Lref, H, D) tokens of latent frame 0;
    masks: (classes, Lref) -> (B, classes, L). Computed one head at a time so memory stays
    at (B, L, Lref) instead of (B, H, L, Lref).
    """
    weights = masks.to(q.dtype) / masks.sum(dim=1, keepdim=True).clamp_min(1).to(q.dtype)  # (C, Lref)
    scale = q.shape[-1] ** -0.5
    total = None
    for head in range(q.shape[2]):
        probs = torch.softmax((q[:, :, head] * scale) @ k[:, :, head].transpose(1, 2), dim=-1)  # (B, L, Lref)
        part = probs @ weights.T  # (B, L, C)
        total = part if total is None else total + part
    return (total / q.shape[2]).transpose(1, 2)


def _rescale(values: torch.Tensor, low: float, high: float, eps: float = 1e-8) -> torch.Tensor:
    """Map values linearly from their own [min, max] onto [low, high]."""
    vmin, vmax = values.min(), values.max()
    return (values - vmin) / (vmax - vmin + eps) * (high - low) + low


def speaker_positions(attn_map: torch.Tensor, class_range: int = 24, class_interval: int = 4) -> torch.Tensor:
    """(classes=3, L) attention map of one sample -> (L,) L-RoPE positions of the video tokens."""
    person1 = _rescale(attn_map[0], 0, class_interval)
    person2 = _rescale(attn_map[1], class_range - class_interval, class_range)
    background = torch.full_like(person1, class_range // 2)
    choices = torch.stack([person1, person2, background], dim=1)  # (L, 3)
    winner = attn_map.argmax(dim=0)  # (L,)
    return choices.gather(1, winner[:, None])[:, 0]


def audio_positions(
    num_speakers: int,
    tokens_per_speaker: int,
    frames: int,
    class_range: int = 24,
    class_interval: int = 4,
    device=None,
) -> torch.Tensor:
    """L-RoPE positions of the audio tokens, (frames, speakers*tokens): centre of each speaker's range."""
    centres = [class_interval / 2, class_range - class_interval / 2]
    if num_speakers != 2:
        raise ValueError(f"speaker binding needs exactly 2 speakers, got {num_speakers}")
    per_frame = torch.cat([torch.full((tokens_per_speaker,), c, device=device) for c in centres])
    return per_frame.expand(frames, -1)
