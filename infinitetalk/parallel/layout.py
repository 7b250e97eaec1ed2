"""Which video tokens a process holds, and the single-process strategy (the default).

The DiT asks its ``parallel`` strategy for a *plan* once per forward call (``strategy.plan(grid)``)
and routes four operations through it; everything else in a block is per token and runs on
whatever tokens the process holds:

- ``shard(x, dim)`` / ``gather(x, dim)``: whole sequence -> this process's tokens and back;
- ``self_attention(q, k, v, backend)``: attention of the held queries over *all* tokens;
- ``reference_keys(k, count)``: the keys of the first ``count`` tokens of the whole sequence
  (latent frame 0, which the two-speaker binding attends to);
- ``span``: a :class:`TokenSpan` telling which slice of the ``(frames, tokens_per_frame)`` grid the
  process holds (the audio cross-attention is per latent frame).

:data:`SINGLE_PROCESS` holds every token: its plan is the identity and plain :func:`attention`, so
the single-process forward computes exactly what it computed before the strategy existed.
:mod:`infinitetalk.parallel.sequence` holds the multi-process strategy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..attention import attention


@dataclass(frozen=True)
class TokenSpan:
    """Tokens ``[start, start + count)`` of a sequence of ``total`` tokens, ``frame_tokens`` per latent frame.

    ``count`` may run past ``total`` (the last process pads the sequence to equal shards); only the
    first ``valid`` held tokens are real.
    """

    start: int
    count: int
    total: int
    frame_tokens: int

    @classmethod
    def whole(cls, total: int, frames: int) -> TokenSpan:
        if frames <= 0 or total % frames:
            raise ValueError(f"{total} tokens do not split into {frames} latent frames")
        return cls(0, total, total, total // frames)

    @property
    def valid(self) -> int:
        """Real (not padding) tokens held."""
        return max(0, min(self.count, self.total - self.start))

    @property
    def frames(self) -> tuple[int, int]:
        """Latent frames ``[first, last)`` that the real held tokens belong to."""
        if not self.valid:
            return 0, 0
        first = self.start // self.frame_tokens
        last = -(-(self.start + self.valid) // self.frame_tokens)
        return first, last

    def to_frames(self, x: torch.Tensor) -> torch.Tensor:
        """(B, count, ...) held tokens -> (B * nf, frame_tokens, ...) grouped by latent frame.

        Partial frames at the ends are zero-filled (their rows are dropped by :meth:`from_frames`).
        """
        first, last = self.frames
        front = self.start - first * self.frame_tokens
        back = last * self.frame_tokens - self.start - self.valid
        x = x[:, : self.valid]
        if front or back:
            pad = [0, 0] * (x.dim() - 2) + [front, back]
            x = F.pad(x, pad)
        return x.reshape(x.shape[0] * (last - first), self.frame_tokens, *x.shape[2:])

    def from_frames(self, x: torch.Tensor, batch: int) -> torch.Tensor:
        """Inverse of :meth:`to_frames`: (B * nf, frame_tokens, ...) -> (B, count, ...), padding rows zero."""
        first = self.frames[0]
        front = self.start - first * self.frame_tokens
        x = x.reshape(batch, -1, *x.shape[2:])
        x = x[:, front : front + self.valid]
        if self.valid < self.count:
            pad = [0, 0] * (x.dim() - 2) + [0, self.count - self.valid]
            x = F.pad(x, pad)
        return x


class LocalPlan:
    """Every token in this process: the identity, and plain attention."""

    __slots__ = ("span",)

    def __init__(self, span: TokenSpan):
        self.span = span

    def shard(self, x: torch.Tensor, dim: int = 1) -> torch.Tensor:
        return x

    def gather(self, x: torch.Tensor, dim: int = 1) -> torch.Tensor:
        return x

    def self_attention(self, q, k, v, backend: str) -> torch.Tensor:
        return attention(q, k, v, backend)

    def reference_keys(self, k: torch.Tensor, count: int) -> torch.Tensor:
        return k[:, :count]


class SingleProcess:
    """The default strategy: one process holds the whole sequence."""

    world_size = 1

    def plan(self, grid: tuple[int, int, int]) -> LocalPlan:
        f, h, w = grid
        return LocalPlan(TokenSpan(0, f * h * w, f * h * w, h * w))

    def check_model(self, num_heads: int, backend: str) -> None:
        """Every model fits one process."""

    def __repr__(self) -> str:
        return "SingleProcess()"


SINGLE_PROCESS = SingleProcess()
