"""Where the Sampler keeps its run folders and its partial video (glue over :mod:`infinitetalk.runs`).

- Run folders live in ``<ComfyUI user dir>/__infinitetalk/runs/`` (ComfyUI empties ``temp/`` at every
  start, which would lose the runs a restart should resume; ``__`` folders are not served over HTTP).
  A finished run's folder is removed once ComfyUI no longer holds the Sampler's output (cache cleared or
  replaced), and at the first run after a start; unfinished runs stay to be resumed, within an age and a total
  size limit (``INFINITETALK_RUNS_MAX_AGE_DAYS``, default 7; ``INFINITETALK_RUNS_MAX_GB``, default 20),
  checked before every run. Folder names are ``<node id>_<fingerprint>``, a hash standing for an id that is
  not plain letters, digits, ``_``, ``-``, ``:``.
- Audio buffers too large for memory are mapped from files in ``<ComfyUI temp>/infinitetalk/spill/``.
- The partial video goes to the output folder, named after the Video Combine that reads the frames:
  ``<filename_prefix>_<run id>_partial.mp4``.
"""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
import weakref
from pathlib import Path

import folder_paths

from ..infinitetalk import paths, runs

log = logging.getLogger(__name__)
_PLAIN_ID = re.compile(r"[A-Za-z0-9_:-]{1,32}")

DEFAULT_PREFIX = "InfiniteTalk/video"
_OWNER = "owner.txt"


def runs_root() -> Path:
    getter = getattr(folder_paths, "get_system_user_directory", None)
    base = (
        Path(getter("infinitetalk")) if getter else Path(folder_paths.get_user_directory()) / "__infinitetalk"
    )
    return base / "runs"


_swept: set[str] = set()  # roots whose finished runs were removed in this process (one per ComfyUI)


def sweep(root: Path, keep: Path) -> None:
    """Before a run: unfinished runs past the age / size limits go (:class:`~infinitetalk.runs.RunLimits`,
    from the environment); at the first run of a process also the finished ones earlier processes left."""
    runs.sweep(root, keep=[keep], finished=str(root) not in _swept, limits=runs.RunLimits.from_env())
    _swept.add(str(root))


def check_node_id(node_id) -> None:
    """Refuse a node id that reads like a path (``/``, ``\\``, ``..``, control characters): ComfyUI's editor
    never makes one (ids are numbers, ``12:5`` in subgraphs), so it can only come from a crafted prompt."""
    from ..infinitetalk.errors import InputError, snippet

    text = str(node_id) if node_id is not None else ""
    if any(ch in text for ch in "/\\") or ".." in text or any(ord(ch) < 32 for ch in text) or len(text) > 256:
        raise InputError(
            f"node id '{snippet(text.encode('unicode_escape').decode(), 80)}' of InfiniteTalk Sampler reads like "
            "a path: give the node a plain id (digits, letters, '_', '-', ':') in the API prompt"
        )


def folder_name(node_id, fingerprint: str) -> str:
    """``<node id>_<fingerprint>``: the id as sent in the prompt when it is plain (``12``, ``5:3``), else a
    hash of it: an id is prompt text (``../../x``, ``a/b``) and never becomes a path of its own."""
    text = str(node_id) if node_id is not None else "node"
    if not _PLAIN_ID.fullmatch(text):
        text = "id-" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{text.replace(':', '-')}_{fingerprint[:16]}"  # ':' opens a stream of a file on Windows


def store_dir(node_id, fingerprint: str) -> Path:
    root = runs_root()
    directory = paths.join(root, folder_name(node_id, fingerprint), what="run folder")
    sweep(root, directory)
    return directory


def preview_dir(node_id, fingerprint: str) -> Path:
    """The window clips of a run: in ComfyUI's temp folder, which the editor can play from."""
    root = Path(folder_paths.get_temp_directory()) / "infinitetalk"
    return paths.join(root, folder_name(node_id, fingerprint), what="preview folder")


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
