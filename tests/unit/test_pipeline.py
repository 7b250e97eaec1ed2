"""Streaming pipeline on small deterministic stand-in models (fast), plus one run on tiny real weights.

The stand-ins follow the component contracts of ARCHITECTURE.md; they are also imported by
``test_resume.py`` (and its subprocess) and ``test_cli.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from infinitetalk.config import SpeakerRegions
from infinitetalk.errors import InputError, Interrupted
from infinitetalk.pipeline import (
    AudioEmbedding,
    GenerationConfig,
    InfiniteTalkPipeline,
    StillImage,
    condition_mask,
    speaker_masks,
)
from infinitetalk.sinks import MemorySink
from infinitetalk.tiny.encoders import TINY_WAV2VEC2
from infinitetalk.windows import audio_window, padded_audio_length, plan_windows

LAYERS, CH = 2, 4  # fake wav2vec2 features


# ============================================================================ stand-in models
class FakeVAE:
    """Causal 4x8x8 'VAE': mean-pools frames (first alone, then groups of 4) and 8x8 pixels, 3 -> 16 ch."""

    dtype = torch.float32

    def __init__(self):
        g = torch.Generator().manual_seed(1)
        self.enc = torch.randn(16, 3, generator=g) / 3
        self.dec = torch.linalg.pinv(self.enc)  # (3, 16)
        self.encode_calls: list[tuple[int, ...]] = []

    def encode(self, video: torch.Tensor) -> torch.Tensor:  # (B, 3, T, H, W) -> (B, 16, T', h, w)
        self.encode_calls.append(tuple(video.shape))
        first, rest = video[:, :, :1], video[:, :, 1:]
        if rest.shape[2]:
            rest = rest.unflatten(2, (-1, 4)).mean(3)
        x = torch.cat([first, rest], dim=2).float()
        x = torch.nn.functional.avg_pool3d(x, (1, 8, 8))
        return torch.einsum("oc,bcthw->bothw", self.enc, x)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:  # (B, 16, T', h, w) -> (B, 3, 4T'-3, H, W)
        x = torch.einsum("co,bothw->bcthw", self.dec, latents.float())
        x = torch.cat([x[:, :, :1], x[:, :, 1:].repeat_interleave(4, dim=2)], dim=2)
        x = x.repeat_interleave(8, dim=3).repeat_interleave(8, dim=4)
        return x.clamp(-1, 1)


class FakeClip:
    def __init__(self):
        self.calls = 0

    def encode(self, image: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, 257, 8)
        self.calls += 1
        pooled = torch.nn.functional.adaptive_avg_pool2d(image.float(), 16).flatten(2).transpose(1, 2)
        tokens = torch.cat([pooled.mean(1, keepdim=True), pooled], dim=1)  # (B, 257, 3)
        return torch.cat([tokens, tokens, tokens[..., :2]], dim=-1)


class FakeText:
    def __init__(self):
        self.calls = 0

    def encode(self, prompts: list[str]) -> list[torch.Tensor]:
        self.calls += 1
        out = []
        for p in prompts:
            g = torch.Generator().manual_seed(sum(p.encode()) % 10007)
            out.append(torch.randn(min(len(p.split()) + 1, 12), 16, generator=g))
        return out


class FakeAudioEncoder:
    def feature_shape(self, num_samples: int) -> tuple[int, int, int]:
        return num_samples * 25 // 16000, LAYERS, CH

    def encode(self, wave: np.ndarray, out: torch.Tensor | None = None) -> torch.Tensor:  # -> (L, layers, C)
        n = len(wave) * 25 // 16000
        frames = torch.from_numpy(np.asarray(wave, np.float32)[: n * 640].reshape(n, 640))
        level = frames.abs().mean(1)  # (L,)
        feats = level[:, None, None].expand(n, LAYERS, CH) * torch.arange(1, CH + 1)
        return feats if out is None else out.copy_(feats)


class FakeDiT(torch.nn.Module):
    """A deterministic 'denoiser' that depends on every input and records each call."""

    def __init__(self):
        super().__init__()
        self.calls: list[dict] = []
        self.record_inputs = False

    def forward(self, x, t, context, clip_fea, y, audio, ref_target_masks=None, block_cache=None):
        b = x.shape[0]
        context = torch.nn.functional.pad(context, (0, 0, 0, 12 - context.shape[1]))  # like text_len padding
        self.calls.append(
            dict(
                batch=b,
                speakers=audio.shape[1],
                ctx=context.float().mean(dim=(1, 2)).tolist(),
                audio_abs=audio.float().abs().sum().item(),
                masks=None if ref_target_masks is None else tuple(ref_target_masks.shape),
                t=t.tolist(),
                x=x.float().clone() if self.record_inputs else None,
            )
        )
        e = (t.float() / 1000)[:, None].expand(b, 8)
        e0 = e[:, None].expand(b, 6, 8)

        def run_blocks(h):
            return torch.tanh(h * 0.9 + 0.05)

        h = x.float().flatten(2)
        h = run_blocks(h) if block_cache is None else block_cache.run(h, e, e0, run_blocks)
        out = 0.5 * h.view_as(x.float()) + 0.2 * y[:, 4:].float()
        a = audio.float().mean(dim=(1, 3, 4, 5))  # (B, F)
        a = torch.cat([a[:, :1], a[:, 1:].unflatten(1, (-1, 4)).mean(2)], dim=1)  # (B, T)
        out = (
            out
            + 0.3 * a[:, None, :, None, None]
            + 0.1 * context.float().mean(dim=(1, 2))[:, None, None, None, None]
        )
        out = out + 0.05 * clip_fea.float().mean(dim=(1, 2))[:, None, None, None, None]
        return out.float()


def fake_pipeline(**kw) -> InfiniteTalkPipeline:
    return InfiniteTalkPipeline(
        FakeDiT(),
        FakeVAE(),
        FakeClip(),
        FakeText(),
        FakeAudioEncoder(),
        device="cpu",
        dtype=torch.float32,
        **kw,
    )


def test_image(h=64, w=64, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 / w, yy * 255 / h, np.full_like(xx, 128)], -1) + rng.integers(0, 30, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


test_image.__test__ = False  # a helper, not a test


def audio_embedding(num_frames: int, speakers: int = 1, seed: int = 0) -> AudioEmbedding:
    g = torch.Generator().manual_seed(seed)
    feats = torch.rand(speakers, num_frames, LAYERS, CH, generator=g)
    wave = np.random.default_rng(seed).standard_normal(num_frames * 640).astype(np.float32) * 0.1
    return AudioEmbedding(feats, wave, num_frames)


def small_config(**kw) -> GenerationConfig:
    base = dict(size="64x64", steps=2, prompt="a person talking", seed=7)
    base.update(kw)
    return GenerationConfig(**base)


class RecordingVideo:
    """A v2v source that records which frame indices the pipeline asked for."""

    is_video = True

    def __init__(self, num_frames: int, h=64, w=64):
        self.num_frames, self.requested = num_frames, []
        self.h, self.w = h, w

    def frame(self, i: int) -> np.ndarray:
        self.requested.append(i)
        return np.full((self.h, self.w, 3), i % 256, np.uint8)


# ============================================================================ schedule
def test_plan_streaming_10s_is_4_windows_of_spec():
    plans, total = plan_windows(250, 81, 9, "streaming")
    assert total == 250
    assert [(p.start, p.keep_from, p.keep) for p in plans] == [
        (0, 0, 81),
        (72, 9, 72),
        (144, 9, 72),
        (216, 9, 25),
    ]


def test_plan_short_audio_is_one_window_and_clip_mode_one_window():
    assert [p.keep for p in plan_windows(30, 81, 9, "streaming")[0]] == [30]
    assert [p.keep for p in plan_windows(81, 81, 9, "streaming")[0]] == [81]  # the reference would run 2
    assert len(plan_windows(82, 81, 9, "streaming")[0]) == 2
    plans, total = plan_windows(400, 81, 9, "clip")
    assert (len(plans), total) == (1, 81)
    assert plan_windows(400, 81, 9, "streaming", max_frame_num=100)[1] == 100


def test_plan_v2v_reference_frames_clamped_to_last():
    plans, _ = plan_windows(300, 81, 9, "streaming", source_frames=150, is_video=True)
    assert [p.reference_frame for p in plans] == [0, 72, 144, 149, 149]


def test_audio_window_offsets_and_clamp():
    feats = torch.arange(10.0)[None, :, None, None]  # (1, 10, 1, 1)
    win = audio_window(feats, 0, 5)[0, :, :, 0, 0]
    assert win[0].tolist() == [0, 0, 0, 1, 2] and win[4].tolist() == [2, 3, 4, 5, 6]
    win = audio_window(feats, 6, 5)[0, :, :, 0, 0]
    assert win[-1].tolist() == [8, 9, 9, 9, 9]


def test_pad_audio_mirrors_last_frames_like_reference():
    feats = torch.arange(10.0)[None, :, None, None]
    length = padded_audio_length(10, 12)  # miss = 12 - 10 + 3 = 5
    assert length == 15 and padded_audio_length(10, 9) == 10
    win = audio_window(feats, 8, 7, length)[0, :, 2, 0, 0]  # the centre frames 8..14
    assert win.tolist() == [8, 9, 9, 8, 7, 6, 5]


def test_condition_mask_ones_on_first_latent_only():
    msk = condition_mask(81, 2, 3)
    assert msk.shape == (1, 4, 21, 2, 3)
    assert msk[:, :, 0].eq(1).all() and msk[:, :, 1:].eq(0).all()


def test_speaker_masks_boxes_and_halves():
    m = speaker_masks(SpeakerRegions(bboxes=[(0, 10, 20, 30), (30, 0, 40, 5)]), 40, 50)
    assert m.shape == (3, 40, 50)
    assert m[0, 10:30, 0:20].eq(1).all() and m[0].sum() == 20 * 20  # rows y, columns x
    assert m[1, 0:5, 30:40].eq(1).all() and m[1].sum() == 5 * 10
    assert torch.equal(m[2], ((m[0] + m[1]) == 0).float())
    halves = speaker_masks(None, 100, 200, 0.05)
    assert halves[0, 5:95, 5:95].eq(1).all() and halves[0].sum() == 90 * 90
    assert halves[1, 5:95, 105:195].eq(1).all() and halves[1].sum() == 90 * 90


# ============================================================================ whole runs on stand-ins
def test_clip_mode_gives_81_frames():
    sink = MemorySink()
    result = fake_pipeline().generate(test_image(), audio_embedding(120), small_config(mode="clip"), sink)
    assert sink.frames.shape == (81, 64, 64, 3) and result.num_windows == 1


def test_streaming_10s_gives_250_frames_in_4_windows():
    pipe, sink = fake_pipeline(), MemorySink()
    result = pipe.generate(test_image(), audio_embedding(250), small_config(), sink)
    assert [c.shape[0] for c in sink.chunks] == [81, 72, 72, 25]
    assert sink.frames.shape[0] == 250 and result.windows_run == [0, 1, 2, 3]
    assert pipe.model_calls == 4 * 2 * 3  # windows x steps x branches
    assert pipe.clip.calls == 1 and pipe.text_encoder.calls == 1  # i2v: conditioning encoded once


def test_short_audio_is_padded_not_refused():
    sink = MemorySink()
    fake_pipeline().generate(test_image(), audio_embedding(30), small_config(), sink)
    assert sink.frames.shape[0] == 30


def test_v2v_uses_source_frame_per_window():
    src = RecordingVideo(150)
    result = fake_pipeline().generate(src, audio_embedding(300), small_config(), MemorySink())
    assert result.reference_frames == [0, 72, 144, 149, 149]
    assert sorted(set(src.requested)) == [0, 72, 144, 149]


def test_three_pass_and_two_pass_branch_calls():
    pipe = fake_pipeline()
    pipe.generate(test_image(), audio_embedding(60), small_config(steps=3, mode="clip"), MemorySink())
    calls = pipe.dit.calls
    assert len(calls) == 3 * 3
    ctx = [round(c["ctx"][0], 6) for c in calls[:3]]
    assert ctx[0] != ctx[1] and ctx[1] == ctx[2]  # cond: prompt; drop_text & uncond: negative prompt
    assert calls[0]["audio_abs"] > 0 and calls[1]["audio_abs"] > 0 and calls[2]["audio_abs"] == 0
    pipe = fake_pipeline()
    pipe.generate(
        test_image(), audio_embedding(60), small_config(steps=3, mode="clip", text_scale=1.0), MemorySink()
    )
    calls = pipe.dit.calls
    assert len(calls) == 3 * 2
    assert calls[0]["ctx"] == calls[1]["ctx"] and calls[0]["audio_abs"] > 0 and calls[1]["audio_abs"] == 0


def test_batched_guidance_matches_separate_calls():
    img, audio = test_image(), audio_embedding(60)
    outs = []
    for batch in (False, True):
        pipe, sink = fake_pipeline(), MemorySink()
        pipe.generate(img, audio, small_config(mode="clip", batch_guidance=batch), sink)
        outs.append(sink.frames)
        assert pipe.model_calls == (6 if not batch else 2)
    # Same maths, other reduction shapes: at most one uint8 level apart.
    assert np.abs(outs[0].astype(int) - outs[1].astype(int)).max() <= 1


def test_two_speakers_para_and_add():
    pipe = fake_pipeline()
    a = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    b = np.random.default_rng(1).standard_normal(8000).astype(np.float32) * 0.1
    para = pipe.prepare_audio([(a, 16000), (b, 16000)], "para")
    add = pipe.prepare_audio([(a, 16000), (b, 16000)], "add")
    assert para.features.shape[:2] == (2, 25) and add.features.shape[:2] == (2, 37)
    assert add.features[0, 26:].abs().sum() == 0 and add.features[1, :24].abs().sum() == 0
    for audio in (para, add):
        pipe = fake_pipeline()
        sink = MemorySink()
        pipe.generate(test_image(64, 128), audio, small_config(size="128x64", batch_guidance=True), sink)
        assert sink.frames.shape == (audio.num_frames, 64, 128, 3)
        calls = pipe.dit.calls
        assert len(calls) == 2 * 2  # (cond + drop_text) batched with 2 speakers, uncond alone with 1
        assert (calls[0]["batch"], calls[0]["speakers"], calls[0]["masks"]) == (2, 2, (3, 8, 16))
        assert (calls[1]["batch"], calls[1]["speakers"], calls[1]["masks"]) == (1, 1, None)


def test_motion_latents_overwrite_first_latents_every_call():
    pipe = fake_pipeline()
    pipe.dit.record_inputs = True
    pipe.generate(test_image(), audio_embedding(100), small_config(text_scale=1.0), MemorySink())
    calls = pipe.dit.calls
    first_window, second_window = calls[:4], calls[4:]
    ref_latent = first_window[0]["x"][:, :, :1]
    assert all(torch.equal(c["x"][:, :, :1], ref_latent) for c in first_window)
    motion = second_window[0]["x"][:, :, :3]
    assert all(torch.equal(c["x"][:, :, :3], motion) for c in second_window)
    assert not torch.equal(motion[:, :, :1], ref_latent)


def test_rng_consumption_order_matches_reference():
    """Window k's initial noise = the k-th draw of the reference order: noise, then 1 + steps motion draws."""
    pipe, steps, seed = fake_pipeline(), 2, 7
    pipe.dit.record_inputs = True
    pipe.generate(
        test_image(), audio_embedding(250), small_config(steps=steps, text_scale=1.0, seed=seed), MemorySink()
    )
    g = torch.Generator().manual_seed(seed)
    for k in range(4):
        noise = torch.randn((16, 21, 8, 8), generator=g)
        if k > 0:
            for _ in range(1 + steps):
                torch.randn((16, 3, 8, 8), generator=g)
        x = pipe.dit.calls[k * steps * 2]["x"][0]  # first call of window k: noise with clean motion latents
        n_motion = 1 if k == 0 else 3
        assert torch.equal(x[:, n_motion:], noise[:, n_motion:]), f"window {k}"


def test_same_seed_same_frames_other_seed_differs():
    img, audio = test_image(), audio_embedding(100)
    runs = []
    for seed in (3, 3, 4):
        sink = MemorySink()
        fake_pipeline().generate(img, audio, small_config(seed=seed), sink)
        runs.append(sink.frames)
    assert np.array_equal(runs[0], runs[1]) and not np.array_equal(runs[0], runs[2])


def test_cancel_raises_interrupted_and_progress_events():
    events = []
    calls = {"n": 0}

    def cancel():
        calls["n"] += 1
        return calls["n"] > 3

    with pytest.raises(Interrupted):
        fake_pipeline().generate(
            test_image(),
            audio_embedding(200),
            small_config(),
            MemorySink(),
            on_progress=events.append,
            should_cancel=cancel,
        )
    steps = [(e.window, e.step) for e in events]
    assert steps == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    assert events[1].num_windows == 3 and events[1].latent_preview.shape == (1, 16, 21, 8, 8)


def test_teacache_skips_blocks_with_per_branch_state(monkeypatch):
    import infinitetalk.pipeline as pl

    made = []

    class Recording(pl.TeaCache):
        def __init__(self, config):
            super().__init__(config)
            made.append(self)

    monkeypatch.setattr(pl, "TeaCache", Recording)
    for text_scale, branches in ((5.0, 3), (1.0, 2)):
        made.clear()
        pipe, sink = fake_pipeline(), MemorySink()
        cfg = small_config(
            mode="clip", steps=10, use_teacache=True, teacache_thresh=10.0, text_scale=text_scale
        )
        pipe.generate(test_image(), audio_embedding(60), cfg, sink)
        assert sink.frames.shape[0] == 60 and pipe.model_calls == 10 * branches
        assert len(made) == branches  # one cache per branch (per window)
        assert all(c.computed + c.skipped == 10 and c.skipped >= 1 for c in made)


def test_bad_inputs_raise_input_error():
    pipe = fake_pipeline()
    with pytest.raises(InputError, match="frame_num"):
        pipe.generate(test_image(), audio_embedding(60), small_config(frame_num=80), MemorySink())
    with pytest.raises(InputError, match="size"):
        pipe.generate(test_image(), audio_embedding(60), small_config(size="65x64"), MemorySink())
    with pytest.raises(InputError, match="speakers"):
        pipe.generate(test_image(), audio_embedding(60, speakers=3), small_config(), MemorySink())


def test_samplers_run_in_the_loop():
    for name in ("unipc", "dpm++"):
        sink = MemorySink()
        fake_pipeline().generate(test_image(), audio_embedding(40), small_config(sampler=name, steps=3), sink)
        assert sink.frames.shape[0] == 40 and np.isfinite(sink.frames).all()


def test_still_image_rejects_bad_arrays():
    with pytest.raises(InputError):
        StillImage(np.zeros((4, 4), np.uint8))


def test_default_shift_by_size():
    assert GenerationConfig(size="infinitetalk-720").effective_shift == 11
    assert GenerationConfig().effective_shift == 7 and GenerationConfig(shift=3).effective_shift == 3
    # the InfiniteTalk config's English negative prompt (wan_multitalk_14B.py overrides Wan's Chinese one)
    neg = GenerationConfig().effective_negative_prompt
    assert neg.startswith("bright tones, overexposed") and neg.endswith("walking backwards")


# ============================================================================ tiny real weights
def tiny_pipeline(root, speakers: int = 1):
    """The real modules on tiny random checkpoints (official tree), float32 on the CPU."""
    from infinitetalk.encoders.clip import load_clip_vision
    from infinitetalk.encoders.text import load_text_encoder
    from infinitetalk.encoders.vae import load_vae
    from infinitetalk.loading.dit import load_dit

    wan = root / "weights" / "Wan2.1-I2V-14B-480P"
    adapter = (
        root
        / "weights"
        / "InfiniteTalk"
        / ("single" if speakers == 1 else "multi")
        / "infinitetalk.safetensors"
    )
    dit = load_dit(wan, adapter, device="cpu", dtype=torch.float32).eval()
    return InfiniteTalkPipeline(
        dit,
        load_vae(wan / "Wan2.1_VAE.pth", device="cpu", dtype=torch.float32),
        load_clip_vision(
            wan / "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth", device="cpu", dtype=torch.float32
        ),
        load_text_encoder(wan / "models_t5_umt5-xxl-enc-bf16.pth", device="cpu", dtype=torch.float32),
        device="cpu",
        dtype=torch.float32,
    )


def tiny_audio(num_frames: int, speakers: int = 1, seed: int = 0) -> AudioEmbedding:
    """Features shaped like the tiny wav2vec2 (3 layers, 96 channels) and a matching 16 kHz soundtrack."""
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(speakers, num_frames, TINY_WAV2VEC2["layers"], TINY_WAV2VEC2["hidden"], generator=g)
    wave = (np.sin(np.arange(num_frames * 640) / 16000 * 2 * np.pi * 200) * 0.3).astype(np.float32)
    return AudioEmbedding(feats, wave, num_frames)


def test_tiny_weights_streaming_10s_to_mp4(tiny_root, tmp_path):
    import av

    from infinitetalk.sinks import SegmentStore

    pipe = tiny_pipeline(tiny_root)
    audio = tiny_audio(250)
    store = SegmentStore(tmp_path / "seg")
    cfg = small_config(size="32x32", steps=1, text_scale=1.0)
    result = pipe.generate(test_image(48, 64), audio, cfg, store)
    assert result.windows_run == [0, 1, 2, 3] and [s["frames"] for s in store.segments] == [81, 72, 72, 25]
    out = store.finalize(tmp_path / "out.mp4", audio=(audio.waveform_16k_mix, 16000))
    with av.open(str(out)) as c:
        assert c.streams.video[0].average_rate == 25 and c.streams.audio[0].codec_context.name == "aac"
        assert sum(1 for _ in c.decode(video=0)) == 250
    with av.open(str(out)) as c:
        assert abs(sum(f.samples for f in c.decode(audio=0)) / c.streams.audio[0].rate - 10.0) < 0.05
    # Same seed, same frames (first window, re-run into memory).
    again = MemorySink()
    tiny_pipeline(tiny_root).generate(test_image(48, 64), tiny_audio(60), cfg, again)
    first = MemorySink()
    pipe.generate(test_image(48, 64), tiny_audio(60), cfg, first)
    assert np.array_equal(first.frames, again.frames)


def test_tiny_weights_two_speakers(tiny_root):
    pipe, sink = tiny_pipeline(tiny_root, speakers=2), MemorySink()
    regions = SpeakerRegions(bboxes=[(0, 0, 32, 48), (32, 0, 64, 48)])
    pipe.generate(
        test_image(48, 64),
        tiny_audio(40, speakers=2),
        small_config(size="32x32", steps=1),
        sink,
        speaker_regions=regions,
    )
    assert sink.frames.shape == (40, 32, 32, 3)


# ============================================================================ against the reference loop
def reference_loop(pipe, image, feats, cfg, max_frames=1000):
    """A step-by-step transcription of the reference's ``generate_infinitetalk`` (streaming, one image,
    no colour correction) over the same components: global RNG seeded once, noise per window, the
    discarded ``randn_like`` motion draws, ``count`` of windows decided after each window, mirror padding
    of the audio features before the last window, trimming at the end."""
    from infinitetalk.buckets import image_to_tensor, resize_and_crop_image, target_size

    torch.manual_seed(cfg.seed)
    h, w = target_size(cfg.size, *image.shape[:2])
    lat_h, lat_w = h // 8, w // 8
    cond_image = image_to_tensor(resize_and_crop_image(image, (h, w)))[None, :, None]
    context, context_null = pipe.text_encoder.encode([cfg.prompt, cfg.effective_negative_prompt])
    full = [feats[s] for s in range(feats.shape[0])]
    offsets = torch.arange(5) - 2
    first, last, n_motion_px, start, out, cond_frame = True, False, 1, 0, [], None
    miss_total = 0
    while True:
        end = start + cfg.frame_num
        audio = torch.cat(
            [f[(torch.arange(start, end)[:, None] + offsets).clamp(0, f.shape[0] - 1)][None] for f in full]
        )  # (S, 81, 5, layers, C)
        noise = torch.randn(16, (cfg.frame_num - 1) // 4 + 1, lat_h, lat_w)
        msk = torch.ones(1, cfg.frame_num, lat_h, lat_w)
        msk[:, 1:] = 0
        msk = torch.cat([msk[:, :1].repeat_interleave(4, dim=1), msk[:, 1:]], dim=1)
        msk = msk.view(1, msk.shape[1] // 4, 4, lat_h, lat_w).transpose(1, 2)
        clip_ctx = pipe.clip.encode(cond_image[:, :, -1])
        y = pipe.vae.encode(torch.cat([cond_image, torch.zeros(1, 3, cfg.frame_num - 1, h, w)], dim=2))
        y = torch.cat([msk, y], dim=1)
        motion = pipe.vae.encode(cond_image if first else cond_frame)[0]  # (16, n, h, w)
        n_lat = 1 + (n_motion_px - 1) // 4
        ts = [torch.tensor([t]) for t in np.linspace(1000, 1, cfg.steps, dtype=np.float32)] + [
            torch.tensor([0.0])
        ]
        ts = [
            cfg.effective_shift * (t / 1000) / (1 + (cfg.effective_shift - 1) * (t / 1000)) * 1000 for t in ts
        ]
        latent = noise
        if not first:
            extra = torch.randn_like(motion)
            latent[:, : motion.shape[1]] = (1 - ts[0] / 1000) * motion + ts[0] / 1000 * extra

        def call(ctx, aud, lat, t, clip_ctx=clip_ctx, y=y):
            return pipe.dit(lat[None], t, ctx[None], clip_ctx, y, aud[None])[0]

        for i in range(cfg.steps):
            latent[:, :n_lat] = motion
            cond = call(context, audio, latent, ts[i])
            if cfg.text_scale == 1.0:
                drop_audio = call(context, torch.zeros_like(audio)[-1:], latent, ts[i])
                pred = drop_audio + cfg.audio_scale * (cond - drop_audio)
            else:
                drop_text = call(context_null, audio, latent, ts[i])
                uncond = call(context_null, torch.zeros_like(audio)[-1:], latent, ts[i])
                pred = uncond + cfg.text_scale * (cond - drop_text) + cfg.audio_scale * (drop_text - uncond)
            pred = -pred
            dt = (ts[i] - ts[i + 1]) / 1000
            latent = latent + pred * dt[:, None, None, None]
            if not first:
                extra = torch.randn_like(motion)
                latent[:, : motion.shape[1]] = (1 - ts[i + 1] / 1000) * motion + ts[i + 1] / 1000 * extra
            latent[:, :n_lat] = motion
        videos = pipe.vae.decode(latent[None])
        out.append(videos if first else videos[:, :, n_motion_px:])
        if last:
            break
        first, n_motion_px = False, cfg.motion_frame
        cond_frame = videos[:, :, -n_motion_px:]
        start += cfg.frame_num - n_motion_px
        end = start + cfg.frame_num
        if end >= min(max_frames, full[0].shape[0]):
            last = True
            for s, f in enumerate(full):
                if end >= f.shape[0]:
                    miss = end - f.shape[0] + 3
                    full[s] = torch.cat([f, f[-miss:].flip(0)])
                    miss_total += miss
    video = torch.cat(out, dim=2)[:, :, :max_frames]
    if miss_total > 0:
        video = video[:, :, : feats.shape[1]]
    return video


@pytest.mark.parametrize("text_scale", [5.0, 1.0])
def test_frames_equal_the_reference_loop(text_scale):
    from infinitetalk.pipeline import frames_to_uint8

    audio = audio_embedding(200)  # 3 windows in both schedules
    cfg = small_config(steps=3, text_scale=text_scale, color_correction_strength=0.0, seed=11)
    pipe, sink = fake_pipeline(), MemorySink()
    pipe.generate(test_image(), audio, cfg, sink)
    ref = frames_to_uint8(reference_loop(fake_pipeline(), test_image(), audio.features, cfg))
    assert ref.shape == sink.frames.shape == (200, 64, 64, 3)
    assert np.array_equal(sink.frames, ref)
