"""The four frozen encoders around the DiT: umT5 text, CLIP vision, Wan 2.1 VAE, wav2vec2 audio.

Each encoder is a thin wrapper over a transformers / diffusers model. The loaders accept every
real checkpoint layout (official Wan files, ComfyUI files, Kijai files, Hugging Face folders),
read every dimension from tensor shapes and convert keys to the library model's names.

Public API (imported lazily, so ``import infinitetalk.encoders`` stays cheap)::

    load_text_encoder(path, tokenizer=None, device=None, dtype=None) -> TextEncoder
    load_clip_vision(path, device=None, dtype=None) -> ClipVisionEncoder
    load_vae(path, device=None, dtype=None) -> WanVAE
    load_audio_encoder(path, device=None, dtype=None) -> AudioEncoder

This module also holds the small helpers the four loaders share. Files are read lazily with
:func:`infinitetalk.loading.state_dict.open_checkpoint` (fp8-scaled dequantisation included);
:func:`build_module` builds a model on the ``meta`` device and assigns converted tensors, one at a
time, straight to the target device and dtype.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError

logger = logging.getLogger(__name__)


class FrozenEncoder:
    """Base of the four encoder wrappers: a frozen ``model`` plus device/dtype/``to``.

    ``_probe()`` names the weight whose device and dtype stand for the whole model.
    """

    model: torch.nn.Module

    def _probe(self) -> torch.Tensor:
        return next(self.model.parameters())

    @property
    def device(self) -> torch.device:
        return self._probe().device

    @property
    def dtype(self) -> torch.dtype:
        return self._probe().dtype

    def to(self, device: torch.device | str):
        self.model.to(device)
        return self


_EXPORTS = {
    "TextEncoder": "text",
    "load_text_encoder": "text",
    "ClipVisionEncoder": "clip",
    "load_clip_vision": "clip",
    "WanVAE": "vae",
    "load_vae": "vae",
    "AudioEncoder": "wav2vec2",
    "load_audio_encoder": "wav2vec2",
}

__all__ = [*_EXPORTS, "build_module", "strip_prefix"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# A converted state dict: target key -> zero-argument function producing the tensor. Tensors are
# produced one at a time, so a 11 GB umT5 never needs a second full copy in memory.
LazyStateDict = dict[str, Callable[[], torch.Tensor]]


def strip_prefix(keys: Iterable[str], prefixes: Iterable[str]) -> dict[str, str]:
    """Map stripped key -> original key, removing the first prefix that all matching keys share."""
    keys = list(keys)
    for prefix in prefixes:
        if prefix and any(k.startswith(prefix) for k in keys):
            return {k[len(prefix) :]: k for k in keys if k.startswith(prefix)}
    return {k: k for k in keys}


def build_module(
    factory: Callable[[], torch.nn.Module],
    state: LazyStateDict,
    *,
    source: Path,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    ignore_missing: Iterable[str] = (),
) -> torch.nn.Module:
    """Build ``factory()`` on ``meta`` and assign each converted tensor on ``device``/``dtype``.

    Floating tensors take ``dtype`` (default: the module's own, float32). Every parameter and
    persistent buffer must come from ``state`` (except ``ignore_missing``, left as zeros); keys of ``state`` the module does not have are an error, because they mean the
    conversion is wrong. Returns the module in eval mode with gradients off.
    """
    device = torch.device(device or "cpu")
    with torch.device("meta"):
        module = factory()
    expected = module.state_dict()
    unknown = sorted(set(state) - set(expected))
    missing = sorted(set(expected) - set(state) - set(ignore_missing))
    if unknown or missing:
        raise CheckpointError(
            f"checkpoint {source} does not fit the {type(module).__name__} built from its shapes "
            f"(missing {missing[:3]}, unexpected {unknown[:3]}): the file is incomplete or not this model"
        )
    tensors = {}
    for key, ref in expected.items():
        tensor = state[key]() if key in state else torch.zeros(ref.shape)
        if tuple(tensor.shape) != tuple(ref.shape):
            raise CheckpointError(
                f"checkpoint {source}: tensor {key} has shape {tuple(tensor.shape)}, expected "
                f"{tuple(ref.shape)}: the file is inconsistent or not this model"
            )
        if tensor.is_floating_point():
            tensor = tensor.to(dtype=dtype or ref.dtype)
        tensors[key] = tensor.to(device=device)
    module.load_state_dict(tensors, assign=True, strict=True)
    return module.eval().requires_grad_(False)


def check_materialized(module: torch.nn.Module, source: Path) -> None:
    """Raise if any parameter or buffer is still on ``meta`` after loading (a loader bug)."""
    left = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    if left:
        raise CheckpointError(f"checkpoint {source}: tensors {left[:3]} were never loaded (internal error)")
