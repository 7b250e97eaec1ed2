"""CLIP ViT-H/14 image encoder (transformers ``CLIPVisionModel``), penultimate-layer tokens.

Layouts accepted (detected from keys):

- original Wan ``models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth`` (open-clip XLM-RoBERTa
  CLIP): ``visual.{patch_embedding,cls_embedding,pos_embedding,pre_norm,transformer.{i},post_norm,
  head}``; the fused ``attn.to_qkv`` is split into q/k/v; the text tower (``textual.*``) is ignored;
- Hugging Face / ComfyUI ``clip_vision_h.safetensors``: ``vision_model.*`` (+ ``visual_projection``,
  ignored).

Dimensions from shapes: width from the patch embedding, patch size from its kernel, image size from
the number of position embeddings (257 = 16x16 patches + class token -> 224 px at patch 14), MLP
width from ``fc1``, layer count from the block indices. The head count is not stored anywhere: it is
taken from the width of the known CLIP towers (768 -> 12, 1024/1280/1408/1664 -> 16 heads, i.e.
ViT-H/14 has head_dim 80) and, for any other width (tiny test models), head_dim 16.

``encode`` reproduces the reference ``CLIPModel.visual`` with ``use_31_block=True``: bicubic resize to
224x224 (``align_corners=False``, no antialias), ``[-1, 1] -> [0, 1]``, CLIP mean/std normalisation,
patch embedding + class token + positions, pre-norm, then every block but the last; the output is
that block's hidden states (no post-norm). The model is therefore built with one layer fewer than
the checkpoint, and the last block's weights are not loaded.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import CheckpointError, InputError
from ..loading.state_dict import CheckpointReader, open_checkpoint
from . import FrozenEncoder, LazyStateDict, build_module, check_materialized

logger = logging.getLogger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_HEADS_BY_WIDTH = {768: 12, 1024: 16, 1280: 16, 1408: 16, 1664: 16}
_SMALL_HEAD_DIM = 16

# A rule: HF key (relative to the vision tower) -> (source key, transform of the source tensor).
Rules = dict[str, tuple[str, Callable[[torch.Tensor], torch.Tensor]]]


def _same(t: torch.Tensor) -> torch.Tensor:
    return t


def clip_heads(width: int) -> int:
    """Attention heads of a CLIP vision tower of this width (see module docstring)."""
    return _HEADS_BY_WIDTH.get(width, max(1, width // _SMALL_HEAD_DIM))


# --------------------------------------------------------------------------------------------
# keys
# --------------------------------------------------------------------------------------------
def open_clip_rules(keys: list[str]) -> Rules:
    """Rules mapping HF vision-tower keys (without ``vision_model.``) to open-clip ``visual.`` keys."""
    top = {
        "embeddings.patch_embedding.weight": ("visual.patch_embedding.weight", _same),
        "embeddings.class_embedding": ("visual.cls_embedding", lambda t: t.reshape(-1)),  # (1,1,C) -> (C,)
        "embeddings.position_embedding.weight": ("visual.pos_embedding", lambda t: t[0]),  # (1,N,C) -> (N,C)
    }
    rules: Rules = {k: v for k, v in top.items() if v[0] in keys}
    for norm_hf, norm_src in (("pre_layrnorm", "visual.pre_norm"), ("post_layernorm", "visual.post_norm")):
        for leaf in ("weight", "bias"):
            if f"{norm_src}.{leaf}" in keys:
                rules[f"{norm_hf}.{leaf}"] = (f"{norm_src}.{leaf}", _same)
    for key in keys:
        match = re.fullmatch(r"visual\.transformer\.(\d+)\.(.+)\.(weight|bias)", key)
        if match:
            rules.update(_block_rules(int(match.group(1)), match.group(2), match.group(3), key))
    return rules


_BLOCK_NAMES = {
    "norm1": "layer_norm1",
    "norm2": "layer_norm2",
    "attn.proj": "self_attn.out_proj",
    "mlp.0": "mlp.fc1",
    "mlp.2": "mlp.fc2",
}


def _block_rules(i: int, name: str, leaf: str, key: str) -> Rules:
    prefix = f"encoder.layers.{i}"
    if name == "attn.to_qkv":  # fused (3C, C): rows [q; k; v]
        return {
            f"{prefix}.self_attn.{part}_proj.{leaf}": (key, lambda t, j=j: t.chunk(3, dim=0)[j])
            for j, part in enumerate("qkv")
        }
    if name in _BLOCK_NAMES:
        return {f"{prefix}.{_BLOCK_NAMES[name]}.{leaf}": (key, _same)}
    return {}


def hf_rules(keys: list[str]) -> Rules:
    """Rules for a Hugging Face / ComfyUI file: strip ``vision_model.``, drop non-parameters."""
    rules: Rules = {}
    for key in keys:
        if key.startswith("vision_model.") and not key.endswith("position_ids"):
            rules[key[len("vision_model.") :]] = (key, _same)
    return rules


def convert_open_clip(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Eager conversion open-clip ``visual.*`` -> HF ``vision_model.*`` (+ ``visual_projection``)."""
    out = {f"vision_model.{hf}": fn(state[src]) for hf, (src, fn) in open_clip_rules(list(state)).items()}
    if "visual.head" in state:  # (C, out) projection matrix -> Linear weight (out, C)
        out["visual_projection.weight"] = state["visual.head"].t().contiguous()
    return out


def _rules_for(source: CheckpointReader) -> Rules:
    keys = list(source.keys())
    if "visual.patch_embedding.weight" in keys:
        return open_clip_rules(keys)
    if "vision_model.embeddings.patch_embedding.weight" in keys:
        return hf_rules(keys)
    raise CheckpointError(
        f"checkpoint {source.path} is not a CLIP vision model (no visual.* or vision_model.* patch "
        "embedding): pick models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth or clip_vision_h.safetensors"
    )


# --------------------------------------------------------------------------------------------
# config
# --------------------------------------------------------------------------------------------
def infer_clip_config(shapes: dict[str, torch.Size], source: Path | str = "?"):
    """``CLIPVisionConfig`` of the full tower from HF-named shapes (relative to the vision tower)."""
    from transformers import CLIPVisionConfig

    width, channels, patch, _ = shapes["embeddings.patch_embedding.weight"]
    positions = shapes["embeddings.position_embedding.weight"][0]
    grid = math.isqrt(positions - 1)
    if grid * grid != positions - 1:
        raise CheckpointError(
            f"checkpoint {source}: {positions} CLIP positions is not a square grid + class token"
        )
    layers = 1 + max(int(k.split(".")[2]) for k in shapes if k.startswith("encoder.layers."))
    return CLIPVisionConfig(
        hidden_size=width,
        intermediate_size=shapes["encoder.layers.0.mlp.fc1.weight"][0],
        num_hidden_layers=layers,
        num_attention_heads=clip_heads(width),
        num_channels=channels,
        image_size=grid * patch,
        patch_size=patch,
        hidden_act="gelu",  # exact GELU, as open-clip ViT-H in the reference
        layer_norm_eps=1e-5,
    )


# --------------------------------------------------------------------------------------------
# encoder
# --------------------------------------------------------------------------------------------
class ClipVisionEncoder(FrozenEncoder):
    """CLIP vision tower cut before its last block. ``encode(image)`` -> ``(B, 257, C)``."""

    def _probe(self) -> torch.Tensor:
        return self.model.get_input_embeddings().weight

    def __init__(self, model: torch.nn.Module, image_size: int):
        self.model = model
        self.image_size = image_size

    @property
    def dim(self) -> int:
        return self.model.config.hidden_size

    def preprocess(self, image: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` in [-1, 1] -> normalised ``(B, 3, 224, 224)`` float32."""
        if image.dim() != 4 or image.shape[1] != 3:
            raise InputError(f"CLIP image must be (B, 3, H, W) in [-1, 1], got shape {tuple(image.shape)}")
        size = (self.image_size, self.image_size)
        x = F.interpolate(
            image.to(self.device, torch.float32), size=size, mode="bicubic", align_corners=False
        )
        mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
        return (x * 0.5 + 0.5 - mean) / std

    @torch.no_grad()
    def encode(self, image: torch.Tensor) -> torch.Tensor:
        pixels = self.preprocess(image).to(self.dtype)
        return self.model(pixel_values=pixels).last_hidden_state  # (B, 1 + grid^2, C), no post-norm


def load_clip_vision(
    path: str | Path, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> ClipVisionEncoder:
    """Load the CLIP vision tower from any supported layout (see module docstring)."""
    from transformers import CLIPVisionModel

    path = Path(path)
    source = open_checkpoint(path)
    rules = _rules_for(source)
    config = infer_clip_config(clip_shapes(source), path)
    if config.num_hidden_layers < 2:
        raise CheckpointError(
            f"checkpoint {path}: CLIP tower has {config.num_hidden_layers} layer(s), need >= 2"
        )
    config.num_hidden_layers -= 1  # penultimate-layer output: the last block is never run
    last = f"encoder.layers.{config.num_hidden_layers}."
    with torch.device("meta"):
        prefix = (
            "vision_model."
            if "vision_model.pre_layrnorm.weight" in CLIPVisionModel(config).state_dict()
            else ""
        )
    state: LazyStateDict = {
        prefix + hf: (lambda s=src, f=fn: f(source.get(s)))
        for hf, (src, fn) in rules.items()
        if not hf.startswith(last)
    }
    model = build_module(lambda: CLIPVisionModel(config), state, source=path, device=device, dtype=dtype)
    _restore_position_ids(model, config)
    check_materialized(model, path)
    logger.info(
        "CLIP vision %s: width %d, %d+1 layers, %d heads, %d px",
        path.name,
        config.hidden_size,
        config.num_hidden_layers,
        config.num_attention_heads,
        config.image_size,
    )
    return ClipVisionEncoder(model, config.image_size)


def clip_shapes(source: CheckpointReader) -> dict[str, torch.Size]:
    """HF-named shapes (relative to the vision tower) of any supported layout, read from the header."""
    return {hf: _shape(source, src, fn) for hf, (src, fn) in _rules_for(source).items()}


def _shape(source: CheckpointReader, key: str, fn: Callable) -> torch.Size:
    """Shape of a converted tensor without reading it (apply the transform to a meta tensor)."""
    return fn(torch.empty(source.shape(key), device="meta")).shape


def _restore_position_ids(model: torch.nn.Module, config) -> None:
    """``position_ids`` is a non-persistent buffer: left on ``meta`` by the meta build."""
    for module in model.modules():
        ids = getattr(module, "position_ids", None)
        if isinstance(ids, torch.Tensor) and ids.is_meta:
            device = next(model.parameters()).device
            module.position_ids = torch.arange(ids.shape[-1], device=device).expand(1, -1)
