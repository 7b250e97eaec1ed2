"""Where the Sampler keeps its run folders and its partial video (glue over :mod:`infinitetalk.runs`).

- Run folders live in ``<ComfyUI user dir>/__infinitetalk/runs/`` (ComfyUI empties ``temp/`` at every
  start, which would lose the runs a restart should resume; ``__`` folders are not served over HTTP).
  A finished run's folder is removed once ComfyUI no longer holds the Sampler's output (cache cleared or
  replaced), and at the first run after a start; unfinished runs stay until they are resumed.
- Audio buffers too large for memory are mapped from files in ``<ComfyUI temp>/infinitetalk/spill/``.
- The partial video goes to the output folder, named after the Video Combine that reads the frames:
  ``<filename_prefix>_<run id>_partial.mp4``.
"""

from __future__ import annotations

import functools
import logging
import uuid
import weakref
from pathlib import Path

import folder_paths

from ..infinitetalk import runs

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "InfiniteTalk/video"
_OWNER = "owner.txt"


def runs_root() -> Path:
    getter = getattr(folder_paths, "get_system_user_directory", None)
    base = (
        Path(getter("infinitetalk")) if getter else Path(folder_paths.get_user_directory()) / "__infinitetalk"
    )
    return base / "runs"


@functools.cache
def sweep_once(root: str) -> None:
    """Remove finished run folders left by earlier ComfyUI processes (once per process)."""
    runs.sweep(root)


def store_dir(node_id, fingerprint: str) -> Path:
    root = runs_root()
    sweep_once(str(root))
    return root / f"{node_id or 'node'}_{fingerprint[:16]}"


def preview_dir(node_id, fingerprint: str) -> Path:
    """The window clips of a run: in ComfyUI's temp folder, which the editor can play from."""
    return (
        Path(folder_paths.get_temp_directory()) / "infinitetalk" / f"{node_id or 'node'}_{fingerprint[:16]}"
    )


def spill_dir() -> Path:
    """Where audio buffers too large for memory go (:mod:`infinitetalk.spill`): ComfyUI's temp folder. Its
    files are unlinked as soon as they are mapped (POSIX), so emptying ``temp/`` at a start loses nothing."""
    return Path(folder_paths.get_temp_directory()) / "infinitetalk" / "spill"


def partial_file(prompt, node_id, fingerprint: str) -> Path:
    """``<output>/<prefix>_<id>_partial.mp4`` for the Video Combine fed by this Sampler (or the default)."""
    from ..infinitetalk.errors import InputError
    from ..infinitetalk.validation import safe_output_path

    prefix = _combine_prefix(prompt, node_id) or DEFAULT_PREFIX
    try:
        base = safe_output_path(prefix, folder_paths.get_output_directory())
    except InputError:
        base = Path(folder_paths.get_output_directory()) / DEFAULT_PREFIX
    return runs.partial_path(base.with_name(f"{base.name}_{fingerprint[:8]}.mp4"))


def _combine_prefix(prompt, node_id) -> str | None:
    if not isinstance(prompt, dict) or node_id is None:
        return None
    for node in prompt.values():
        inputs = node.get("inputs") or {}
        frames = inputs.get("frames")
        if (
            node.get("class_type") == "InfiniteTalkVideoCombine"
            and isinstance(frames, list)
            and str(frames[0]) == str(node_id)
            and isinstance(inputs.get("filename_prefix"), str)
        ):
            return inputs["filename_prefix"]
    return None


def remove_when_released(owner: object, directory: Path) -> None:
    """Remove ``directory`` (a complete run) when ``owner`` (the Sampler's output) is garbage collected,
    unless a later run has claimed the folder since."""
    token = uuid.uuid4().hex
    (directory / _OWNER).write_text(token)
    weakref.finalize(owner, _release, Path(directory), token)


def _release(directory: Path, token: str) -> None:
    try:
        if (directory / _OWNER).read_text() != token or runs.run_status(directory) != "complete":
            return
    except OSError:
        return
    import shutil

    shutil.rmtree(directory, ignore_errors=True)
    log.debug("removed finished run folder %s", directory)
