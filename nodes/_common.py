"""Shared pieces of the ComfyUI layer: private types, categories, model folders and weight listing.

Weights are found in two places:

- ComfyUI's own model folders (``diffusion_models``, ``model_patches``, ``text_encoders``,
  ``clip_vision``, ``vae``, ``audio_encoders``) plus a ``kokoro`` folder this pack registers;
- trees in the official (reference repository) layout, registered under the folder name
  ``infinitetalk_weights``: by default the pack's own ``weights/`` folder; more roots can be added from
  ``extra_model_paths.yaml`` (key ``infinitetalk_weights``). These entries are listed as ``weights/<path>``.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

import folder_paths
from comfy_api.latest import io

PACK_ROOT = Path(__file__).resolve().parent.parent
WEIGHTS_FOLDER = "infinitetalk_weights"
KOKORO_FOLDER = "kokoro"
WEIGHTS_PREFIX = "weights/"

CATEGORY_LOADERS = "InfiniteTalk/loaders"
CATEGORY_AUDIO = "InfiniteTalk/audio"
CATEGORY_TTS = "InfiniteTalk/tts"
CATEGORY_CONDITIONING = "InfiniteTalk/conditioning"
CATEGORY_SAMPLING = "InfiniteTalk/sampling"
CATEGORY_VIDEO = "InfiniteTalk/video"

# Private socket types: only this pack's nodes produce and consume them.
Model = io.Custom("INFINITETALK_MODEL")
TextEncoder = io.Custom("INFINITETALK_TEXT_ENCODER")
ClipVision = io.Custom("INFINITETALK_CLIP_VISION")
Vae = io.Custom("INFINITETALK_VAE")
AudioEncoder = io.Custom("INFINITETALK_AUDIO_ENCODER")
Kokoro = io.Custom("INFINITETALK_KOKORO")
TextEmbeds = io.Custom("INFINITETALK_TEXT_EMBEDS")
AudioEmbeds = io.Custom("INFINITETALK_AUDIO_EMBEDS")
Frames = io.Custom("INFINITETALK_FRAMES")

FPS = 25  # InfiniteTalk video is always 25 frames per second


def register_folders() -> None:
    """Register the pack's model folders with ComfyUI (idempotent, touches no file)."""
    folder_paths.add_model_folder_path(WEIGHTS_FOLDER, str(PACK_ROOT / "weights"))
    folder_paths.add_model_folder_path(KOKORO_FOLDER, os.path.join(folder_paths.models_dir, KOKORO_FOLDER))


def _weights_roots() -> list[Path]:
    register_folders()
    roots = []
    for root in folder_paths.get_folder_paths(WEIGHTS_FOLDER):
        path = Path(root)
        if path.is_dir() and path not in roots:
            roots.append(path)
    return roots


def official_entries(*patterns: str, parent: bool = False) -> list[str]:
    """List ``weights/<relative path>`` entries matching glob ``patterns`` in every official tree.

    With ``parent=True`` the entry is the folder holding the match (sharded DiT, HF model folders).
    """
    found: list[str] = []
    for root in _weights_roots():
        for pattern in patterns:
            for match in sorted(glob.glob(str(root / pattern))):
                rel = Path(match).relative_to(root)
                if parent:
                    rel = rel.parent
                entry = WEIGHTS_PREFIX + rel.as_posix()
                if entry not in found:
                    found.append(entry)
    return found


def folder_entries(folder: str) -> list[str]:
    """Files of one ComfyUI model folder (empty when the folder is unknown)."""
    register_folders()
    try:
        return folder_paths.get_filename_list(folder)
    except KeyError:
        return []


def resolve(folder: str, name: str) -> Path:
    """Turn a combo entry back into a path: ``weights/...`` in the official trees, else a model folder."""
    if name.startswith(WEIGHTS_PREFIX):
        rel = name[len(WEIGHTS_PREFIX) :]
        for root in _weights_roots():
            path = root / rel
            if path.exists():
                return path
        raise FileNotFoundError(
            f"'{name}' not found in any InfiniteTalk weights folder "
            f"({', '.join(str(r) for r in _weights_roots()) or 'none registered'}); "
            "refresh the node list or download the weights (see README, 'Weights')"
        )
    full = folder_paths.get_full_path(folder, name)
    if full is None:
        raise FileNotFoundError(
            f"'{name}' not found in ComfyUI's '{folder}' model folder(s) "
            f"{folder_paths.get_folder_paths(folder)}; put the file there or refresh the node list"
        )
    return Path(full)


def or_placeholder(options: list[str], placeholder: str) -> list[str]:
    """Combos need at least one entry; show what is missing when nothing was found."""
    return options if options else [placeholder]


def check_selected(name: str, what: str, folder: str) -> None:
    """Raise a clear error when a combo still shows the 'nothing found' placeholder."""
    if name.startswith("("):
        raise FileNotFoundError(
            f"no {what} file found: put one in ComfyUI's models/{folder}/ folder or in the pack's weights/ "
            "folder (see the README table), then refresh the browser"
        )
