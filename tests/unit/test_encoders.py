"""Encoders: every layout loads to the same parameters; numerics against hand-written reference maths.

The tiny checkpoints come from ``infinitetalk.tiny.encoders.write_all`` (one random source per
component, values exact in bf16/fp16/fp8-scaled, so layouts must agree bit for bit). Numerical
comparisons run in float32; tolerances are stated per test.
"""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from infinitetalk.errors import CheckpointError, InputError
from infinitetalk.tiny import encoders as tiny

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return tiny.write_all(tmp_path_factory.mktemp("tiny_encoders"), seed=0)


def _same_parameters(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def _one_line_error(exc_info, name: str) -> None:
    message = str(exc_info.value)
    assert "\n" not in message and name in message, message


# ============================================================================================
# umT5
# ============================================================================================
def _rms(x, w, eps=1e-6):
    return w * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def _bucket(rel: torch.Tensor, num_buckets: int, max_distance: int = 128) -> torch.Tensor:
    """Bidirectional T5 bucket: exact below num_buckets/4, log-spaced up to max_distance."""
    half = num_buckets // 2
    side = (rel > 0).long() * half
    dist = rel.abs()
    exact = half // 2
    far = (
        exact
        + (
            torch.log(dist.float().clamp(min=1) / exact) / math.log(max_distance / exact) * (half - exact)
        ).long()
    )
    return side + torch.where(dist < exact, dist, far.clamp(max=half - 1))


def _reference_umt5(sd: dict, ids: torch.Tensor, heads: int) -> torch.Tensor:
    """umT5 encoder maths on original Wan keys: per-layer relative bias, unscaled attention,
    tanh-GELU gated FFN, RMS norms. ids (L,) of real tokens only (no padding) -> (L, C)."""
    sd = {k: v.float() for k, v in sd.items()}
    x = sd["token_embedding.weight"][ids]  # (L, C)
    n = len(ids)
    rel = torch.arange(n)[None, :] - torch.arange(n)[:, None]  # key - query
    layers = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    for i in range(layers):
        p = f"blocks.{i}."
        h = _rms(x, sd[p + "norm1.weight"])
        q, k, v = (h @ sd[p + f"attn.{m}.weight"].T for m in "qkv")
        q, k, v = (t.view(n, heads, -1).transpose(0, 1) for t in (q, k, v))  # (H, L, D)
        table = sd[p + "pos_embedding.embedding.weight"]  # (buckets, H)
        bias = table[_bucket(rel, table.shape[0])].permute(2, 0, 1)  # (H, L, L)
        attn = torch.softmax(q @ k.transpose(1, 2) + bias, dim=-1)
        x = x + (attn @ v).transpose(0, 1).reshape(n, -1) @ sd[p + "attn.o.weight"].T
        h = _rms(x, sd[p + "norm2.weight"])
        gate = F.gelu(h @ sd[p + "ffn.gate.0.weight"].T, approximate="tanh")
        x = x + (gate * (h @ sd[p + "ffn.fc1.weight"].T)) @ sd[p + "ffn.fc2.weight"].T
    return _rms(x, sd["norm.weight"])


def test_umt5_layouts_load_identical_parameters(files):
    from infinitetalk.encoders import load_text_encoder

    ref = load_text_encoder(files["umt5_pth"])
    for name in ("umt5_fp16", "umt5_fp8_scaled"):
        _same_parameters(ref.model, load_text_encoder(files[name], tokenizer=files["umt5_tokenizer"]).model)


def test_umt5_matches_reference_maths_and_trims(files):
    from infinitetalk.encoders import load_text_encoder

    enc = load_text_encoder(files["umt5_pth"])
    prompts = [
        "A woman is talking to the camera in a bright room, natural light, realistic, high quality. 一个女人",
        "  hi &amp;   there ",
    ]
    out = enc.encode(prompts)
    sd = torch.load(files["umt5_pth"], weights_only=True)
    heads = sd["blocks.0.pos_embedding.embedding.weight"].shape[1]
    hf = enc.tokenizer.hf
    for prompt, got in zip(prompts, out, strict=True):
        ids = torch.tensor(hf(" ".join(prompt.replace("&amp;", "&").split())).input_ids)
        assert ids[-1].item() == 1 and got.shape == (len(ids), 64)  # trimmed to real tokens incl. </s>
        # 1e-5: same float32 maths, different op order; sequence > 8 tokens exercises log buckets
        torch.testing.assert_close(got, _reference_umt5(sd, ids, heads), rtol=1e-5, atol=1e-5)
    assert len(out[0]) > 16


def test_umt5_encodes_a_long_schedule_in_bounded_batches(files):
    """A prompt schedule may hold 200 prompts: umT5 sees at most ENCODE_BATCH of them at a time, each prompt
    encoded as it would be alone (a padded row does not change the others)."""
    from infinitetalk.encoders import load_text_encoder
    from infinitetalk.validation import ENCODE_BATCH

    enc = load_text_encoder(files["umt5_pth"])
    prompts = [f"take {i}: she talks " + "softly " * (i % 5) for i in range(2 * ENCODE_BATCH + 3)]
    batches = []
    forward = enc.model.forward
    enc.model.forward = lambda input_ids, **kw: (
        batches.append(len(input_ids)) or forward(input_ids=input_ids, **kw)
    )
    out = enc.encode(prompts)
    assert batches == [ENCODE_BATCH, ENCODE_BATCH, 3]
    for prompt, got in zip(prompts[::5], out[::5], strict=True):
        torch.testing.assert_close(got, enc.encode([prompt])[0], rtol=1e-5, atol=1e-5)


def test_umt5_tokenizer_json_and_embedded_sentencepiece_agree(files):
    from infinitetalk.encoders.text import load_tokenizer
    from infinitetalk.loading.state_dict import open_checkpoint

    from_json = load_tokenizer(files["umt5_pth"], None, None)
    embedded = load_tokenizer(files["umt5_fp16"], None, open_checkpoint(files["umt5_fp16"]))
    assert from_json.hf is not None and embedded.spm is not None
    texts = ["A man sings on a stage.", "两个人在桌边聊天", "quality, 0123 ~`|", "x" * 600]
    ids_a, mask_a = from_json(texts, 512)
    ids_b, mask_b = embedded(texts, 512)
    assert torch.equal(ids_a, ids_b) and torch.equal(mask_a, mask_b)
    assert mask_a[3].sum() == 512 and ids_a[3, -1] == 1  # truncated to 512 keeping </s>


def test_clean_prompt():
    from infinitetalk.encoders.text import clean_prompt

    assert clean_prompt("  a&amp;amp;b \n\t c  ") == "a&b c"


def test_umt5_missing_tokenizer_is_a_clear_error(files, tmp_path):
    from infinitetalk.encoders import load_text_encoder

    lonely = tmp_path / "models_t5_umt5-xxl-enc-bf16.pth"
    shutil.copy(files["umt5_pth"], lonely)
    with pytest.raises(CheckpointError, match="google/umt5-xxl") as exc_info:
        load_text_encoder(lonely)
    _one_line_error(exc_info, str(lonely))


# ============================================================================================
# CLIP
# ============================================================================================
def _reference_clip(sd: dict, image: torch.Tensor, heads: int) -> torch.Tensor:
    """open-clip ViT on original keys, every block but the last (use_31_block), no post-norm."""
    sd = {k: v.float() for k, v in sd.items()}
    x = F.interpolate(image, size=(224, 224), mode="bicubic", align_corners=False) * 0.5 + 0.5
    x = (x - torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)) / torch.tensor(
        [0.26862954, 0.26130258, 0.27577711]
    ).view(1, 3, 1, 1)
    x = F.conv2d(x, sd["visual.patch_embedding.weight"], stride=14).flatten(2).transpose(1, 2)  # no bias
    b, _, c = x.shape
    x = torch.cat([sd["visual.cls_embedding"].expand(b, 1, c), x], dim=1) + sd["visual.pos_embedding"]
    x = F.layer_norm(x, (c,), sd["visual.pre_norm.weight"], sd["visual.pre_norm.bias"], 1e-5)
    layers = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("visual.transformer."))
    for i in range(layers - 1):
        p = f"visual.transformer.{i}."
        h = F.layer_norm(x, (c,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], 1e-5)
        q, k, v = (
            F.linear(h, sd[p + "attn.to_qkv.weight"], sd[p + "attn.to_qkv.bias"])
            .view(b, -1, 3, heads, c // heads)
            .unbind(2)
        )
        att = torch.softmax(torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(c // heads), dim=-1)
        o = torch.einsum("bhqk,bkhd->bqhd", att, v).reshape(b, -1, c)
        x = x + F.linear(o, sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
        h = F.layer_norm(x, (c,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], 1e-5)
        x = x + F.linear(
            F.gelu(F.linear(h, sd[p + "mlp.0.weight"], sd[p + "mlp.0.bias"])),
            sd[p + "mlp.2.weight"],
            sd[p + "mlp.2.bias"],
        )
    return x


def test_clip_layouts_identical_and_match_reference_maths(files):
    from infinitetalk.encoders import load_clip_vision

    a, b = load_clip_vision(files["clip_pth"]), load_clip_vision(files["clip_vision_h"])
    _same_parameters(a.model, b.model)
    assert a.model.config.num_hidden_layers == tiny.TINY_CLIP["layers"] - 1  # last block dropped
    image = torch.rand(2, 3, 96, 120, generator=torch.Generator().manual_seed(0)) * 2 - 1
    out = a.encode(image)
    assert out.shape == (2, 257, tiny.TINY_CLIP["width"])
    assert torch.equal(out, b.encode(image))
    sd = torch.load(files["clip_pth"], weights_only=True)
    # 1e-5: same float32 maths, different op order
    torch.testing.assert_close(out, _reference_clip(sd, image, heads=2), rtol=1e-5, atol=1e-5)


def test_clip_heads_rule():
    from infinitetalk.encoders.clip import clip_heads

    assert (clip_heads(1280), clip_heads(1024), clip_heads(768), clip_heads(32)) == (16, 16, 12, 2)


# ============================================================================================
# VAE
# ============================================================================================
def test_vae_tiny_layout_and_key_conversion_round_trip():
    from diffusers import AutoencoderKLWan
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    source = tiny.vae_source(0)  # original Wan keys, written by hand from the Wan structure
    with torch.device("meta"):
        expected = AutoencoderKLWan(**tiny.TINY_VAE).state_dict()
    to_diffusers = convert_wan_vae_to_diffusers({k: k for k in source})  # diffusers key -> Wan key
    assert {d: tuple(source[w].shape) for d, w in to_diffusers.items()} == {
        k: tuple(v.shape) for k, v in expected.items()
    }
    back = tiny.diffusers_to_wan_vae_keys(list(expected))  # our inverse, Wan key -> diffusers key
    assert back == {w: d for d, w in to_diffusers.items()}
    assert "decoder.upsamples.4.shortcut.weight" in back and "encoder.middle.1.to_qkv.weight" in back


def test_vae_layouts_identical_and_normalised(files, tmp_path):
    from infinitetalk.encoders import load_vae
    from infinitetalk.encoders.vae import WAN21_LATENT_MEAN, WAN21_LATENT_STD

    vae = load_vae(files["vae_pth"])
    _same_parameters(vae.model, load_vae(files["vae_safetensors"]).model)
    vae.model.save_pretrained(tmp_path / "vae")
    _same_parameters(vae.model, load_vae(tmp_path).model)  # diffusers folder (repo root with vae/)

    video = torch.rand(1, 3, 5, 16, 24, generator=torch.Generator().manual_seed(0)) * 2 - 1
    z = vae.encode(video)
    assert z.shape == (1, 16, 2, 2, 3) and z.dtype == torch.float32
    mean = torch.tensor(WAN21_LATENT_MEAN).view(1, 16, 1, 1, 1)
    std = torch.tensor(WAN21_LATENT_STD).view(1, 16, 1, 1, 1)
    mu = vae.model.encode(video).latent_dist.mean
    torch.testing.assert_close(z, (mu - mean) / std, rtol=0, atol=0)
    frames = vae.decode(z)
    assert frames.shape == (1, 3, 5, 16, 24) and frames.abs().max() <= 1.0
    expected = vae.model.decode(z * std + mean).sample.clamp(-1, 1)
    torch.testing.assert_close(frames, expected, rtol=1e-6, atol=1e-6)


def test_vae_refuses_other_vaes(files):
    from infinitetalk.encoders.vae import infer_vae_config

    shapes = {
        "encoder.conv_in.weight": torch.Size([8, 12, 3, 3, 3]),
        "post_quant_conv.weight": torch.Size([48, 48, 1, 1, 1]),
    }
    with pytest.raises(CheckpointError, match="Wan 2.2"):
        infer_vae_config(shapes, "wan2.2_vae.safetensors")


# ============================================================================================
# wav2vec2
# ============================================================================================
def test_wav2vec2_layouts_identical_and_frame_count(files):
    from infinitetalk.encoders import load_audio_encoder

    enc = load_audio_encoder(files["wav2vec2_dir"])
    _same_parameters(enc.model, load_audio_encoder(files["wav2vec2_fp16"]).model)
    assert not enc.config.do_normalize and enc.config.num_layers == 3 and enc.config.hidden_size == 96
    rng = np.random.default_rng(0)
    for seconds, frames in ((1.0, 25), (10.0, 250)):
        out = enc.encode((rng.standard_normal(int(seconds * 16000)) * 0.1).astype(np.float32))
        assert out.shape == (frames, 3, 96) and out.dtype == torch.float32


def test_num_video_frames_and_interpolation():
    from infinitetalk.encoders.wav2vec2 import linear_interpolation, num_video_frames

    assert [num_video_frames(n) for n in (639, 640, 16000, 16639, 160000)] == [0, 1, 25, 25, 250]
    feats = torch.tensor([0.0, 1.0, 4.0]).view(1, 3, 1)  # (B, T, C)
    # align_corners: output i samples input position i * (T-1)/(L-1) -> 0, .5, 1, 1.5, 2
    assert linear_interpolation(feats, 5).flatten().tolist() == [0.0, 0.5, 1.0, 2.5, 4.0]


def test_wav2vec2_layer_stacking_matches_hf_hidden_states(files):
    from infinitetalk.encoders import load_audio_encoder

    enc = load_audio_encoder(files["wav2vec2_dir"])
    x = torch.randn(1, 8000, generator=torch.Generator().manual_seed(1)) * 0.1
    feats = enc.model.feature_extractor(x).transpose(1, 2)  # (1, T, 512-like) at 50 Hz, no resampling
    ours = enc.encode_features(feats)
    hf = torch.stack(enc.model(x, output_hidden_states=True).hidden_states[1:], dim=2)[0]  # (T, layers, C)
    torch.testing.assert_close(ours, hf, rtol=1e-5, atol=1e-5)  # same float32 ops, 1e-5 for kernel choice
    # the full path is the same stacking applied to the CNN features resampled to 25 fps
    full = enc.encode(x[0].numpy())
    from infinitetalk.encoders.wav2vec2 import linear_interpolation

    torch.testing.assert_close(
        full, enc.encode_features(linear_interpolation(feats, 12)), rtol=1e-6, atol=1e-6
    )


def test_wav2vec2_chunked_cnn_matches_whole_clip(files):
    """Long audio runs the CNN chunk by chunk; the global GroupNorm statistics keep it exact."""
    from infinitetalk.encoders import load_audio_encoder
    from infinitetalk.encoders.wav2vec2 import conv_features

    enc = load_audio_encoder(files["wav2vec2_dir"])
    x = torch.randn(1, 3 * 16000, generator=torch.Generator().manual_seed(2)) * 0.1
    with torch.no_grad():
        whole = enc.model.feature_extractor(x)  # (1, C, 149)
        chunked = conv_features(enc.model.feature_extractor, x, chunk_frames=7)  # 22 chunks
    assert chunked.shape == whole.shape
    # float32; only summation order differs (per-chunk conv, float64 statistics): 1e-6 relative
    assert (chunked - whole).abs().max() <= 1e-6 * whole.abs().max() * 10
    enc.chunk_frames = 7
    torch.testing.assert_close(enc.encode(x[0].numpy()), load_audio_encoder(files["wav2vec2_dir"]).encode(x[0].numpy()),
                               rtol=1e-4, atol=1e-5)  # fmt: skip


def test_wav2vec2_stable_layer_norm_variant_matches_hf():
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    from infinitetalk.encoders.wav2vec2 import AudioEncoder

    torch.manual_seed(0)
    config = Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=[16] * 7,
        conv_bias=True,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
    )
    model = Wav2Vec2Model(config).eval()
    x = torch.randn(1, 6400) * 0.1
    feats = model.feature_extractor(x).transpose(1, 2)
    ours = AudioEncoder(model, do_normalize=True).encode_features(feats)
    with torch.no_grad():
        out = model(x, output_hidden_states=True)
    # transformers 4's encoder (what the reference called) lists the final-layer-normed output as the
    # last hidden state; transformers 5 lists the raw last layer. We keep the transformers 4 meaning.
    hf = torch.stack([*out.hidden_states[1:-1], out.last_hidden_state], dim=2)[0]
    torch.testing.assert_close(ours, hf, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(ours[:, -1], out.hidden_states[-1][0])  # the final norm does matter


def test_wav2vec2_single_file_config_inference_and_pos_conv_names(files, tmp_path):
    from infinitetalk.encoders import load_audio_encoder

    ref = load_audio_encoder(files["wav2vec2_dir"])
    # ComfyUI's native layout: no prefix and no pre-training heads
    sd = {
        k[len("wav2vec2.") :]: v.float()
        for k, v in load_file(files["wav2vec2_fp16"]).items()
        if k.startswith("wav2vec2.")
    }
    g, v = sd.pop("encoder.pos_conv_embed.conv.weight_g"), sd.pop("encoder.pos_conv_embed.conv.weight_v")
    comfy = {
        **sd,
        "encoder.pos_conv_embed.conv.parametrizations.weight.original0": g,
        "encoder.pos_conv_embed.conv.parametrizations.weight.original1": v,
    }
    save_file(comfy, tmp_path / "comfy_native.safetensors")
    _same_parameters(ref.model, load_audio_encoder(tmp_path / "comfy_native.safetensors").model)
    folded = {**sd, "encoder.pos_conv_embed.conv.weight": torch._weight_norm(v, g, 2)}
    save_file(folded, tmp_path / "folded.safetensors")
    wave = np.random.default_rng(2).standard_normal(16000).astype(np.float32) * 0.1
    # folded weight -> (g, v) re-derived: equal up to float32 rounding of the norm
    torch.testing.assert_close(
        load_audio_encoder(tmp_path / "folded.safetensors").encode(wave),
        ref.encode(wave),
        rtol=1e-5,
        atol=1e-5,
    )


def test_wav2vec2_preprocessor_do_normalize_is_honoured(files, tmp_path):
    from infinitetalk.encoders import load_audio_encoder
    from infinitetalk.encoders.wav2vec2 import normalize_wave

    folder = tmp_path / "w2v"
    shutil.copytree(files["wav2vec2_dir"], folder)
    pre = json.loads((folder / "preprocessor_config.json").read_text())
    (folder / "preprocessor_config.json").write_text(json.dumps({**pre, "do_normalize": True}))
    normed, plain = load_audio_encoder(folder), load_audio_encoder(files["wav2vec2_dir"])
    assert normed.config.do_normalize
    wave = (np.random.default_rng(3).standard_normal(16000) * 0.3 + 0.2).astype(np.float32)
    assert torch.equal(normed.encode(wave), plain.encode(normalize_wave(wave)))
    assert not torch.allclose(normed.encode(wave), plain.encode(wave))


def test_wav2vec2_input_errors(files):
    from infinitetalk.encoders import load_audio_encoder

    enc = load_audio_encoder(files["wav2vec2_fp16"])
    with pytest.raises(InputError, match="samples"):
        enc.encode(np.zeros(300, dtype=np.float32))
    with pytest.raises(InputError, match="mono"):
        enc.encode(np.zeros((2, 16000), dtype=np.float32))


# ============================================================================================
# wrong files
# ============================================================================================
@pytest.mark.parametrize(
    ("loader", "wrong"),
    [
        ("load_text_encoder", "vae_pth"),
        ("load_clip_vision", "umt5_fp16"),
        ("load_vae", "clip_vision_h"),
        ("load_audio_encoder", "vae_safetensors"),
    ],
)
def test_wrong_file_is_one_line_checkpoint_error(files, loader, wrong):
    import infinitetalk.encoders as encoders

    with pytest.raises(CheckpointError) as exc_info:
        getattr(encoders, loader)(files[wrong])
    _one_line_error(exc_info, files[wrong].name)


@pytest.mark.parametrize(
    "loader", ["load_text_encoder", "load_clip_vision", "load_vae", "load_audio_encoder"]
)
def test_missing_or_corrupt_file_is_one_line_checkpoint_error(tmp_path, loader):
    import infinitetalk.encoders as encoders

    with pytest.raises(CheckpointError) as exc_info:
        getattr(encoders, loader)(tmp_path / "absent.safetensors")
    _one_line_error(exc_info, "absent.safetensors")
    bad = tmp_path / "garbage.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(CheckpointError) as exc_info:
        getattr(encoders, loader)(bad)
    _one_line_error(exc_info, "garbage.safetensors")


# ============================================================================================
# real-size shapes (meta tensors, nothing allocated) infer the real configurations
# ============================================================================================
class _ShapeSource:
    """Stands in for a CheckpointReader: shapes only."""

    def __init__(self, shapes):
        self.shapes_, self.path = shapes, "real.safetensors"

    def keys(self):
        return self.shapes_.keys()

    def __contains__(self, key):
        return key in self.shapes_

    def shape(self, key):
        return self.shapes_[key]


def test_real_size_shapes_infer_real_configs():
    from diffusers import AutoencoderKLWan

    from infinitetalk.encoders.clip import infer_clip_config, open_clip_rules
    from infinitetalk.encoders.text import infer_umt5_config, wan_to_hf_keys
    from infinitetalk.encoders.vae import infer_vae_config, wan_to_diffusers_keys
    from infinitetalk.encoders.wav2vec2 import infer_wav2vec2_config, model_keys

    t5 = {"token_embedding.weight": (256384, 4096), "norm.weight": (4096,)}
    for i in range(24):
        t5 |= {f"blocks.{i}.attn.{m}.weight": (4096, 4096) for m in "qkvo"}
        t5 |= {
            f"blocks.{i}.ffn.gate.0.weight": (10240, 4096),
            f"blocks.{i}.ffn.fc1.weight": (10240, 4096),
            f"blocks.{i}.ffn.fc2.weight": (4096, 10240),
            f"blocks.{i}.pos_embedding.embedding.weight": (32, 64),
            f"blocks.{i}.norm1.weight": (4096,),
            f"blocks.{i}.norm2.weight": (4096,),
        }
    cfg = infer_umt5_config({hf: torch.Size(t5[src]) for hf, src in wan_to_hf_keys(list(t5)).items()})
    assert (cfg.d_model, cfg.num_heads, cfg.d_kv, cfg.d_ff, cfg.num_layers, cfg.vocab_size) == (
        4096,
        64,
        64,
        10240,
        24,
        256384,
    )

    clip = {
        "visual.patch_embedding.weight": (1280, 3, 14, 14),
        "visual.cls_embedding": (1, 1, 1280),
        "visual.pos_embedding": (1, 257, 1280),
    }
    for i in range(32):
        clip |= {
            f"visual.transformer.{i}.attn.to_qkv.weight": (3840, 1280),
            f"visual.transformer.{i}.mlp.0.weight": (5120, 1280),
        }
    rules = open_clip_rules(list(clip))
    cfg = infer_clip_config(
        {hf: fn(torch.empty(clip[src], device="meta")).shape for hf, (src, fn) in rules.items()}
    )
    assert (
        cfg.hidden_size,
        cfg.num_attention_heads,
        cfg.num_hidden_layers,
        cfg.image_size,
        cfg.intermediate_size,
    ) == (1280, 16, 32, 224, 5120)

    with torch.device("meta"):
        real_vae = AutoencoderKLWan().state_dict()  # diffusers defaults = Wan 2.1 (base_dim 96)
    wan = tiny.diffusers_to_wan_vae_keys(list(real_vae))  # Wan key -> diffusers key
    shapes = {d: real_vae[wan[w]].shape for d, w in wan_to_diffusers_keys(list(wan)).items()}
    kwargs = infer_vae_config(shapes)
    assert (kwargs["base_dim"], kwargs["dim_mult"], kwargs["temperal_downsample"]) == (
        96,
        [1, 2, 4, 4],
        [False, True, True],
    )

    w2v = {
        "wav2vec2.feature_projection.projection.weight": (768, 512),
        "wav2vec2.encoder.pos_conv_embed.conv.weight_v": (768, 48, 128),
        "wav2vec2.encoder.pos_conv_embed.conv.weight_g": (1, 1, 128),
        "wav2vec2.feature_extractor.conv_layers.0.layer_norm.weight": (512,),
        "quantizer.codevectors": (1, 640, 384),
    }
    w2v |= {
        f"wav2vec2.feature_extractor.conv_layers.{i}.conv.weight": (512, 1 if i == 0 else 512, k)
        for i, k in enumerate((10, 3, 3, 3, 3, 2, 2))
    }
    for i in range(12):
        w2v |= {
            f"wav2vec2.encoder.layers.{i}.attention.q_proj.weight": (768, 768),
            f"wav2vec2.encoder.layers.{i}.feed_forward.intermediate_dense.weight": (3072, 768),
        }
    source = _ShapeSource({k: torch.Size(v) for k, v in w2v.items()})
    cfg = infer_wav2vec2_config(model_keys(list(w2v)), source)
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.intermediate_size) == (
        768,
        12,
        12,
        3072,
    )
    assert (cfg.num_conv_pos_embeddings, cfg.num_conv_pos_embedding_groups, cfg.feat_extract_norm) == (
        128,
        16,
        "group",
    )
    assert not cfg.do_stable_layer_norm and not cfg.conv_bias and cfg.conv_stride == [5, 2, 2, 2, 2, 2, 2]
