"""Test-server plugin: ComfyUI 0.3.75's Load CLIP (type wan) and Load CLIP Vision accept the tiny checkpoints.

0.3.75 builds umT5-XXL and ViT-H/14 at their fixed full size whatever the file holds (tests/tiny_core.py).
This folder is added to the *test* server's custom_nodes (tests/integration/harness.py); it wraps the two
loading functions those nodes call so that a file their detection does not recognise is sized from its
shapes (tests/tiny_core.py). Real files go through ComfyUI's code untouched; the nodes, tokenizer, encoders
and memory management are ComfyUI's own either way. Never installed for users.
"""

from __future__ import annotations

import importlib.util
import logging
import tempfile
from pathlib import Path

import comfy.clip_vision
import comfy.sd

log = logging.getLogger(__name__)

_spec = importlib.util.spec_from_file_location(
    "infinitetalk_test_tiny_core", Path(__file__).resolve().parents[3] / "tiny_core.py"
)
tiny_core = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny_core)

_load_text_encoders = comfy.sd.load_text_encoder_state_dicts
_load_clip_vision = comfy.clip_vision.load_clipvision_from_sd
_CONFIGS = Path(tempfile.mkdtemp(prefix="tiny_clip_vision_"))


def load_text_encoder_state_dicts(
    state_dicts=(), embedding_directory=None, clip_type=None, model_options=None
):
    state_dicts = list(state_dicts)
    if (
        clip_type == comfy.sd.CLIPType.WAN
        and len(state_dicts) == 1
        and tiny_core.is_small_umt5(state_dicts[0])
    ):
        log.info("tiny_core_sizes: umT5 sized from the file (%s)", tiny_core.umt5_config(state_dicts[0]))
        return tiny_core.clip_from_sd(state_dicts[0], model_options)
    kwargs = {"embedding_directory": embedding_directory, "model_options": model_options or {}}
    if clip_type is not None:
        kwargs["clip_type"] = clip_type
    return _load_text_encoders(state_dicts, **kwargs)


def load_clipvision_from_sd(sd, prefix="", convert_keys=False):
    model = _load_clip_vision(sd, prefix, convert_keys)
    if model is None and "vision_model.embeddings.patch_embedding.weight" in sd:
        log.info("tiny_core_sizes: CLIP vision sized from the file")
        return tiny_core.clip_vision_from_sd(sd, _CONFIGS)
    return model


comfy.sd.load_text_encoder_state_dicts = load_text_encoder_state_dicts
comfy.clip_vision.load_clipvision_from_sd = load_clipvision_from_sd

NODE_CLASS_MAPPINGS: dict = {}
