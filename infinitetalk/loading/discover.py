"""Discovery on disk: which files under the user's folders are which part of InfiniteTalk.

The registry (:mod:`infinitetalk.weights`) says what the parts are and what their files are called; this
module walks the folders, identifies every file by its content (:mod:`.identify`) and picks one file per
part, preferring the registry's order. Used by the command line, the loader nodes (through plain
:class:`SearchPaths`: the library never asks ComfyUI), :mod:`infinitetalk.doctor` and the tests.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..encoders.text import own_tokenizer, tokenizer_search
from ..errors import InputError
from ..weights import (
    ADAPTERS,
    UMT5_TOKENIZER_DIR,
    Component,
    comfy_folders,
    missing_error,
    official_roots_markers,
    published_by_name,
    spec,
)
from .identify import Identified, identify, walk

log = logging.getLogger(__name__)

PACK_ROOT = Path(__file__).resolve().parent.parent.parent  # the node pack's folder


@dataclass
class SearchPaths:
    """Plain folder lists to search: the library never asks ComfyUI (the node layer fills this in)."""

    folders: dict[str, list[Path]] = field(default_factory=dict)  # ComfyUI folder name -> directories
    official: list[Path] = field(default_factory=list)  # official weights/ trees
    custom_nodes: list[Path] = field(default_factory=list)  # for the WanVideoWrapper tokenizer

    def describe(self) -> str:
        dirs = [str(p) for ps in self.folders.values() for p in ps] + [str(p) for p in self.official]
        return ", ".join(dict.fromkeys(dirs)) or "no folder"


def search_paths_for(root: str | os.PathLike) -> SearchPaths:
    """The folders under ``root``: a ComfyUI root, its ``models/``, an official ``weights/`` or a parent."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise InputError(
            f"--weights '{root}' is not a folder: point it at ComfyUI, ComfyUI/models or the official weights/"
        )
    markers = official_roots_markers()
    official = [d for d in (root, root / "weights") if d.is_dir() and any((d / m).exists() for m in markers)]
    model_roots = [
        d
        for d in (root, root / "models", root / "ComfyUI" / "models", root / "weights" / "models")
        if d.is_dir() and any((d / f).is_dir() for f in comfy_folders())
    ]
    folders: dict[str, list[Path]] = {}
    for folder in comfy_folders():
        found = [m / folder for m in model_roots if (m / folder).is_dir()]
        if found:
            folders[folder] = found
    nodes = [
        root / "custom_nodes",
        root / "ComfyUI" / "custom_nodes",
        *(m.parent / "custom_nodes" for m in model_roots),
    ]
    if PACK_ROOT.parent.name == "custom_nodes":
        nodes.append(PACK_ROOT.parent)
    custom_nodes = list(dict.fromkeys(d.resolve() for d in nodes if d.is_dir()))
    return SearchPaths(folders=folders, official=official, custom_nodes=custom_nodes)


@dataclass(frozen=True)
class Found:
    """A file or folder identified as (a part of) InfiniteTalk."""

    path: Path
    component: Component
    display: str  # the name a loader node lists ("WanVideo/x.safetensors", "weights/InfiniteTalk/...")
    info: Identified


def inventory(paths: SearchPaths):
    """Every candidate under ``paths``: ``(found, unplaced)``; found in preference order per component.

    ``found`` is a list of :class:`Found`; ``unplaced`` lists the identification results of files in
    the searched folders that are no InfiniteTalk part (wrong model, truncated, unknown format).
    """
    seen: set[Path] = set()
    found: list[Found] = []
    unplaced = []
    for folder, dirs in paths.folders.items():
        for base in dirs:
            for info in _identify_new(base, seen):
                rel = info.path.relative_to(base).as_posix() if info.path != base else info.path.name
                if "/" in folder:  # a path-like folder (an HF model folder): name it by its path
                    rel = f"{folder}/{rel}" if info.path != base else folder
                _place(info, rel, found, unplaced)
    for base in paths.official:
        for info in _identify_new(base, seen):
            shown = info.path.parent if info.component is Component.TTS else info.path  # Kokoro: its folder
            _place(info, "weights/" + shown.relative_to(base).as_posix(), found, unplaced)
    found.sort(key=_preference)
    return found, unplaced


def _identify_new(base: Path, seen: set[Path]) -> Iterator[Identified]:
    """What each candidate under ``base`` is, skipping files already met (one file reached twice counts once)."""
    for path in walk(base):
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            yield identify(path)


def _place(info, display: str, found: list, unplaced: list) -> None:
    if info.component is None or info.problem:
        unplaced.append(info)
        return
    comps = [info.component]
    if (
        info.component is Component.ADAPTER_SINGLE and info.variant == ""
    ):  # single/multi unknown from the name
        comps = [Component.ADAPTER_SINGLE, Component.ADAPTER_MULTI]
    for c in comps:
        found.append(Found(info.path, c, display, info))


def _published_rank(component: Component, path: Path) -> int:
    """Index of the published file ``path`` is (by name), else after every published file."""
    names = [f.name.lower() for f in spec(component).files]
    name = path.name.lower()
    return names.index(name) if name in names else len(names)


def _preference(f: Found) -> tuple:
    merged = bool(getattr(f.info, "merged_adapter", False))
    return (list(Component).index(f.component), merged, _published_rank(f.component, f.path), str(f.path))


def candidates(found: Sequence[Found], component: Component) -> list[Found]:
    return [f for f in found if f.component is component]


@dataclass
class WeightPaths:
    """Every file one run needs."""

    dit: Path
    adapter: Path | None  # None: the DiT file already holds the adapter
    text_encoder: Path
    clip: Path
    vae: Path
    audio_encoder: Path
    kokoro: Path | None = None
    tokenizer: Path | None = None  # umT5 tokenizer (folder, or a ComfyUI umT5 file with spiece_model)


def near_misses(component: Component, found: Sequence[Found], unplaced: Sequence = ()) -> list[str]:
    """Files named as ``component`` that are something else, or that cannot be read (truncated, wrong
    model): what a user who put the file in place needs to hear when the part is reported missing."""
    notes = []
    for info in unplaced:
        if info.named_as is component:
            notes.append(f"'{info.path.name}' ({info.problem})")
    for f in found:
        named = {c for c, _ in published_by_name(f.path.name)}
        if component in named and f.component is not component and f.component not in named:
            notes.append(
                f"'{f.display}' holds the {spec(f.component).title}, not the {spec(component).title}"
            )
    return list(dict.fromkeys(notes))


def pick(found: Sequence[Found], component: Component, where: str, unplaced: Sequence = ()) -> Found:
    """The preferred candidate of ``component`` (logged with the alternatives), or a clear error that also
    names the files that look like it but are not usable."""
    options = candidates(found, component)
    if not options:
        raise missing_error(component, where, near_misses(component, found, unplaced))
    if len(options) > 1:
        others = ", ".join(o.display for o in options[1:4]) + (" ..." if len(options) > 4 else "")
        log.info("%s: using %s (also found: %s)", component, options[0].display, others)
    else:
        log.info("%s: using %s", component, options[0].display)
    return options[0]


def pick_adapter(found: Sequence[Found], speakers: int, where: str, unplaced: Sequence = ()) -> Found:
    """The multi adapter for two speakers, the single one for one; the other one with a warning."""
    wanted = [Component.ADAPTER_SINGLE, Component.ADAPTER_MULTI]
    if speakers == 2:
        wanted.reverse()
    for i, comp in enumerate(wanted):
        options = candidates(found, comp)
        if options:
            if i:
                log.warning("no %s found: using the %s file %s", wanted[0], comp, options[0].display)
            return pick(found, comp, where)
    raise missing_error(wanted[0], where, near_misses(wanted[0], found, unplaced))


def find_tokenizer(text_encoder: Path, found: Sequence[Found], paths: SearchPaths) -> Path | None:
    """The umT5 tokenizer for ``text_encoder`` (None when the file carries one or has one beside it);
    the search order is :func:`infinitetalk.encoders.text.tokenizer_search`'s."""
    if own_tokenizer(text_encoder):
        return None
    others = [f.path for f in candidates(found, Component.TEXT_ENCODER) if f.path != text_encoder]
    official = [d / UMT5_TOKENIZER_DIR for d in paths.official]
    return tokenizer_search(text_encoder, others, paths.custom_nodes, official)


def find_weights(
    root: str | os.PathLike | SearchPaths,
    speakers: int = 1,
    need_kokoro: bool = False,
    given: Mapping[str, Path] | None = None,
) -> WeightPaths:
    """Every component under ``root`` (a ComfyUI root, its ``models/``, an official ``weights/``, a parent
    of those, or prepared :class:`SearchPaths`), chosen by content; ``given`` (WeightPaths field -> path)
    are taken as they are. Raises naming the first missing file, its folders and its source."""
    given = dict(given or {})
    paths = root if isinstance(root, SearchPaths) else search_paths_for(root)
    where = f"'{root}'" if not isinstance(root, SearchPaths) else paths.describe()
    found, unplaced = inventory(paths)

    def get(component: Component) -> Path:
        field_name = spec(component).field
        return given[field_name] if field_name in given else pick(found, component, where, unplaced).path

    dit = get(Component.DIT)
    if "adapter" in given:
        adapter = given["adapter"]
    else:
        merged = any(f.path == dit and f.info.merged_adapter for f in candidates(found, Component.DIT))
        has_adapter = any(candidates(found, c) for c in ADAPTERS)
        adapter = pick_adapter(found, speakers, where, unplaced).path if has_adapter or not merged else None
    text = get(Component.TEXT_ENCODER)
    kokoro = None
    if need_kokoro:
        kokoro = given.get("kokoro") or pick(found, Component.TTS, where).path.parent  # the Kokoro folder
    return WeightPaths(
        dit=dit,
        adapter=adapter,
        text_encoder=text,
        clip=get(Component.CLIP),
        vae=get(Component.VAE),
        audio_encoder=get(Component.AUDIO_ENCODER),
        kokoro=kokoro,
        tokenizer=find_tokenizer(text, found, paths) if text.exists() else None,
    )


def entries(found: Sequence[Found], component: Component) -> list[str]:
    """Display names of the candidates of ``component`` (preferred first), for loader combos."""
    return list(dict.fromkeys(f.display for f in candidates(found, component)))


def resolve_entry(found: Sequence[Found], component: Component, name: str) -> Path | None:
    for f in candidates(found, component):
        if f.display == name:
            return f.path
    return None
