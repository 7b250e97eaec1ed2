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
import shutil
import time
from collections.abc import Iterable
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
    if manifest.get("complete"):
        return "complete"
    return "resumable" if any(s.get("file") for s in manifest.get("segments", [])) else "empty"


def sweep(root: str | Path, keep: Iterable[str | Path] = ()) -> list[Path]:
    """Remove the run folders under ``root`` that cannot resume (complete or empty), except ``keep``.
    Returns the removed folders; resumable runs stay until they complete or the user deletes them."""
    root = Path(root)
    if not root.is_dir():
        return []
    kept = {Path(k).resolve() for k in keep}
    removed = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if folder.resolve() in kept or run_status(folder) == "resumable":
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    if removed:
        logger.info("removed %d finished run folder(s) from %s", len(removed), root)
    return removed


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
