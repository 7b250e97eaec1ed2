"""Tiny random checkpoints with the real file names and key layouts (for tests and demos).

``python -m infinitetalk.tiny --out DIR`` writes the official tree ``DIR/weights/...`` and the
ComfyUI tree ``DIR/models/...`` (see docs/ARCHITECTURE.md "Tiny checkpoints"). Parts:

- ``dit``: DiT + InfiniteTalk adapters in every layout (:mod:`infinitetalk.tiny.dit`);
- ``encoders``: umT5, CLIP, VAE, wav2vec2 (``infinitetalk.tiny.encoders.write_all(root, seed)``);
- ``kokoro``: Kokoro TTS (``infinitetalk.tiny.kokoro.write_all(root, seed)``).

A part whose module is not installed is skipped with a log line.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence
from pathlib import Path

from .dit import TINY_DIT, write_dit_files

log = logging.getLogger(__name__)

ALL_PARTS: tuple[str, ...] = ("dit", "encoders", "kokoro")

__all__ = ["ALL_PARTS", "TINY_DIT", "summarize", "write_all"]


def write_all(root: str | Path, seed: int = 0, parts: Sequence[str] = ALL_PARTS) -> Path:
    """Write the tiny checkpoints of ``parts`` under ``root`` (created); return ``root``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    unknown = set(parts) - set(ALL_PARTS)
    if unknown:
        raise ValueError(f"unknown tiny parts {sorted(unknown)}; choose from {list(ALL_PARTS)}")
    for part in parts:
        if part == "dit":
            write_dit_files(root, seed)
            continue
        module = _optional_module(f"{__name__}.{part}")
        if module is None:
            log.info("tiny: skipping %s (module infinitetalk.tiny.%s not available)", part, part)
            continue
        module.write_all(root, seed)
    return root


def _optional_module(name: str):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:  # the module exists but one of its imports is missing: a real error
            raise
        return None


def summarize(root: str | Path) -> str:
    """A tree listing of the files under ``root`` with sizes, and the total."""
    root = Path(root)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    lines = [f"{_size(p.stat().st_size):>9}  {p.relative_to(root)}" for p in files]
    total = sum(p.stat().st_size for p in files)
    lines.append(f"{_size(total):>9}  total, {len(files)} files in {root}")
    return "\n".join(lines)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
