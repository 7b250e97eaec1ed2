"""Wan2.1 I2V DiT + InfiniteTalk adapter: key layout, config from shapes, and loading.

Layouts accepted by :func:`load_dit` (all use the official key names of the reference once a
common prefix is stripped, see :mod:`infinitetalk.loading.state_dict`):

- official: ``Wan2.1-I2V-14B-480P/`` sharded folder (or its index json) + ``InfiniteTalk/single``
  or ``multi/infinitetalk.safetensors``;
- ComfyUI: ``models/diffusion_models/wan2.1_i2v_480p_14B_{fp16,bf16,fp8_e4m3fn}.safetensors`` (with
  or without ``model.diffusion_model.``) + ``models/model_patches/wan2.1_infiniteTalk_{single,multi}_fp16
  .safetensors`` (ComfyUI's ``MultiTalkModelPatch`` keeps the official ``audio_proj.*`` /
  ``blocks.N.audio_cross_attn.*`` / ``blocks.N.norm_x.*`` names, so no renaming is needed);
- Kijai: ``Wan2_1-I2V-14B-480P_fp8_e4m3fn_scaled_KJ.safetensors`` + ``Wan2_1-InfiniTetalk-Single_fp16
  .safetensors`` or its fp8-scaled twin (official names too; Kijai renames ``audio_proj`` only in
  memory);
- one file with the adapter already merged.

The model is built on the ``meta`` device (or by a host's operations class that creates no weights
until loaded), every tensor is read once, straight to the target device and dtype, and handed to the
modules' own ``load_state_dict(assign=True)``: no fp32 copy of the whole model is ever made, so peak
host memory stays near the size of what is kept. Expected keys and shapes come from the config
(:func:`dit_key_shapes`), so the shape checks do not depend on what the layers create up front.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..config import AudioEncoderConfig, DiTConfig
from ..errors import CheckpointError
from ..model.dit import WanInfiniteTalkDiT
from .state_dict import FP8_DTYPES, CheckpointReader, open_checkpoint

log = logging.getLogger(__name__)

HEAD_DIM = 128  # every released Wan2.1 model uses 128-wide heads: num_heads = dim // 128
AUDIO_WINDOW = 5  # audio frames per first latent frame (-2..+2)
AUDIO_WINDOW_VF = 8  # audio frames per later latent frame (3 + 2 + 3), i.e. vae_scale 4
WAV2VEC2_BASE_HIDDEN = 768

DIT_ANCHOR = "patch_embedding.weight"
ADAPTER_ANCHOR = "audio_proj.proj1.weight"
ADAPTER_HINT = "pass the adapter file from models/model_patches or weights/InfiniteTalk/single"

_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.")


# --------------------------------------------------------------------------------------------
# Key layout (spec §2)
# --------------------------------------------------------------------------------------------


def _linear(name: str, n_in: int, n_out: int, bias: bool = True) -> dict[str, tuple[int, ...]]:
    out = {f"{name}.weight": (n_out, n_in)}
    if bias:
        out[f"{name}.bias"] = (n_out,)
    return out


def _norm(name: str, n: int, bias: bool = True) -> dict[str, tuple[int, ...]]:
    out = {f"{name}.weight": (n,)}
    if bias:
        out[f"{name}.bias"] = (n,)
    return out


def base_key_shapes(cfg: DiTConfig) -> dict[str, tuple[int, ...]]:
    """Official key -> shape of the Wan2.1 I2V backbone (no adapter)."""
    d, pt, ph, pw = cfg.dim, *cfg.patch_size
    s: dict[str, tuple[int, ...]] = {
        "patch_embedding.weight": (d, cfg.in_dim, pt, ph, pw),
        "patch_embedding.bias": (d,),
    }
    s |= _linear("text_embedding.0", cfg.text_dim, d) | _linear("text_embedding.2", d, d)
    s |= _linear("time_embedding.0", cfg.freq_dim, d) | _linear("time_embedding.2", d, d)
    s |= _linear("time_projection.1", d, 6 * d)
    for i in range(cfg.num_layers):
        s |= _base_block_shapes(f"blocks.{i}", cfg)
    s |= _linear("head.head", d, cfg.out_dim * pt * ph * pw)
    s["head.modulation"] = (1, 2, d)
    c = cfg.clip_dim
    s |= _norm("img_emb.proj.0", c) | _linear("img_emb.proj.1", c, c) | _linear("img_emb.proj.3", c, d)
    s |= _norm("img_emb.proj.4", d)
    return s


def _base_block_shapes(p: str, cfg: DiTConfig) -> dict[str, tuple[int, ...]]:
    d = cfg.dim
    s: dict[str, tuple[int, ...]] = {f"{p}.modulation": (1, 6, d)}
    for n in ("q", "k", "v", "o"):
        s |= _linear(f"{p}.self_attn.{n}", d, d)
    if cfg.qk_norm:
        s |= _norm(f"{p}.self_attn.norm_q", d, bias=False) | _norm(f"{p}.self_attn.norm_k", d, bias=False)
    if cfg.cross_attn_norm:
        s |= _norm(f"{p}.norm3", d)
    for n in ("q", "k", "v", "o", "k_img", "v_img"):
        s |= _linear(f"{p}.cross_attn.{n}", d, d)
    if cfg.qk_norm:
        for n in ("norm_q", "norm_k", "norm_k_img"):
            s |= _norm(f"{p}.cross_attn.{n}", d, bias=False)
    s |= _linear(f"{p}.ffn.0", d, cfg.ffn_dim) | _linear(f"{p}.ffn.2", cfg.ffn_dim, d)
    return s


def adapter_key_shapes(cfg: DiTConfig) -> dict[str, tuple[int, ...]]:
    """Official key -> shape of the InfiniteTalk adapter (330 keys for 40 layers)."""
    feat = cfg.audio_blocks * cfg.audio_channels
    inter, out = cfg.audio_intermediate_dim, cfg.audio_output_dim
    s = _linear("audio_proj.proj1", cfg.audio_window * feat, inter)
    s |= _linear("audio_proj.proj1_vf", cfg.audio_window_vf * feat, inter)
    s |= _linear("audio_proj.proj2", inter, inter)
    s |= _linear("audio_proj.proj3", inter, cfg.audio_context_tokens * out)
    if cfg.norm_output_audio:
        s |= _norm("audio_proj.norm", out)
    for i in range(cfg.num_layers):
        p = f"blocks.{i}"
        s |= _linear(f"{p}.audio_cross_attn.q_linear", cfg.dim, cfg.dim)
        s |= _linear(f"{p}.audio_cross_attn.kv_linear", out, 2 * cfg.dim)
        s |= _linear(f"{p}.audio_cross_attn.proj", cfg.dim, cfg.dim)
        if cfg.norm_input_visual:
            s |= _norm(f"{p}.norm_x", cfg.dim)
    return s


def dit_key_shapes(cfg: DiTConfig) -> dict[str, tuple[int, ...]]:
    """Every official key -> shape of a DiT carrying the adapter (base, then adapter keys)."""
    return base_key_shapes(cfg) | adapter_key_shapes(cfg)


def is_adapter_key(key: str) -> bool:
    return (
        key.startswith("audio_proj.")
        or ".audio_cross_attn." in key
        or bool(re.match(r"^blocks\.\d+\.norm_x\.", key))
    )


# --------------------------------------------------------------------------------------------
# Config from shapes
# --------------------------------------------------------------------------------------------


def infer_dit_config(
    shapes: Mapping[str, torch.Size | tuple[int, ...]],
    audio_channels: int | None = None,
    source: str = "checkpoint",
) -> DiTConfig:
    """Read every dimension of the DiT (and adapter, when present) from tensor shapes.

    - layers: the ``blocks.N`` indices (must be 0..N-1 without gaps);
    - dim / in_dim / patch: ``patch_embedding.weight`` ``(dim, in_dim, pt, ph, pw)``;
    - out_dim: ``head.head.weight`` rows / (pt*ph*pw); freq_dim, text_dim: the first linear of
      ``time_embedding`` / ``text_embedding``; ffn_dim: ``blocks.0.ffn.0``; clip_dim: ``img_emb.proj.0``;
    - heads = dim // 128: head width is not stored in any tensor; every Wan2.1 release (1.3B and
      14B) uses 128-wide heads, which the 3-D RoPE split 44/42/42 also assumes;
    - adapter: ``proj1`` / ``proj1_vf`` inputs are window*F and window_vf*F with F = audio blocks *
      channels; the released adapters have windows 5 and 8 (VAE stride 4), checked from the ratio;
      intermediate = ``proj1`` rows, output dim = ``audio_proj.norm`` width (or ``kv_linear`` input),
      context tokens = ``proj3`` rows / output dim.

    Only the product blocks*channels is fixed by the shapes. ``audio_channels`` (the audio encoder
    hidden size) splits it; without it 768 (wav2vec2-base, every released adapter) is used when it
    divides F, else the largest multiple of 32 giving at least two blocks. Use
    :func:`fit_audio_encoder` to set the split from the loaded audio encoder.

    Raises:
        CheckpointError: a key needed for a dimension is missing or shapes are inconsistent.
    """
    get = shape_getter(shapes, source)
    dim, in_dim, *patch = get("patch_embedding.weight", 5)
    n_layers = count_layers(shapes, source)
    ffn_dim = get("blocks.0.ffn.0.weight", 2)[0]
    if dim % HEAD_DIM:
        raise CheckpointError(f"{source}: DiT width {dim} is not a multiple of the Wan head width {HEAD_DIM}")
    head_rows = get("head.head.weight", 2)[0]
    if head_rows % (patch[0] * patch[1] * patch[2]):
        raise CheckpointError(
            f"{source}: head.head.weight rows {head_rows} do not fit patch size {tuple(patch)}"
        )
    cfg = dict(
        dim=dim,
        ffn_dim=ffn_dim,
        num_heads=dim // HEAD_DIM,
        num_layers=n_layers,
        in_dim=in_dim,
        out_dim=head_rows // (patch[0] * patch[1] * patch[2]),
        patch_size=tuple(patch),
        freq_dim=get("time_embedding.0.weight", 2)[1],
        text_dim=get("text_embedding.0.weight", 2)[1],
        clip_dim=get("img_emb.proj.0.weight", 1)[0],
        qk_norm="blocks.0.self_attn.norm_q.weight" in shapes,
        cross_attn_norm="blocks.0.norm3.weight" in shapes,
    )
    if ADAPTER_ANCHOR in shapes:
        cfg |= infer_adapter(shapes, get, audio_channels, source)
    return DiTConfig(**cfg)


def shape_getter(shapes, source):
    def get(key: str, ndim: int) -> tuple[int, ...]:
        if key not in shapes:
            raise CheckpointError(
                f"{source}: missing '{key}'; this is not a complete Wan2.1 I2V DiT checkpoint"
            )
        shape = tuple(shapes[key])
        if len(shape) != ndim:
            raise CheckpointError(f"{source}: '{key}' has shape {shape}, expected {ndim} dimensions")
        return shape

    return get


def count_layers(shapes, source: str, needle: str = ".self_attn.q.weight") -> int:
    idx = sorted({int(m.group(1)) for k in shapes if k.endswith(needle) and (m := _BLOCK_RE.match(k))})
    if not idx:
        raise CheckpointError(f"{source}: no transformer blocks (blocks.N{needle}) found")
    if idx != list(range(len(idx))):
        gaps = sorted(set(range(idx[-1] + 1)) - set(idx))
        raise CheckpointError(f"{source}: transformer blocks {gaps[:5]} are missing; the file is incomplete")
    return len(idx)


def infer_adapter(shapes, get, audio_channels: int | None, source: str) -> dict:
    inter, in1 = get("audio_proj.proj1.weight", 2)
    inter_vf, in_vf = get("audio_proj.proj1_vf.weight", 2)
    if inter_vf != inter or in1 % AUDIO_WINDOW or in1 * AUDIO_WINDOW_VF != in_vf * AUDIO_WINDOW:
        raise CheckpointError(
            f"{source}: audio_proj.proj1/proj1_vf inputs {in1}/{in_vf} are not in the 5:8 window ratio of "
            "InfiniteTalk (5 audio frames for the first latent frame, 8 for the others)"
        )
    feat = in1 // AUDIO_WINDOW
    if "audio_proj.norm.weight" in shapes:
        out_dim, norm_out = get("audio_proj.norm.weight", 1)[0], True
    else:
        out_dim, norm_out = get("blocks.0.audio_cross_attn.kv_linear.weight", 2)[1], False
    tokens_x_out = get("audio_proj.proj3.weight", 2)[0]
    if tokens_x_out % out_dim:
        raise CheckpointError(
            f"{source}: audio_proj.proj3 rows {tokens_x_out} are not a multiple of output dim {out_dim}"
        )
    channels = _split_audio_features(feat, audio_channels, source)
    return dict(
        audio_window=AUDIO_WINDOW,
        vae_scale=AUDIO_WINDOW_VF - AUDIO_WINDOW + 1,
        audio_blocks=feat // channels,
        audio_channels=channels,
        audio_intermediate_dim=inter,
        audio_output_dim=out_dim,
        audio_context_tokens=tokens_x_out // out_dim,
        norm_output_audio=norm_out,
        norm_input_visual="blocks.0.norm_x.weight" in shapes,
    )


def _split_audio_features(feat: int, audio_channels: int | None, source: str) -> int:
    if audio_channels is not None:
        if feat % audio_channels:
            raise CheckpointError(
                f"{source}: adapter audio features {feat} per frame are not a multiple of the audio encoder width "
                f"{audio_channels}; use the audio encoder the adapter was trained with (chinese-wav2vec2-base)"
            )
        return audio_channels
    if feat % WAV2VEC2_BASE_HIDDEN == 0:
        return WAV2VEC2_BASE_HIDDEN
    candidates = [c for c in range(32, feat // 2 + 1, 32) if feat % c == 0]
    return candidates[-1] if candidates else feat


def fit_audio_encoder(cfg: DiTConfig, encoder: AudioEncoderConfig, source: str = "DiT") -> DiTConfig:
    """Return ``cfg`` with the audio blocks/channels split of the loaded encoder.

    Raises:
        CheckpointError: layers x hidden of the encoder do not match the adapter's input width.
    """
    want = cfg.audio_blocks * cfg.audio_channels
    have = encoder.num_layers * encoder.hidden_size
    if want != have:
        raise CheckpointError(
            f"{source}: the InfiniteTalk adapter expects {want} audio features per frame but the audio encoder "
            f"gives {encoder.num_layers} layers x {encoder.hidden_size} = {have}; load chinese-wav2vec2-base"
        )
    return replace(cfg, audio_blocks=encoder.num_layers, audio_channels=encoder.hidden_size)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiTCheckpoint:
    """What the file headers say about a DiT (+ adapter), read without loading any tensor."""

    config: DiTConfig
    path: Path
    largest_tensor_bytes: int  # the biggest single tensor as stored: the loader's read buffer


def dit_heads(dit_path: str | os.PathLike) -> int:
    """The DiT's attention heads, from the shape of one tensor in its header (no weight is read)."""
    with open_checkpoint(dit_path, anchor=DIT_ANCHOR) as reader:
        return reader.shape(DIT_ANCHOR)[0] // HEAD_DIM


def inspect_dit(
    dit_path: str | os.PathLike,
    adapter_path: str | os.PathLike | None = None,
    audio_channels: int | None = None,
) -> DiTCheckpoint:
    """Config and sizes of a DiT from its safetensors headers / index only (milliseconds on 60 GB).

    Runs every check :func:`load_dit` runs before reading weights (DiT without adapter, adapter
    given as DiT, adapter not fitting), so a caller can validate and plan memory first.
    """
    with _open_pair(dit_path, adapter_path) as (dit, adapter):
        sources = route_keys(dit, adapter)
        shapes = {k: r.shape(k) for k, r in sources.items()}
        check_adapter_fits(dit, adapter, shapes)
        cfg = infer_dit_config(shapes, audio_channels=audio_channels, source=str(dit.path))
        largest = max(math.prod(shapes[k]) * sources[k].dtype(k).itemsize for k in shapes)
        return DiTCheckpoint(cfg, Path(dit.path), int(largest))


@contextmanager
def _open_pair(dit_path, adapter_path):
    dit = open_checkpoint(dit_path, anchor=DIT_ANCHOR)
    adapter = None
    try:
        adapter = open_checkpoint(adapter_path, anchor=ADAPTER_ANCHOR) if adapter_path is not None else None
        yield dit, adapter
    finally:
        dit.close()
        if adapter is not None:
            adapter.close()


def load_dit(
    dit_path: str | os.PathLike,
    adapter_path: str | os.PathLike | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.bfloat16,
    operations=None,
    audio_channels: int | None = None,
):
    """Load the Wan2.1 I2V DiT with the InfiniteTalk adapter as a ``WanInfiniteTalkDiT``.

    Most callers want :func:`infinitetalk.build.build_dit` (options, validation, memory preflight,
    quantisation, compile); this is the loading step it uses.

    Args:
        dit_path: sharded folder / index json / single file of the DiT (may already hold the adapter).
        adapter_path: the InfiniteTalk adapter file; overrides adapter keys merged in ``dit_path``.
        device, dtype: where and in which dtype parameters are created; modules listed in the model's
            ``fp32_modules`` stay float32. An fp8 ``dtype`` (``torch.float8_e4m3fn``) stores only the
            block linear weights in fp8 (half the memory of bf16; everything else bf16): ``operations``
            must then hold a Linear that casts its weight to the input dtype
            (:data:`infinitetalk.model.ops.casting_operations`, ComfyUI's ``comfy.ops.manual_cast``).
        operations: ops namespace passed to the model (``operations.Linear`` ...). Its layers may
            create their weights only when loaded (ComfyUI's dynamic-VRAM ops): tensors always go
            through the modules' own ``_load_from_state_dict``.
        audio_channels: audio encoder width, see :func:`infer_dit_config`.

    Raises:
        CheckpointError: unknown/truncated file, DiT without adapter, adapter not fitting the DiT,
            missing keys (one line naming the file and the fix).
    """
    with _open_pair(dit_path, adapter_path) as (dit, adapter):
        sources = route_keys(dit, adapter)
        shapes = {k: r.shape(k) for k, r in sources.items()}
        check_adapter_fits(dit, adapter, shapes)
        cfg = infer_dit_config(shapes, audio_channels=audio_channels, source=str(dit.path))
        model = _build_on_meta(cfg, torch.bfloat16 if dtype in FP8_DTYPES else dtype, operations)
        _load_weights(model, cfg, sources, torch.device(device), dtype, dit.path)
    log.info("loaded %s (%d layers, dim %d) on %s as %s", dit.path, cfg.num_layers, cfg.dim, device, dtype)
    return model


def route_keys(dit: CheckpointReader, adapter: CheckpointReader | None) -> dict[str, CheckpointReader]:
    """Key -> reader holding it; the adapter file wins for adapter keys."""
    if DIT_ANCHOR not in dit:
        if ADAPTER_ANCHOR in dit:
            raise CheckpointError(
                f"{dit.path}: is an InfiniteTalk adapter, not a DiT; pass the Wan2.1 I2V 14B DiT as the model "
                "and this file as the adapter"
            )
        raise CheckpointError(
            f"{dit.path}: not a Wan2.1 DiT checkpoint (no '{DIT_ANCHOR}' among {len(dit)} keys); pass "
            "wan2.1_i2v_480p_14B_*.safetensors or the Wan2.1-I2V-14B-480P folder"
        )
    sources = {k: dit for k in dit.keys()}
    if adapter is not None:
        ad_keys = [k for k in adapter.keys() if is_adapter_key(k)]
        if ADAPTER_ANCHOR not in adapter:
            raise CheckpointError(
                f"{adapter.path}: not an InfiniteTalk adapter (no '{ADAPTER_ANCHOR}'); {ADAPTER_HINT}"
            )
        if any(is_adapter_key(k) for k in sources):
            log.info("%s: replacing the adapter merged in %s", adapter.path, dit.path)
            sources = {k: r for k, r in sources.items() if not is_adapter_key(k)}
        sources |= {k: adapter for k in ad_keys}
    elif ADAPTER_ANCHOR not in dit:
        raise CheckpointError(f"{dit.path}: has no InfiniteTalk adapter keys (audio_proj.*); {ADAPTER_HINT}")
    return sources


def check_adapter_fits(dit: CheckpointReader, adapter: CheckpointReader | None, shapes) -> None:
    """Compare the adapter's width, layer count and audio dims with the DiT's (one-line errors)."""
    if adapter is None:
        return
    base_layers = count_layers(dit, str(dit.path))
    ad_layers = count_layers(adapter, str(adapter.path), needle=".audio_cross_attn.q_linear.weight")
    dim = tuple(dit.shape(DIT_ANCHOR))[0]
    q = tuple(adapter.shape("blocks.0.audio_cross_attn.q_linear.weight"))
    if q[0] != dim or ad_layers != base_layers:
        raise CheckpointError(
            f"{adapter.path}: adapter is for a DiT of width {q[0]} with {ad_layers} layers, but {dit.path} has width "
            f"{dim} and {base_layers} layers; use the InfiniteTalk adapter made for Wan2.1 I2V 14B"
        )
    kv_in = tuple(shapes["blocks.0.audio_cross_attn.kv_linear.weight"])[1]
    if "audio_proj.norm.weight" in shapes and tuple(shapes["audio_proj.norm.weight"])[0] != kv_in:
        raise CheckpointError(
            f"{adapter.path}: audio tokens are {tuple(shapes['audio_proj.norm.weight'])[0]} wide but the audio "
            f"cross-attention expects {kv_in}; the adapter file is inconsistent, download it again"
        )


def _build_on_meta(cfg: DiTConfig, dtype: torch.dtype, operations):
    return WanInfiniteTalkDiT(cfg, device="meta", dtype=dtype, operations=operations)


def _load_weights(
    model, cfg: DiTConfig, sources: Mapping[str, CheckpointReader], device: torch.device, dtype, path
) -> None:
    """Read every tensor the config calls for and hand them to the model's own ``load_state_dict``.

    The expected keys and shapes come from the config (:func:`dit_key_shapes`), never from the built
    model: a host's operations class may create its weights only inside ``_load_from_state_dict``
    (ComfyUI's dynamic-VRAM layers build ``Linear`` without weights), so ``model.state_dict()`` can be
    incomplete before loading. Each tensor goes through the module's own loading hook with
    ``assign=True``: the tensor read is kept as the parameter (no copy), whatever creates it.
    """
    expected = dit_key_shapes(cfg)
    missing = [k for k in expected if k not in sources]
    if missing:
        raise CheckpointError(
            f"{path}: {len(missing)} model tensors missing (e.g. {', '.join(missing[:3])}); the file is incomplete "
            "or not a Wan2.1 I2V 14B DiT"
        )
    extra = [k for k in sources if k not in expected]
    if extra:
        log.warning("%s: ignoring %d tensors the model does not use (e.g. %s)", path, len(extra), extra[0])
    fp32 = tuple(getattr(model, "fp32_modules", ()) or ())
    state = {}
    for key, shape in expected.items():
        _check_shape(key, sources[key], shape, path)
        state[key] = sources[key].get(key, device, target_dtype(key, shape, dtype, fp32))
    result = model.load_state_dict(state, strict=False, assign=True)
    del state
    _check_loaded(model, result)
    _materialise_buffers(model, device)
    model.eval().requires_grad_(False)


def _check_loaded(model, result) -> None:
    """Every parameter must have come from the file: a host layer that kept or dropped one is a bug."""
    left = [n for n, p in model.named_parameters() if p.is_meta]
    if result.missing_keys or result.unexpected_keys or left:
        names = [*result.missing_keys, *left][:3] or result.unexpected_keys[:3]
        raise RuntimeError(
            f"{type(model).__name__}: the operations' layers did not take the checkpoint tensors "
            f"(missing {len(result.missing_keys)}, unexpected {len(result.unexpected_keys)}, still on meta "
            f"{len(left)}: {', '.join(names)}); their _load_from_state_dict must accept weight/bias"
        )


def target_dtype(
    key: str, shape: tuple[int, ...], dtype: torch.dtype, fp32_modules: tuple[str, ...] = ()
) -> torch.dtype:
    """Storage dtype of one tensor: the model's fp32 modules stay fp32; with an fp8 ``dtype`` only the
    2-D weights inside the transformer blocks are fp8 (everything else bf16)."""
    if _in_modules(key, fp32_modules):
        return torch.float32
    if dtype in FP8_DTYPES and not (
        key.startswith("blocks.") and key.endswith(".weight") and len(shape) == 2
    ):
        return torch.bfloat16
    return dtype


def _in_modules(key: str, modules: tuple[str, ...]) -> bool:
    """True when ``key`` lies in one of ``modules`` (dotted names matched anywhere: "modulation")."""
    return any(f".{m}." in f".{key}." for m in modules)


def _check_shape(key: str, reader: CheckpointReader, shape: tuple[int, ...], path) -> None:
    if tuple(reader.shape(key)) != tuple(shape):
        raise CheckpointError(
            f"{reader.path}: '{key}' has shape {tuple(reader.shape(key))} but the model built from {path} expects "
            f"{tuple(shape)}; the files do not belong together"
        )


def _materialise_buffers(model, device: torch.device) -> None:
    """Non-persistent buffers (RoPE tables ...) were created on meta: let the model rebuild them."""
    if not any(b.is_meta for b in model.buffers()):
        return
    init = getattr(model, "init_buffers", None)
    if init is None:
        names = [n for n, b in model.named_buffers() if b.is_meta]
        raise RuntimeError(
            f"WanInfiniteTalkDiT buffers {names[:3]} stay on meta; the model needs init_buffers(device)"
        )
    init(device)
