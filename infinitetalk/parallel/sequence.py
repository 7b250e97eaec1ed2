"""Sequence parallelism of the DiT forward across processes (Ulysses x ring), as xDiT's USP.

The ``N = ulysses_size * ring_size`` processes of the default process group each hold one
contiguous shard of the video tokens (``ceil(L / N)``, the last one zero-padded), in rank order.
Processes ``[i*u, (i+1)*u)`` form Ulysses group ``i`` (consecutive shards: one ring block);
processes ``{j, j+u, j+2u, ...}`` form ring group ``j`` (the same heads, every ring block).

Self-attention: all-to-all within the Ulysses group (qkv packed in one exchange) -> every token
of the ring block for ``H/u`` heads -> ring attention over the ring group (or plain attention when
``ring_size`` is 1, padding cut off) -> all-to-all back. Everything else in a block is per token,
except two things that look across tokens and are handled by the plan:

- audio cross-attention is per latent frame: the :class:`TokenSpan` tells each process which
  (possibly partial) frames its tokens belong to;
- the two-speaker binding needs every token's attention to latent frame 0's keys and min/max over
  all tokens: the frame-0 keys are broadcast from the processes holding them, and the tiny
  ``(B, 3, L)`` attention map is gathered so every process computes the positions of the whole
  sequence exactly as a single process does, then keeps its shard.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from ..attention import BACKENDS
from ..errors import InputError
from .collectives import (
    CommStats,
    broadcast_leading_tokens,
    gather_shards,
    heads_to_seq,
    local_attention,
    ring_attention,
    seq_to_heads,
)
from .layout import TokenSpan

RING_BACKENDS = ("auto", "sdpa", "flash")  # kernels that return the log-sum-exp ring attention merges


def check_sizes(ulysses_size: int, ring_size: int, world_size: int, num_heads: int | None = None) -> None:
    """Raise ``InputError`` unless ``ulysses_size * ring_size`` processes fit the run and the model."""
    for name, value in (("--ulysses_size", ulysses_size), ("--ring_size", ring_size)):
        if value < 1:
            raise InputError(f"{name} {value} must be at least 1")
    degree = ulysses_size * ring_size
    if degree != world_size:
        if world_size == 1:
            raise InputError(
                f"--ulysses_size {ulysses_size} x --ring_size {ring_size} needs {degree} processes: start it with "
                f"'torchrun --nproc_per_node {degree} -m infinitetalk ...'"
            )
        raise InputError(
            f"--ulysses_size {ulysses_size} x --ring_size {ring_size} = {degree}, but torchrun started "
            f"{world_size} processes: make the product equal --nproc_per_node (e.g. --ulysses_size {world_size})"
        )
    if num_heads is not None and num_heads % ulysses_size:
        divisors = [d for d in range(1, num_heads + 1) if num_heads % d == 0 and d <= world_size]
        raise InputError(
            f"--ulysses_size {ulysses_size} does not divide the DiT's {num_heads} attention heads: use a divisor "
            f"({', '.join(map(str, divisors))}) and put the rest in --ring_size"
        )


class SequenceParallel:
    """The multi-process strategy carried by ``WanInfiniteTalkDiT.parallel``.

    Needs an initialised default process group of ``ulysses_size * ring_size`` processes; creating
    it is a collective (every process must create it, in the same order).
    """

    def __init__(self, ulysses_size: int, ring_size: int = 1):
        if not dist.is_initialized():
            raise InputError(
                "sequence parallelism needs torch.distributed: start with torchrun (see docs/MULTI_GPU.md)"
            )
        self.world_size, self.rank = dist.get_world_size(), dist.get_rank()
        check_sizes(ulysses_size, ring_size, self.world_size)
        self.ulysses_size, self.ring_size = ulysses_size, ring_size
        self.stats = CommStats()
        self.ulysses_group = self.ring_group = None
        u, r = ulysses_size, ring_size
        for i in range(r):  # every process creates every group, in the same order
            group = dist.new_group(list(range(i * u, (i + 1) * u))) if u > 1 else None
            if self.rank // u == i:
                self.ulysses_group = group
        for j in range(u):
            group = dist.new_group(list(range(j, u * r, u))) if r > 1 else None
            if self.rank % u == j:
                self.ring_group = group

    def check_model(self, num_heads: int, backend: str) -> None:
        """Raise ``InputError`` if the model's heads or the attention backend cannot be split this way."""
        if backend not in BACKENDS:
            raise InputError(f"attention backend {backend!r} is unknown; choose one of {', '.join(BACKENDS)}")
        check_sizes(self.ulysses_size, self.ring_size, self.world_size, num_heads)
        if self.ring_size > 1 and backend not in RING_BACKENDS:
            raise InputError(
                f"attention backend {backend!r} cannot run ring attention (it returns no log-sum-exp): "
                f"choose one of {', '.join(RING_BACKENDS)} or set --ring_size 1"
            )

    def plan(self, grid: tuple[int, int, int]) -> DistributedPlan:
        f, h, w = grid
        total = f * h * w
        shard = -(-total // self.world_size)
        if shard * (self.world_size - 1) >= total:  # the last process would hold only padding
            raise InputError(
                f"a window of {total} tokens ({f} latent frames x {h}x{w}) is too small to split across "
                f"{self.world_size} processes: use fewer processes or a larger video size"
            )
        return DistributedPlan(self, TokenSpan(self.rank * shard, shard, total, h * w))

    def __repr__(self) -> str:
        return f"SequenceParallel(ulysses_size={self.ulysses_size}, ring_size={self.ring_size}, rank={self.rank})"


class DistributedPlan:
    """One forward call's token layout across the processes (see the module docstring)."""

    __slots__ = ("shard_len", "sp", "span")

    def __init__(self, sp: SequenceParallel, span: TokenSpan):
        self.sp, self.span, self.shard_len = sp, span, span.count

    def shard(self, x: torch.Tensor, dim: int = 1) -> torch.Tensor:
        """Whole sequence along ``dim`` -> this process's tokens (zero padding past the end)."""
        padded = self.shard_len * self.sp.world_size
        if x.shape[dim] < padded:
            shape = list(x.shape)
            shape[dim] = padded - x.shape[dim]
            x = torch.cat([x, x.new_zeros(shape)], dim=dim)
        return x.narrow(dim, self.span.start, self.shard_len).contiguous()

    def gather(self, x: torch.Tensor, dim: int = 1) -> torch.Tensor:
        """This process's tokens along ``dim`` -> the whole sequence, on every process."""
        return gather_shards(x, dim, self.span.total, None, self.sp.stats)

    def self_attention(self, q, k, v, backend: str) -> torch.Tensor:
        sp = self.sp
        if sp.ulysses_size > 1:
            q, k, v = seq_to_heads(torch.stack([q, k, v]), sp.ulysses_group, sp.stats).unbind(0)
        block = q.shape[1]  # tokens of this ring block (u shards)
        if sp.ring_size > 1:
            valid = [max(0, min(block, self.span.total - j * block)) for j in range(sp.ring_size)]
            out = ring_attention(q, k, v, sp.ring_group, valid, backend, sp.stats)
        else:
            out = local_attention(q, k, v, self.span.total, backend)
        if sp.ulysses_size > 1:
            out = heads_to_seq(out, sp.ulysses_group, sp.stats)
        return out

    def reference_keys(self, k: torch.Tensor, count: int) -> torch.Tensor:
        return broadcast_leading_tokens(k, count, self.shard_len, None, self.sp.stats)
