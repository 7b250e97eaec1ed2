"""Merge LoRAs (lightx2v step-distill, FusionX, ...) into a loaded DiT, in place.

Key formats understood (any mix in one file):

- ``<name>.lora_down.weight`` / ``<name>.lora_up.weight`` (+ optional ``<name>.alpha``), also PEFT's
  ``lora_A`` / ``lora_B``: ``delta = up @ down * scale * alpha / rank``;
- ``<name>.diff`` (full weight delta) and ``<name>.diff_b`` (bias delta): ``delta = diff * scale``;
- prefixes ``diffusion_model.``, ``model.diffusion_model.``, ``base_model.model.``, ``transformer.`` or
  none, and kohya's ``lora_unet_blocks_0_self_attn_q`` (dots written as underscores). The same spellings
  are given to hosts that match LoRA files themselves (:func:`lora_key_map`, for ComfyUI).

The reference ignores ``alpha``; we apply ``alpha / rank`` as ComfyUI does (identical when
``alpha == rank``, as in the lightx2v files). Float8 weights are dequantised (with their
``scale_weight`` when the module has one), merged in float32 and re-quantised; quanto-quantised
weights are refused: merge LoRAs before quantising.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import nn

from .errors import CheckpointError, InputError, snippet
from .loading.state_dict import safe_torch_load

logger = logging.getLogger(__name__)

_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "base_model.model.", "transformer.", "lora_unet_")
_PAIRS = ((".lora_down.weight", ".lora_up.weight"), (".lora_A.weight", ".lora_B.weight"))
_FLOAT8 = tuple(getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2") if hasattr(torch, n))


def parse_lora_spec(spec: str) -> tuple[str, float]:
    """``PATH`` or ``PATH:SCALE`` -> ``(path, scale)`` (scale 1.0 by default; Windows drive colons are kept)."""
    head, sep, tail = spec.rpartition(":")
    if sep and head and not tail.startswith(("\\", "/")):
        try:
            return head, float(tail)
        except ValueError:
            pass
    return spec, 1.0


def load_lora_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a LoRA file (``.safetensors`` or a torch pickle of tensors) onto the CPU."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"LoRA file '{path}' does not exist: check the path given to --lora")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        obj = safe_torch_load(path)
    except CheckpointError as err:
        raise CheckpointError(f"LoRA {err}: use a .safetensors LoRA") from None
    except Exception as err:  # noqa: BLE001 - any reader failure means the same thing to the user
        raise CheckpointError(
            f"LoRA file '{path}' could not be read ({snippet(str(err), 160)}): use a .safetensors LoRA"
        ) from err
    obj = obj.get("state_dict", obj) if isinstance(obj, dict) else obj
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"LoRA file '{path}' holds no tensor dictionary: use a .safetensors LoRA")
    return obj


def lora_key_map(weight_keys) -> dict[str, str]:
    """LoRA module names in every spelling this module reads (the plain name, each prefix, kohya's
    ``lora_unet_`` with dots as underscores) -> the model's ``<name>.weight`` keys: the key map of hosts
    that match LoRA files themselves (ComfyUI's ``comfy.lora.load_lora``)."""
    key_map = {}
    for key in weight_keys:
        if not key.endswith(".weight"):
            continue
        base = key[: -len(".weight")]
        key_map[base] = key
        for prefix in _PREFIXES:
            name = prefix + base.replace(".", "_") if prefix == "lora_unet_" else prefix + base
            key_map[name] = key
    return key_map


def _strip(key: str) -> str:
    for prefix in _PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


def _resolve(
    name: str, params: dict[str, nn.Parameter], underscored: dict[str, str], leaf: str
) -> str | None:
    """LoRA module name (dots or underscores) -> model parameter name ending in ``leaf`` (or the name itself)."""
    for candidate in (f"{name}.{leaf}", name):
        if candidate in params:
            return candidate
        dotted = underscored.get(candidate.replace(".", "_"))
        if dotted is not None:
            return dotted
    return None


def lora_deltas(
    sd: dict[str, torch.Tensor], model: nn.Module, scale: float = 1.0
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """``{parameter name: float32 delta}`` for every LoRA entry that matches ``model``, and unmatched keys."""
    params = dict(model.named_parameters())
    underscored = {n.replace(".", "_"): n for n in params}
    stripped = {_strip(k): v for k, v in sd.items()}
    deltas: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for key, tensor in stripped.items():
        target, delta = None, None
        for down_sfx, up_sfx in _PAIRS:
            if key.endswith(down_sfx):
                base = key[: -len(down_sfx)]
                up = stripped.get(base + up_sfx)
                if up is None:
                    continue
                target = _resolve(base, params, underscored, "weight")
                delta = _low_rank_delta(tensor, up, stripped.get(base + ".alpha"), params.get(target))
                used.update({key, base + up_sfx, base + ".alpha"})
        if key.endswith(".diff_b"):
            target, delta = _resolve(key[: -len(".diff_b")], params, underscored, "bias"), tensor.float()
        elif key.endswith(".diff"):
            target, delta = _resolve(key[: -len(".diff")], params, underscored, "weight"), tensor.float()
        if target is None or delta is None:
            continue
        used.add(key)
        _check_shape(target, delta, params[target])
        deltas[target] = deltas.get(target, 0) + delta * scale
    unmatched = [k for k in stripped if k not in used]
    return deltas, unmatched


def _low_rank_delta(down, up, alpha, param) -> torch.Tensor:
    rank = down.shape[0]
    factor = 1.0 if alpha is None else float(alpha.float().reshape(-1)[0]) / rank
    delta = up.float().flatten(1) @ down.float().flatten(1)  # (out, in*k...)
    if param is not None and param.dim() > 2:
        delta = delta.reshape(param.shape)
    return delta * factor


def _check_shape(name: str, delta: torch.Tensor, param: nn.Parameter) -> None:
    if delta.numel() != param.numel():
        raise CheckpointError(
            f"LoRA delta for '{name}' has shape {tuple(delta.shape)} but the model weight is "
            f"{tuple(param.shape)}: the LoRA was made for another model (use a Wan2.1 14B LoRA)"
        )


@torch.no_grad()
def _apply(module: nn.Module, leaf: str, param: nn.Parameter, delta: torch.Tensor, name: str) -> None:
    if type(param.data) is not torch.Tensor:  # quanto & co. wrap weights in tensor subclasses
        raise CheckpointError(
            f"cannot merge a LoRA into '{name}': it is quantised ({type(param.data).__name__}); "
            "merge LoRAs before quantising (the command line does this when --lora and --quant are both given)"
        )
    delta = delta.reshape(param.shape).to(param.device)
    if param.dtype in _FLOAT8:
        _apply_float8(module, param, delta)
    else:
        param.add_(delta.to(param.dtype))


def _apply_float8(module: nn.Module, param: nn.Parameter, delta: torch.Tensor) -> None:
    """Dequantise (scale_weight if present), merge in float32, re-quantise with a scale that fits."""
    limit = torch.finfo(param.dtype).max
    scale = getattr(module, "scale_weight", None)
    merged = param.float() * (scale.float() if scale is not None else 1.0) + delta
    if scale is not None:
        new_scale = (merged.abs().amax() / limit).clamp_min(torch.finfo(torch.float32).tiny)
        scale.data = torch.maximum(scale.float(), new_scale).reshape(scale.shape).to(scale.dtype)
        merged = merged / scale.float()
    param.data = merged.clamp(-limit, limit).to(param.dtype)


def merge_lora(
    model: nn.Module, lora: str | os.PathLike | dict[str, torch.Tensor], scale: float = 1.0
) -> int:
    """Merge one LoRA into ``model`` in place; returns the number of parameters changed."""
    sd = load_lora_file(lora) if not isinstance(lora, dict) else lora
    label = "LoRA" if isinstance(lora, dict) else f"LoRA '{lora}'"
    deltas, unmatched = lora_deltas(sd, model, scale)
    if not deltas:
        example = next(iter(sd), "<empty>")
        raise CheckpointError(
            f"{label}: no key matches the model (first key '{example}'); expected e.g. "
            "'diffusion_model.blocks.0.self_attn.q.lora_down.weight': use a Wan2.1 14B LoRA"
        )
    if unmatched:
        logger.warning("%s: %d keys did not match the model (e.g. '%s')", label, len(unmatched), unmatched[0])
    modules = dict(model.named_modules())
    for name, delta in deltas.items():
        owner, _, leaf = name.rpartition(".")
        module = modules[owner]
        _apply(module, leaf, getattr(module, leaf), delta, name)
    logger.info("%s merged into %d weights at scale %g", label, len(deltas), scale)
    return len(deltas)


def merge_loras(model: nn.Module, specs: list[tuple[str, float]]) -> int:
    """Merge several ``(path, scale)`` LoRAs in order; returns the total number of weights changed."""
    return sum(merge_lora(model, path, scale) for path, scale in specs)
