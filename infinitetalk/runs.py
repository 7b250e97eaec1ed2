"""Run folders and the partial video: nothing finished is lost, nothing finished is kept twice.

A run folder (a :class:`~infinitetalk.sinks.SegmentStore` directory) holds one H.264 segment per finished
window and the state to resume after it. While a run goes on, :class:`PartialVideo` keeps a playable mp4
of every finished window (with the soundtrack cut to it) next to where the final video will go, labelled
``_partial``: if the process is interrupted, or killed outright, that file is what was made so far, and
queueing the same job again resumes after the last finished window. When the run completes the partial
file is removed (the final video replaces it) and the run folder is no longer needed: :func:`sweep`
removes folders that cannot resume (complete, or without a committed window).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .errors import InfiniteTalkError

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
PARTIAL_SUFFIX = "_partial"
REWRITE_BUDGET = 0.05  # at most this share of the wall time goes into rewriting the partial video ...
FREE_REWRITE_S = 0.25  # ... once a rewrite takes longer than this (short videos: after every window)


def run_status(directory: str | Path) -> str:
    """``"resumable"`` (committed windows, not complete), ``"complete"``, ``"empty"`` (nothing committed)
    or ``"missing"``."""
    directory = Path(directory)
    if not directory.is_dir():
        return "missing"
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return "empty"
    if not isinstance(manifest, dict):
        return "empty"
    if manifest.get("complete"):
        return "complete"
    segments = manifest.get("segments")
    committed = isinstance(segments, list) and any(isinstance(s, dict) and s.get("file") for s in segments)
    return "resumable" if committed else "empty"


@dataclass(frozen=True)
class RunLimits:
    """How long and how much unfinished (resumable) runs may stay. Defaults from the environment:
    ``INFINITETALK_RUNS_MAX_AGE_DAYS`` (7; 0 = no age limit) and ``INFINITETALK_RUNS_MAX_GB`` (20; 0 = no size cap)."""

    max_age_s: float = 7 * 86400.0
    max_bytes: int = 20 * 1024**3

    @classmethod
    def from_env(cls) -> RunLimits:
        def number(var: str, default: float) -> float:
            raw = os.environ.get(var, "").strip()
            try:
                value = float(raw) if raw else default
            except ValueError:
                logger.warning("%s=%r is not a number: using %s", var, raw, default)
                return default
            return value if value >= 0 else default

        days = number("INFINITETALK_RUNS_MAX_AGE_DAYS", 7.0)
        gib = number("INFINITETALK_RUNS_MAX_GB", 20.0)
        return cls(max_age_s=days * 86400.0, max_bytes=int(gib * 1024**3))


def sweep(
    root: str | Path,
    keep: Iterable[str | Path] = (),
    *,
    finished: bool = True,
    limits: RunLimits | None = None,
    now: float | None = None,
) -> list[Path]:
    """Remove run folders under ``root``, except ``keep``; one log line per removal. Returns the removed.

    ``finished``: the folders that cannot resume (complete or nothing committed). ``limits``: unfinished runs
    last used longer ago than ``max_age_s``, then the least recently used ones until all that stay take at
    most ``max_bytes`` (0 switches either off).
    """
    root = Path(root)
    if not root.is_dir():
        return []
    kept = {Path(k).resolve() for k in keep}
    now = time.time() if now is None else now
    removed: list[Path] = []
    unfinished: list[tuple[float, int, Path]] = []  # (last used, bytes, folder)
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink()):
        if folder.resolve() in kept:
            continue
        status = run_status(folder)
        if status == "resumable":
            unfinished.append((_last_used(folder), _folder_bytes(folder), folder))
        elif finished:
            _remove(folder, "finished" if status == "complete" else "nothing committed", removed)
    if limits is not None:
        unfinished.sort()  # oldest first
        if limits.max_age_s > 0:
            for used, _, folder in [u for u in unfinished if now - u[0] > limits.max_age_s]:
                _remove(folder, f"unfinished, unused for {(now - used) / 86400:.1f} days", removed)
            unfinished = [u for u in unfinished if u[2] not in removed]
        total = sum(size for _, size, _ in unfinished) + sum(_folder_bytes(Path(k)) for k in kept)
        for _, size, folder in unfinished:
            if limits.max_bytes <= 0 or total <= limits.max_bytes:
                break
            _remove(
                folder,
                f"unfinished, runs take {total / 1024**3:.1f} GB > {limits.max_bytes / 1024**3:.1f}",
                removed,
            )
            total -= size
    return removed


def _remove(folder: Path, why: str, removed: list[Path]) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    removed.append(folder)
    logger.info("removed run folder %s (%s)", folder, why)


def _last_used(folder: Path) -> float:
    """When the run last committed a window (its manifest), else when the folder changed."""
    for path in (folder / MANIFEST, folder):
        try:
            return path.stat().st_mtime
        except OSError:
            continue
    return 0.0


def _folder_bytes(folder: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(folder):  # symlinks to folders are not followed
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def partial_path(final: str | Path) -> Path:
    """``talk.mp4`` -> ``talk_partial.mp4``: where the unfinished video of ``final`` is kept."""
    final = Path(final)
    return final.with_name(final.stem + PARTIAL_SUFFIX + (final.suffix or ".mp4"))


class PartialVideo:
    """A playable mp4 of every committed window of ``store``, kept up to date while the run goes on.

    ``on_progress`` (chain it to the pipeline's progress callback) rewrites the file when a new window has
    been committed (a remux of the segments, no re-encode): after every window while that is quick, at most
    :data:`REWRITE_BUDGET` of the wall time once the video is long;
    ``flush()`` writes it whatever the budget (on interrupt); ``discard()`` removes it (run complete).
    Each rewrite is atomic: a player never sees a half-written file.
    """

    def __init__(self, path: str | Path, store, audio=None, budget: float = REWRITE_BUDGET):
        self.path, self.store, self.audio, self.budget = Path(path), store, audio, budget
        self.written = 0  # committed segments in the file
        self._next_allowed = 0.0

    def on_progress(self, event) -> None:
        if event.step == 0:  # a window starts: every earlier one is committed
            self.update()

    def update(self, force: bool = False) -> Path | None:
        segments = len(self.store.segment_paths)
        if segments == 0 or segments == self.written:
            return None
        if not force and time.monotonic() < self._next_allowed:
            return None
        began = time.monotonic()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.store.finalize(self.path, audio=self.audio)
        except (InfiniteTalkError, OSError) as err:  # the run goes on: the segments are safe on disk
            logger.warning("partial video %s not updated: %s", self.path, err)
            return None
        spent = time.monotonic() - began
        self._next_allowed = began + spent / self.budget if spent > FREE_REWRITE_S else 0.0
        self.written = segments
        logger.info("partial video: %s (%d windows)", self.path, segments)
        return self.path

    def flush(self) -> Path | None:
        return self.update(force=True)

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)
