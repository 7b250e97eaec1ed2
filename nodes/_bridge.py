"""Glue between ComfyUI and :class:`infinitetalk.pipeline.InfiniteTalkPipeline`.

- :class:`ComfyModelManager`: the pipeline's load hook goes through ``comfy.model_management``
  (ComfyUI offloads other models when memory is short); offloading is left to ComfyUI.
- :class:`Progress`: ``comfy.utils.ProgressBar`` over windows x steps, with latent previews when the
  server has previews enabled; the cancel callback raises ComfyUI's interrupt exception (within one step).
- sources: IMAGE batches and core VIDEO inputs as the pipeline's reference sources.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import comfy.model_management as mm
import comfy.utils
import numpy as np
import torch

from . import _models

log = logging.getLogger(__name__)


class ComfyModelManager:
    """``ModelManager`` protocol of the pipeline, backed by ComfyUI's memory manager."""

    def __init__(
        self, models: dict[str, _models.Managed | None], swap: _models.BlockSwapPlacement | None = None
    ):
        self.models = models
        self.swap = swap  # block swap places the DiT itself

    def load(self, name: str) -> None:
        if name == "dit" and self.swap is not None:
            self.swap.activate()
            return
        managed = self.models.get(name)
        if managed is not None:
            _models.load(managed)

    def offload(self, name: str) -> None:
        """ComfyUI unloads models itself when another one needs the memory."""


class FixedText:
    """A text encoder stand-in that returns embeddings computed earlier by the Text Encode node."""

    def __init__(self, positive: torch.Tensor, negative: torch.Tensor):
        self.positive, self.negative = positive, negative

    def encode(self, prompts: list[str]) -> list[torch.Tensor]:
        return [self.positive, self.negative][: len(prompts)]


def should_cancel() -> bool:
    """Raise ComfyUI's interrupt exception when the user pressed Cancel (checked before every step)."""
    mm.throw_exception_if_processing_interrupted()
    return False


class Progress:
    """Progress bar over windows x steps, with a latent preview of the window's middle frame."""

    def __init__(self, num_windows: int, steps: int, node_id: str | None = None):
        self.steps = steps
        self.bar = comfy.utils.ProgressBar(max(1, num_windows * steps), node_id=node_id)
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
    """One IMAGE ``(H, W, C)`` in [0, 1] -> uint8 RGB ``(H, W, 3)`` (greyscale and RGBA converted)."""
    from ..infinitetalk.validation import to_rgb8

    return to_rgb8(image.detach().float().cpu().numpy(), name="image")


def video_path(video) -> Path:
    """A core VIDEO as a file path (in-memory videos are written to a temporary file first)."""
    source = video.get_stream_source()
    if isinstance(source, (str, os.PathLike)):
        return Path(source)
    handle = tempfile.NamedTemporaryFile(suffix=".mp4", delete=False)
    with handle:
        handle.write(source.read())
    return Path(handle.name)


@dataclass
class FrameStream:
    """Frames of a generated video kept on disk in a ``SegmentStore`` folder: RAM stays flat."""

    store: object  # infinitetalk.sinks.SegmentStore holding the committed segments
    num_frames: int
    width: int
    height: int
    fps: int = 25
    audio_16k: np.ndarray | None = None  # (N,) the soundtrack the video is timed to

    @property
    def directory(self) -> Path:
        return Path(self.store.directory)

    def iter_frames(self):
        """uint8 ``(H, W, 3)`` frames, decoded one at a time."""
        return self.store.iter_frames()
