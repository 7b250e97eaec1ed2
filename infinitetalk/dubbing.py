"""Face-only dubbing: keep every source pixel outside a feathered face region, frame by frame.

In video-to-video the model redraws the whole picture. :class:`FaceOnlyCompositor` puts the source back
everywhere except around the face: per output frame ``t`` it takes the source frame ``t`` (resized and
centre-cropped to the output size exactly as the pipeline conditions on it), the tracked and smoothed
face box of that frame (:func:`infinitetalk.faces.track_faces`, run on the source frames at their own size and mapped into the
output frame; past the end of the source the last box stays), and an elliptical mask around it with a
soft edge (:func:`infinitetalk.faces.feathered_mask`). Inside the mask the generated face is colour-matched
to the source face (Lab mean and standard deviation, weighted by the mask) and blended in; outside it
(further than ``feather`` pixels from the ellipse) the output pixels *are* the source pixels, bit for bit.
Body, background and cuts therefore stay the source's.

The compositor is the pipeline's ``frame_filter``: ``filter(frames uint8 (T, H, W, 3), first_index)``,
applied to the frames before they reach the sink (before any H.264 encoding). :func:`face_only_filter`
builds it for a run (output size and length from the run's config).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .buckets import cover_size, crop_box, resize_and_crop_image, target_size
from .errors import InputError
from .faces import feathered_mask, track_faces
from .pipeline import GenerationConfig
from .windows import ReferenceSource, plan_run

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FaceOnlyOptions:
    grow: float = 0.35  # ellipse margin around the face box, as a fraction of the box per side
    feather: int = 12  # soft edge, px (of the output frame)
    smooth: int = 5  # temporal smoothing of the box: centred average over 2 * smooth + 1 frames
    color_match: bool = True  # match the generated face's colours to the source face


class FaceOnlyCompositor:
    """Frame filter that keeps the source outside the face. Tracks the face once, at construction."""

    def __init__(
        self, source, size: tuple[int, int], num_frames: int, options: FaceOnlyOptions | None = None
    ):
        self.source, self.size, self.options = source, size, options or FaceOnlyOptions()
        if num_frames < 1:
            raise InputError(f"face-only dubbing: the video has {num_frames} frames: nothing to composite")
        self.num_frames = num_frames
        # Track on the source frames as they are (more pixels for the detector), then map the boxes into
        # the output frame: the same resize-to-cover and centre crop the pipeline applies.
        used = min(num_frames, source.num_frames)
        boxes = track_faces((source.frame(i) for i in range(used)), smooth=self.options.smooth)
        boxes = [None if b is None else self._to_output(b) for b in boxes]
        if boxes[0] is None:
            raise InputError(
                "face-only dubbing: no face found in the source video: turn face_only off, or use a video "
                "where the face is visible, frontal and at least 5% of the frame"
            )
        self.boxes = boxes
        logger.info("face-only dubbing: face tracked over %d frames", num_frames)

    def _to_output(self, box) -> np.ndarray:
        src_h, src_w = self.source.frame(0).shape[:2]
        h, w = self.size
        big_h, big_w = cover_size(src_h, src_w, h, w)
        top, left = crop_box(big_h, big_w, h, w)
        sy, sx = big_h / src_h, big_w / src_w
        x0, y0, x1, y1 = box
        return np.array([x0 * sx - left, y0 * sy - top, x1 * sx - left, y1 * sy - top])

    def fingerprint(self) -> dict:
        return {"face_only": vars(self.options) | {"boxes": np.round(np.stack(self.boxes), 2).tolist()}}

    def source_frame(self, i: int) -> np.ndarray:
        """Source frame ``i`` (the last one past the end) at the output size, as the pipeline sees it."""
        frame = self.source.frame(min(i, self.source.num_frames - 1))
        return resize_and_crop_image(frame, self.size)

    def mask(self, i: int) -> np.ndarray:
        """float32 ``(H, W)``: 1 on the face, 0 where the source is kept."""
        h, w = self.size
        box = self.boxes[min(i, len(self.boxes) - 1)]
        return feathered_mask(box, h, w, self.options.grow, self.options.feather)

    def __call__(self, frames: np.ndarray, first: int) -> np.ndarray:
        out = np.empty_like(frames)
        for k, generated in enumerate(frames):
            out[k] = self.composite(generated, first + k)
        return out

    def composite(self, generated: np.ndarray, i: int) -> np.ndarray:
        source = self.source_frame(i)
        mask = self.mask(i)
        if self.options.color_match:
            generated = match_region_colors(generated, source, mask)
        m = mask[..., None]
        blended = np.rint(source.astype(np.float32) * (1 - m) + generated.astype(np.float32) * m)
        return np.where(m > 0, blended.clip(0, 255).astype(np.uint8), source)


def face_only_filter(
    source: ReferenceSource,
    config: GenerationConfig,
    audio_frames: int,
    options: FaceOnlyOptions | None = None,
) -> FaceOnlyCompositor:
    """The compositor of a face-only dubbing run: ``source`` (a video) at the output size of ``config``, the
    face tracked over the frames the run will write (``audio_frames`` of speech, the config's cap)."""
    if isinstance(source, np.ndarray) or source.num_frames < 2:
        raise InputError(
            "face-only dubbing needs a source video: one image has no source to keep; give a video or turn "
            "face_only off"
        )
    _, total = plan_run(config, audio_frames, source)
    size = target_size(config.size, *source.frame(0).shape[:2])
    return FaceOnlyCompositor(source, size, total, options)


def match_region_colors(image: np.ndarray, reference: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``image`` with its Lab mean/std inside ``weights`` moved to ``reference``'s (both uint8 RGB)."""
    import cv2

    w = weights.astype(np.float64)
    total = w.sum()
    if total < 1:
        return image
    img = cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float64)
    ref = cv2.cvtColor(reference, cv2.COLOR_RGB2LAB).astype(np.float64)
    out = img.copy()
    for c in range(3):
        mi = (img[..., c] * w).sum() / total
        mr = (ref[..., c] * w).sum() / total
        si = np.sqrt(((img[..., c] - mi) ** 2 * w).sum() / total)
        sr = np.sqrt(((ref[..., c] - mr) ** 2 * w).sum() / total)
        out[..., c] = (img[..., c] - mi) * (sr / max(si, 1e-3)) + mr
    return cv2.cvtColor(out.clip(0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)
