"""Numerics of the DiT + InfiniteTalk adapter on a tiny random config.

The strongest check here, ``test_matches_reference_transcription``, runs a literal transcription
of the reference forward (``wan/modules/multitalk_model.py`` at MeiGen-AI/InfiniteTalk 0107cd9:
per-sample complex RoPE, head-chunked attention maps, einops-style audio windows, per-class
mask loop) written independently of the library's restructured code, on the same weights.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from infinitetalk.config import DiTConfig
from infinitetalk.model.audio_proj import split_audio_windows
from infinitetalk.model.dit import AudioCrossAttention, WanInfiniteTalkDiT
from infinitetalk.model.rope import rope_axis_dims, rope_freqs, rope_grid
from infinitetalk.model.speakers import reference_attention_map, speaker_positions

TINY = DiTConfig(
    dim=256, ffn_dim=512, num_heads=2, num_layers=2, text_dim=64, clip_dim=32,
    audio_blocks=2, audio_channels=32, audio_intermediate_dim=64, audio_output_dim=64,
)  # fmt: skip


def random_model(seed: int = 0, cfg: DiTConfig = TINY) -> WanInfiniteTalkDiT:
    torch.manual_seed(seed)
    model = WanInfiniteTalkDiT(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("modulation"):
                p.copy_(torch.randn_like(p) / cfg.dim**0.5)
            elif p.dim() == 1 and ("norm" in name or name.endswith(("proj.0.weight", "proj.4.weight"))):
                p.copy_(1 + 0.1 * torch.randn_like(p)) if name.endswith("weight") else p.normal_(0, 0.1)
            else:
                p.normal_(0, 1.0 / math.sqrt(p.shape[-1] if p.dim() > 1 else cfg.dim))
    return model.eval()


def random_inputs(
    seed: int, speakers: int, batch: int = 1, frames: int = 9, hw=(8, 12), cfg: DiTConfig = TINY
):
    g = torch.Generator().manual_seed(seed)
    t_lat = (frames - 1) // 4 + 1
    x = torch.randn(batch, 16, t_lat, *hw, generator=g)
    y = torch.randn(batch, 20, t_lat, *hw, generator=g)
    t = torch.full((batch,), 731.5)
    context = torch.randn(batch, 7, cfg.text_dim, generator=g)
    clip = torch.randn(batch, 257, cfg.clip_dim, generator=g)
    audio = torch.randn(batch, speakers, frames, 5, cfg.audio_blocks, cfg.audio_channels, generator=g)
    masks = torch.zeros(3, *hw)
    masks[0, :, : hw[1] // 2] = 1
    masks[1, :, hw[1] // 2 :] = 1
    masks[0, 0, 0] = 0  # a little background
    masks[2] = 1 - masks[0] - masks[1]
    return x, t, context, clip, y, audio, masks


# ----------------------------------------------------------------------------- reference transcription
def _ref_layernorm(x, w=None, b=None, eps=1e-6):
    return F.layer_norm(x.float(), x.shape[-1:], w, b, eps).to(x.dtype)


def _ref_rmsnorm(x, w, eps=1e-6):
    return (x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps)).type_as(x) * w


def _ref_rope_apply(x, grid, freqs):
    s, n, c = x.size(1), x.size(2), x.size(3) // 2
    parts = freqs.split([c - 2 * (c // 3), c // 3, c // 3], dim=1)
    f, h, w = grid
    xi = torch.view_as_complex(x[0].to(torch.float64).reshape(s, n, -1, 2))
    fi = torch.cat(
        [
            parts[0][:f].view(f, 1, 1, -1).expand(f, h, w, -1),
            parts[1][:h].view(1, h, 1, -1).expand(f, h, w, -1),
            parts[2][:w].view(1, 1, w, -1).expand(f, h, w, -1),
        ],
        dim=-1,
    ).reshape(f * h * w, 1, -1)
    return torch.view_as_real(xi * fi).flatten(2)[None].float()


def _ref_attn(q, k, v):  # (1, L, H, D)
    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(
        1, 2
    )


def _ref_attn_map(q, k, grid, masks, split_num=2):
    n_t, n_h, n_w = grid
    ref_k = k[:, : n_h * n_w]
    heads = q.shape[2]
    chunk = heads // split_num
    out = torch.zeros(masks.shape[0], q.shape[1])
    for i in range(split_num):
        vq = q[:, :, i * chunk : (i + 1) * chunk] * (1.0 / q.shape[-1] ** 0.5)
        rk = ref_k[:, :, i * chunk : (i + 1) * chunk]
        attn = (vq.transpose(1, 2) @ rk.transpose(1, 2).transpose(-2, -1)).softmax(-1)  # (1, h, L, Lref)
        maps = []
        for m in masks:
            mm = m[None, None, None]
            maps.append(((attn * mm).sum(-1) / mm.sum()).permute(0, 2, 1).mean(-1))
        out += torch.cat(maps, dim=0)
    return out / split_num


def _ref_rope1d(x, pos):  # x (B, H, L, D)
    d = x.shape[-1]
    freqs = 1.0 / (10000 ** (torch.arange(0, d, 2)[: d // 2].float() / d))
    ang = torch.einsum("n,f->nf", pos.float(), freqs).repeat_interleave(2, dim=-1)
    xr = x.float().unflatten(-1, (-1, 2))
    rot = torch.stack((-xr[..., 1], xr[..., 0]), -1).flatten(-2)
    return (x.float() * ang.cos() + rot * ang.sin()).type_as(x)


def _ref_audio_attn(sd, p, x, enc, grid, amap, human_num, heads):
    n_t = grid[0]
    b_nt = n_t
    x = x.reshape(n_t, -1, x.shape[-1])  # (N_t, S, C)
    n, c = x.shape[1], x.shape[2]
    q = (
        F.linear(x, sd[p + "q_linear.weight"], sd[p + "q_linear.bias"])
        .view(b_nt, n, heads, -1)
        .permute(0, 2, 1, 3)
    )
    if human_num == 2:
        mx, mn = amap.max(1).values, amap.min(1).values
        h1 = (amap[0] - mn[0]) / (mx[0] - mn[0] + 1e-8) * 4 + 0
        h2 = (amap[1] - mn[1]) / (mx[1] - mn[1] + 1e-8) * 4 + 20
        back = torch.full((amap.size(1),), 12.0)
        pos = torch.stack([h1, h2, back], 1)[range(amap.size(1)), amap.argmax(0)]
        q = _ref_rope1d(q.permute(1, 0, 2, 3).reshape(1, heads, -1, c // heads), pos)
        q = q.reshape(heads, n_t, n, -1).permute(1, 0, 2, 3)
    n_a = enc.shape[1]
    kv = F.linear(enc, sd[p + "kv_linear.weight"], sd[p + "kv_linear.bias"]).view(b_nt, n_a, 2, heads, -1)
    k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # (N_t, H, N_a, D)
    if human_num == 2:
        per = torch.zeros(n_a)
        per[: n_a // 2], per[n_a // 2 :] = 2, 22
        kk = k.permute(1, 0, 2, 3).reshape(1, heads, -1, k.shape[-1])
        k = _ref_rope1d(kk, per.repeat(n_t)).reshape(heads, n_t, n_a, -1).permute(1, 0, 2, 3)
    out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b_nt, n, c)
    return F.linear(out, sd[p + "proj.weight"], sd[p + "proj.bias"]).reshape(1, -1, c)


def _ref_audio_proj(sd, audio, cfg):
    first = audio[:, :1]
    later = audio[:, 1:].reshape(audio.shape[0], -1, 4, *audio.shape[2:])
    mid = 2
    parts = [later[:, :, :1, : mid + 1], later[:, :, 1:-1, mid : mid + 1], later[:, :, -1:, mid:]]
    later = torch.cat([p.flatten(2, 3) for p in parts], dim=2)
    a = torch.relu(F.linear(first.flatten(2), sd["audio_proj.proj1.weight"], sd["audio_proj.proj1.bias"]))
    b = torch.relu(
        F.linear(later.flatten(2), sd["audio_proj.proj1_vf.weight"], sd["audio_proj.proj1_vf.bias"])
    )
    h = torch.relu(F.linear(torch.cat([a, b], 1), sd["audio_proj.proj2.weight"], sd["audio_proj.proj2.bias"]))
    tok = F.linear(h, sd["audio_proj.proj3.weight"], sd["audio_proj.proj3.bias"])
    tok = tok.reshape(*tok.shape[:2], cfg.audio_context_tokens, cfg.audio_output_dim)
    tok = F.layer_norm(tok, tok.shape[-1:], sd["audio_proj.norm.weight"], sd["audio_proj.norm.bias"], 1e-5)
    return torch.cat(tok.split(1), dim=2)  # (1, N_t, human*32, C)


def reference_forward(sd, cfg, x, t, context, clip, y, audio, masks):
    """Batch 1; audio (human, F, 5, blocks, C) as the reference takes it."""
    heads, dim = cfg.num_heads, cfg.dim
    d = dim // heads
    freqs = torch.cat(
        [rope_tab(1024, d - 4 * (d // 6)), rope_tab(1024, 2 * (d // 6)), rope_tab(1024, 2 * (d // 6))], 1
    )
    u = F.conv3d(
        torch.cat([x, y], 1), sd["patch_embedding.weight"], sd["patch_embedding.bias"], stride=(1, 2, 2)
    )
    grid = tuple(u.shape[2:])
    u = u.flatten(2).transpose(1, 2)
    half = cfg.freq_dim // 2
    sinus = torch.outer(t.double(), torch.pow(10000, -torch.arange(half).double().div(half)))
    sinus = torch.cat([torch.cos(sinus), torch.sin(sinus)], 1).float()
    e = F.linear(
        F.silu(F.linear(sinus, sd["time_embedding.0.weight"], sd["time_embedding.0.bias"])),
        sd["time_embedding.2.weight"],
        sd["time_embedding.2.bias"],
    )
    e0 = F.linear(F.silu(e), sd["time_projection.1.weight"], sd["time_projection.1.bias"]).unflatten(
        1, (6, dim)
    )
    ctx = torch.cat([context[0], context.new_zeros(cfg.text_len - context.shape[1], context.shape[2])])[None]
    ctx = F.linear(
        F.gelu(F.linear(ctx, sd["text_embedding.0.weight"], sd["text_embedding.0.bias"]), approximate="tanh"),
        sd["text_embedding.2.weight"],
        sd["text_embedding.2.bias"],
    )
    im = F.layer_norm(clip, clip.shape[-1:], sd["img_emb.proj.0.weight"], sd["img_emb.proj.0.bias"])
    im = F.linear(
        F.gelu(F.linear(im, sd["img_emb.proj.1.weight"], sd["img_emb.proj.1.bias"])),
        sd["img_emb.proj.3.weight"],
        sd["img_emb.proj.3.bias"],
    )
    im = F.layer_norm(im, im.shape[-1:], sd["img_emb.proj.4.weight"], sd["img_emb.proj.4.bias"])
    ctx = torch.cat([im, ctx], 1)
    audio_tok = _ref_audio_proj(sd, audio, cfg)
    human = audio.shape[0]
    tmasks = (F.interpolate(masks[None].float(), size=grid[1:], mode="nearest")[0] > 0).view(3, -1).float()
    lin = lambda v, p: F.linear(v, sd[p + ".weight"], sd[p + ".bias"])  # noqa: E731
    for i in range(cfg.num_layers):
        p = f"blocks.{i}."
        mod = (sd[p + "modulation"] + e0).chunk(6, dim=1)
        h = _ref_layernorm(u) * (1 + mod[1]) + mod[0]
        q = _ref_rmsnorm(lin(h, p + "self_attn.q"), sd[p + "self_attn.norm_q.weight"]).view(1, -1, heads, d)
        k = _ref_rmsnorm(lin(h, p + "self_attn.k"), sd[p + "self_attn.norm_k.weight"]).view(1, -1, heads, d)
        v = lin(h, p + "self_attn.v").view(1, -1, heads, d)
        q, k = _ref_rope_apply(q, grid, freqs), _ref_rope_apply(k, grid, freqs)
        sa = lin(_ref_attn(q, k, v).flatten(2), p + "self_attn.o")
        amap = _ref_attn_map(q, k, grid, tmasks) if human == 2 else None
        u = u + sa * mod[2]
        c = _ref_layernorm(u, sd[p + "norm3.weight"], sd[p + "norm3.bias"])
        cq = _ref_rmsnorm(lin(c, p + "cross_attn.q"), sd[p + "cross_attn.norm_q.weight"]).view(
            1, -1, heads, d
        )
        ck = _ref_rmsnorm(lin(ctx[:, 257:], p + "cross_attn.k"), sd[p + "cross_attn.norm_k.weight"]).view(
            1, -1, heads, d
        )
        cv = lin(ctx[:, 257:], p + "cross_attn.v").view(1, -1, heads, d)
        ik = _ref_rmsnorm(
            lin(ctx[:, :257], p + "cross_attn.k_img"), sd[p + "cross_attn.norm_k_img.weight"]
        ).view(1, -1, heads, d)
        iv = lin(ctx[:, :257], p + "cross_attn.v_img").view(1, -1, heads, d)
        u = u + lin(_ref_attn(cq, ck, cv).flatten(2) + _ref_attn(cq, ik, iv).flatten(2), p + "cross_attn.o")
        nx = _ref_layernorm(u, sd[p + "norm_x.weight"], sd[p + "norm_x.bias"])
        u = u + _ref_audio_attn(sd, p + "audio_cross_attn.", nx, audio_tok[0], grid, amap, human, heads)
        ff = lin(
            F.gelu(lin(_ref_layernorm(u) * (1 + mod[4]) + mod[3], p + "ffn.0"), approximate="tanh"),
            p + "ffn.2",
        )
        u = u + ff * mod[5]
    hm = (sd["head.modulation"] + e[:, None]).chunk(2, dim=1)
    out = lin(_ref_layernorm(u) * (1 + hm[1]) + hm[0], "head.head")
    f, hh, ww = grid
    out = out[0].view(f, hh, ww, 1, 2, 2, 16)
    return torch.einsum("fhwpqrc->cfphqwr", out).reshape(16, f, hh * 2, ww * 2)[None]


def rope_tab(max_len, dim):
    freqs = torch.outer(
        torch.arange(max_len), 1.0 / torch.pow(10000, torch.arange(0, dim, 2).double().div(dim))
    )
    return torch.polar(torch.ones_like(freqs), freqs)


# ----------------------------------------------------------------------------- tests
@pytest.mark.parametrize("speakers", [1, 2])
def test_matches_reference_transcription(speakers):
    model = random_model()
    x, t, context, clip, y, audio, masks = random_inputs(1, speakers)
    with torch.no_grad():
        ours = model(x, t, context, clip, y, audio, masks if speakers == 2 else None)
        ref = reference_forward(model.state_dict(), TINY, x, t, context, clip, y, audio[0], masks)
    # fp32 on CPU; the two paths differ only in summation order (per-head vs batched maps, fused
    # reshapes), so agreement to 1e-4 relative is expected; a wrong window or rotation gives O(1).
    scale = ref.abs().max()
    assert ours.shape == ref.shape == (1, 16, 3, 8, 12)
    assert (ours - ref).abs().max() / scale < 1e-4


def test_two_speaker_binding_changes_output():
    """The L-RoPE path is really taken: swapping the speakers' audio changes the prediction."""
    model = random_model()
    x, t, context, clip, y, audio, masks = random_inputs(2, 2)
    with torch.no_grad():
        a = model(x, t, context, clip, y, audio, masks)
        b = model(x, t, context, clip, y, audio.flip(1), masks)
    assert (a - b).abs().max() > 1e-3


def test_batch_equals_separate_calls_and_is_deterministic():
    model = random_model()
    x, t, context, clip, y, audio, masks = random_inputs(3, 2, batch=2)
    with torch.no_grad():
        both = model(x, t, context, clip, y, audio, masks)
        first = model(x[:1], t[:1], context[:1], clip[:1], y[:1], audio[:1], masks)
        again = model(x[:1], t[:1], context[:1], clip[:1], y[:1], audio[:1], masks)
    assert torch.equal(first, again)
    torch.testing.assert_close(both[:1], first, rtol=1e-5, atol=1e-5)


def test_rope_tables():
    assert rope_axis_dims(128) == (44, 42, 42)
    freqs = rope_freqs(128)
    assert freqs.shape == (1024, 64) and freqs.dtype == torch.complex128
    grid = (3, 4, 5)
    rot = rope_grid(freqs, grid)  # (60, 1, 64)
    for tt, hh, ww in [(0, 0, 0), (2, 1, 3), (1, 3, 4)]:
        idx = (tt * 4 + hh) * 5 + ww
        angles = rot[idx, 0].angle()
        expect_t = tt * 10000 ** (-torch.arange(0, 44, 2, dtype=torch.float64) / 44)
        expect_h = hh * 10000 ** (-torch.arange(0, 42, 2, dtype=torch.float64) / 42)
        expect_w = ww * 10000 ** (-torch.arange(0, 42, 2, dtype=torch.float64) / 42)
        expect = torch.remainder(torch.cat([expect_t, expect_h, expect_w]) + math.pi, 2 * math.pi) - math.pi
        torch.testing.assert_close(angles, expect, rtol=0, atol=1e-9)
        torch.testing.assert_close(rot[idx, 0].abs(), torch.ones(64, dtype=torch.float64))


def test_audio_windows():
    """5-frame windows for latent frame 0, 8-frame groups for each later latent frame."""
    frames = 9
    audio = torch.zeros(1, frames, 5, 1, 2)
    for f in range(frames):
        for o in range(5):
            audio[0, f, o, 0] = torch.tensor([f, o - 2])  # (video frame, offset)
    first, later = split_audio_windows(audio)
    assert first.shape == (1, 1, 5, 1, 2) and later.shape == (1, 2, 8, 1, 2)
    assert first[0, 0, :, 0].tolist() == [[0, -2], [0, -1], [0, 0], [0, 1], [0, 2]]
    for j in range(2):
        f0 = 1 + 4 * j
        expect = [
            [f0, -2],
            [f0, -1],
            [f0, 0],
            [f0 + 1, 0],
            [f0 + 2, 0],
            [f0 + 3, 0],
            [f0 + 3, 1],
            [f0 + 3, 2],
        ]
        assert later[0, j, :, 0].tolist() == expect


def test_audio_cross_attention_is_per_latent_frame():
    torch.manual_seed(0)
    layer = AudioCrossAttention(TINY, torch.nn, {"device": None, "dtype": None}).eval()
    frames, per_frame = 3, 10
    x = torch.randn(1, frames * per_frame, TINY.dim)
    audio = torch.randn(1, frames, 32, TINY.audio_output_dim)
    changed = audio.clone()
    changed[:, 1] += torch.randn_like(changed[:, 1])
    with torch.no_grad():
        a = layer(x, audio, frames, "sdpa").view(frames, per_frame, -1)
        b = layer(x, changed, frames, "sdpa").view(frames, per_frame, -1)
    diff = (a - b).abs().amax(dim=(1, 2))
    assert diff[0] == 0 and diff[2] == 0 and diff[1] > 1e-3


def test_speaker_positions_hand_computed():
    # 4 tokens: clearly person 1, clearly person 2, background, person 1 weakly
    amap = torch.tensor([[0.9, 0.1, 0.2, 0.5], [0.05, 0.8, 0.1, 0.2], [0.05, 0.1, 0.7, 0.3]])
    pos = speaker_positions(amap)
    # person 1 row spans [0.1, 0.9] -> [0, 4]; person 2 row spans [0.05, 0.8] -> [20, 24]
    assert pos[0] == pytest.approx(4.0, abs=1e-5)
    assert pos[1] == pytest.approx(24.0, abs=1e-5)
    assert pos[2] == pytest.approx(12.0)
    assert pos[3] == pytest.approx((0.5 - 0.1) / 0.8 * 4, abs=1e-5)


def test_reference_attention_map_matches_naive():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 30, 4, 16, generator=g), torch.randn(2, 10, 4, 16, generator=g)
    masks = (torch.rand(3, 10, generator=g) > 0.5).float()
    fast = reference_attention_map(q, k, masks)
    probs = torch.softmax(torch.einsum("blhd,bmhd->bhlm", q, k) / 4.0, dim=-1)  # (B, H, L, M)
    naive = torch.stack([(probs * m).sum(-1) / m.sum() for m in masks], dim=1).mean(dim=2)  # (B, 3, L)
    torch.testing.assert_close(fast, naive, rtol=1e-5, atol=1e-6)
