"""Where generated frames go, window by window, so memory stays constant whatever the video length.

:class:`SegmentStore` writes one H.264 segment per window plus ``manifest.json``; it is also the
resume point of a long run: after each window the pipeline commits the segment together with its
state (motion frames, RNG state, ...), atomically, so a killed run can continue at the next window.
``finalize`` muxes the segments with the soundtrack (AAC) into one mp4 without re-encoding.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from .errors import InfiniteTalkError, InputError

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
_SEGMENT = "segment_{:05d}.mp4"
_PART = "segment_{:05d}.part.mp4"
_STATE = "state_{:05d}.pt"
_OWN_FILE = re.compile(r"^(segment_\d{5}(\.part)?\.mp4|state_\d{5}\.pt(\.tmp)?|manifest\.json(\.tmp)?)$")


@runtime_checkable
class FrameSink(Protocol):
    """Receives ``uint8 (T, H, W, 3)`` frames in order; ``close`` when generation ends."""

    def write(self, frames: np.ndarray) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class ResumableSink(FrameSink, Protocol):
    """A sink that commits each window with the pipeline's state and gives it back on resume."""

    def begin(self, fingerprint: str, resume: bool) -> dict[str, Any] | None: ...

    def commit(self, window: int, state: dict[str, Any]) -> None: ...

    def mark_complete(self) -> None: ...


class MemorySink:
    """Keeps every frame in memory (tests, short clips, hosts that need an IMAGE batch): not constant memory."""

    def __init__(self) -> None:
        self.chunks: list[np.ndarray] = []

    def write(self, frames: np.ndarray) -> None:
        self.chunks.append(np.array(frames, dtype=np.uint8, copy=True))

    def close(self) -> None:
        pass

    @property
    def frames(self) -> np.ndarray:
        """All frames ``uint8 (T, H, W, 3)``."""
        return np.concatenate(self.chunks) if self.chunks else np.zeros((0, 0, 0, 3), np.uint8)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # not supported on this platform (Windows)
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class SegmentStore:
    """One H.264 segment per window in ``directory``, a ``manifest.json`` and the latest resume state.

    Commit order (crash-safe): segment ``.part.mp4`` closed and renamed, state file saved, then the
    manifest replaced atomically: the manifest is the commit point. On resume, files the manifest
    does not reference (a half-written segment, a newer state) are deleted.
    """

    def __init__(self, directory: str | os.PathLike, fps: int = 25, crf: int = 18, preset: str = "medium"):
        self.directory = Path(directory)
        self.fps, self.crf, self.preset = int(fps), int(crf), preset
        self.segments: list[dict[str, Any]] = []
        self.fingerprint = ""
        self.complete = False
        self.size: tuple[int, int] | None = None  # (width, height)
        self._writer = None
        self._hash = None
        self._pending = 0
        self._state_file: str | None = None

    # ------------------------------------------------------------------ status
    @property
    def frames_written(self) -> int:
        return sum(s["frames"] for s in self.segments)

    @property
    def segment_paths(self) -> list[Path]:
        return [self.directory / s["file"] for s in self.segments if s["file"]]

    # ------------------------------------------------------------------ lifecycle
    def begin(self, fingerprint: str, resume: bool = False) -> dict[str, Any] | None:
        """Start a run. ``resume``: reload the committed state (None if nothing was committed yet)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        manifest = self._read_manifest() if resume else None
        if manifest is None:
            if resume:
                logger.info("%s: nothing to resume, starting from the first window", self.directory)
            self._remove_own_files(keep=set())
            self.fingerprint, self.segments, self.complete, self._state_file = fingerprint, [], False, None
            return None
        if manifest.get("fingerprint") != fingerprint:
            raise InputError(
                f"cannot resume in '{self.directory}': it was generated with other inputs or settings; "
                "use the same inputs and options, or run without --resume to start over"
            )
        self.fingerprint = fingerprint
        self.segments = list(manifest["segments"])
        self.complete = bool(manifest.get("complete", False))
        self.size = tuple(manifest["size"]) if manifest.get("size") else None
        self._state_file = manifest.get("state")
        self._remove_own_files(keep={s["file"] for s in self.segments} | {MANIFEST, self._state_file})
        if self._state_file is None:
            return None
        from .loading.state_dict import safe_torch_load

        try:
            state = safe_torch_load(self.directory / self._state_file, mmap=False)
        except InfiniteTalkError as err:
            raise InputError(
                f"resume state of '{self.directory}' is unreadable ({err}); delete that folder or turn resume "
                "off to start over"
            ) from None
        state["complete"] = self.complete
        return state

    def write(self, frames: np.ndarray) -> None:
        """Append ``uint8 (T, H, W, 3)`` frames to the current window's segment."""
        from .media import Mp4Writer

        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.dtype != np.uint8 or frames.shape[-1] != 3:
            raise InputError(f"frames {frames.dtype} {tuple(frames.shape)}: expected uint8 (T, H, W, 3)")
        if self.size is None:
            self.size = (frames.shape[2], frames.shape[1])
        if self._writer is None:
            index = len(self.segments)
            w, h = self.size
            self._writer = Mp4Writer(
                self.directory / _PART.format(index), self.fps, w, h, self.crf, self.preset
            )
            self._hash, self._pending = hashlib.sha256(), 0
        self._writer.write(frames)
        self._hash.update(np.ascontiguousarray(frames).tobytes())
        self._pending += frames.shape[0]

    def commit(self, window: int, state: dict[str, Any] | None = None) -> None:
        """Close the current segment and make it (with ``state``) durable; the manifest is the commit point."""
        index = len(self.segments)
        entry = {"file": _SEGMENT.format(index), "window": int(window), "frames": 0, "sha256": None}
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            os.replace(self.directory / _PART.format(index), self.directory / entry["file"])
            entry["frames"], entry["sha256"] = self._pending, self._hash.hexdigest()
        else:
            entry["file"] = None  # a window that contributed no frames
        previous_state = self._state_file
        if state is not None:
            self._state_file = _STATE.format(window)
            tmp = self.directory / (self._state_file + ".tmp")
            torch.save(state, tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, self.directory / self._state_file)
        self.segments.append(entry)
        self._write_manifest()
        if previous_state and previous_state != self._state_file:
            (self.directory / previous_state).unlink(missing_ok=True)

    def mark_complete(self) -> None:
        """Record that the last window was committed (the run needs no resume)."""
        self.complete = True
        self._write_manifest()

    def close(self) -> None:
        """Drop an uncommitted segment (an interrupted window); committed ones stay."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            (self.directory / _PART.format(len(self.segments))).unlink(missing_ok=True)

    # ------------------------------------------------------------------ reading back
    def iter_frames(self) -> Iterator[np.ndarray]:
        """Decode the committed segments in order: yields ``uint8 (H, W, 3)`` frames."""
        import av

        for path in self.segment_paths:
            with av.open(str(path)) as container:
                for frame in container.decode(video=0):
                    rgb = frame.to_ndarray(format="rgb24")
                    yield rgb[: self.size[1], : self.size[0]] if self.size else rgb

    def finalize(self, out_path: str | os.PathLike, audio=None, subtitles=None) -> Path:
        """Mux the segments (no re-encode) with ``audio = (wave, sample_rate)`` as AAC and optional subtitles."""
        from .media import mux

        paths = self.segment_paths
        if not paths:
            raise InputError(f"'{self.directory}' holds no committed video segment: nothing to write")
        return mux(paths, out_path, audio=audio, subtitles=subtitles, fps=self.fps)

    to_mp4 = finalize

    # ------------------------------------------------------------------ files
    def _read_manifest(self) -> dict[str, Any] | None:
        path = self.directory / MANIFEST
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise InputError(f"'{path}' is unreadable ({err}): run without --resume to start over") from err

    def _write_manifest(self) -> None:
        manifest = {
            "version": 1,
            "fps": self.fps,
            "size": list(self.size) if self.size else None,
            "frames_written": self.frames_written,
            "fingerprint": self.fingerprint,
            "complete": self.complete,
            "state": self._state_file,
            "segments": self.segments,
        }
        _atomic_write_bytes(self.directory / MANIFEST, json.dumps(manifest, indent=1).encode())
        _fsync_dir(self.directory)

    def _remove_own_files(self, keep: set[str | None]) -> None:
        for path in self.directory.iterdir():
            if _OWN_FILE.match(path.name) and path.name not in keep:
                path.unlink()
