"""Per-run buffers that grow with the audio's length, on disk once they are large.

The wav2vec2 features of a run (36 KB per video frame and speaker in float32, 3.3 GB per hour), the 16 kHz
speech mix (230 MB per hour) and a soundtrack built from two recordings are allocated here. Below
:func:`spill_threshold` bytes a buffer is ordinary memory; above it, it is a file in the spill folder mapped
into memory (``torch.from_file(shared=True)`` / ``np.memmap``): the OS pages in the windows the sampler
reads and can drop them again, so resident memory no longer grows with the length of the audio.

- The file's space is reserved when it is created (``posix_fallocate``): a full disk is refused at once
  with a message, never a crash while writing into the mapping.
- POSIX: the file is unlinked right after mapping; the mapping keeps the data until the last tensor or
  array using it is freed (ComfyUI's cache may hold it for a long time), and nothing is left on disk after
  a crash. Windows cannot delete a mapped file: it is deleted when the buffer is garbage collected.
- The folder: the caller's (the command line's run folder, ComfyUI's temp folder), else the system's temp
  folder. ``/tmp`` may be a tmpfs (memory): point the run at a disk folder for long audio there.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import weakref
from pathlib import Path

import numpy as np
import torch

from .errors import InputError

logger = logging.getLogger(__name__)

SPILL_ENV = "INFINITETALK_SPILL_MB"
DEFAULT_SPILL_MB = 256  # a buffer above this many MiB goes to disk (about 7 minutes of features per speaker)


def spill_threshold() -> int:
    """Bytes above which a buffer is file-backed: ``$INFINITETALK_SPILL_MB`` MiB (default 256; 0: always)."""
    raw = os.environ.get(SPILL_ENV, "").strip()
    if not raw:
        return DEFAULT_SPILL_MB << 20
    try:
        mib = float(raw)
    except ValueError:
        mib = -1.0
    if not math.isfinite(mib) or mib < 0:
        raise InputError(
            f"environment variable {SPILL_ENV}={raw!r} is not a size in MiB: set a number >= 0 "
            f"(default {DEFAULT_SPILL_MB}) or unset it"
        )
    return int(mib * (1 << 20))


def empty_tensor(
    shape: tuple[int, ...], dtype: torch.dtype = torch.float32, spill_dir: str | Path | None = None
) -> torch.Tensor:
    """Uninitialised CPU tensor; file-backed (see module doc) when larger than the threshold."""
    numel = math.prod(shape)
    nbytes = numel * torch.empty((), dtype=dtype).element_size()
    if nbytes <= spill_threshold() or numel == 0:
        return torch.empty(shape, dtype=dtype)
    path = _reserve(nbytes, spill_dir)
    tensor = torch.from_file(str(path), shared=True, size=numel, dtype=dtype).view(shape)
    _release_file(tensor, path)
    return tensor


def empty_array(shape: tuple[int, ...], dtype=np.float32, spill_dir: str | Path | None = None) -> np.ndarray:
    """Uninitialised array; an ``np.memmap`` (see module doc) when larger than the threshold."""
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    if nbytes <= spill_threshold() or nbytes == 0:
        return np.empty(shape, dtype)
    path = _reserve(nbytes, spill_dir)
    array = np.memmap(path, dtype=dtype, mode="r+", shape=tuple(shape))
    _release_file(array, path)
    return array


def spill_array(array: np.ndarray, spill_dir: str | Path | None = None) -> np.ndarray:
    """``array`` itself when small or already file-backed, else a file-backed copy (drop the original)."""
    if isinstance(array, np.memmap) or array.nbytes <= spill_threshold():
        return array
    out = empty_array(array.shape, array.dtype, spill_dir)
    out[...] = array
    return out


def is_file_backed(buffer: torch.Tensor | np.ndarray) -> bool:
    """Whether ``buffer`` lives in a mapped spill file (tests, logs)."""
    if isinstance(buffer, torch.Tensor):
        return bool(buffer.untyped_storage().filename)
    while isinstance(buffer, np.ndarray):
        if isinstance(buffer, np.memmap):
            return True
        buffer = buffer.base
    return False


def _reserve(nbytes: int, spill_dir: str | Path | None) -> Path:
    """A new file of ``nbytes`` with its space reserved, in ``spill_dir`` (created) or the temp folder."""
    folder = Path(spill_dir) if spill_dir is not None else Path(tempfile.gettempdir())
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="infinitetalk-", suffix=".spill", dir=folder)
    except OSError as err:
        raise InputError(
            f"spill folder {folder} is not writable ({err.strerror}): give a writable folder for long audio"
        ) from err
    try:
        if hasattr(os, "posix_fallocate"):
            os.posix_fallocate(fd, 0, nbytes)
        else:
            os.ftruncate(fd, nbytes)
    except OSError as err:
        os.close(fd)
        os.remove(name)
        raise InputError(
            f"spill folder {folder} has no room for {nbytes / 2**30:.2f} GiB of audio data ({err.strerror}): "
            f"free disk space there, or raise {SPILL_ENV} to keep it in memory"
        ) from err
    os.close(fd)
    logger.info("%.2f GiB of audio data spilled to %s", nbytes / 2**30, folder)
    return Path(name)


def _release_file(owner: object, path: Path) -> None:
    if os.name == "posix":
        path.unlink()  # the mapping keeps the data; nothing stays on disk
    else:
        weakref.finalize(owner, _remove, path)


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except (
        OSError
    ) as err:  # still mapped by a view that outlived its buffer: the temp folder's cleaner takes it
        logger.warning("spill file %s could not be deleted yet (%s)", path, err)
