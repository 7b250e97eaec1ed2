"""One generation run, its run folder and the partial video: nothing finished is lost, nothing kept twice.

:class:`GenerationRun` is the one way a front end (the command line, the ComfyUI Sampler) generates: typed
inputs (:class:`RunInputs` sources and audio, a ``GenerationConfig``, :class:`RunModels`, :class:`RunOptions`)
in; its :attr:`~GenerationRun.fingerprint` computed in one place from everything that changes the frames;
:meth:`~GenerationRun.generate` writes into a run folder with resume, the growing partial video, progress,
cancel and a clean failure. The front ends parse arguments or convert ComfyUI types, show progress and pick
the folders. :func:`speaker_layout` is the one decision on the two speakers' regions (given, or found from
the faces).

A run folder (a :class:`~infinitetalk.sinks.SegmentStore` directory) holds one H.264 segment per finished
window and the state to resume after it. While a run goes on, :class:`PartialVideo` keeps a playable mp4
of every finished window (with the soundtrack cut to it) next to where the final video will go, labelled
``_partial``: if the process is interrupted, or killed outright, that file is what was made so far, and
queueing the same job again resumes after the last finished window. When the run completes the partial
file is removed (the final video replaces it) and the run folder is no longer needed: :func:`sweep`
removes folders that cannot resume (complete, or without a committed window).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import VIDEO_FPS, SpeakerRegions
from .dubbing import face_only_filter
from .errors import InfiniteTalkError, InputError
from .pipeline import (
    AudioEmbedding,
    GenerationConfig,
    GenerationResult,
    InfiniteTalkPipeline,
    ReferenceSource,
    StillImage,
)
from .portrait import auto_speaker_regions
from .report import RunReport
from .sinks import SEGMENT_CODECS, SegmentStore
from .validation import explain_out_of_memory, speaker_regions

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
PARTIAL_SUFFIX = "_partial"
REWRITE_BUDGET = 0.05  # at most this share of the wall time goes into rewriting the partial video ...
FREE_REWRITE_S = 0.25  # ... once a rewrite takes longer than this (short videos: after every window)
# What the fingerprint is made of. Scheme 1: the command line and the Sampler each hashed their own extras
# (before the one run); a folder of another scheme is refused in one line, never continued into a mixed video.
FINGERPRINT_SCHEME = 2


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
    """``talk.mov`` -> ``talk_partial.mp4``: where the unfinished video of ``final`` is kept (always an H.264
    mp4, whatever the final format: the file :class:`PartialVideo` writes and removes)."""
    final = Path(final)
    return final.with_name(final.stem + PARTIAL_SUFFIX + ".mp4")


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


# ============================================================================ the one run
@dataclass(frozen=True)
class RunInputs:
    """What the frames are made from: the reference, the speech features and where the speakers are."""

    source: ReferenceSource  # a still image (pipeline.StillImage) or a video reader (dubbing)
    audio: AudioEmbedding
    regions: SpeakerRegions | None = None  # two speakers: their regions (None: left and right halves)
    prompts: tuple[tuple[int, str], ...] | None = None  # prompt schedule: (first video frame, prompt)
    face_only: bool = False  # dubbing: keep the source outside a feathered region around the face


@dataclass(frozen=True)
class ModelIdentity:
    """Which weights make the frames: another file, LoRA, quantization, dtype or text embedding is another run.

    ``files``: ``(role, identity)`` pairs (:func:`file_identity`); ``text``: a hash of text embeddings given
    ready-made (the Sampler's Text Encode), empty when the pipeline encodes the prompt itself (the prompt is
    in the config and the text encoder in ``files``)."""

    files: tuple[tuple[str, str], ...]
    loras: tuple[tuple[str, float], ...] = ()
    quantization: str = "none"
    dtype: str = "torch.float32"
    text: str = ""

    @classmethod
    def of(
        cls,
        files: dict[str, Any],
        *,
        loras: Sequence[tuple[str, float]] = (),
        quantization: str = "none",
        dtype: torch.dtype = torch.float32,
        text_embeddings: Sequence[torch.Tensor] = (),
    ) -> ModelIdentity:
        text = ""
        if text_embeddings:
            h = hashlib.sha256()
            for t in text_embeddings:
                h.update(t.detach().float().cpu().numpy().tobytes())
            text = h.hexdigest()
        named = tuple((role, file_identity(f)) for role, f in sorted(files.items()) if f is not None)
        return cls(named, tuple((str(p), float(s)) for p, s in loras), quantization, str(dtype), text)


def file_identity(path: Any) -> str:
    """A weight file as the fingerprint sees it: its path, size and modification time (another file under
    the same name is another model). Folders and names that are not files (core's model patch) as given."""
    p = Path(str(path))
    try:
        st = p.stat()
    except OSError:
        return str(path)
    if p.is_dir():
        return str(p.resolve())
    return f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}"


@dataclass(frozen=True)
class RunModels:
    """The pipeline (its models placed by the host) and their identity."""

    pipeline: InfiniteTalkPipeline
    identity: ModelIdentity


@dataclass(frozen=True)
class RunOptions:
    """How finished windows are kept. ``storage`` is a segment codec (``h264``; ``h264-lossless``: exact
    frames) and part of the fingerprint: a run keeps one kind. ``soundtrack``: the sound of the partial
    video and the live playlist, when not the audio's own (a loudness-normalised delivery)."""

    storage: str = "h264"
    crf: int = 18
    preset: str = "medium"
    resume: bool = False
    live: bool = False  # a live HLS playlist in the run folder
    clips: bool = False  # one playable clip per finished window (the Sampler shows them)
    report: bool = True  # drift telemetry: report.png / report.json in the run folder (infinitetalk.report)
    soundtrack: tuple[np.ndarray, int] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.storage not in SEGMENT_CODECS:
            raise InputError(f"storage '{self.storage}' is unknown: use one of {', '.join(SEGMENT_CODECS)}")


@dataclass(frozen=True)
class RunFolder:
    """Where a run goes: its folder (segments, resume state), the partial video (None: none) and the
    window clips (default: in the folder). ``resume_hint``: how the user continues, for the log."""

    directory: Path
    partial: Path | None = None
    preview_dir: Path | None = None
    resume_hint: str = "run the same job again to continue"


@dataclass
class RunResult:
    """A finished run: its frames on disk (``store``), the pipeline's summary and the soundtrack."""

    store: SegmentStore | None  # None on the processes of a torchrun that do not write
    result: GenerationResult
    soundtrack: tuple[np.ndarray, int] | None
    report: RunReport | None = (
        None  # the drift telemetry (RunOptions.report), ``write(stem)`` beside the output
    )


class GenerationRun:
    """One generation into a run folder, the same for every front end (see the module docstring)."""

    def __init__(
        self,
        inputs: RunInputs,
        config: GenerationConfig,
        models: RunModels,
        options: RunOptions = RunOptions(),
    ):
        if isinstance(inputs.source, np.ndarray):
            inputs = dataclasses.replace(inputs, source=StillImage(inputs.source))
        if inputs.prompts:  # a schedule: the opening prompt is the config's
            config = dataclasses.replace(config, prompt=inputs.prompts[0][1])
        self.inputs, self.config, self.models, self.options = inputs, config, models, options
        self.soundtrack = (
            options.soundtrack if options.soundtrack is not None else inputs.audio.soundtrack_audio
        )

    @functools.cached_property
    def face_filter(self):
        """Face-only dubbing's compositor (None when off); tracks the face over the source once."""
        if not self.inputs.face_only:
            return None

        return face_only_filter(self.inputs.source, self.config, self.inputs.audio.num_frames)

    @functools.cached_property
    def fingerprint(self) -> str:
        """Hash of everything that decides the frames: the inputs and config (hashed by the pipeline), the
        prompt schedule, face-only dubbing, the segment storage and the models' identity."""
        i = self.inputs
        extra = {
            "models": dataclasses.asdict(self.models.identity),
            "segments": self.options.storage,
            "prompts": [list(p) for p in i.prompts] if i.prompts else None,
            "face_only": self.face_filter.fingerprint() if self.face_filter is not None else None,
        }
        digest = self.models.pipeline.fingerprint(i.source, i.audio, self.config, i.regions, extra)
        return f"{digest}-v{FINGERPRINT_SCHEME}"

    def generate(
        self,
        folder: RunFolder,
        *,
        on_progress: Callable | None = None,
        should_cancel: Callable[[], bool] | None = None,
        on_segment: Callable | None = None,
        session=None,
    ) -> RunResult:
        """Generate into ``folder`` (resuming when the options say so); the partial video grows with every
        committed window and is flushed on any failure; removed when the run completes. ``session``: a
        torchrun :class:`~infinitetalk.parallel.launch.ParallelSession` (rank 0 writes, the others follow)."""
        writes = session is None or session.is_main
        if self.options.resume:
            refuse_other_scheme(folder.directory)
        store = self._store(folder, on_segment) if writes else None
        partial = (
            PartialVideo(folder.partial, store, audio=self.soundtrack) if writes and folder.partial else None
        )
        if partial is not None:
            store.on_segment = _chain(lambda info: partial.update(), store.on_segment)
        i, config = self.inputs, self.config
        report = None
        if writes and self.options.report:  # drift telemetry as the frames stream (its state resumes too)
            report = RunReport(i.source.frame(0), i.audio, folder.directory, regions=i.regions)
        sink = store if report is None else report.wrap(store)
        sink = sink if session is None else session.output_sink(sink)
        stage = f"sampling at {config.size} with {config.frame_num}-frame windows"
        try:
            with explain_out_of_memory(stage):
                result = self.models.pipeline.generate(
                    i.source, i.audio, config, sink,
                    speaker_regions=i.regions,
                    on_progress=on_progress if writes else None,
                    should_cancel=should_cancel,
                    resume=self.options.resume,
                    fingerprint=self.fingerprint,
                    prompts=i.prompts,
                    frame_filter=self.face_filter,
                )  # fmt: skip
        except BaseException:
            if partial is not None and partial.flush():
                logger.warning("the video so far is in %s; %s", partial.path, folder.resume_hint)
            raise
        if partial is not None:
            partial.discard()
        return RunResult(store, result, self.soundtrack, report)

    def _store(self, folder: RunFolder, on_segment) -> SegmentStore:
        o = self.options
        return SegmentStore(
            folder.directory,
            fps=VIDEO_FPS,
            crf=o.crf,
            preset=o.preset,
            codec=o.storage,
            soundtrack=self.soundtrack,
            live=o.live,
            clips=o.clips,
            on_segment=on_segment,
            preview_dir=folder.preview_dir,
        )


def _chain(first: Callable, then: Callable | None) -> Callable:
    def both(info) -> None:
        first(info)
        if then is not None:
            then(info)

    return both


def fingerprint_scheme(fingerprint: str) -> int:
    """The scheme a stored fingerprint was made with (1: before the one run, a bare hex digest)."""
    _, sep, version = fingerprint.rpartition("-v")
    return int(version) if sep and version.isdigit() else 1


def refuse_other_scheme(directory: str | Path) -> None:
    """``InputError`` in one line when ``directory`` holds a run whose fingerprint has another scheme: its
    windows were made under other rules and are never continued into a mixed video."""
    try:
        manifest = json.loads((Path(directory) / MANIFEST).read_text())
    except (OSError, ValueError):
        return  # nothing to resume: the run starts from its first window
    stored = manifest.get("fingerprint") if isinstance(manifest, dict) else None
    if not isinstance(stored, str) or not stored:
        return
    scheme = fingerprint_scheme(stored)
    if scheme != FINGERPRINT_SCHEME:
        raise InputError(
            f"cannot resume in '{directory}': it was written by an earlier version (run fingerprint scheme "
            f"{scheme}, this version writes {FINGERPRINT_SCHEME}), whose windows cannot be continued; start "
            "over: turn resume off (or delete that folder)"
        )


# ============================================================================ two speakers
def speaker_layout(
    num_speakers: int,
    frame: np.ndarray,
    *,
    boxes: str | Sequence[str] = "",
    masks=None,
    boxes_name: str = "speaker_boxes",
    masks_name: str = "speaker_masks",
    fix: str = "connect audio_2 on InfiniteTalk Audio Embed, or clear the boxes and masks",
) -> tuple[SpeakerRegions | None, bool]:
    """The speakers' regions of a run: ``(regions, found from the faces?)``. Boxes or masks are checked
    against ``frame`` (the reference's first frame) and the speaker count. Two speakers without either:
    found from the faces of ``frame`` (:func:`infinitetalk.portrait.auto_speaker_regions`): one face is
    refused (the second speaker has none), no face falls back to the left and right halves (None) with a
    warning. One speaker: None."""
    regions = speaker_regions(
        num_speakers, frame.shape[:2], boxes=boxes, masks=masks, boxes_name=boxes_name, masks_name=masks_name,
        fix=fix,
    )  # fmt: skip
    if regions is not None or num_speakers < 2:
        return regions, False

    given = boxes_name if masks_name is None else f"{boxes_name} / {masks_name}"
    found = auto_speaker_regions(frame, regions_name=given)
    return found, found is not None
