"""umT5-XXL text encoder (transformers ``UMT5EncoderModel``).

Layouts accepted (detected from keys, never from the file name):

- original Wan ``models_t5_umt5-xxl-enc-bf16.pth``: ``token_embedding``, ``blocks.{i}.{norm1,attn,norm2,
  ffn,pos_embedding}``, ``norm`` (also Kijai's ``umt5-xxl-enc-*.safetensors``, same keys);
- Hugging Face / ComfyUI ``umt5_xxl_fp16.safetensors`` and ``umt5_xxl_fp8_e4m3fn_scaled.safetensors``:
  ``shared``, ``encoder.block.{i}.layer.{0,1}...``, ``encoder.final_layer_norm`` (fp8 weights with a
  ``scale_weight`` are dequantised on load).

Every dimension comes from tensor shapes: ``d_model`` and vocab from the embedding, layers from the
block count, ``d_ff`` from the gate, relative-attention buckets and *heads* from each layer's relative
position bias table ``(num_buckets, num_heads)`` (umT5 keeps one table per layer), and ``d_kv`` =
attention inner width / heads (64 for umT5-XXL: 4096 / 64 heads).

Prompts are encoded exactly as the reference ``T5EncoderModel.__call__`` does: ftfy (when installed) +
HTML unescape + whitespace clean, tokenised with ``</s>`` appended, padded/truncated to 512 tokens, run
with the attention mask, and each output trimmed to its real tokens.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import CheckpointError, InputError
from ..loading.state_dict import CheckpointReader, open_checkpoint
from ..validation import ENCODE_BATCH
from . import FrozenEncoder, LazyStateDict, build_module, strip_prefix

logger = logging.getLogger(__name__)

TEXT_LEN = 512  # tokens, the reference's text_len
TOKENIZER_HELP = (
    "for a umT5 file without a tokenizer the pack looks, in this order, for (1) a ComfyUI umT5 file that "
    "carries one (umt5_xxl_fp16.safetensors or umt5_xxl_fp8_e4m3fn_scaled.safetensors in models/text_encoders/), "
    "(2) ComfyUI-WanVideoWrapper's configs/T5_tokenizer/ in custom_nodes/, (3) the official google/umt5-xxl/ "
    "folder (Wan2.1-I2V-14B-480P/google/umt5-xxl from Hugging Face Wan-AI/Wan2.1-I2V-14B-480P); put one of "
    "them in place or pass tokenizer=<folder>"
)
_TOKENIZER_DIRS = (("google", "umt5-xxl"), ("umt5-xxl",), ("google_umt5-xxl",), ("tokenizer",))
EMBEDDED_SPIECE = "spiece_model"  # ComfyUI stores the sentencepiece model inside the weights file
_TOKENIZER_FILES = ("tokenizer.json", "spiece.model")
WRAPPER_TOKENIZER = ("configs", "T5_tokenizer")  # inside custom_nodes/ComfyUI-WanVideoWrapper
_PREFIXES = ("text_encoders.umt5xxl.transformer.", "umt5xxl.transformer.", "transformer.")

# original Wan key -> Hugging Face key (per block, "{i}" filled in)
_WAN_BLOCK_KEYS = {
    "norm1.weight": "layer.0.layer_norm.weight",
    "attn.q.weight": "layer.0.SelfAttention.q.weight",
    "attn.k.weight": "layer.0.SelfAttention.k.weight",
    "attn.v.weight": "layer.0.SelfAttention.v.weight",
    "attn.o.weight": "layer.0.SelfAttention.o.weight",
    "pos_embedding.embedding.weight": "layer.0.SelfAttention.relative_attention_bias.weight",
    "norm2.weight": "layer.1.layer_norm.weight",
    "ffn.gate.0.weight": "layer.1.DenseReluDense.wi_0.weight",  # GELU branch
    "ffn.fc1.weight": "layer.1.DenseReluDense.wi_1.weight",  # linear branch
    "ffn.fc2.weight": "layer.1.DenseReluDense.wo.weight",
}
_WAN_TOP_KEYS = {"token_embedding.weight": "shared.weight", "norm.weight": "encoder.final_layer_norm.weight"}


def clean_prompt(text: str) -> str:
    """The reference's prompt cleaning: ftfy fix (if installed), HTML unescape twice, whitespace."""
    try:
        import ftfy

        text = ftfy.fix_text(text)
    except ImportError:
        pass
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip()


# --------------------------------------------------------------------------------------------
# keys and config
# --------------------------------------------------------------------------------------------
def wan_to_hf_keys(keys: list[str]) -> dict[str, str]:
    """Map Hugging Face key -> original Wan key for every umT5 weight in ``keys``."""
    mapping = {}
    for key in keys:
        if key in _WAN_TOP_KEYS:
            mapping[_WAN_TOP_KEYS[key]] = key
            continue
        match = re.fullmatch(r"blocks\.(\d+)\.(.+)", key)
        if match and match.group(2) in _WAN_BLOCK_KEYS:
            mapping[f"encoder.block.{match.group(1)}.{_WAN_BLOCK_KEYS[match.group(2)]}"] = key
    return mapping


def _hf_key_map(source: CheckpointReader) -> dict[str, str]:
    """HF key -> source key, whatever the layout; raises if the file is not a umT5 encoder."""
    keys = [k for k in source.keys() if k != EMBEDDED_SPIECE]
    if "token_embedding.weight" in keys and any(k.startswith("blocks.") for k in keys):
        mapping = wan_to_hf_keys(keys)
    else:
        stripped = strip_prefix(keys, _PREFIXES)
        mapping = {k: v for k, v in stripped.items() if k.startswith(("encoder.", "shared."))}
        embed = mapping.pop("encoder.embed_tokens.weight", None)  # a tied copy of shared.weight
        if "shared.weight" not in mapping and embed is not None:
            mapping["shared.weight"] = embed
    if "shared.weight" not in mapping or "encoder.block.0.layer.0.SelfAttention.q.weight" not in mapping:
        raise CheckpointError(
            f"checkpoint {source.path} is not a umT5 text encoder (no token embedding / encoder blocks "
            "found): pick models_t5_umt5-xxl-enc-bf16.pth or umt5_xxl_fp16.safetensors"
        )
    return mapping


def infer_umt5_config(shapes: dict[str, torch.Size], source: Path | str = "?"):
    """Build a ``UMT5Config`` from Hugging Face-named tensor shapes."""
    from transformers import UMT5Config

    vocab, d_model = shapes["shared.weight"]
    layers = 1 + max(int(k.split(".")[2]) for k in shapes if k.startswith("encoder.block."))
    bias_key = "encoder.block.{}.layer.0.SelfAttention.relative_attention_bias.weight"
    if any(bias_key.format(i) not in shapes for i in range(layers)):
        raise CheckpointError(
            f"checkpoint {source} has no per-layer relative position bias: it is a T5 (v1.1) encoder, "
            "not umT5; InfiniteTalk needs umT5-XXL (models_t5_umt5-xxl-enc-bf16.pth / umt5_xxl_*.safetensors)"
        )
    if "encoder.block.0.layer.1.DenseReluDense.wi_0.weight" not in shapes:
        raise CheckpointError(f"checkpoint {source} has no gated FFN (wi_0/wi_1): not a umT5 encoder")
    num_buckets, heads = shapes[bias_key.format(0)]
    inner = shapes["encoder.block.0.layer.0.SelfAttention.q.weight"][0]
    return UMT5Config(
        vocab_size=vocab,
        d_model=d_model,
        d_kv=inner // heads,
        d_ff=shapes["encoder.block.0.layer.1.DenseReluDense.wi_0.weight"][0],
        num_layers=layers,
        num_heads=heads,
        relative_attention_num_buckets=num_buckets,
        relative_attention_max_distance=128,
        feed_forward_proj="gated-gelu",  # tanh GELU, as the reference
        layer_norm_epsilon=1e-6,
        dropout_rate=0.0,
        is_encoder_decoder=False,
        use_cache=False,
        tie_word_embeddings=False,
    )


def umt5_config(source: CheckpointReader):
    """``UMT5Config`` of any supported layout from the header; raises for other text encoders."""
    mapping = _hf_key_map(source)
    return infer_umt5_config({hf: source.shape(src) for hf, src in mapping.items()}, source.path)


# --------------------------------------------------------------------------------------------
# tokenizer
# --------------------------------------------------------------------------------------------
@dataclass
class _Tokenizer:
    """``__call__(texts, max_len) -> (ids (B, max_len), mask (B, max_len))`` with ``</s>`` appended."""

    hf: object | None = None  # transformers tokenizer (tokenizer.json)
    spm: object | None = None  # sentencepiece processor (spiece.model or embedded bytes)

    def __call__(self, texts: list[str], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.hf is not None:
            out = self.hf(
                texts,
                padding="max_length",
                truncation=True,
                max_length=max_len,
                add_special_tokens=True,
                return_tensors="pt",
            )
            return out.input_ids, out.attention_mask
        return self._spm_call(texts, max_len)

    def _spm_call(self, texts: list[str], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        eos, pad = self.spm.eos_id(), max(self.spm.pad_id(), 0)
        ids = torch.full((len(texts), max_len), pad, dtype=torch.long)
        mask = torch.zeros((len(texts), max_len), dtype=torch.long)
        for row, text in enumerate(texts):
            tokens = self.spm.encode(text)[: max_len - 1] + [eos]
            ids[row, : len(tokens)] = torch.tensor(tokens)
            mask[row, : len(tokens)] = 1
        return ids, mask


def _tokenizer_from_dir(folder: Path) -> _Tokenizer | None:
    if (folder / "tokenizer.json").is_file():
        from transformers import AutoTokenizer

        return _Tokenizer(hf=AutoTokenizer.from_pretrained(str(folder), local_files_only=True))
    if (folder / "spiece.model").is_file():
        return _tokenizer_from_spm(model_file=folder / "spiece.model")
    return None


def _tokenizer_from_spm(model_file: Path | None = None, proto: bytes | None = None) -> _Tokenizer:
    import sentencepiece

    if model_file is not None:
        return _Tokenizer(spm=sentencepiece.SentencePieceProcessor(model_file=str(model_file)))
    return _Tokenizer(spm=sentencepiece.SentencePieceProcessor(model_proto=proto))


def has_tokenizer(folder: Path) -> bool:
    return folder.is_dir() and any((folder / n).is_file() for n in _TOKENIZER_FILES)


def _companion(weights: Path) -> Path | None:
    """A tokenizer folder next to the weights (the official ``google/umt5-xxl/`` beside the ``.pth``)."""
    for parts in _TOKENIZER_DIRS:
        folder = weights.parent.joinpath(*parts)
        if has_tokenizer(folder):
            return folder
    return None


def _embeds_spiece(path: Path) -> bool:
    if not path.is_file() or not path.name.lower().endswith((".safetensors", ".sft")):
        return False
    try:
        with open_checkpoint(path, prefixes=()) as reader:
            return EMBEDDED_SPIECE in reader
    except CheckpointError:
        return False


def own_tokenizer(weights: str | Path) -> bool:
    """True when ``weights`` carries its tokenizer (ComfyUI's ``spiece_model``) or has one beside it."""
    weights = Path(weights)
    return _embeds_spiece(weights) or _companion(weights) is not None


def wrapper_tokenizers(custom_nodes: Iterable[str | Path]) -> list[Path]:
    """``configs/T5_tokenizer`` of every installed ComfyUI-WanVideoWrapper (any capitalisation)."""
    found = []
    for base in custom_nodes:
        base = Path(base)
        if not base.is_dir():
            continue
        for pack in sorted(base.iterdir()):
            squashed = pack.name.lower().replace("-", "").replace("_", "")
            folder = pack.joinpath(*WRAPPER_TOKENIZER)
            if "wanvideowrapper" in squashed and has_tokenizer(folder):
                found.append(folder)
    return found


def tokenizer_search(
    weights: str | Path,
    umt5_files: Iterable[str | Path] = (),
    custom_nodes: Iterable[str | Path] = (),
    official_dirs: Iterable[str | Path] = (),
) -> Path:
    """The tokenizer for a umT5 file that has none inside or beside it (Kijai's ``umt5-xxl-enc-*``).

    Order: (1) another umT5 file that carries ComfyUI's ``spiece_model``; (2) the WanVideoWrapper's
    ``configs/T5_tokenizer/`` in one of ``custom_nodes``; (3) an official ``google/umt5-xxl/`` folder.
    Returns a folder or a file (for ``load_text_encoder(tokenizer=...)``); raises listing all three.
    """
    for path in map(Path, umt5_files):
        if _embeds_spiece(path):
            logger.info("umT5 tokenizer for %s: the one inside %s", Path(weights).name, path)
            return path
    for folder in wrapper_tokenizers(custom_nodes):
        logger.info("umT5 tokenizer for %s: %s", Path(weights).name, folder)
        return folder
    for folder in map(Path, official_dirs):
        if has_tokenizer(folder):
            logger.info("umT5 tokenizer for %s: %s", Path(weights).name, folder)
            return folder
    raise CheckpointError(f"no umT5 tokenizer found for {weights}: {TOKENIZER_HELP}")


def load_tokenizer(
    weights: Path, tokenizer: str | Path | None, source: CheckpointReader | None
) -> _Tokenizer:
    """The umT5 tokenizer: ``tokenizer`` given (a folder, or a umT5 file carrying ``spiece_model``) >
    the one inside the weights > a folder next to them > error (see :func:`tokenizer_search`)."""
    if tokenizer is not None:
        return _given_tokenizer(Path(tokenizer))
    if source is not None and EMBEDDED_SPIECE in source:
        logger.info("umT5 tokenizer: sentencepiece model embedded in %s", weights.name)
        return _tokenizer_from_spm(proto=source.get(EMBEDDED_SPIECE).numpy().tobytes())
    folder = _companion(weights)
    if folder is not None and (found := _tokenizer_from_dir(folder)) is not None:
        logger.info("umT5 tokenizer: %s", folder)
        return found
    raise CheckpointError(f"no umT5 tokenizer found for {weights}: {TOKENIZER_HELP}")


def _given_tokenizer(given: Path) -> _Tokenizer:
    if given.is_file() and _embeds_spiece(given):
        with open_checkpoint(given, prefixes=()) as reader:
            return _tokenizer_from_spm(proto=reader.get(EMBEDDED_SPIECE).numpy().tobytes())
    found = _tokenizer_from_dir(given if given.is_dir() else given.parent)
    if found is None:
        raise CheckpointError(f"tokenizer {given} has no tokenizer.json or spiece.model: {TOKENIZER_HELP}")
    return found


# --------------------------------------------------------------------------------------------
# encoder
# --------------------------------------------------------------------------------------------
class TextEncoder(FrozenEncoder):
    """umT5 encoder + tokenizer. ``encode(prompts)`` -> one ``(L_i, d_model)`` tensor per prompt."""

    def _probe(self) -> torch.Tensor:
        return self.model.get_input_embeddings().weight

    def __init__(self, model: torch.nn.Module, tokenizer: _Tokenizer, text_len: int = TEXT_LEN):
        self.model = model
        self.tokenizer = tokenizer
        self.text_len = text_len

    @property
    def dim(self) -> int:
        return self.model.config.d_model

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> list[torch.Tensor]:
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise InputError(f"prompts must be a list of strings, got {type(prompts).__name__}")
        out: list[torch.Tensor] = []
        for start in range(0, len(prompts), ENCODE_BATCH):  # bounded batches: a schedule may hold many
            out += self._encode_batch(prompts[start : start + ENCODE_BATCH])
        return out

    def _encode_batch(self, prompts: list[str]) -> list[torch.Tensor]:
        ids, mask = self.tokenizer([clean_prompt(p) for p in prompts], self.text_len)
        lengths = mask.gt(0).sum(dim=1).tolist()  # from the host copy: no wait on the GPU
        ids, mask = ids.to(self.device), mask.to(self.device)
        hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, 512, C)
        return [h[:n] for h, n in zip(hidden, lengths, strict=True)]


def _once(read):
    """Memoise a tensor read so the tied embedding is read (and converted) once."""
    cache: list[torch.Tensor] = []

    def get() -> torch.Tensor:
        if not cache:
            cache.append(read())
        return cache[0]

    return get


def load_text_encoder(
    path: str | Path,
    tokenizer: str | Path | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> TextEncoder:
    """Load umT5 from any supported layout (see module docstring) with its tokenizer."""
    from transformers import UMT5EncoderModel

    path = Path(path)
    source = open_checkpoint(path)
    mapping = _hf_key_map(source)
    shapes = {hf: source.shape(src) for hf, src in mapping.items()}
    config = infer_umt5_config(shapes, path)
    tok = load_tokenizer(path, tokenizer, source)
    state: LazyStateDict = {hf: (lambda s=src: source.get(s)) for hf, src in mapping.items()}
    state["shared.weight"] = state["encoder.embed_tokens.weight"] = _once(state["shared.weight"])
    model = build_module(lambda: UMT5EncoderModel(config), state, source=path, device=device, dtype=dtype)
    model.encoder.embed_tokens = model.shared  # keep the tie after assign-loading
    logger.info(
        "umT5 %s: d_model %d, %d layers, %d heads, vocab %d",
        path.name,
        config.d_model,
        config.num_layers,
        config.num_heads,
        config.vocab_size,
    )
    return TextEncoder(model, tok)
