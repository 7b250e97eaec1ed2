"""Glue between ComfyUI and :class:`infinitetalk.pipeline.InfiniteTalkPipeline`.

- :class:`ComfyModelManager`: the pipeline's load hook goes through ``comfy.model_management``
  (ComfyUI offloads other models when memory is short); offloading is left to ComfyUI.
- :class:`Progress`: ``comfy.utils.ProgressBar`` over windows x steps, with latent previews when the
  server has previews enabled; the cancel callback raises ComfyUI's interrupt exception (within one step).
- :func:`reference_source`: IMAGE batches and core VIDEO inputs as the pipeline's reference sources.
  A VIDEO edited in the editor (trimmed, cropped) is read as edited: with ComfyUI's edit-aware VIDEO API
  (``has_pending_frame_edits()``, ``get_active_trim_window()``, ``save_to()``) when the running ComfyUI has
  it; ComfyUI 0.3.75's VIDEO has no edits and its stream source is read as is.
- :class:`WindowPreview`: every finished window, as a playable clip with its sound, shown while the run
  goes on (ComfyUI's ``executed`` UI message, the one a finished output node sends) on the Video Combine
  node the frames go to (the sampler's own preview is busy with latent previews), with a progress text
  on the sampler ("window 2/5 ready").
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import comfy.model_management as mm
import comfy.utils
import numpy as np
import torch

from ..infinitetalk.config import VIDEO_FPS
from . import _models

log = logging.getLogger(__name__)


class ComfyModelManager:
    """``ModelManager`` protocol of the pipeline, backed by ComfyUI's memory manager."""

    def __init__(self, models: dict[str, _models.Managed | None], dit_run: _models.DiTRun | None = None):
        self.models = models
        self.swap = dit_run.swap if dit_run is not None else None  # block swap places the DiT itself
        self.dit_memory = dit_run.memory_required if dit_run is not None else 0  # its working memory

    def load(self, name: str) -> None:
        if name == "dit" and self.swap is not None:
            self.swap.activate()
            return
        managed = self.models.get(name)
        if managed is not None:
            _models.load(managed, memory_required=self.dit_memory if name == "dit" else 0)

    def offload(self, name: str) -> None:
        """ComfyUI unloads models itself when another one needs the memory."""


class FixedText:
    """A text encoder stand-in that returns embeddings computed earlier by the Text Encode node.

    ``by_prompt`` (per-segment prompts of a script): prompt text -> embedding, for the pipeline's
    per-window prompt schedule.
    """

    def __init__(self, positive: torch.Tensor, negative: torch.Tensor, by_prompt: dict | None = None):
        self.positive, self.negative = positive, negative
        self.by_prompt = by_prompt or {}

    def encode(self, prompts: list[str]) -> list[torch.Tensor]:
        if self.by_prompt and all(p in self.by_prompt for p in prompts):  # the schedule's prompts
            return [self.by_prompt[p] for p in prompts]
        return [self.positive, self.negative][: len(prompts)]


def should_cancel() -> bool:
    """Raise ComfyUI's interrupt exception when the user pressed Cancel (checked before every step)."""
    mm.throw_exception_if_processing_interrupted()
    return False


class Progress:
    """Progress bar over windows x steps, with a latent preview of the window's middle frame.

    The number of windows comes with the pipeline's events, so the node plans nothing itself.
    """

    def __init__(self, steps: int, node_id: str | None = None):
        self.bar = comfy.utils.ProgressBar(max(1, steps), node_id=node_id)
        self.previewer = _previewer()

    def __call__(self, event) -> None:
        total = event.num_windows * event.num_steps
        value = event.window * event.num_steps + event.step
        preview = None
        if self.previewer is not None and event.latent_preview is not None:
            latent = event.latent_preview
            middle = latent[:, :, latent.shape[2] // 2 : latent.shape[2] // 2 + 1].float()  # (1, 16, 1, h, w)
            try:
                preview = self.previewer.decode_latent_to_preview_image("JPEG", middle)
            except Exception as err:  # a preview must never stop a generation
                log.debug("latent preview failed: %s", err)
                self.previewer = None
        self.bar.update_absolute(value, total, preview)


def _previewer():
    try:
        import comfy.latent_formats
        import latent_preview

        return latent_preview.get_previewer(mm.get_torch_device(), comfy.latent_formats.Wan21())
    except Exception as err:  # previews are optional
        log.debug("no latent previewer: %s", err)
        return None


class ImageBatchSource:
    """A ComfyUI IMAGE batch ``(B, H, W, 3)`` in [0, 1] as a 25 fps reference video (B > 1)."""

    is_video = True

    def __init__(self, images: torch.Tensor):
        self.images = images
        self.num_frames = int(images.shape[0])

    def frame(self, i: int) -> np.ndarray:
        i = min(max(i, 0), self.num_frames - 1)
        return image_to_uint8(self.images[i])


def image_to_uint8(image: torch.Tensor) -> np.ndarray:
    """IMAGE ``(..., H, W, C)`` in [0, 1] (one image or a batch) -> uint8 RGB ``(..., H, W, 3)``
    (greyscale and RGBA converted)."""
    from ..infinitetalk.validation import to_rgb8

    array = image.detach().float().cpu().numpy()
    if array.ndim == 4:
        frames = [to_rgb8(frame, name="image") for frame in array]
        return np.stack(frames) if frames else np.zeros((0, *array.shape[1:3], 3), np.uint8)
    return to_rgb8(array, name="image")


def uint8_to_image(array: np.ndarray) -> torch.Tensor:
    """uint8 RGB ``(H, W, 3)`` (or a batch ``(B, H, W, 3)``) -> IMAGE ``(B, H, W, 3)`` float in [0, 1]."""
    image = torch.from_numpy(np.ascontiguousarray(array)).float() / 255.0
    return image[None] if image.ndim == 3 else image


@contextlib.contextmanager
def reference_source(image, video, fps: int):
    """The Sampler's reference source: a still ``(H, W, 3)`` array, an IMAGE batch, or a VIDEO reader.

    Temporary files made for a VIDEO (an in-memory stream, or an edit ComfyUI renders) are removed on exit.
    """
    from ..infinitetalk.errors import InputError
    from ..infinitetalk.validation import check_image_size, check_video_frames

    if video is not None and image is not None:
        raise InputError(
            "InfiniteTalk Sampler got both 'image' and 'video': connect only one (image: image-to-video, "
            "video: dubbing)"
        )
    if video is None:
        if image is None:
            raise ValueError(
                "InfiniteTalk Sampler needs a conditioning 'image' (image-to-video) or a source 'video' "
                "(dubbing): connect one"
            )
        if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[0] < 1:
            raise InputError(
                f"image has shape {tuple(getattr(image, 'shape', ()))}: expected an IMAGE batch (frames, height, "
                "width, 3)"
            )
        check_image_size(image.shape[1], image.shape[2], name="image")
        first = image_to_uint8(
            image[0]
        )  # (H, W, 3); greyscale / RGBA converted, other channel counts refused
        yield first if image.shape[0] == 1 else ImageBatchSource(image)
        return
    from ..infinitetalk.media import VideoReader

    with contextlib.ExitStack() as cleanup:
        path, start, duration = edited_video_file(video, cleanup)
        reader = VideoReader(path, fps=fps, start=start, duration=duration)
        cleanup.callback(reader.close)
        check_video_frames(reader.num_frames, path)
        check_image_size(reader.height, reader.width, name="video")
        yield reader


def edited_video_file(video, cleanup: contextlib.ExitStack) -> tuple[Path, float, float]:
    """(file, trim start s, trim duration s) holding ``video`` exactly as edited in the editor.

    - no pending edits (or a ComfyUI without the edit-aware VIDEO API): the stream source, untrimmed;
    - a trim only: the stream source plus the active trim window, read by seeking (no re-encode);
    - a crop (with or without trim): ComfyUI renders the edit with ``save_to`` into a temporary file.
    """
    pending = getattr(video, "has_pending_frame_edits", None)
    if pending is None or not pending():
        return stream_file(video, cleanup), 0.0, 0.0
    start, duration = video.get_active_trim_window()
    source = stream_file(video, cleanup)
    if not _cropped(video, source):
        log.info("source video trimmed in the editor: %.2f s from %.2f s", duration, start)
        return source, float(start), float(duration)
    path = _temp_path(cleanup)
    log.info("source video cropped in the editor: rendering the edit to %s", path)
    video.save_to(str(path))
    return path, 0.0, 0.0


def stream_file(video, cleanup: contextlib.ExitStack) -> Path:
    """The unedited stream of a VIDEO as a file (in-memory streams are written to a temporary file)."""
    source = video.get_stream_source()
    if isinstance(source, (str, os.PathLike)):
        return Path(source)
    path = _temp_path(cleanup)
    with open(path, "wb") as fh:
        fh.write(source.read())
    return path


def _cropped(video, source: Path) -> bool:
    """True when the edited size differs from the stream's, i.e. the editor cropped it."""
    import av

    with av.open(str(source)) as container:
        stream = container.streams.video[0]
        raw = (stream.codec_context.width, stream.codec_context.height)
    return tuple(video.get_dimensions()) != raw


def _temp_path(cleanup: contextlib.ExitStack) -> Path:
    import folder_paths

    folder = Path(folder_paths.get_temp_directory()) / "infinitetalk"
    folder.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(suffix=".mp4", dir=folder, delete=False)
    handle.close()
    path = Path(handle.name)
    cleanup.callback(path.unlink, missing_ok=True)
    return path


@dataclass
class FrameStream:
    """Frames of a generated video kept on disk in a ``SegmentStore`` folder: RAM stays flat."""

    store: object  # infinitetalk.sinks.SegmentStore holding the committed segments
    num_frames: int
    width: int
    height: int
    fps: int = VIDEO_FPS
    soundtrack: tuple[np.ndarray, int] | None = None  # ((C, N), rate): the user's audio, frame-timed
    report: object | None = None  # infinitetalk.report.RunReport: drift measured while the frames streamed

    @property
    def directory(self) -> Path:
        return Path(self.store.directory)

    def iter_frames(self):
        """uint8 ``(H, W, 3)`` frames, decoded one at a time."""
        return self.store.iter_frames()


def preview_nodes(prompt, node_id) -> list[str]:
    """Where the sampler's window clips are shown: the Video Combine nodes its ``frames`` output feeds
    (idle until the sampler ends, so their video preview is free), else the sampler itself."""
    targets = []
    for key, node in (prompt or {}).items():
        if not isinstance(node, dict) or node.get("class_type") != "InfiniteTalkVideoCombine":
            continue
        links = (v for v in (node.get("inputs") or {}).values() if isinstance(v, list) and len(v) == 2)
        if any(str(src) == str(node_id) and slot == 0 for src, slot in links):
            targets.append(str(key))
    return targets or ([str(node_id)] if node_id is not None else [])


class WindowPreview:
    """``on_segment`` hook of the sampler's ``SegmentStore``: shows each finished window while the run goes on.

    The clip (``preview/window_NNNNN.mp4`` in the run's temp folder) goes out as the UI output of the
    ``show_on`` nodes in an ``executed`` message, so the editor's own video preview plays it at once; the
    run's final state is not touched (history keeps only what nodes return). Without a server (tests,
    scripts) it does nothing.
    """

    def __init__(self, node_id: str | None, show_on: list[str] | None = None):
        self.node_id = node_id
        self.show_on = show_on if show_on is not None else ([node_id] if node_id is not None else [])

    def __call__(self, info) -> None:
        server = _server()
        if server is None or self.node_id is None or info.clip is None or server.client_id is None:
            return
        import folder_paths
        from comfy_execution.utils import get_executing_context

        temp = Path(folder_paths.get_temp_directory())
        clip = Path(info.clip)
        subfolder = clip.parent.relative_to(temp).as_posix() if clip.parent.is_relative_to(temp) else ""
        if not subfolder and clip.parent != temp:
            log.debug("window preview %s is outside ComfyUI's temp folder: not shown", clip)
            return
        context = get_executing_context()
        output = {
            "images": [{"filename": clip.name, "subfolder": subfolder, "type": "temp"}],
            "animated": [True],
        }
        for target in self.show_on:
            message = {
                "node": target,
                "display_node": target,
                "output": output,
                "prompt_id": context.prompt_id if context is not None else None,
            }
            server.send_sync("executed", message, server.client_id)
        total = f"/{info.num_windows}" if info.num_windows else ""
        seconds = (info.start_frame + info.frames) / VIDEO_FPS
        server.send_progress_text(f"window {info.window + 1}{total} ready ({seconds:.1f} s)", self.node_id)


def _server():
    try:
        from server import PromptServer
    except ImportError:
        return None
    return getattr(PromptServer, "instance", None)
