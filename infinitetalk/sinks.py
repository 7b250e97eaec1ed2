"""Where generated frames go, window by window, so memory stays constant whatever the video length.

:class:`SegmentStore` writes one segment per window plus ``manifest.json`` (H.264 CRF 18, small; or lossless
H.264 RGB, the exact frames, for master formats: :func:`segment_codec`); it is also the
resume point of a long run: after each window the pipeline commits the segment together with its
state (motion frames, RNG state, ...), atomically, so a killed run can continue at the next window.
``finalize`` writes the final file: H.264 segments remuxed with the soundtrack into H.264 mp4 (no
re-encode), or the frames encoded into another format (ProRes, FFV1, PNG sequence:
:mod:`infinitetalk.media.export`).

While a run goes on, the store can also publish what is done: ``live=True`` keeps an HLS playlist
``live/live.m3u8`` growing window by window (open it in VLC, mpv, ffplay or Safari), ``clips=True`` writes
each finished window as a small mp4 with its sound (``preview/window_00000.mp4``; the latest two are kept),
and ``on_segment`` is called with a :class:`SegmentInfo` after every committed window. Lossless segments are
published through an H.264 4:2:0 copy (players and browsers do not take lossless RGB H.264).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import av
import numpy as np
import torch

from .config import VIDEO_FPS
from .errors import InfiniteTalkError, InputError, snippet
from .loading.state_dict import safe_torch_load
from .media import Mp4Writer, mux
from .media.export import write_video
from .media.live import LivePlaylist, write_clip
from .media.video import frame_to_rgb

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
_SEGMENT = "segment_{:05d}.mp4"
_PART = "segment_{:05d}.part.mp4"
_STATE = "state_{:05d}.pt"
_OWN_FILE = re.compile(r"^(segment_\d{5}(\.part)?\.mp4|state_\d{5}\.pt(\.tmp)?|manifest\.json(\.tmp)?)$")
SEGMENT_CODECS = ("h264", "h264-lossless")  # how finished windows are kept until the final file is written
LIVE_DIR = "live"
PREVIEW_DIR = "preview"
_CLIP = "window_{:05d}.mp4"
_CLIPS_KEPT = 2  # a player may still be showing the previous clip


@dataclass(frozen=True)
class SegmentInfo:
    """A committed window, as announced to ``on_segment``."""

    index: int  # segment number (0, 1, ...)
    window: int  # pipeline window index
    path: Path  # the segment file (video only)
    start_frame: int  # its first frame in the whole video
    frames: int
    num_windows: int | None  # windows of the run, when the store was told (``expect_windows``)
    clip: Path | None = None  # preview/window_NNNNN.mp4 when ``clips`` is on
    live: Path | None = None  # live/live.m3u8 when ``live`` is on


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


def segment_codec(fmt: str) -> str:
    """The segments a final format ``fmt`` wants: ``h264`` for ``h264-mp4`` (remuxed as they are), else
    ``h264-lossless`` (ProRes, FFV1 and PNG masters are encoded from the exact frames)."""
    return "h264" if fmt == "h264-mp4" else "h264-lossless"


class SegmentStore:
    """One H.264 segment per window in ``directory``, a ``manifest.json`` and the latest resume state.

    Commit order (crash-safe): segment ``.part.mp4`` closed and renamed, state file saved, then the
    manifest replaced atomically: the manifest is the commit point. On resume, files the manifest
    does not reference (a half-written segment, a newer state) are deleted.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        fps: int = VIDEO_FPS,
        crf: int = 18,
        preset: str = "medium",
        codec: str = "h264",
        *,
        soundtrack: tuple[np.ndarray, int] | None = None,
        live: bool = False,
        clips: bool = False,
        on_segment: Callable[[SegmentInfo], None] | None = None,
        preview_dir: str | os.PathLike | None = None,
    ):
        """``codec``: ``h264`` (CRF ``crf``, the default) or ``h264-lossless`` (exact frames, for master
        formats). ``soundtrack = (wave, rate)``: the sound of the live playlist and the clips.
        ``preview_dir``: where the clips go (default ``directory/preview``; a host may want them in a
        folder it serves while the run folder itself lives elsewhere)."""
        if codec not in SEGMENT_CODECS:
            raise InputError(f"segment codec '{codec}' is unknown: use one of {', '.join(SEGMENT_CODECS)}")
        self.directory = Path(directory)
        self.fps, self.crf, self.preset, self.codec = int(fps), int(crf), preset, codec
        self.soundtrack = soundtrack
        self.live, self.clips, self.on_segment = live, clips, on_segment
        self.preview_dir = Path(preview_dir) if preview_dir is not None else self.directory / PREVIEW_DIR
        self.num_windows: int | None = None
        self._playlist = None
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
            for sub in (self.directory / LIVE_DIR, self.preview_dir):
                shutil.rmtree(sub, ignore_errors=True)
            self.fingerprint, self.segments, self.complete, self._state_file = fingerprint, [], False, None
            self._start_playlist()
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
        codec = manifest.get("codec", "h264")
        if codec != self.codec and self.segments:  # one kind of segment per run: they are concatenated
            if codec == "h264":
                logger.warning(
                    "%s: continuing with the run's H.264 segments (asked: %s): its frames are not exact; "
                    "start over for exact frames",
                    self.directory,
                    self.codec,
                )
            else:
                logger.info(
                    "%s: continuing with the run's %s segments (asked: %s)", self.directory, codec, self.codec
                )
            self.codec = codec
        self._remove_own_files(keep={s["file"] for s in self.segments} | {MANIFEST, self._state_file})
        self._start_playlist()
        if self._state_file is None:
            return None
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
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.dtype != np.uint8 or frames.shape[-1] != 3:
            raise InputError(f"frames {frames.dtype} {tuple(frames.shape)}: expected uint8 (T, H, W, 3)")
        if self.size is None:
            self.size = (frames.shape[2], frames.shape[1])
        if self._writer is None:
            index = len(self.segments)
            w, h = self.size
            self._writer = Mp4Writer(
                self.directory / _PART.format(index), self.fps, w, h, self.crf, self.preset, codec=self.codec
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
        start = self.frames_written
        self.segments.append(entry)
        self._write_manifest()
        if previous_state and previous_state != self._state_file:
            (self.directory / previous_state).unlink(missing_ok=True)
        if entry["file"]:
            self._publish(len(self.segments) - 1, entry, start)

    def mark_complete(self) -> None:
        """Record that the last window was committed (the run needs no resume)."""
        self.complete = True
        self._write_manifest()
        if self._playlist is not None:
            self._playlist.end()

    def expect_windows(self, num_windows: int) -> None:
        """Tell the store how many windows the run has (reported in :class:`SegmentInfo`)."""
        self.num_windows = int(num_windows)

    # ------------------------------------------------------------------ watching while it runs
    @property
    def live_playlist(self) -> Path | None:
        return self._playlist.path if self._playlist is not None else None

    def _start_playlist(self) -> None:
        if not self.live:
            return
        self._playlist = LivePlaylist(self.directory / LIVE_DIR, self.fps, self.soundtrack)
        entries, start = [], 0
        for k, seg in enumerate(self.segments):
            if seg["file"]:
                entries.append((k, self.directory / seg["file"], start, seg["frames"]))
            start += seg["frames"]
        self._playlist.restore(entries)
        if self.complete:
            self._playlist.end()

    def _publish(self, index: int, entry: dict[str, Any], start: int) -> None:
        """Live playlist, preview clip and callback for a committed segment. A failure here never loses
        the committed window: it is logged and the run goes on."""
        path = self.directory / entry["file"]
        clip = live = None
        try:
            if self._playlist is not None:
                self._playlist.add(index, path, start, entry["frames"])
                live = self._playlist.path
            if self.clips:
                clip = self._write_clip(index, path, start)
        except Exception as err:  # noqa: BLE001 - a preview must never stop a generation
            logger.warning("preview of window %d not written: %s", entry["window"] + 1, err)
        if self.on_segment is not None:
            info = SegmentInfo(
                index, entry["window"], path, start, entry["frames"], self.num_windows, clip, live
            )
            self.on_segment(info)

    def _write_clip(self, index: int, segment: Path, start: int) -> Path:
        folder = self.preview_dir
        folder.mkdir(parents=True, exist_ok=True)
        clip = write_clip(segment, folder / _CLIP.format(index), start, self.fps, self.soundtrack)
        (folder / _CLIP.format(index - _CLIPS_KEPT)).unlink(missing_ok=True)
        return clip

    def close(self) -> None:
        """Drop an uncommitted segment (an interrupted window); committed ones stay."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            (self.directory / _PART.format(len(self.segments))).unlink(missing_ok=True)

    # ------------------------------------------------------------------ reading back
    def iter_frames(self) -> Iterator[np.ndarray]:
        """Decode the committed segments in order: yields ``uint8 (H, W, 3)`` frames (colour tags honoured)."""
        for path in self.segment_paths:
            with av.open(str(path)) as container:
                for frame in container.decode(video=0):
                    rgb = frame_to_rgb(frame)
                    yield rgb[: self.size[1], : self.size[0]] if self.size else rgb

    def iter_chunks(self, size: int = VIDEO_FPS) -> Iterator[np.ndarray]:
        """The committed frames as ``uint8 (T <= size, H, W, 3)`` chunks."""
        batch = []
        for frame in self.iter_frames():
            batch.append(frame)
            if len(batch) == size:
                yield np.stack(batch)
                batch = []
        if batch:
            yield np.stack(batch)

    def finalize(
        self,
        out_path: str | os.PathLike,
        audio=None,
        subtitles=None,
        fmt: str = "h264-mp4",
        crf: int = 18,
        preset: str = "medium",
        burn=None,
    ) -> Path:
        """Write the final file with ``audio = (wave, sample_rate)`` (the soundtrack, at its own rate) and
        ``subtitles``: H.264 mp4 segments are remuxed without re-encoding; other formats (or ``burn``
        captions) re-encode the frames (:func:`infinitetalk.media.export.write_video`). Returns the path."""
        paths = self.segment_paths
        if not paths:
            raise InputError(f"'{self.directory}' holds no committed video segment: nothing to write")
        if fmt == "h264-mp4" and self.codec == "h264" and not burn:
            return mux(paths, out_path, audio=audio, subtitles=subtitles, fps=self.fps)
        if fmt != "h264-mp4" and self.codec == "h264":
            logger.info(
                "%s is encoded from H.264 CRF %d segments (close to, not exactly, the generated frames; "
                "h264-lossless segments keep them exact)",
                fmt,
                self.crf,
            )
        w, h = self.size
        return write_video(
            out_path,
            self.iter_chunks(),
            fps=self.fps,
            width=w,
            height=h,
            fmt=fmt,
            crf=crf,
            preset=preset,
            audio=audio,
            subtitles=subtitles,
            burn=burn,
        )

    to_mp4 = finalize

    # ------------------------------------------------------------------ files
    def _read_manifest(self) -> dict[str, Any] | None:
        path = self.directory / MANIFEST
        if not path.is_file():
            return None
        try:
            manifest = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise InputError(f"'{path}' is unreadable ({err}): run without --resume to start over") from err
        _check_manifest(manifest, path)
        return manifest

    def _write_manifest(self) -> None:
        manifest = {
            "version": 1,
            "fps": self.fps,
            "codec": self.codec,
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


_SEGMENT_FILE = re.compile(r"^segment_\d{5}\.mp4$")
_STATE_FILE = re.compile(r"^state_\d{5}\.pt$")


def _check_manifest(manifest: Any, path: Path) -> None:
    """A manifest names only this run's own files (``segment_NNNNN.mp4``, ``state_NNNNN.pt``), never a path:
    a planted or damaged manifest cannot make a run read, list or delete files outside its folder."""
    fix = "delete that run folder or turn resume off to start over"
    segments = manifest.get("segments") if isinstance(manifest, dict) else None
    if not isinstance(segments, list) or not all(isinstance(s, dict) for s in segments):
        raise InputError(f"'{path}' is not a run manifest (no 'segments' list): {fix}")
    for entry in segments:
        name = entry.get("file")
        if name is not None and not (isinstance(name, str) and _SEGMENT_FILE.match(name)):
            raise InputError(
                f"'{path}' names '{snippet(str(name), 80)}' as a segment, not a file of this run: {fix}"
            )
    state = manifest.get("state")
    if state is not None and not (isinstance(state, str) and _STATE_FILE.match(state)):
        raise InputError(
            f"'{path}' names '{snippet(str(state), 80)}' as its state, not a file of this run: {fix}"
        )
