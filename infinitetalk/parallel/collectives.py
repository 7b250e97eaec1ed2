"""The communication of sequence parallelism, on ``torch.distributed`` (NCCL on CUDA, gloo on CPU).

- Ulysses (DeepSpeed-Ulysses): an all-to-all turns "my tokens, all heads" into "all tokens, my heads",
  attention runs unchanged per head, and a second all-to-all turns it back.
- Ring attention: each process keeps its queries and passes its key/value block around the ring;
  the partial results are merged exactly with their log-sum-exp (the online softmax).

Layout everywhere ``(B, L, H, D)``, like :func:`infinitetalk.attention.attention`. Every function
counts the bytes this process receives from the others in a :class:`CommStats` (the data it needs,
whatever route NCCL or gloo gives it; benchmarks, tests).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..attention import attention


@dataclass
class CommStats:
    """Bytes this process received from other processes, by operation."""

    all_to_all: int = 0
    ring: int = 0
    gather: int = 0
    broadcast: int = 0

    @property
    def total(self) -> int:
        return self.all_to_all + self.ring + self.gather + self.broadcast

    def reset(self) -> None:
        self.all_to_all = self.ring = self.gather = self.broadcast = 0


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _global_rank(group, rank: int) -> int:
    return rank if group is None else dist.get_global_rank(group, rank)


# ============================================================================ Ulysses
def seq_to_heads(x: torch.Tensor, group, stats: CommStats) -> torch.Tensor:
    """(*P, n, H, D) my tokens, all heads -> (*P, u*n, H/u, D) the group's tokens, my heads.

    Process ``j`` of the group receives head block ``j``; token blocks come back in group-rank
    order, which is sequence order because the group's processes hold consecutive shards.
    """
    u = dist.get_world_size(group)
    *lead, n, heads, d = x.shape
    send = x.reshape(*lead, n, u, heads // u, d).movedim(-3, 0).contiguous()  # (u, *P, n, H/u, D)
    recv = torch.empty_like(send)
    dist.all_to_all_single(recv, send, group=group)
    stats.all_to_all += _nbytes(recv) * (u - 1) // u
    return recv.movedim(0, -4).reshape(*lead, u * n, heads // u, d)


def heads_to_seq(x: torch.Tensor, group, stats: CommStats) -> torch.Tensor:
    """Inverse of :func:`seq_to_heads`: (*P, u*n, H/u, D) -> (*P, n, H, D)."""
    u = dist.get_world_size(group)
    *lead, un, hu, d = x.shape
    send = x.reshape(*lead, u, un // u, hu, d).movedim(-4, 0).contiguous()  # (u, *P, n, H/u, D)
    recv = torch.empty_like(send)
    dist.all_to_all_single(recv, send, group=group)
    stats.all_to_all += _nbytes(recv) * (u - 1) // u
    return recv.movedim(0, -3).reshape(*lead, un // u, u * hu, d)


# ============================================================================ ring attention
def attention_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str):
    """Softmax attention that also returns the log-sum-exp of the scores.

    q (B, Lq, H, D), k/v (B, Lk, H, D) -> out (B, Lq, H, D) float32, lse (B, Lq, H) float32.
    Kernels: flash-attn when that backend is chosen; PyTorch's fused kernels otherwise (the CPU
    flash kernel, CUDA flash for fp16/bf16, CUDA memory-efficient for fp32); plain maths elsewhere.
    """
    if backend == "flash":
        from flash_attn import flash_attn_func

        half = q.dtype if q.dtype in (torch.float16, torch.bfloat16) else torch.bfloat16
        out, lse, _ = flash_attn_func(q.to(half), k.to(half), v.to(half), return_attn_probs=True)
        return out.float(), lse.transpose(1, 2).float()
    qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H, L, D)
    if q.device.type == "cpu":
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(qt, kt, vt)[:2]
    elif q.device.type == "cuda" and q.dtype in (torch.float16, torch.bfloat16):
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention(qt, kt, vt)[:2]
    elif q.device.type == "cuda":
        out, lse = torch.ops.aten._scaled_dot_product_efficient_attention(qt, kt, vt, None, True)[:2]
        lse = lse[..., : q.shape[1]]  # the kernel pads the lse rows to a multiple of 32
    else:
        scores = (qt.float() @ kt.float().transpose(-1, -2)) / math.sqrt(q.shape[-1])
        lse = torch.logsumexp(scores, dim=-1)
        out = torch.softmax(scores, dim=-1) @ vt.float()
    return out.transpose(1, 2).float(), lse.transpose(1, 2).float()


def _merge(out, lse, block_out, block_lse):
    """Exact merge of two softmax-attention partial results over disjoint key sets."""
    if out is None:
        return block_out, block_lse
    new_lse = torch.logaddexp(lse, block_lse)
    out = out * torch.exp(lse - new_lse)[..., None] + block_out * torch.exp(block_lse - new_lse)[..., None]
    return out, new_lse


def ring_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    group,
    valid: list[int],
    backend: str,
    stats: CommStats,
) -> torch.Tensor:
    """Attention of my queries over the keys/values of every process in ``group``.

    q/k/v (B, m, H, D) are this process's block; ``valid[j]`` is how many leading tokens of group
    rank ``j``'s block are real (the rest is padding and never attended to). The key/value blocks
    travel around the ring while the current one is attended to.
    """
    r, me = dist.get_world_size(group), dist.get_rank(group)
    nxt, prv = _global_rank(group, (me + 1) % r), _global_rank(group, (me - 1) % r)
    kv = torch.stack([k, v]).contiguous()
    out = lse = None
    for step in range(r):
        pending, incoming = None, None
        if step + 1 < r:
            incoming = torch.empty_like(kv)
            ops = [dist.P2POp(dist.isend, kv, nxt, group), dist.P2POp(dist.irecv, incoming, prv, group)]
            pending = dist.batch_isend_irecv(ops)
            stats.ring += _nbytes(incoming)
        n = valid[(me - step) % r]
        if n:
            block_out, block_lse = attention_lse(q, kv[0, :, :n], kv[1, :, :n], backend)
            out, lse = _merge(out, lse, block_out, block_lse)
        if pending is not None:
            for request in pending:
                request.wait()
            kv = incoming
    return out.to(q.dtype)


# ============================================================================ plain collectives
def gather_shards(x: torch.Tensor, dim: int, total: int, group, stats: CommStats) -> torch.Tensor:
    """Concatenate every process's equal shard along ``dim`` (rank order), cut to ``total``."""
    x = x.contiguous()
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, x, group=group)
    stats.gather += _nbytes(x) * (len(parts) - 1)  # every other shard
    return torch.cat(parts, dim=dim).narrow(dim, 0, total)


def broadcast_leading_tokens(
    x: torch.Tensor, count: int, shard: int, group, stats: CommStats
) -> torch.Tensor:
    """The first ``count`` tokens of the whole sequence, from the processes holding them.

    x (B, shard, ...) is this process's shard (rank ``j`` holds tokens ``[j*shard, (j+1)*shard)``)
    -> (B, count, ...) on every process: one broadcast per owning process (usually only rank 0).
    """
    rank = dist.get_rank(group)
    pieces = []
    for owner in range(-(-count // shard)):
        size = min(shard, count - owner * shard)
        if owner == rank:
            piece = x[:, :size].contiguous()
        else:
            piece = x.new_empty(x.shape[0], size, *x.shape[2:])
            stats.broadcast += _nbytes(piece)
        dist.broadcast(piece, src=_global_rank(group, owner), group=group)
        pieces.append(piece)
    return torch.cat(pieces, dim=1)


def local_attention(q, k, v, valid: int, backend: str) -> torch.Tensor:
    """Attention over the first ``valid`` tokens of q/k/v (B, L, H, D); padding rows stay zero."""
    if valid == q.shape[1]:
        return attention(q, k, v, backend)
    out = attention(q[:, :valid], k[:, :valid], v[:, :valid], backend)
    return torch.cat([out, out.new_zeros(out.shape[0], q.shape[1] - valid, *out.shape[2:])], dim=1)
