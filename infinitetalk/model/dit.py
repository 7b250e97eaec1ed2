"""Wan2.1 image-to-video DiT with the InfiniteTalk audio adapter.

Parameter names are exactly the keys of the official checkpoints (spec §2), so a state dict
from ``Wan2.1-I2V-14B-480P`` plus ``InfiniteTalk/*/infinitetalk.safetensors`` loads as is.

Block order: modulated self-attention -> text+image cross-attention -> per-latent-frame audio
cross-attention (no gate, no modulation) -> modulated FFN. Timestep embedding, modulation and
the head run in float32 like the reference.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..attention import attention
from ..config import DiTConfig
from ..parallel.layout import SINGLE_PROCESS, TokenSpan
from .audio_proj import AudioProjModel, split_audio_windows
from .ops import FP32LayerNorm, RMSNorm, resolve_operations
from .rope import apply_rope_1d, apply_rope_3d, rope_freqs, rope_grid
from .speakers import audio_positions, reference_attention_map, speaker_positions, token_masks


def sinusoidal_embedding(dim: int, t: torch.Tensor) -> torch.Tensor:
    """(B,) timesteps -> (B, dim) [cos | sin] embedding, computed in float64 then returned as float32."""
    half = dim // 2
    pos = t.to(torch.float64)
    angles = torch.outer(
        pos, torch.pow(10000, -torch.arange(half, dtype=torch.float64, device=t.device) / half)
    )
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1).float()


class SelfAttention(nn.Module):
    """Full self-attention over all video tokens with RMS-normed q/k and 3-D RoPE."""

    def __init__(self, cfg: DiTConfig, ops, kw):
        super().__init__()
        self.heads = cfg.num_heads
        self.q, self.k = ops.Linear(cfg.dim, cfg.dim, **kw), ops.Linear(cfg.dim, cfg.dim, **kw)
        self.v, self.o = ops.Linear(cfg.dim, cfg.dim, **kw), ops.Linear(cfg.dim, cfg.dim, **kw)
        self.norm_q = RMSNorm(cfg.dim, eps=cfg.eps, **kw) if cfg.qk_norm else nn.Identity()
        self.norm_k = RMSNorm(cfg.dim, eps=cfg.eps, **kw) if cfg.qk_norm else nn.Identity()

    def forward(self, x, rotations, backend, attend=attention):
        """x (B, L, C) -> output (B, L, C), and the rotated q, k (B, L, H, D) for speaker binding.

        ``attend(q, k, v, backend)``: plain attention, or a sequence-parallel plan's (x holds a shard).
        """
        b, seq, _ = x.shape
        q = self.norm_q(self.q(x)).view(b, seq, self.heads, -1)
        k = self.norm_k(self.k(x)).view(b, seq, self.heads, -1)
        v = self.v(x).view(b, seq, self.heads, -1)
        q = apply_rope_3d(q, rotations).type_as(x)
        k = apply_rope_3d(k, rotations).type_as(x)
        out = attend(q, k, v, backend).flatten(2)
        return self.o(out), q, k


class ImageTextCrossAttention(nn.Module):
    """Cross-attention to CLIP image tokens and text tokens, attended separately and summed."""

    def __init__(self, cfg: DiTConfig, ops, kw):
        super().__init__()
        self.heads = cfg.num_heads
        self.num_image_tokens = cfg.num_image_tokens
        for name in ("q", "k", "v", "o", "k_img", "v_img"):
            setattr(self, name, ops.Linear(cfg.dim, cfg.dim, **kw))
        norm = (lambda: RMSNorm(cfg.dim, eps=cfg.eps, **kw)) if cfg.qk_norm else nn.Identity
        self.norm_q, self.norm_k, self.norm_k_img = norm(), norm(), norm()

    def forward(self, x, context, backend):
        """x (B, L, C), context (B, 257 + text_len, C) -> (B, L, C)."""
        b, h = x.shape[0], self.heads
        img, txt = context[:, : self.num_image_tokens], context[:, self.num_image_tokens :]
        q = self.norm_q(self.q(x)).view(b, -1, h, x.shape[-1] // h)
        k = self.norm_k(self.k(txt)).view(b, -1, h, q.shape[-1])
        v = self.v(txt).view(b, -1, h, q.shape[-1])
        k_img = self.norm_k_img(self.k_img(img)).view(b, -1, h, q.shape[-1])
        v_img = self.v_img(img).view(b, -1, h, q.shape[-1])
        out = attention(q, k, v, backend).flatten(2) + attention(q, k_img, v_img, backend).flatten(2)
        return self.o(out)


class AudioCrossAttention(nn.Module):
    """Tokens of latent frame t attend only to the audio tokens of latent frame t.

    With two speakers, q and k are rotated by L-RoPE positions (speaker binding).
    """

    def __init__(self, cfg: DiTConfig, ops, kw):
        super().__init__()
        self.heads = cfg.num_heads
        self.class_range, self.class_interval = cfg.class_range, cfg.class_interval
        self.q_linear = ops.Linear(cfg.dim, cfg.dim, **kw)
        self.kv_linear = ops.Linear(cfg.audio_output_dim, cfg.dim * 2, **kw)
        self.proj = ops.Linear(cfg.dim, cfg.dim, **kw)

    def forward(self, x, audio_tokens, frames, backend, token_positions=None, span: TokenSpan | None = None):
        """x (B, T*S, C); audio_tokens (B, T, N_a, C_a); token_positions (B, T*S) or None -> (B, T*S, C).

        ``span``: x holds only these tokens of the T*S (sequence parallelism); default all of them.
        """
        b, seq, dim = x.shape
        h, hd = self.heads, dim // self.heads
        span = span or TokenSpan.whole(seq, frames)
        first, last = span.frames  # the latent frames x's tokens belong to
        frames, audio_tokens = last - first, audio_tokens[:, first:last]
        n_audio = audio_tokens.shape[2]
        q = self.q_linear(x).view(b, seq, h, hd)
        k, v = self.kv_linear(audio_tokens).view(b, frames, n_audio, 2, h, hd).unbind(3)  # (B, T, N_a, H, D)
        if token_positions is not None:
            q = apply_rope_1d(q.transpose(1, 2), token_positions).transpose(1, 2)
            pos = audio_positions(2, n_audio // 2, frames, self.class_range, self.class_interval, x.device)
            k = apply_rope_1d(k.reshape(b, frames * n_audio, h, hd).transpose(1, 2), pos.reshape(-1))
            k = k.transpose(1, 2).reshape(b, frames, n_audio, h, hd)
        q = span.to_frames(q)  # (B*T, S, H, D)
        out = attention(
            q, k.reshape(b * frames, n_audio, h, hd), v.reshape(b * frames, n_audio, h, hd), backend
        )
        return self.proj(span.from_frames(out, b).reshape(b, seq, dim))


class DiTBlock(nn.Module):
    def __init__(self, cfg: DiTConfig, ops, kw):
        super().__init__()
        self.norm1 = FP32LayerNorm(cfg.dim, cfg.eps, **kw)
        self.self_attn = SelfAttention(cfg, ops, kw)
        self.norm3 = (
            FP32LayerNorm(cfg.dim, cfg.eps, affine=True, **kw) if cfg.cross_attn_norm else nn.Identity()
        )
        self.cross_attn = ImageTextCrossAttention(cfg, ops, kw)
        self.norm2 = FP32LayerNorm(cfg.dim, cfg.eps, **kw)
        self.ffn = nn.Sequential(
            ops.Linear(cfg.dim, cfg.ffn_dim, **kw),
            nn.GELU(approximate="tanh"),
            ops.Linear(cfg.ffn_dim, cfg.dim, **kw),
        )
        self.modulation = nn.Parameter(torch.zeros(1, 6, cfg.dim, device=kw["device"], dtype=torch.float32))
        self.audio_cross_attn = AudioCrossAttention(cfg, ops, kw)
        self.norm_x = (
            FP32LayerNorm(cfg.dim, cfg.eps, affine=True, **kw) if cfg.norm_input_visual else nn.Identity()
        )
        self.class_range, self.class_interval = cfg.class_range, cfg.class_interval

    def forward(self, x, e0, ctx: BlockContext):
        """x (B, L, C) in the model dtype; e0 (B, 6, C) float32."""
        dtype = x.dtype
        shift_sa, scale_sa, gate_sa, shift_ff, scale_ff, gate_ff = (
            self.modulation.to(e0.device, torch.float32) + e0
        ).chunk(6, dim=1)

        # 1. modulated self-attention
        y, q, k = self.self_attn(
            (self.norm1(x).float() * (1 + scale_sa) + shift_sa).to(dtype),
            ctx.rotations,
            ctx.backend,
            ctx.seq.self_attention,
        )
        x = (x + y * gate_sa).to(dtype)

        # 2. text + image cross-attention
        x = x + self.cross_attn(self.norm3(x), ctx.context, ctx.backend)

        # 3. audio cross-attention (two speakers: bind each face to its voice with L-RoPE)
        positions = None if ctx.region_tokens is None else self._speaker_positions(q, k, ctx)
        x = x + self.audio_cross_attn(
            self.norm_x(x), ctx.audio_tokens, ctx.grid[0], ctx.backend, positions, ctx.seq.span
        )

        # 4. modulated feed-forward
        y = self.ffn((self.norm2(x).float() * (1 + scale_ff) + shift_ff).to(dtype))
        return (x + y * gate_ff).to(dtype)

    def _speaker_positions(self, q, k, ctx: BlockContext) -> torch.Tensor:
        """L-RoPE positions (B, L) of the held tokens, from the whole sequence's map on frame 0."""
        ref_k = ctx.seq.reference_keys(k, ctx.region_tokens.shape[1])  # (B, Lref, H, D) frame-0 keys
        amap = ctx.seq.gather(reference_attention_map(q, ref_k, ctx.region_tokens), dim=2)  # (B, 3, L)
        positions = torch.stack([speaker_positions(m, self.class_range, self.class_interval) for m in amap])
        return ctx.seq.shard(positions, dim=1)


class BlockContext:
    """Per-call inputs shared by every block (avoids long argument lists).

    ``seq``: the token plan of the model's ``parallel`` strategy (which tokens this process holds,
    how attention reaches the others); the identity for a single process.
    """

    __slots__ = ("audio_tokens", "backend", "context", "grid", "region_tokens", "rotations", "seq")

    def __init__(self, context, audio_tokens, grid, rotations, region_tokens, backend, seq):
        self.context, self.audio_tokens, self.grid = context, audio_tokens, grid
        self.rotations, self.region_tokens, self.backend = rotations, region_tokens, backend
        self.seq = seq


class Head(nn.Module):
    def __init__(self, cfg: DiTConfig, ops, kw):
        super().__init__()
        self.norm = FP32LayerNorm(cfg.dim, cfg.eps, **kw)
        self.head = ops.Linear(cfg.dim, math.prod(cfg.patch_size) * cfg.out_dim, **kw)
        self.modulation = nn.Parameter(torch.zeros(1, 2, cfg.dim, device=kw["device"], dtype=torch.float32))

    def forward(self, x, e):
        """x (B, L, C), e (B, C) float32 -> (B, L, prod(patch) * out_dim) float32."""
        shift, scale = (self.modulation.to(e.device, torch.float32) + e[:, None]).chunk(2, dim=1)
        return self.head(self.norm(x).float() * (1 + scale) + shift).float()


class WanInfiniteTalkDiT(nn.Module):
    """The denoiser: predicts the flow ``v = noise - x0`` for one window of latents."""

    # Policy: parameters kept in float32 whatever the load dtype (the reference runs them in fp32).
    fp32_modules = ("time_embedding", "time_projection", "head", "modulation")
    # The repeated transformer blocks: what block swap / offloading moves between devices.
    swappable_blocks = "blocks"

    def __init__(self, config: DiTConfig, device=None, dtype=None, operations=None):
        super().__init__()
        self.config = cfg = config
        ops = resolve_operations(operations)
        kw = {"device": device, "dtype": dtype}
        fp32 = {"device": device, "dtype": torch.float32}
        self.patch_embedding = ops.Conv3d(cfg.in_dim, cfg.dim, cfg.patch_size, stride=cfg.patch_size, **kw)
        self.text_embedding = nn.Sequential(
            ops.Linear(cfg.text_dim, cfg.dim, **kw),
            nn.GELU(approximate="tanh"),
            ops.Linear(cfg.dim, cfg.dim, **kw),
        )
        self.time_embedding = nn.Sequential(
            ops.Linear(cfg.freq_dim, cfg.dim, **fp32), nn.SiLU(), ops.Linear(cfg.dim, cfg.dim, **fp32)
        )
        self.time_projection = nn.Sequential(nn.SiLU(), ops.Linear(cfg.dim, cfg.dim * 6, **fp32))
        self.blocks = nn.ModuleList([DiTBlock(cfg, ops, kw) for _ in range(cfg.num_layers)])
        self.head = Head(cfg, ops, fp32)
        self.img_emb = ImageProjection(cfg.clip_dim, cfg.dim, ops, kw)
        self.audio_proj = AudioProjModel(cfg, operations=ops, **kw)
        self.attention_backend = "sdpa"
        # How the tokens of a forward are laid out over processes: infinitetalk.parallel
        self.parallel = SINGLE_PROCESS
        self._compute_dtype = None
        self._freqs = None

    @property
    def compute_dtype(self) -> torch.dtype:
        """Activation dtype: the storage dtype of the block weights, bf16 for fp8/quantised storage."""
        if self._compute_dtype is not None:
            return self._compute_dtype
        dtype = self.blocks[0].self_attn.q.weight.dtype if len(self.blocks) else torch.float32
        return dtype if dtype in (torch.float32, torch.float16, torch.bfloat16) else torch.bfloat16

    @compute_dtype.setter
    def compute_dtype(self, dtype: torch.dtype | None) -> None:
        self._compute_dtype = dtype

    # ------------------------------------------------------------------ embeddings
    def rope_freqs(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """The (1024, head_dim/2) complex128 RoPE table on ``device``: built on the host and copied once
        per device, so a forward builds its rotations on the GPU instead of uploading them every call."""
        device = torch.device(device)
        if self._freqs is None or self._freqs.device != device:
            self._freqs = rope_freqs(self.config.head_dim).to(device)
        return self._freqs

    def embed_time(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) timesteps in [0, 1000] -> e (B, C), e0 (B, 6, C), both float32."""
        e = self.time_embedding(sinusoidal_embedding(self.config.freq_dim, t)).float()
        e0 = self.time_projection(e).float().unflatten(1, (6, self.config.dim))
        return e, e0

    def embed_context(self, context: torch.Tensor, clip_fea: torch.Tensor, dtype) -> torch.Tensor:
        """Text (B, L<=text_len, text_dim) zero-padded to text_len, image (B, 257, clip_dim) -> (B, 257+text_len, C)."""
        pad = self.config.text_len - context.shape[1]
        if pad < 0:
            raise ValueError(
                f"text context has {context.shape[1]} tokens; the model takes at most {self.config.text_len}"
            )
        context = torch.nn.functional.pad(context, (0, 0, 0, pad))
        text = self.text_embedding(context.to(dtype))
        image = self.img_emb(clip_fea.to(dtype))
        return torch.cat([image, text], dim=1).to(dtype)

    def embed_audio(self, audio: torch.Tensor, dtype) -> torch.Tensor:
        """(B, S, F_video, 5, blocks, C) -> (B, T, S*tokens, C_a): speakers' token sets concatenated."""
        b, s = audio.shape[:2]
        first, later = split_audio_windows(audio.flatten(0, 1).to(dtype), self.config.vae_scale)
        tokens = self.audio_proj(first, later)  # (B*S, T, tokens, C_a)
        tokens = tokens.unflatten(0, (b, s)).permute(0, 2, 1, 3, 4)  # (B, T, S, tokens, C_a)
        return tokens.flatten(2, 3).to(dtype)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        context: torch.Tensor,
        clip_fea: torch.Tensor,
        y: torch.Tensor,
        audio: torch.Tensor,
        ref_target_masks: torch.Tensor | None = None,
        block_cache=None,
    ) -> torch.Tensor:
        """Predict the flow for latents x (B, 16, T, h, w) at timesteps t (B,) -> (B, 16, T, h, w) float32.

        y (B, 20, T, h, w): mask + conditioning latents. audio (B, S, F_video, 5, blocks, C).
        ref_target_masks (S+1, H, W): person regions + background, needed when S == 2.
        block_cache: optional step cache (TeaCache) with ``run(x, e, e0, run_blocks) -> x``.
        """
        dtype = self.compute_dtype
        # 1. patchify: (B, 36, T, h, w) -> (B, T'*h'*w', C)
        tokens = self.patch_embedding(torch.cat([x, y], dim=1).to(dtype))
        grid = tuple(tokens.shape[2:])
        tokens = tokens.flatten(2).transpose(1, 2).to(dtype)

        # 2. embeddings: time (fp32), text + image context, audio tokens per latent frame
        e, e0 = self.embed_time(t)
        seq = self.parallel.plan(grid)  # which tokens this process holds (all, for one process)
        ctx = BlockContext(
            context=self.embed_context(context, clip_fea, dtype),
            audio_tokens=self.embed_audio(audio, dtype),
            grid=grid,
            rotations=seq.shard(rope_grid(self.rope_freqs(tokens.device), grid), dim=0),
            region_tokens=self._region_tokens(ref_target_masks, audio.shape[1], grid, tokens.device),
            backend=self.attention_backend,
            seq=seq,
        )
        tokens = seq.shard(tokens)  # (B, L_held, C)

        # 3. transformer blocks (optionally through a step cache)
        def run_blocks(h: torch.Tensor) -> torch.Tensor:
            for block in self.blocks:
                h = block(h, e0, ctx)
            return h

        tokens = run_blocks(tokens) if block_cache is None else block_cache.run(tokens, e, e0, run_blocks)

        # 4. head (on the held tokens), gather the sequence, unpatchify
        return self.unpatchify(seq.gather(self.head(tokens, e)), grid)

    def _region_tokens(self, masks, num_speakers, grid, device):
        if num_speakers == 1:
            return None  # one speaker: no binding, and no attention map to compute
        if num_speakers != 2:
            raise ValueError(f"InfiniteTalk binds one or two speakers, got {num_speakers}")
        if masks is None or masks.shape[0] != 3:
            raise ValueError(
                "two speakers need ref_target_masks of shape (3, H, W): person 1, person 2, background"
            )
        return token_masks(masks.to(device), grid[1:])

    def unpatchify(self, x: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """(B, T*h*w, pt*ph*pw*C) -> (B, C, T*pt, h*ph, w*pw)."""
        pt, ph, pw = self.config.patch_size
        f, h, w = grid
        c = self.config.out_dim
        x = x.view(x.shape[0], f, h, w, pt, ph, pw, c)
        x = torch.einsum("bfhwpqrc->bcfphqwr", x)
        return x.reshape(x.shape[0], c, f * pt, h * ph, w * pw)


class ImageProjection(nn.Module):
    """CLIP tokens -> model width: LayerNorm, Linear, GELU, Linear, LayerNorm (keys ``img_emb.proj.{0,1,3,4}``)."""

    def __init__(self, in_dim: int, out_dim: int, ops, kw):
        super().__init__()
        self.proj = nn.Sequential(
            ops.LayerNorm(in_dim, **kw),
            ops.Linear(in_dim, in_dim, **kw),
            nn.GELU(),
            ops.Linear(in_dim, out_dim, **kw),
            ops.LayerNorm(out_dim, **kw),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)
