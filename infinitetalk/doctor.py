"""``python -m infinitetalk.doctor``: are the weights in place, complete and made for each other?

Reads only safetensors headers, index files and memory-mapped ``.pth`` tables (no tensor data), so it
takes about a second on a 60 GB tree::

    python -m infinitetalk.doctor                      # this pack's weights/ and the ComfyUI it sits in
    python -m infinitetalk.doctor --comfyui ~/ComfyUI  # a ComfyUI folder (models/, custom_nodes/,
                                                       # extra_model_paths.yaml)
    python -m infinitetalk.doctor --weights /data/weights --speakers 2

For every component it shows the file it would use (the same choice as the command line and the loader
nodes), its layout, storage dtype and the dimensions read from the shapes; then what is missing (file
name, folder, source), the files it could not place and why, whether the adapter fits the DiT and the
wav2vec2, which known trees it recognised, the device with free VRAM/RAM, and one last line ``ready`` or
``not ready``. The "InfiniteTalk Doctor" node shows the same report inside ComfyUI.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .config import AudioEncoderConfig
from .encoders.text import wrapper_tokenizers
from .errors import CheckpointError, InfiniteTalkError
from .loading.discover import (
    PACK_ROOT,
    Found,
    SearchPaths,
    candidates,
    find_tokenizer,
    inventory,
    search_paths_for,
)
from .loading.dit import (
    ADAPTER_ANCHOR,
    DIT_ANCHOR,
    check_adapter_fits,
    fit_audio_encoder,
    infer_dit_config,
    route_keys,
)
from .loading.identify import identify
from .loading.state_dict import open_checkpoint
from .weights import (
    EV_TEMPLATE,
    Component,
    comfy_folders,
    download_hint,
    iter_published,
    published_by_name,
    spec,
)

log = logging.getLogger(__name__)

READY, NOT_READY = "ready", "not ready"
_OPTIONAL = (Component.TTS, Component.LORA)
_OTHER_MODELS = ("not an InfiniteTalk part", "a LoRA for another model")
_MAX_OTHER = 10


@dataclass
class Row:
    component: Component
    found: Found | None
    alternatives: int = 0
    required: bool = True


@dataclass
class Report:
    """What :func:`diagnose` found; ``text()`` is what the command line and the node show."""

    searched: SearchPaths
    rows: list[Row] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    unplaced: list[str] = field(default_factory=list)
    fits: list[str] = field(default_factory=list)
    trees: list[str] = field(default_factory=list)
    tokenizer: str = ""
    device: str = ""

    @property
    def ready(self) -> bool:
        return not self.missing and not self.problems

    def text(self) -> str:
        lines = ["InfiniteTalk weights doctor", f"searched: {self.searched.describe()}"]
        lines.append("recognised: " + ("; ".join(self.trees) if self.trees else "no known tree"))
        lines += ["", f"{'component':<15} {'file':<58} {'layout':<30} {'storage':<32} dims"]
        for row in self.rows:
            lines.append(_row_text(row))
        if self.tokenizer:
            lines.append(f"{'tokenizer':<15} {self.tokenizer}")
        for title, items in (
            ("missing", self.missing),
            ("problems", self.problems),
            ("fits", self.fits),
            ("not used (could not place)", self.unplaced),
        ):
            if items:
                lines += ["", f"{title}:"] + [f"  - {item}" for item in items]
        lines += ["", f"device: {self.device}", READY if self.ready else NOT_READY]
        return "\n".join(lines)


def _row_text(row: Row) -> str:
    name = row.component.value
    if row.found is None:
        state = "missing" if row.required else "not found (optional)"
        return f"{name:<15} {state}"
    info = row.found.info
    more = f" (+{row.alternatives} more)" if row.alternatives else ""
    shown = _ellipsize(row.found.display + more, 58)
    return f"{name:<15} {shown:<58} {_ellipsize(_layout(row.found), 30):<30} {info.storage:<32} {info.dims}"


def _ellipsize(text: str, width: int) -> str:
    return text if len(text) <= width else "..." + text[-(width - 3) :]


def _layout(found: Found) -> str:
    """Publisher from the published name, plus what the content says (sharded, prefix, fp8-scaled)."""
    hits = published_by_name(found.path.name)
    who = hits[0][1].publisher if hits else ""
    what = found.info.layout.replace("single file", "").strip(", ")
    return ", ".join(p for p in (who, what) if p) or "single file"


# ---------------------------------------------------------------------------------------- diagnose
def diagnose(paths: SearchPaths, speakers: int = 1) -> Report:
    """Check the weights under ``paths`` for a video with ``speakers`` people (header reads only)."""
    report = Report(searched=paths)
    found, unplaced = inventory(paths)
    chosen: dict[Component, Found] = {}
    adapter = Component.ADAPTER_MULTI if speakers == 2 else Component.ADAPTER_SINGLE
    for component in Component:
        options = candidates(found, component)
        required = spec(component).required and component not in _OPTIONAL
        if component in (Component.ADAPTER_SINGLE, Component.ADAPTER_MULTI):
            required = component is adapter
        report.rows.append(
            Row(component, options[0] if options else None, max(0, len(options) - 1), required)
        )
        if options:
            chosen[component] = options[0]
        elif required and not _merged_dit(chosen):
            report.missing.append(_missing_text(component))
    other = [i for i in unplaced if i.named_as is None and (i.problem or "").startswith(_OTHER_MODELS)]
    for info in unplaced:
        if any(info is o for o in other):
            continue
        report.unplaced.append(_unplaced_text(info, paths))
        if info.named_as is not None and info.named_as not in chosen and spec(info.named_as).required:
            report.problems.append(f"{spec(info.named_as).title}: {_short(info)} {info.problem}")
    report.unplaced += [_unplaced_text(info, paths) for info in other[:_MAX_OTHER]]
    if len(other) > _MAX_OTHER:  # a big ComfyUI models/ folder holds many files of other models
        report.unplaced.append(f"... and {len(other) - _MAX_OTHER} more files of other models")
    _check_tokenizer(report, chosen, found, paths)
    _check_fits(report, chosen, adapter)
    report.trees = recognised_trees(found, paths)
    report.device = device_summary()
    return report


def _merged_dit(chosen: dict[Component, Found]) -> bool:
    dit = chosen.get(Component.DIT)
    return dit is not None and dit.info.merged_adapter


def _missing_text(component: Component) -> str:
    s = spec(component)
    return f"{component} ({s.title}): expected {download_hint(component)}; ComfyUI folders: {', '.join(s.folders)}"


def _short(info) -> str:
    return f"{info.path.name}:"


def _unplaced_text(info, paths: SearchPaths) -> str:
    return f"{_relative(info.path, paths)}: {info.problem}"


def _relative(path: Path, paths: SearchPaths) -> str:
    bases = [b for bs in paths.folders.values() for b in bs] + list(paths.official)
    for base in bases:
        try:
            rel = path.relative_to(base.parent)
        except ValueError:
            continue
        return rel.as_posix()
    return str(path)


def _check_tokenizer(report: Report, chosen: dict, found: list, paths: SearchPaths) -> None:
    text = chosen.get(Component.TEXT_ENCODER)
    if text is None:
        return
    try:
        tokenizer = find_tokenizer(text.path, found, paths)
    except CheckpointError as err:
        report.problems.append(str(err))
        report.tokenizer = "none found"
        return
    if tokenizer is None:
        report.tokenizer = f"with {text.display} (inside or beside it)"
    else:
        report.tokenizer = _relative(tokenizer, paths)


def _check_fits(report: Report, chosen: dict[Component, Found], adapter_kind: Component) -> None:
    """The loader's own checks on headers: adapter vs DiT, adapter vs wav2vec2, umT5 and CLIP widths."""
    dit, w2v = chosen.get(Component.DIT), chosen.get(Component.AUDIO_ENCODER)
    adapter = chosen.get(adapter_kind) or chosen.get(
        Component.ADAPTER_SINGLE if adapter_kind is Component.ADAPTER_MULTI else Component.ADAPTER_MULTI
    )
    if dit is not None and (adapter is not None or dit.info.merged_adapter):
        try:
            report.fits.append(
                fit_adapter(dit.path, adapter.path if adapter else None, w2v.path if w2v else None)
            )
        except CheckpointError as err:
            report.problems.append(f"adapter does not fit: {err}")
    for component, key, want in (
        (Component.TEXT_ENCODER, "d_model", "text_dim"),
        (Component.CLIP, "width", "clip_dim"),
    ):
        other = chosen.get(component)
        if dit is None or other is None:
            continue
        have, need = other.info.numbers.get(key), dit.info.numbers.get(want)
        if have != need:
            report.problems.append(
                f"{other.display} is {have} wide but the DiT expects {need} ({want}): use the "
                f"{spec(component).title} made for Wan2.1 I2V 14B"
            )
        else:
            report.fits.append(f"{component} width {have} = DiT {want}")


def fit_adapter(dit: Path, adapter: Path | None, audio_encoder: Path | None) -> str:
    """Run the loader's pre-load checks (key routing, adapter width/layers, audio feature split) on
    headers only; returns a one-line summary, raises :class:`CheckpointError` like ``load_dit`` would."""
    enc = identify(audio_encoder).numbers if audio_encoder is not None else {}
    with open_checkpoint(dit, anchor=DIT_ANCHOR) as d:
        a = open_checkpoint(adapter, anchor=ADAPTER_ANCHOR) if adapter is not None else None
        try:
            sources = route_keys(d, a)
            shapes = {k: r.shape(k) for k, r in sources.items()}
            check_adapter_fits(d, a, shapes)
            cfg = infer_dit_config(shapes, audio_channels=enc.get("hidden"), source=str(adapter or dit))
        finally:
            if a is not None:
                a.close()
    text = f"adapter fits the DiT (dim {cfg.dim}, {cfg.num_layers} layers)"
    if enc:
        fit_audio_encoder(
            cfg, AudioEncoderConfig(num_layers=enc["layers"], hidden_size=enc["hidden"]), str(adapter)
        )
        text += f"; wav2vec2 gives {enc['layers']} x {enc['hidden']} = {cfg.audio_blocks * cfg.audio_channels} features"
    return text


def recognised_trees(found: Sequence[Found], paths: SearchPaths) -> list[str]:
    """Which of the three known trees the files come from (by published name and location)."""
    names = {f.path.name.lower() for f in found}
    template = {f.name.lower() for _, f in iter_published() if EV_TEMPLATE in f.evidence}
    kijai = {f.name.lower() for _, f in iter_published() if f.publisher == "Kijai"} - template
    trees = []
    official = sorted({f.display.split("/")[1] for f in found if f.display.startswith("weights/")})
    if official:
        trees.append(f"official weights/ tree ({', '.join(official)})")
    if names & template:
        trees.append(
            f"ComfyUI InfiniteTalk template files ({len(names & template)} of {len(template)} names)"
        )
    wrapper = sorted(names & kijai)
    extra = [
        d for d in ("wav2vec2", "transformers/TencentGameMate/chinese-wav2vec2-base") if paths.folders.get(d)
    ]
    if wrapper_tokenizers(paths.custom_nodes):
        extra.append("configs/T5_tokenizer")
    subfolders = sorted(
        {
            f.display.split("/")[0]
            for f in found
            if "/" in f.display and not f.display.startswith(("weights/", "transformers/"))
        }
    )
    if wrapper or extra:
        what = [f"{len(wrapper)} Kijai names"] if wrapper else []
        trees.append(
            "WanVideoWrapper files ("
            + ", ".join(what + extra + [f"subfolder {s}/" for s in subfolders])
            + ")"
        )
    return trees


def device_summary() -> str:
    """The compute device with free VRAM, and free RAM."""
    ram = _free_ram()
    ram_text = f"RAM {ram[0] / 2**30:.1f} GiB free of {ram[1] / 2**30:.1f} GiB" if ram else "RAM unknown"
    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        name = torch.cuda.get_device_name()
        return f"cuda ({name}), VRAM {free / 2**30:.1f} GiB free of {total / 2**30:.1f} GiB; {ram_text}"
    return f"cpu (no CUDA device); {ram_text}"


def _free_ram() -> tuple[int, int] | None:
    try:
        import psutil  # optional (a test dependency); /proc/meminfo below otherwise

        vm = psutil.virtual_memory()
        return vm.available, vm.total
    except ImportError:
        pass
    try:
        info = dict(
            line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line
        )
        return int(info["MemAvailable"].split()[0]) * 1024, int(info["MemTotal"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


# ---------------------------------------------------------------------------------------- search paths
def merge(*parts: SearchPaths) -> SearchPaths:
    out = SearchPaths()
    for part in parts:
        for folder, dirs in part.folders.items():
            out.folders.setdefault(folder, [])
            out.folders[folder] += [d for d in dirs if d not in out.folders[folder]]
        out.official += [d for d in part.official if d not in out.official]
        out.custom_nodes += [d for d in part.custom_nodes if d not in out.custom_nodes]
    return out


def comfyui_paths(root: str | os.PathLike) -> SearchPaths:
    """A ComfyUI folder: its models/ and custom_nodes/, plus the folders of its extra_model_paths.yaml."""
    root = Path(root).expanduser()
    paths = search_paths_for(root)
    yaml_file = root / "extra_model_paths.yaml"
    if yaml_file.is_file():
        paths = merge(paths, extra_model_paths(yaml_file))
    return paths


def extra_model_paths(yaml_file: Path) -> SearchPaths:
    """The model folders an ``extra_model_paths.yaml`` adds (base_path + per-folder, multi-line values)."""
    import yaml  # ComfyUI's dependency, not this library's: only read for a ComfyUI tree

    try:
        config = yaml.safe_load(yaml_file.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise CheckpointError(f"{yaml_file}: unreadable ({err}); fix the YAML") from err
    out = SearchPaths()
    known = set(comfy_folders())
    for section in config.values():
        if not isinstance(section, dict):
            continue
        base = Path(os.path.expanduser(str(section.get("base_path", yaml_file.parent))))
        if not base.is_absolute():
            base = yaml_file.parent / base
        for key, value in section.items():
            if key == "infinitetalk_weights":
                out.official += [base / line.strip() for line in str(value).splitlines() if line.strip()]
            elif key in known:
                dirs = [base / line.strip() for line in str(value).splitlines() if line.strip()]
                out.folders.setdefault(key, []).extend(d for d in dirs if d.is_dir())
    return out


def default_paths() -> SearchPaths:
    """This pack's ``weights/`` and, when the pack is installed in ComfyUI, that ComfyUI."""
    parts = [search_paths_for(PACK_ROOT / "weights")] if (PACK_ROOT / "weights").is_dir() else []
    if PACK_ROOT.parent.name == "custom_nodes":
        parts.append(comfyui_paths(PACK_ROOT.parent.parent))
    return merge(*parts)


# ---------------------------------------------------------------------------------------- command line
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infinitetalk.doctor", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--weights", action="append", default=[], help="a weights folder (any tree; repeatable)"
    )
    parser.add_argument("--comfyui", action="append", default=[], help="a ComfyUI folder (repeatable)")
    parser.add_argument("--speakers", type=int, choices=(1, 2), default=1, help="people in the video (1)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        parts = [search_paths_for(w) for w in args.weights] + [comfyui_paths(c) for c in args.comfyui]
        paths = merge(*parts) if parts else default_paths()
        report = diagnose(paths, speakers=args.speakers)
    except InfiniteTalkError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(report.text())
    return 0 if report.ready else 1


if __name__ == "__main__":
    sys.exit(main())
