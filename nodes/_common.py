"""Shared pieces of the ComfyUI layer: private types, categories, model folders and weight listing.

Which files make up InfiniteTalk, and in which folders, is :mod:`infinitetalk.weights` (the registry);
this module only turns ComfyUI's folder lists (``folder_paths``, so ``extra_model_paths.yaml`` counts)
into the plain :class:`~infinitetalk.loading.discover.SearchPaths` the library searches:

- ComfyUI's model folders of every component, subfolders included (``diffusion_models``,
  ``model_patches``, ``text_encoders``, ``clip_vision``, ``vae``, ``audio_encoders``, ``loras``), the
  peers' extra folders (``wav2vec2``, ``transformers/TencentGameMate/chinese-wav2vec2-base``) and the
  ``kokoro`` folder this pack registers;
- trees in the official (reference repository) layout, registered under the folder name
  ``infinitetalk_weights``: by default the pack's own ``weights/`` folder; more roots can be added from
  ``extra_model_paths.yaml`` (key ``infinitetalk_weights``). These entries are listed as ``weights/<path>``;
- ``custom_nodes`` (for ComfyUI-WanVideoWrapper's umT5 tokenizer).

Loader combos list the files identified by content as that component, the preferred one first.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

import folder_paths

from ..infinitetalk import paths
from ..infinitetalk import weights as registry
from ..infinitetalk.config import VIDEO_FPS
from ..infinitetalk.loading import discover
from ..infinitetalk.loading.discover import SearchPaths
from ..infinitetalk.weights import Component
from ._api import io

PACK_ROOT = Path(__file__).resolve().parent.parent
WEIGHTS_FOLDER = "infinitetalk_weights"
KOKORO_FOLDER = "kokoro"
WAV2VEC2_FOLDER = "wav2vec2"  # WanVideoWrapper's folder (it registers the same name when installed)
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

FPS = VIDEO_FPS  # InfiniteTalk video is always 25 frames per second


def register_folders() -> None:
    """Register the pack's model folders with ComfyUI (idempotent, touches no file)."""
    folder_paths.add_model_folder_path(WEIGHTS_FOLDER, str(PACK_ROOT / "weights"))
    for name in (KOKORO_FOLDER, WAV2VEC2_FOLDER):
        folder_paths.add_model_folder_path(name, os.path.join(folder_paths.models_dir, name))


def search_paths() -> SearchPaths:
    """Every folder ComfyUI knows for the registry's components, the official trees and custom_nodes."""
    register_folders()
    folders: dict[str, list[Path]] = {}
    names = registry.comfy_folders()
    for name in (n for n in names if "/" not in n):
        try:
            dirs = [Path(p) for p in folder_paths.get_folder_paths(name)]
        except KeyError:
            dirs = []
        if dirs := [d for d in dirs if d.exists()]:
            folders[name] = dirs
    # fixed paths under a models/ folder (the WanVideoWrapper's HF download folder): under ComfyUI's own
    # models/ and under every models/ folder that extra_model_paths.yaml brings in
    roots = dict.fromkeys([Path(folder_paths.models_dir), *(d.parent for ds in folders.values() for d in ds)])
    for name in (n for n in names if "/" in n):
        if dirs := [r / name for r in roots if (r / name).is_dir()]:
            folders[name] = dirs
    try:
        custom_nodes = [Path(p) for p in folder_paths.get_folder_paths("custom_nodes")]
    except KeyError:
        custom_nodes = []
    return SearchPaths(folders=folders, official=_weights_roots(), custom_nodes=custom_nodes)


def placeholder(component: Component) -> str:
    return f"(no {component.value} found: see InfiniteTalk Doctor)"


def component_options(*components: Component) -> list[str]:
    """Combo entries: the files identified as ``components`` (preferred first), or a placeholder."""
    found, _ = discover.inventory(search_paths())
    options = list(dict.fromkeys(e for c in components for e in discover.entries(found, c)))
    return options or [placeholder(components[0])]


def resolve_component(component: Component, name: str, *others: Component) -> Path:
    """Turn a combo entry back into a path (an entry sent through the API may name any file of the
    component's folders: the loader then says what it is). Names are checked by the path boundary
    (:mod:`infinitetalk.paths`) before any folder is read."""
    paths.check_name(name, what=component.value)
    if name.startswith("("):
        raise FileNotFoundError(
            f"no {component.value} file found: put {registry.download_hint(component)} in place "
            "(see the README, 'Weights', or run InfiniteTalk Doctor), then refresh the browser"
        )
    found, _ = discover.inventory(search_paths())
    for c in (component, *others):
        hit = discover.resolve_entry(found, c, name)
        if hit is not None:
            return hit
    if name.startswith(WEIGHTS_PREFIX):
        return resolve(registry.spec(component).folders[0], name)
    for folder in registry.spec(component).folders:
        roots = model_folders(folder)
        full = paths.resolve(name, roots, what=component.value, must_exist=False) if roots else None
        if full is not None and full.is_file():
            return full
    raise FileNotFoundError(
        f"'{name}' is not a {component.value} file in ComfyUI's folders "
        f"{', '.join(registry.spec(component).folders)}: refresh the node list or run InfiniteTalk Doctor"
    )


def loader_extras(component: Component, path: Path) -> dict:
    """Extra loader arguments found by the registry: the umT5 tokenizer for a file without one."""
    if component is not Component.TEXT_ENCODER:
        return {}
    where = search_paths()
    found, _ = discover.inventory(where)
    return {"tokenizer": discover.find_tokenizer(path, found, where)}


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


def model_folders(folder: str) -> list[Path]:
    """The folders of one ComfyUI model folder name (``extra_model_paths.yaml`` included; none if unknown)."""
    register_folders()
    try:
        return [Path(p) for p in folder_paths.get_folder_paths(folder)]
    except KeyError:
        return []


def resolve(folder: str, name: str) -> Path:
    """Turn a combo entry back into a path: ``weights/...`` in the official trees, else a model folder.
    The name goes through the path boundary (:mod:`infinitetalk.paths`): it cannot leave those folders."""
    paths.check_name(name, what=folder)
    if name.startswith(WEIGHTS_PREFIX):
        rel = name[len(WEIGHTS_PREFIX) :]
        path = paths.resolve(
            rel, _weights_roots(), what=folder, kind="InfiniteTalk weights", must_exist=False
        )
        if path.exists():
            return path
        raise FileNotFoundError(
            f"'{name}' not found in any InfiniteTalk weights folder "
            f"({', '.join(str(r) for r in _weights_roots()) or 'none registered'}); "
            "refresh the node list or download the weights (see README, 'Weights')"
        )
    full = paths.resolve(name, model_folders(folder), what=folder, must_exist=False)
    if not full.is_file():
        raise FileNotFoundError(
            f"'{name}' not found in ComfyUI's '{folder}' model folder(s) "
            f"{folder_paths.get_folder_paths(folder)}; put the file there or refresh the node list"
        )
    return full


_ANNOTATIONS = {
    "[input]": "get_input_directory",
    "[output]": "get_output_directory",
    "[temp]": "get_temp_directory",
}


def media_file(name: str, what: str, must_exist: bool = True) -> Path:
    """A media file named in a prompt (``clip.wav``, ``sub/clip.wav``, ``clip.wav [output]``): resolved by the
    path boundary inside ComfyUI's input folder (or the output / temp folder its annotation names), never
    outside it. Refused in one line before any file is touched."""
    paths.check_name(name, what=what)
    root, kind = folder_paths.get_input_directory(), "ComfyUI input"
    for tag, getter in _ANNOTATIONS.items():
        if name.rstrip().endswith(tag):
            name, root = name.rstrip()[: -len(tag)].rstrip(), getattr(folder_paths, getter)()
            kind = f"ComfyUI {tag[1:-1]}"
            break
    return paths.resolve(name, [root], what=what, kind=kind, must_exist=must_exist)
