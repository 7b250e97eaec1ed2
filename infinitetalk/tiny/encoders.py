"""Tiny random umT5, CLIP, VAE and wav2vec2 checkpoints with the real file names and key layouts.

``write_all(root, seed)`` writes (a few hundred KiB in all, well under a second or two):

official tree ``root/weights/``::

    Wan2.1-I2V-14B-480P/models_t5_umt5-xxl-enc-bf16.pth                        original umT5 keys, bf16
    Wan2.1-I2V-14B-480P/google/umt5-xxl/{spiece.model,tokenizer.json,...}     tiny SentencePiece tokenizer
    Wan2.1-I2V-14B-480P/models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth  open-clip keys (+ text tower), fp32
    Wan2.1-I2V-14B-480P/Wan2.1_VAE.pth                                         original Wan VAE keys, fp32
    chinese-wav2vec2-base/{config.json,model.safetensors,preprocessor_config.json}  ``wav2vec2.``-prefixed, fp32

ComfyUI tree ``root/models/``::

    text_encoders/umt5_xxl_fp16.safetensors                 HF T5 keys, fp16, embedded ``spiece_model``
    text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors    HF T5 keys, fp8 linears + ``scale_weight``
    text_encoders/umt5-xxl-enc-bf16.safetensors             Kijai: original Wan keys, bf16, no tokenizer
    clip_vision/clip_vision_h.safetensors                   HF CLIP vision keys, fp16
    vae/wan_2.1_vae.safetensors                             original Wan VAE keys, fp16
    vae/Wan2_1_VAE_bf16.safetensors                         Kijai: original Wan VAE keys, bf16
    audio_encoders/wav2vec2-chinese-base_fp16.safetensors   Kijai: ``wav2vec2.``-prefixed, fp16, pre-training heads

(every name and folder comes from :mod:`infinitetalk.weights`).

Every layout of a component is converted from one random source whose values are exactly
representable in bf16, fp16 and (with a per-tensor power-of-two scale) fp8 e4m3: all layouts of a
component therefore load to bit-identical parameters, which the tests check.
"""

from __future__ import annotations

import io
import json
import math
import re
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..encoders.clip import convert_open_clip
from ..encoders.text import wan_to_hf_keys
from ..weights import UMT5_TOKENIZER_DIR, Component, spec


def _tiny(component: Component, key: str) -> Path:
    """Path (relative to the tiny root) of a published file, as the registry names it."""
    f = spec(component).published(key)
    return Path("weights" if f.tree == "official" else "models") / f.relpath


def t5_pth() -> Path:
    return _tiny(Component.TEXT_ENCODER, "official")


def tokenizer_dir() -> Path:
    return Path("weights") / UMT5_TOKENIZER_DIR


TINY_UMT5 = dict(d_model=64, layers=2, heads=2, d_kv=32, d_ff=128, buckets=32)
TINY_CLIP = dict(width=32, layers=2, mlp=128, patch=14, image=224, embed_dim=16)
TINY_VAE = dict(base_dim=8, z_dim=16)
# wav2vec2 dims all differ from each other and from the adapter's (tiny/dit.py): hidden 96 x 3 layers
TINY_WAV2VEC2 = dict(
    hidden=96, layers=3, heads=6, intermediate=112, conv_dim=40, pos_kernel=128, pos_groups=16
)
# Wav2Vec2ForPreTraining heads as in the real file: G codebooks x V entries, codevector/projection dims
TINY_W2V_HEADS = dict(groups=2, entries=5, codevector_dim=12, proj_dim=14)

_FP8_MAX = 448.0
_T5_LINEARS = ("attn.q", "attn.k", "attn.v", "attn.o", "ffn.gate.0", "ffn.fc1", "ffn.fc2")


def write_all(root: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write every tiny encoder file under ``root``; return {name: path}."""
    root = Path(root)
    paths: dict[str, Path] = {}
    paths.update(write_umt5(root, seed))
    paths.update(write_clip(root, seed + 1))
    paths.update(write_vae(root, seed + 2))
    paths.update(write_wav2vec2(root, seed + 3))
    return paths


# --------------------------------------------------------------------------------------------
# random values exact in bf16 / fp16 / fp8 x power-of-two scale
# --------------------------------------------------------------------------------------------
def _pow2_scale(t: torch.Tensor) -> float:
    amax = float(t.abs().max())
    return 2.0 ** math.ceil(math.log2(amax / _FP8_MAX)) if amax > 0 else 1.0


def snap(t: torch.Tensor) -> torch.Tensor:
    """Round to fp8 e4m3 times a power-of-two scale (4 significant bits: exact in fp16 and bf16)."""
    scale = _pow2_scale(t)
    return (t / scale).to(torch.float8_e4m3fn).float() * scale


class _Random:
    def __init__(self, seed: int):
        self.gen = torch.Generator().manual_seed(seed)

    def normal(self, *shape: int, std: float = 1.0, mean: float = 0.0) -> torch.Tensor:
        return snap(torch.randn(*shape, generator=self.gen) * std + mean)

    def weight(self, *shape: int) -> torch.Tensor:
        """Fan-in scaled weight (out, in, *kernel)."""
        return self.normal(*shape, std=math.prod(shape[1:]) ** -0.5)


def _cast(state: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in state.items()}


def _save_pth(state: dict[str, torch.Tensor], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)


def _save_st(state: dict[str, torch.Tensor], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))


# --------------------------------------------------------------------------------------------
# umT5 + tokenizer
# --------------------------------------------------------------------------------------------
_CORPUS = [
    "A woman is talking to the camera in a bright room, natural light, realistic, high quality.",
    "A man sings on a stage; the crowd claps. Two people have a conversation at a table.",
    "Bright tones, overexposed, static, blurred details, subtitles, style, works, paintings, images.",
    "worst quality, low quality, JPEG compression residue, ugly, incomplete, extra fingers, deformed limbs",
    "一个女人在明亮的房间里对着镜头说话。两个人在桌边聊天，一个男人在舞台上唱歌。",
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量。",
    "The quick brown fox jumps over the lazy dog 0123456789 & < > \" ' ( ) [ ] { } ! ? . , ; : - _ + = * / \\ | @ # $ % ^ ~ `",
]


def _train_sentencepiece() -> bytes:
    """A tiny unigram SentencePiece model with T5's special ids (pad 0, eos 1, unk 2)."""
    import sentencepiece

    ascii_line = "".join(chr(c) for c in range(33, 127))
    lines = [*_CORPUS, ascii_line, " ".join(ascii_line)] * 8
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        vocab_size=320,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        character_coverage=1.0,
        hard_vocab_limit=False,
        normalization_rule_name="identity",
        num_threads=1,
        minloglevel=2,
    )
    return model.getvalue()


def _write_tokenizer(folder: Path, proto: bytes) -> int:
    """Write spiece.model + tokenizer.json + configs (T5 conventions); return the vocab size.

    tokenizer.json is built with ``tokenizers`` directly (Unigram over the SentencePiece pieces and
    scores, whitespace split + metaspace, ``</s>`` appended), so transformers 4 and 5 both load it
    offline without protobuf.
    """
    import sentencepiece
    from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import Unigram

    spm = sentencepiece.SentencePieceProcessor(model_proto=proto)
    vocab = [(spm.id_to_piece(i), spm.get_score(i)) for i in range(spm.get_piece_size())]
    tok = Tokenizer(Unigram(vocab, unk_id=spm.unk_id(), byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always"),
        ]
    )
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.add_special_tokens([AddedToken(t, special=True) for t in ("<pad>", "</s>", "<unk>")])
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", spm.eos_id())]
    )
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "spiece.model").write_bytes(proto)
    special = {"eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
    config = {
        "tokenizer_class": "T5Tokenizer",
        "extra_ids": 0,
        "model_max_length": 512,
        "additional_special_tokens": [],
        **special,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    return len(vocab)


def umt5_source(seed: int, vocab: int) -> dict[str, torch.Tensor]:
    """Random umT5 encoder in the original Wan key layout (float32, snapped)."""
    c, rnd = TINY_UMT5, _Random(seed)
    d, inner, ff = c["d_model"], c["heads"] * c["d_kv"], c["d_ff"]
    state = {"token_embedding.weight": rnd.normal(vocab, d)}
    for i in range(c["layers"]):
        p = f"blocks.{i}."
        state |= {
            p + "norm1.weight": rnd.normal(d, std=0.1, mean=1.0),
            p + "attn.q.weight": rnd.weight(inner, d),
            p + "attn.k.weight": rnd.weight(inner, d),
            p + "attn.v.weight": rnd.weight(inner, d),
            p + "attn.o.weight": rnd.weight(d, inner),
            p + "norm2.weight": rnd.normal(d, std=0.1, mean=1.0),
            p + "ffn.gate.0.weight": rnd.weight(ff, d),
            p + "ffn.fc1.weight": rnd.weight(ff, d),
            p + "ffn.fc2.weight": rnd.weight(d, ff),
            p + "pos_embedding.embedding.weight": rnd.normal(c["buckets"], c["heads"], std=0.5),
        }
    state["norm.weight"] = rnd.normal(d, std=0.1, mean=1.0)
    return state


def umt5_to_hf(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original Wan umT5 keys -> Hugging Face / ComfyUI keys."""
    return {hf: state[src] for hf, src in wan_to_hf_keys(list(state)).items()}


def _fp8_scaled(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """ComfyUI scaled-fp8 layout: fp8 linear weights + scalar ``scale_weight``, the rest fp16."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if re.search(r"\.(SelfAttention\.[qkvo]|DenseReluDense\.(wi_0|wi_1|wo))\.weight$", key):
            scale = _pow2_scale(value)
            out[key] = (value / scale).to(torch.float8_e4m3fn)
            out[key[: -len("weight")] + "scale_weight"] = torch.tensor(scale, dtype=torch.float32)
        else:
            out[key] = value.to(torch.float16)
    out["scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    return out


def write_umt5(root: Path, seed: int) -> dict[str, Path]:
    """Official ``.pth`` + tokenizer folder, ComfyUI's fp16 / fp8-scaled files (tokenizer inside) and
    Kijai's ``umt5-xxl-enc-bf16`` (original Wan keys in a safetensors file, no tokenizer)."""
    proto = _train_sentencepiece()
    vocab = _write_tokenizer(root / tokenizer_dir(), proto)
    source = umt5_source(seed, vocab)
    paths = {
        "umt5_pth": root / t5_pth(),
        "umt5_tokenizer": root / tokenizer_dir(),
        "umt5_fp16": root / _tiny(Component.TEXT_ENCODER, "comfy_fp16"),
        "umt5_fp8_scaled": root / _tiny(Component.TEXT_ENCODER, "comfy_fp8_scaled"),
        "umt5_kijai_bf16": root / _tiny(Component.TEXT_ENCODER, "kj_bf16"),
    }
    _save_pth(_cast(source, torch.bfloat16), paths["umt5_pth"])
    _save_st(_cast(source, torch.bfloat16), paths["umt5_kijai_bf16"])
    hf = umt5_to_hf(source)
    spiece = torch.frombuffer(bytearray(proto), dtype=torch.uint8)
    _save_st({**_cast(hf, torch.float16), "spiece_model": spiece}, paths["umt5_fp16"])
    _save_st({**_fp8_scaled(hf), "spiece_model": spiece}, paths["umt5_fp8_scaled"])
    return paths


# --------------------------------------------------------------------------------------------
# CLIP
# --------------------------------------------------------------------------------------------
def clip_source(seed: int) -> dict[str, torch.Tensor]:
    """Random open-clip XLM-RoBERTa ViT in the Wan key layout (vision tower + a token text tower)."""
    c, rnd = TINY_CLIP, _Random(seed)
    w, mlp, p = c["width"], c["mlp"], c["patch"]
    tokens = (c["image"] // p) ** 2 + 1
    state = {
        "visual.patch_embedding.weight": rnd.weight(w, 3, p, p),
        "visual.cls_embedding": rnd.normal(1, 1, w, std=w**-0.5),
        "visual.pos_embedding": rnd.normal(1, tokens, w, std=w**-0.5),
        "visual.pre_norm.weight": rnd.normal(w, std=0.1, mean=1.0),
        "visual.pre_norm.bias": rnd.normal(w, std=0.1),
    }
    for i in range(c["layers"]):
        b = f"visual.transformer.{i}."
        for norm in ("norm1", "norm2"):
            state[b + norm + ".weight"] = rnd.normal(w, std=0.1, mean=1.0)
            state[b + norm + ".bias"] = rnd.normal(w, std=0.1)
        for name, shape in (
            ("attn.to_qkv", (3 * w, w)),
            ("attn.proj", (w, w)),
            ("mlp.0", (mlp, w)),
            ("mlp.2", (w, mlp)),
        ):
            state[b + name + ".weight"] = rnd.weight(*shape)
            state[b + name + ".bias"] = rnd.normal(shape[0], std=0.1)
    state |= {
        "visual.post_norm.weight": rnd.normal(w, std=0.1, mean=1.0),
        "visual.post_norm.bias": rnd.normal(w, std=0.1),
        "visual.head": rnd.normal(w, c["embed_dim"], std=w**-0.5),
        # a token text tower: the loader must ignore it, as it ignores the real XLM-RoBERTa one
        "textual.token_embedding.weight": rnd.normal(16, 8),
        "textual.head.0.weight": rnd.weight(12, 8),
        "log_scale": torch.tensor(math.log(1 / 0.07)),
    }
    return state


def write_clip(root: Path, seed: int) -> dict[str, Path]:
    source = clip_source(seed)
    paths = {
        "clip_pth": root / _tiny(Component.CLIP, "official"),
        "clip_vision_h": root / _tiny(Component.CLIP, "comfy"),
    }
    _save_pth(source, paths["clip_pth"])
    _save_st(_cast(convert_open_clip(source), torch.float16), paths["clip_vision_h"])
    return paths


# --------------------------------------------------------------------------------------------
# VAE
# --------------------------------------------------------------------------------------------
def wan_vae_shapes(base_dim: int, z_dim: int) -> dict[str, tuple[int, ...]]:
    """Original-layout key -> shape of a Wan 2.1 VAE (4 levels x 2 res blocks, temporal down 2nd/3rd)."""
    mult, temporal = (1, 2, 4, 4), (False, True, True)
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(name: str, out: int, inp: int, *kernel: int) -> None:
        shapes[name + ".weight"], shapes[name + ".bias"] = (out, inp, *kernel), (out,)

    def res(name: str, inp: int, out: int) -> None:
        shapes[name + ".residual.0.gamma"], shapes[name + ".residual.3.gamma"] = (
            (inp, 1, 1, 1),
            (out, 1, 1, 1),
        )
        conv(name + ".residual.2", out, inp, 3, 3, 3)
        conv(name + ".residual.6", out, out, 3, 3, 3)
        if inp != out:
            conv(name + ".shortcut", out, inp, 1, 1, 1)

    def middle(name: str, c: int) -> None:
        res(name + ".middle.0", c, c)
        shapes[name + ".middle.1.norm.gamma"] = (c, 1, 1)
        conv(name + ".middle.1.to_qkv", 3 * c, c, 1, 1)
        conv(name + ".middle.1.proj", c, c, 1, 1)
        res(name + ".middle.2", c, c)

    dims = [base_dim] + [base_dim * m for m in mult]  # encoder: 8, 8, 16, 32, 32
    conv("encoder.conv1", dims[0], 3, 3, 3, 3)
    index = 0
    for level, (inp, out) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        for block in range(2):
            res(f"encoder.downsamples.{index}", inp if block == 0 else out, out)
            index += 1
        if level < 3:
            conv(f"encoder.downsamples.{index}.resample.1", out, out, 3, 3)
            if temporal[level]:
                conv(f"encoder.downsamples.{index}.time_conv", out, out, 3, 1, 1)
            index += 1
    middle("encoder", dims[-1])
    shapes["encoder.head.0.gamma"] = (dims[-1], 1, 1, 1)
    conv("encoder.head.2", 2 * z_dim, dims[-1], 3, 3, 3)
    conv("conv1", 2 * z_dim, 2 * z_dim, 1, 1, 1)
    conv("conv2", z_dim, z_dim, 1, 1, 1)

    dims = [base_dim * m for m in (mult[-1], *mult[::-1])]  # decoder: 32, 32, 32, 16, 8
    conv("decoder.conv1", dims[0], z_dim, 3, 3, 3)
    middle("decoder", dims[0])
    for level, (inp, out) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        inp = inp // 2 if level > 0 else inp  # each upsample halves the width
        for block in range(3):
            res(f"decoder.upsamples.{4 * level + block}", inp if block == 0 else out, out)
        if level < 3:
            conv(f"decoder.upsamples.{4 * level + 3}.resample.1", out // 2, out, 3, 3)
            if temporal[::-1][level]:
                conv(f"decoder.upsamples.{4 * level + 3}.time_conv", 2 * out, out, 3, 1, 1)
    shapes["decoder.head.0.gamma"] = (dims[-1], 1, 1, 1)
    conv("decoder.head.2", 3, dims[-1], 3, 3, 3)
    return shapes


def vae_source(seed: int) -> dict[str, torch.Tensor]:
    """Random tiny Wan 2.1 VAE in the original Wan key layout."""
    rnd = _Random(seed)
    state = {}
    for key, shape in wan_vae_shapes(**TINY_VAE).items():
        if key.endswith("gamma"):
            state[key] = rnd.normal(*shape, std=0.1, mean=1.0)
        elif key.endswith("bias"):
            state[key] = rnd.normal(*shape, std=0.05)
        else:
            state[key] = rnd.weight(*shape)
    return state


def diffusers_to_wan_vae_keys(keys: list[str]) -> dict[str, str]:
    """Original Wan key -> diffusers key (the inverse of diffusers' ``convert_wan_vae_to_diffusers``;
    used by the tests to check the conversion both ways)."""
    out = {}
    for key in keys:
        out[_wan_vae_key(key)] = key
    return out


_RES = {
    "norm1.gamma": "residual.0.gamma",
    "conv1.": "residual.2.",
    "norm2.gamma": "residual.3.gamma",
    "conv2.": "residual.6.",
    "conv_shortcut.": "shortcut.",
}


def _res(rest: str) -> str:
    for old, new in _RES.items():
        if rest.startswith(old):
            return new + rest[len(old) :]
    return rest  # resample.1.*, time_conv.*, attention keys


def _wan_vae_key(key: str) -> str:
    simple = {
        "quant_conv.": "conv1.",
        "post_quant_conv.": "conv2.",
        "encoder.conv_in.": "encoder.conv1.",
        "decoder.conv_in.": "decoder.conv1.",
        "encoder.norm_out.": "encoder.head.0.",
        "decoder.norm_out.": "decoder.head.0.",
        "encoder.conv_out.": "encoder.head.2.",
        "decoder.conv_out.": "decoder.head.2.",
    }
    for old, new in simple.items():
        if key.startswith(old):
            return new + key[len(old) :]
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.(resnets|attentions)\.(\d)\.(.+)", key):
        index = 1 if m.group(2) == "attentions" else 2 * int(m.group(3))
        return f"{m.group(1)}.middle.{index}.{_res(m.group(4))}"
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.(.+)", key):
        return f"encoder.downsamples.{m.group(1)}.{_res(m.group(2))}"
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        return f"decoder.upsamples.{4 * int(m.group(1)) + int(m.group(2))}.{_res(m.group(3))}"
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.+)", key):
        return f"decoder.upsamples.{4 * int(m.group(1)) + 3}.{m.group(2)}"
    raise ValueError(f"no Wan VAE name for diffusers key {key}")


def write_vae(root: Path, seed: int) -> dict[str, Path]:
    """Official fp32 ``.pth``, ComfyUI's fp16 and Kijai's bf16 file (all original Wan keys)."""
    source = vae_source(seed)
    paths = {
        "vae_pth": root / _tiny(Component.VAE, "official"),
        "vae_safetensors": root / _tiny(Component.VAE, "comfy"),
        "vae_kijai_bf16": root / _tiny(Component.VAE, "kj_bf16"),
    }
    _save_pth(source, paths["vae_pth"])
    _save_st(_cast(source, torch.float16), paths["vae_safetensors"])
    _save_st(_cast(source, torch.bfloat16), paths["vae_kijai_bf16"])
    return paths


# --------------------------------------------------------------------------------------------
# wav2vec2
# --------------------------------------------------------------------------------------------
def wav2vec2_config() -> dict:
    """config.json of the tiny chinese-wav2vec2-base (a Wav2Vec2ForPreTraining checkpoint)."""
    c = TINY_WAV2VEC2
    return {
        "architectures": ["Wav2Vec2ForPreTraining"],
        "model_type": "wav2vec2",
        "hidden_size": c["hidden"],
        "num_hidden_layers": c["layers"],
        "num_attention_heads": c["heads"],
        "intermediate_size": c["intermediate"],
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-5,
        "conv_dim": [c["conv_dim"]] * 7,
        "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
        "conv_stride": [5, 2, 2, 2, 2, 2, 2],
        "conv_bias": False,
        "feat_extract_norm": "group",
        "feat_extract_activation": "gelu",
        "do_stable_layer_norm": False,
        "num_conv_pos_embeddings": c["pos_kernel"],
        "num_conv_pos_embedding_groups": c["pos_groups"],
        "vocab_size": 32,
        "num_codevector_groups": TINY_W2V_HEADS["groups"],
        "num_codevectors_per_group": TINY_W2V_HEADS["entries"],
        "codevector_dim": TINY_W2V_HEADS["codevector_dim"],
        "proj_codevector_dim": TINY_W2V_HEADS["proj_dim"],
    }


def wav2vec2_source(seed: int) -> dict[str, torch.Tensor]:
    """Random tiny wav2vec2 (HF names, no prefix, weight-norm ``weight_g``/``weight_v``)."""
    c, rnd = TINY_WAV2VEC2, _Random(seed)
    h, conv, ff = c["hidden"], c["conv_dim"], c["intermediate"]
    state = {"masked_spec_embed": rnd.normal(h)}
    for i, k in enumerate((10, 3, 3, 3, 3, 2, 2)):
        state[f"feature_extractor.conv_layers.{i}.conv.weight"] = rnd.weight(conv, 1 if i == 0 else conv, k)
    state |= {
        "feature_extractor.conv_layers.0.layer_norm.weight": rnd.normal(conv, std=0.1, mean=1.0),
        "feature_extractor.conv_layers.0.layer_norm.bias": rnd.normal(conv, std=0.1),
        "feature_projection.layer_norm.weight": rnd.normal(conv, std=0.1, mean=1.0),
        "feature_projection.layer_norm.bias": rnd.normal(conv, std=0.1),
        "feature_projection.projection.weight": rnd.weight(h, conv),
        "feature_projection.projection.bias": rnd.normal(h, std=0.1),
        "encoder.pos_conv_embed.conv.weight_g": rnd.normal(1, 1, c["pos_kernel"], std=0.2, mean=1.0),
        "encoder.pos_conv_embed.conv.weight_v": rnd.weight(h, h // c["pos_groups"], c["pos_kernel"]),
        "encoder.pos_conv_embed.conv.bias": rnd.normal(h, std=0.1),
        "encoder.layer_norm.weight": rnd.normal(h, std=0.1, mean=1.0),
        "encoder.layer_norm.bias": rnd.normal(h, std=0.1),
    }
    for i in range(c["layers"]):
        p = f"encoder.layers.{i}."
        for name, shape in (
            ("attention.q_proj", (h, h)),
            ("attention.k_proj", (h, h)),
            ("attention.v_proj", (h, h)),
            ("attention.out_proj", (h, h)),
            ("feed_forward.intermediate_dense", (ff, h)),
            ("feed_forward.output_dense", (h, ff)),
        ):
            state[p + name + ".weight"] = rnd.weight(*shape)
            state[p + name + ".bias"] = rnd.normal(shape[0], std=0.1)
        for norm in ("layer_norm", "final_layer_norm"):
            state[p + norm + ".weight"] = rnd.normal(h, std=0.1, mean=1.0)
            state[p + norm + ".bias"] = rnd.normal(h, std=0.1)
    return state


def _pretraining_heads(seed: int) -> dict[str, torch.Tensor]:
    """The Wav2Vec2ForPreTraining heads both real files hold (quantizer + two projections),
    shaped as in transformers: codevectors (1, G*V, D/G), weight_proj (G*V, conv), project_hid
    (P, hidden), project_q (P, D)."""
    rnd, c, h = _Random(seed), TINY_WAV2VEC2, TINY_W2V_HEADS
    gv, d, p = h["groups"] * h["entries"], h["codevector_dim"], h["proj_dim"]
    return {
        "quantizer.codevectors": rnd.normal(1, gv, d // h["groups"]),
        "quantizer.weight_proj.weight": rnd.weight(gv, c["conv_dim"]),
        "quantizer.weight_proj.bias": rnd.normal(gv),
        "project_hid.weight": rnd.weight(p, c["hidden"]),
        "project_hid.bias": rnd.normal(p),
        "project_q.weight": rnd.weight(p, d),
        "project_q.bias": rnd.normal(p),
    }


def write_wav2vec2(root: Path, seed: int) -> dict[str, Path]:
    """The official HF folder (fp32) and Kijai's fp16 single file, both ``wav2vec2.``-prefixed with the
    pre-training heads (Kijai's file is the whole Wav2Vec2ForPreTraining state dict in fp16)."""
    source = {f"wav2vec2.{k}": v for k, v in wav2vec2_source(seed).items()} | _pretraining_heads(seed + 100)
    folder = root / _tiny(Component.AUDIO_ENCODER, "official")
    _save_st(source, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps(wav2vec2_config(), indent=2))
    preprocessor = {
        "do_normalize": False,
        "feature_extractor_type": "Wav2Vec2FeatureExtractor",
        "feature_size": 1,
        "padding_side": "right",
        "padding_value": 0.0,
        "return_attention_mask": False,
        "sampling_rate": 16000,
    }
    (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2))
    single = root / _tiny(Component.AUDIO_ENCODER, "kj_fp16")
    _save_st(_cast(source, torch.float16), single)
    return {"wav2vec2_dir": folder, "wav2vec2_fp16": single}
