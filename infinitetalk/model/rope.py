"""Rotary position embeddings.

* 3-D RoPE of the Wan DiT: the head dimension is split between time, height and width
  (44/42/42 of 128) and each part rotates by its own axis position. Tables are complex and
  computed in float64, as in the reference.
* 1-D L-RoPE of InfiniteTalk's speaker binding: adjacent channel pairs rotate by a per-token
  (fractional) position.
"""

from __future__ import annotations

import torch


def rope_axis_dims(head_dim: int) -> tuple[int, int, int]:
    """Real channels given to (t, h, w): ``d - 4*(d//6), 2*(d//6), 2*(d//6)``."""
    part = 2 * (head_dim // 6)
    return head_dim - 2 * part, part, part


def rope_table(max_len: int, dim: int, theta: float = 10000.0) -> torch.Tensor:
    """Complex rotations ``exp(i * pos * theta^(-2j/dim))`` -> (max_len, dim/2) complex128."""
    if dim % 2:
        raise ValueError(f"RoPE dim must be even, got {dim}")
    inv = 1.0 / torch.pow(theta, torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    angles = torch.outer(torch.arange(max_len, dtype=torch.float64), inv)
    return torch.polar(torch.ones_like(angles), angles)


def rope_freqs(head_dim: int, max_len: int = 1024) -> torch.Tensor:
    """Concatenated (t, h, w) tables -> (max_len, head_dim/2) complex128."""
    return torch.cat([rope_table(max_len, d) for d in rope_axis_dims(head_dim)], dim=1)


def rope_grid(freqs: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """Per-token rotations for a (f, h, w) token grid -> (f*h*w, 1, head_dim/2) complex."""
    f, h, w = grid
    c = freqs.shape[1]
    ct, ch, cw = c - 2 * (c // 3), c // 3, c // 3
    ft, fh, fw = freqs.split([ct, ch, cw], dim=1)
    table = torch.cat(
        [
            ft[:f].view(f, 1, 1, ct).expand(f, h, w, ct),
            fh[:h].view(1, h, 1, ch).expand(f, h, w, ch),
            fw[:w].view(1, 1, w, cw).expand(f, h, w, cw),
        ],
        dim=-1,
    )
    return table.reshape(f * h * w, 1, c)


def apply_rope_3d(x: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """Rotate (B, L, H, D) by ``rope_grid`` rotations (L, 1, D/2); returns float32 like the reference."""
    b, seq, heads, dim = x.shape
    xc = torch.view_as_complex(x.to(torch.float64).reshape(b, seq, heads, dim // 2, 2))
    out = torch.view_as_real(xc * rotations.to(xc.device)).flatten(3)
    return out.float()


def rope_1d_angles(positions: torch.Tensor, head_dim: int, base: float = 10000.0) -> torch.Tensor:
    """Angles for L-RoPE: positions (..., L) -> (..., L, head_dim), each frequency repeated for its pair."""
    inv = 1.0 / (base ** (torch.arange(0, head_dim, 2, device=positions.device).float() / head_dim))
    angles = positions.float()[..., None] * inv
    return angles.repeat_interleave(2, dim=-1)


def rotate_pairs(x: torch.Tensor) -> torch.Tensor:
    """(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...)."""
    pairs = x.unflatten(-1, (-1, 2))
    return torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)


def apply_rope_1d(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Rotate x (B, H, L, D) by per-token positions (L,) or (B, L); computed in float32."""
    angles = rope_1d_angles(positions, x.shape[-1])  # (L, D) or (B, L, D)
    if angles.dim() == 3:
        angles = angles[:, None]  # (B, 1, L, D)
    xf = x.float()
    out = xf * angles.cos() + rotate_pairs(xf) * angles.sin()
    return out.type_as(x)
