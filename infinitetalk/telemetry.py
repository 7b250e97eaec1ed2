"""Drift telemetry: how far each window of a long video has slid from its reference, measured as frames stream.

:class:`DriftMeter` takes the reference image once, then frames in order (``add(frames)``, ``end_window()``)
and keeps one small record per window; nothing is kept per frame, so memory does not grow with the video
(a record is a few hundred bytes: about 1 kB per 3 s of video). Its state (``state_dict``) rides with the
pipeline's resume state, so a resumed run continues its telemetry. :class:`TelemetrySink` feeds it from a
:class:`~infinitetalk.sinks.FrameSink` (one ``write`` per window, as the pipeline writes);
:func:`measure_frames` from any stream of frames (``python -m infinitetalk.report`` on a file).

The measures (docs/TELEMETRY.md has their definitions and thresholds):

- **colour**: CIE Lab (sRGB, D65: OpenCV's float conversion, which agrees with the colour correction's
  :func:`infinitetalk.color.rgb_to_lab` within 0.1 ΔE on average, at a thirtieth of the cost) of the face region and of the background (everything outside the grown face boxes), each against the same region
  of the reference: ``*_de`` is the ΔE76 between the region's mean colours, ``*_spread`` the Euclidean
  distance between the per-channel standard deviations (contrast and saturation change);
- **sharpness**: variance of the Laplacian of the face at the reference face's pixel size, contrast-normalised,
  divided by the reference's (1 = as sharp, 0.5 = half the fine detail);
- **face position and size**: the face box, found with the Haar detector (:mod:`infinitetalk.faces`) every
  ``detect_every`` frames and followed by overlap; its centre's offset from the reference box in reference face
  widths (``face_dx``, ``face_dy``, ``face_shift``) and its size ratio (``face_size``);
- **seams**: mean absolute grey change between consecutive frames; at a window join, the change across the
  join divided by the median change inside the two windows around it (``seam``, 1 = an ordinary frame) and
  the excess in grey levels (``seam_jump``);
- **mouth vs speech**: per speaker, the mean absolute grey change in the mouth region (the lower middle of the
  face box) on frames where that speaker is silent and where they speak (speech activity per video frame
  from the 16 kHz track, :func:`speech_activity`, or from the audio features, :func:`feature_activity`);
  ``silent_ratio`` = silent motion / speaking motion (0 = still in silence, 1 = as busy as when speaking).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .buckets import resize_and_crop_image
from .config import VIDEO_FPS
from .faces import detect_faces
from .sinks import ResumableSink

logger = logging.getLogger(__name__)

WORK_SIDE = 160  # longer side (px) of the copy colour and frame change are measured on
DETECT_EVERY = 12  # frames between face detections (about two per second at 25 fps)
DETECT_SIDE = 320  # longer side the face detector runs at on video frames
SPEECH_FRAME = 640  # 16 kHz samples per 25 fps video frame
MIN_MOTION = 0.5  # grey levels: floor of the "typical change" a seam is divided by (a still video)
BACKGROUND_GROW = 0.25  # the face box grown by this share of its size on each side is not background
MOUTH_BOX = (0.22, 0.62, 0.78, 0.98)  # mouth region inside a face box (x0, y0, x1, y1 as fractions)


@dataclass(frozen=True)
class Thresholds:
    """Past these, the report warns (one line per measure, with the time and the knob to try)."""

    face_de: float = 5.0  # ΔE76 of the face's mean colour: clearly visible side by side
    background_de: float = 6.0
    sharpness: float = 0.6  # below: the face has lost 40% of its fine detail
    face_shift: float = 0.25  # face widths away from the reference position
    face_size: float = 0.2  # relative change of the face's size
    seam: float = 3.0  # a join changes 3x more than an ordinary frame
    silent_ratio: float = 0.5  # the mouth moves half as much in silence as when speaking


THRESHOLDS = Thresholds()

# what to try when a measure passes its threshold (CLI flag / Sampler Options input)
KNOBS = {
    "face_de": "raise color_correction_strength to 1, or turn on colour anchoring (--color_anchor 4)",
    "background_de": "raise color_correction_strength to 1, or turn on colour anchoring (--color_anchor 4)",
    "sharpness": "carry the motion frames in latent space (--latent_motion), or use more steps",
    "face_shift": "a lower audio_scale, or a prompt asking for a steady head; check the reference framing",
    "face_size": "a lower audio_scale, or a prompt asking for a steady head; check the reference framing",
    "seam": "carry the motion frames in latent space (--latent_motion), or more motion frames",
    "silent_ratio": "add a noise floor to the silences of the speech (--silence_noise_floor -45)",
}


# ============================================================================ speech activity
def speech_activity(wave_16k: np.ndarray, num_frames: int | None = None, start_frame: int = 0) -> np.ndarray:
    """Per video frame, is there speech? ``bool (num_frames,)`` from a 16 kHz mono track.

    The RMS of each 40 ms frame against 10% of the track's loud level (its 95th-percentile frame RMS), with
    an absolute floor of -60 dBFS; ``start_frame`` frames of silence come first (a speaker who starts later).
    """
    rms = frame_rms(wave_16k)
    return activity_from_rms(rms, num_frames, start_frame)


def frame_rms(wave_16k: np.ndarray) -> np.ndarray:
    """RMS of each 40 ms video frame of a 16 kHz track (the last, partial frame included)."""
    wave = np.asarray(wave_16k, np.float32).reshape(-1)
    n = math.ceil(len(wave) / SPEECH_FRAME)
    out = np.empty(n, np.float32)
    for a in range(0, n, 4096):  # a long, file-backed track is read in pieces
        b = min(n, a + 4096)
        chunk = np.asarray(wave[a * SPEECH_FRAME : b * SPEECH_FRAME], np.float64)
        chunk = np.pad(chunk, (0, (b - a) * SPEECH_FRAME - len(chunk)))
        out[a:b] = np.sqrt((chunk.reshape(b - a, SPEECH_FRAME) ** 2).mean(1))
    return out


def activity_from_rms(rms: np.ndarray, num_frames: int | None = None, start_frame: int = 0) -> np.ndarray:
    rms = np.concatenate([np.zeros(int(start_frame), np.float32), np.asarray(rms, np.float32)])
    loud = float(np.percentile(rms, 95)) if len(rms) else 0.0
    active = rms > max(0.1 * loud, 1e-3)
    if num_frames is not None:
        active = np.pad(active, (0, max(0, num_frames - len(active))))[:num_frames]
    return active


def feature_activity(features: torch.Tensor, chunk: int = 4096) -> np.ndarray:
    """``bool (S, L)`` speech activity from audio features ``(S, L, layers, C)`` (when the 16 kHz tracks of
    the speakers are not at hand): wav2vec2's last layer barely changes from frame to frame over silence and
    changes a lot over speech, so a frame is active when its change passes 20% of the speaker's loud level."""
    s, length = int(features.shape[0]), int(features.shape[1])
    change = np.zeros((s, length), np.float32)
    for a in range(0, length, chunk):  # file-backed features are read a piece at a time
        b = min(length, a + chunk)
        last = features[:, max(0, a - 1) : b, -1].float()  # (S, n, C)
        diff = (last[:, 1:] - last[:, :-1]).norm(dim=-1).numpy()
        change[:, a + 1 if a == 0 else a : b] = diff
    out = np.zeros((s, length), bool)
    for k in range(s):
        loud = float(np.percentile(change[k], 95)) if length else 0.0
        out[k] = change[k] > 0.2 * loud if loud > 0 else False
    return out


def speech_for_run(audio, tracks: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """``bool (S, L)`` speech activity of a run's :class:`~infinitetalk.pipeline.AudioEmbedding` from what it
    has: ``tracks`` (one 16 kHz track per speaker, laid out in the video's time) when the caller kept them,
    else the 16 kHz speech of a one-speaker run, else the features (:func:`feature_activity`)."""
    n = int(audio.num_frames)
    if tracks is not None and len(tracks) == audio.num_speakers:
        return np.stack([speech_activity(t, n) for t in tracks])
    if audio.num_speakers == 1 and audio.waveform_16k_mix is not None:
        return speech_activity(audio.waveform_16k_mix, n)[None]
    return feature_activity(audio.features[:, :n])


# ============================================================================ small image helpers
def _grey(frame: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)


def _work_scale(h: int, w: int) -> float:
    return min(1.0, WORK_SIDE / max(h, w))


def _resize(image: np.ndarray, scale: float) -> np.ndarray:
    import cv2

    if scale == 1.0:
        return image
    h, w = image.shape[:2]
    return cv2.resize(
        image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
    )


def _clip_box(box, h: int, w: int) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    x0, y0 = min(max(0, int(round(x0))), w - 1), min(max(0, int(round(y0))), h - 1)
    return x0, y0, max(x0 + 1, min(w, int(round(x1)))), max(y0 + 1, min(h, int(round(y1))))


def _sub_box(box, fractions) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = box
    fx0, fy0, fx1, fy1 = fractions
    bw, bh = x1 - x0, y1 - y0
    return x0 + fx0 * bw, y0 + fy0 * bh, x0 + fx1 * bw, y0 + fy1 * bh


def _grow(box, share: float):
    x0, y0, x1, y1 = box
    dx, dy = share * (x1 - x0), share * (y1 - y0)
    return x0 - dx, y0 - dy, x1 + dx, y1 + dy


def _lab_stats(lab: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(mean (3,), std (3,)) of the Lab pixels under ``mask``; None when the mask is (nearly) empty."""
    pixels = lab[mask]
    if len(pixels) < 16:
        return None
    return pixels.mean(0), pixels.std(0)


def detail(grey: np.ndarray, box, centre: tuple[float, float] | None = None) -> float:
    """Variance of the Laplacian of ``box`` of a grey image (moved to ``centre`` when given: the reference
    box's pixel size is kept, never resampled, as resampling alone removes fine detail), at a contrast of
    50 grey levels (standard deviation), so a change of contrast alone is not read as a change of detail."""
    import cv2

    if centre is not None:
        hw, hh = (box[2] - box[0]) / 2, (box[3] - box[1]) / 2
        box = (centre[0] - hw, centre[1] - hh, centre[0] + hw, centre[1] + hh)
    x0, y0, x1, y1 = _clip_box(box, *grey.shape)
    crop = grey[y0:y1, x0:x1].astype(np.float64)
    crop = (crop - crop.mean()) * (50.0 / max(crop.std(), 1.0))
    return float(cv2.Laplacian(crop, cv2.CV_64F).var())


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


# ============================================================================ the meter
@dataclass
class _Window:
    """Running sums of the window being measured."""

    start: int
    frames: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    changes: list[float] = field(default_factory=list)  # frame-to-frame changes inside the window
    join: float | None = None  # change across the join into this window
    mouth: list[list[float]] = field(default_factory=list)  # per speaker [silent sum, n, speaking sum, n]

    def add(self, name: str, value: float | None) -> None:
        if value is None or not math.isfinite(value):
            return
        self.sums[name] = self.sums.get(name, 0.0) + float(value)
        self.counts[name] = self.counts.get(name, 0) + 1

    def mean(self, name: str) -> float | None:
        n = self.counts.get(name, 0)
        return self.sums[name] / n if n else None


class DriftMeter:
    """Per-window drift of a video against its reference image (see the module docstring for the measures).

    ``reference``: uint8 ``(H, W, 3)``, the image the video was made from (resized and centre-cropped to the
    video's size at the first frame, as the pipeline does). ``speech``: ``bool (S, L)`` activity per video
    frame for S speakers (None: no mouth measure). ``speaker_boxes``: two regions (x0, y0, x1, y1) in
    reference pixels telling the two speakers' faces apart (default: the two largest faces, person 1 on the
    left, as the pipeline's speaker halves). ``fps``: frames per second of the video.
    """

    def __init__(
        self,
        reference: np.ndarray,
        *,
        speech: np.ndarray | None = None,
        speaker_boxes: Sequence[Sequence[float]] | None = None,
        fps: float = VIDEO_FPS,
        detect_every: int = DETECT_EVERY,
        thresholds: Thresholds = THRESHOLDS,
    ):
        reference = np.asarray(reference)
        if reference.ndim != 3 or reference.shape[-1] != 3 or reference.dtype != np.uint8:
            raise ValueError(f"reference {reference.dtype} {reference.shape}: expected uint8 (H, W, 3) RGB")
        self.source_reference = reference
        self.speech = None if speech is None else np.asarray(speech, bool).reshape(-1, np.shape(speech)[-1])
        self.speaker_boxes = [tuple(float(v) for v in b) for b in speaker_boxes] if speaker_boxes else None
        self.fps, self.detect_every, self.thresholds = float(fps), int(detect_every), thresholds
        self.records: list[dict[str, Any]] = []
        self.frame_index = 0
        self._window: _Window | None = None
        self._prev_grey: np.ndarray | None = None  # full-resolution grey of the last frame
        self._prev_median: float | None = None  # median change inside the previous window
        self._boxes: list[tuple[float, ...]] | None = None  # current face box per speaker
        self._ref: dict[str, Any] | None = None  # reference at the video size: faces and statistics

    # ------------------------------------------------------------------ reference
    @property
    def num_speakers(self) -> int:
        return int(self.speech.shape[0]) if self.speech is not None else 1

    def _prepare(self, h: int, w: int) -> None:
        """The reference at the video's size: faces per speaker, Lab statistics of face and background,
        face detail."""

        ref = self.source_reference
        sh, sw = ref.shape[:2]
        if (sh, sw) != (h, w):
            ref = resize_and_crop_image(ref, (h, w))
        faces = detect_faces(ref, work_size=DETECT_SIDE, landmarks=False)  # as on the frames: same boxes
        boxes = self._speaker_faces(faces, (sh, sw), (h, w))
        scale = _work_scale(h, w)
        lab = self._lab(_resize(ref, scale))
        face_mask, bg_mask = self._masks(boxes, lab.shape[:2], scale)
        grey = _grey(ref)
        self._ref = {
            "size": (h, w),
            "scale": scale,
            "boxes": boxes,
            "face": _lab_stats(lab, face_mask) if boxes else None,
            "background": _lab_stats(lab, bg_mask),
            "detail": [detail(grey, b) for b in boxes],
        }
        if self._boxes is None:
            self._boxes = list(boxes)
        if not boxes:
            logger.warning("telemetry: no face found in the reference image: face measures are skipped")

    def _speaker_faces(self, faces, src_hw, hw) -> list[tuple[float, ...]]:
        """One face box per speaker (video pixels), person 1 first."""
        boxes = [f.box for f in faces]
        n = self.num_speakers
        if self.speaker_boxes and len(self.speaker_boxes) == n and n > 1:
            picked = []
            mapped = [self._map_box(b, src_hw, hw) for b in self.speaker_boxes]
            for region in mapped:
                inside = [b for b in boxes if region[0] <= (b[0] + b[2]) / 2 <= region[2]]
                picked.append(max(inside, key=lambda b: (b[2] - b[0]) * (b[3] - b[1])) if inside else None)
            if all(p is not None for p in picked):
                return picked
        if len(boxes) < n:
            if boxes and n > 1:
                logger.warning("telemetry: %d speakers but %d face(s) in the reference", n, len(boxes))
            return boxes[:1] if n == 1 else []
        return sorted(boxes[:n], key=lambda b: b[0])  # largest n, left to right

    @staticmethod
    def _map_box(box, src_hw, hw):
        """A box in source-image pixels -> pixels of the resized, centre-cropped video frame."""
        (sh, sw), (h, w) = src_hw, hw
        s = max(h / sh, w / sw)
        top, left = round((sh * s - h) / 2), round((sw * s - w) / 2)
        x0, y0, x1, y1 = box
        return x0 * s - left, y0 * s - top, x1 * s - left, y1 * s - top

    @staticmethod
    def _lab(image: np.ndarray) -> np.ndarray:
        """uint8 RGB ``(..., H, W, 3)`` -> float32 Lab (L in [0, 100])."""
        import cv2

        rgb = np.asarray(image, np.float32) * (1.0 / 255.0)
        if rgb.ndim == 3:
            return cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab)
        return np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2Lab) for f in rgb])

    @staticmethod
    def _masks(boxes, hw, scale) -> tuple[np.ndarray, np.ndarray]:
        face = np.zeros(hw, bool)
        inner = np.zeros(hw, bool)
        for box in boxes:
            x0, y0, x1, y1 = _clip_box([v * scale for v in box], *hw)
            face[y0:y1, x0:x1] = True
            x0, y0, x1, y1 = _clip_box([v * scale for v in _grow(box, BACKGROUND_GROW)], *hw)
            inner[y0:y1, x0:x1] = True
        return face, ~inner

    # ------------------------------------------------------------------ streaming
    def add(self, frames: np.ndarray) -> None:
        """Measure ``uint8 (T, H, W, 3)`` frames (the next ones of the video)."""
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames {frames.dtype} {frames.shape}: expected uint8 (T, H, W, 3)")
        if self._ref is None or self._ref["size"] != frames.shape[1:3]:
            self._prepare(*frames.shape[1:3])
        if self._window is None:
            self._window = _Window(
                self.frame_index, mouth=[[0.0, 0, 0.0, 0] for _ in range(self.num_speakers)]
            )
        ref, win = self._ref, self._window
        labs = self._lab(np.stack([_resize(f, ref["scale"]) for f in frames]))  # (T, h, w, 3)
        for frame, lab in zip(frames, labs, strict=True):
            grey = _grey(frame)
            if self._boxes and self.frame_index % self.detect_every == 0:
                self._track(frame, win)
            self._colour(lab, win)
            self._detail(grey, win)
            self._motion(grey, win)
            self.frame_index += 1
            win.frames += 1
            self._prev_grey = grey

    def end_window(self) -> dict[str, Any] | None:
        """Close the window measured since the last call: its record (None if it had no frames)."""
        win, self._window = self._window, None
        if win is None or win.frames == 0:
            return None
        record = self._record(win)
        self.records.append(record)
        return record

    def _track(self, frame: np.ndarray, win: _Window) -> None:
        """Follow each speaker's face (detector every ``detect_every`` frames, kept by overlap)."""

        faces = [f.box for f in detect_faces(frame, work_size=DETECT_SIDE, landmarks=False)]
        for k, last in enumerate(self._boxes):
            best = max(faces, key=lambda b: _iou(b, last), default=None)
            if best is None or _iou(best, last) <= 0.1:
                continue
            self._boxes[k] = tuple(best)
            ref = self._ref["boxes"][k]
            rw = ref[2] - ref[0]
            dx = ((best[0] + best[2]) - (ref[0] + ref[2])) / 2 / rw
            dy = ((best[1] + best[3]) - (ref[1] + ref[3])) / 2 / rw
            win.add(f"face_dx_{k}", dx)
            win.add(f"face_dy_{k}", dy)
            win.add(f"face_size_{k}", (best[2] - best[0]) / rw)

    def _colour(self, lab: np.ndarray, win: _Window) -> None:
        ref = self._ref
        face_mask, bg_mask = self._masks(self._boxes or [], lab.shape[:2], ref["scale"])
        for name, mask in (("face", face_mask), ("background", bg_mask)):
            if ref[name] is None:
                continue
            stats = _lab_stats(lab, mask)
            if stats is None:
                continue
            win.add(f"{name}_de", float(np.linalg.norm(stats[0] - ref[name][0])))
            win.add(f"{name}_spread", float(np.linalg.norm(stats[1] - ref[name][1])))

    def _detail(self, grey: np.ndarray, win: _Window) -> None:
        for k, box in enumerate(self._boxes or []):
            ref_box, ref_detail = self._ref["boxes"][k], self._ref["detail"][k]
            if ref_detail > 0:
                centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
                win.add(f"sharpness_{k}", detail(grey, ref_box, centre) / ref_detail)

    def _motion(self, grey: np.ndarray, win: _Window) -> None:
        prev = self._prev_grey
        if prev is None or prev.shape != grey.shape:
            return
        scale = self._ref["scale"]
        a = _resize(prev, scale).astype(np.int16)
        b = _resize(grey, scale).astype(np.int16)
        change = float(np.abs(a - b).mean())
        if win.frames == 0 and self.records:
            win.join = change
        else:
            win.changes.append(change)
        if self.speech is None:
            return
        for k, box in enumerate(self._boxes or []):
            if self.frame_index >= self.speech.shape[1]:
                break
            x0, y0, x1, y1 = _clip_box(_sub_box(box, MOUTH_BOX), *grey.shape)
            energy = float(np.abs(grey[y0:y1, x0:x1].astype(np.int16) - prev[y0:y1, x0:x1]).mean())
            slot = 2 if self.speech[k, self.frame_index] else 0
            win.mouth[k][slot] += energy
            win.mouth[k][slot + 1] += 1

    # ------------------------------------------------------------------ records
    def _record(self, win: _Window) -> dict[str, Any]:
        n = len(self._ref["boxes"]) if self._ref else 0
        median = float(np.median(win.changes)) if win.changes else None
        rec: dict[str, Any] = {
            "window": len(self.records),
            "start": win.start,
            "frames": win.frames,
            "time": round(win.start / self.fps, 3),
            "end_time": round((win.start + win.frames) / self.fps, 3),
        }
        for name in ("face_de", "face_spread", "background_de", "background_spread"):
            rec[name] = _round(win.mean(name))
        rec["sharpness"] = _round(_mean_of(win.mean(f"sharpness_{k}") for k in range(n)))
        shifts, sizes = [], []
        for k in range(n):
            dx, dy, size = (win.mean(f"face_{m}_{k}") for m in ("dx", "dy", "size"))
            if dx is not None:
                shifts.append((math.hypot(dx, dy), dx, dy))
                sizes.append(size)
        worst = max(shifts, default=None)
        rec["face_shift"] = _round(worst[0]) if worst else None
        rec["face_dx"] = _round(worst[1]) if worst else None
        rec["face_dy"] = _round(worst[2]) if worst else None
        rec["face_size"] = _round(max(sizes, key=lambda s: abs(s - 1))) if sizes else None
        rec["motion"] = _round(median)
        typical = [m for m in (median, self._prev_median) if m is not None]
        if win.join is not None and typical:
            base = max(float(np.mean(typical)), MIN_MOTION)
            rec["seam"] = _round(win.join / base)
            rec["seam_jump"] = _round(win.join - float(np.mean(typical)))
        else:
            rec["seam"] = rec["seam_jump"] = None
        self._prev_median = median
        rec["mouth"] = (
            [
                {
                    "silent": _round(s / ns) if ns else None,
                    "speaking": _round(p / np_) if np_ else None,
                    "silent_frames": int(ns),
                    "speaking_frames": int(np_),
                }
                for s, ns, p, np_ in win.mouth
            ]
            if self.speech is not None and n
            else []
        )
        return rec

    def summary(self) -> dict[str, Any]:
        """Every figure: the per-window records, per measure the worst window and the overall value, the
        colour and position trends per minute, the mouth ratios per speaker and the warnings."""
        from dataclasses import asdict

        recs = self.records
        out: dict[str, Any] = {
            "frames": self.frame_index,
            "seconds": round(self.frame_index / self.fps, 3),
            "fps": self.fps,
            "windows": recs,
            "thresholds": asdict(self.thresholds),
            "faces": [list(map(float, b)) for b in self._ref["boxes"]] if self._ref else [],
        }
        worst = {}
        for name, high in (
            ("face_de", True),
            ("background_de", True),
            ("sharpness", False),
            ("face_shift", True),
            ("seam", True),
        ):
            vals = [(r[name], r) for r in recs if r.get(name) is not None]
            if vals:
                value, rec = (max if high else min)(vals, key=lambda v: v[0])
                worst[name] = {"value": value, "window": rec["window"], "time": rec["time"]}
        sizes = [(r["face_size"], r) for r in recs if r.get("face_size") is not None]
        if sizes:
            value, rec = max(sizes, key=lambda v: abs(v[0] - 1))
            worst["face_size"] = {"value": value, "window": rec["window"], "time": rec["time"]}
        out["worst"] = worst
        out["trend_per_minute"] = {
            name: _round(_slope(recs, name) * 60.0 * self.fps if _slope(recs, name) is not None else None)
            for name in ("face_de", "background_de", "sharpness", "face_shift", "face_size")
        }
        out["mouth"] = self._mouth_summary()
        out["warnings"] = warnings_for(out, self.thresholds)
        return out

    def _mouth_summary(self) -> list[dict[str, Any]]:
        result = []
        for k in range(self.num_speakers if self.speech is not None else 0):
            sil = [
                (r["mouth"][k]["silent"], r["mouth"][k]["silent_frames"]) for r in self.records if r["mouth"]
            ]
            spk = [
                (r["mouth"][k]["speaking"], r["mouth"][k]["speaking_frames"])
                for r in self.records
                if r["mouth"]
            ]
            silent = _weighted(sil)
            speaking = _weighted(spk)
            # a mouth that barely moves while speaking (under MIN_MOTION) would make any ratio huge
            ratio = (
                silent / max(speaking, MIN_MOTION) if silent is not None and speaking is not None else None
            )
            worst = None
            if speaking is not None:
                rows = [
                    (r["mouth"][k]["silent"] / max(speaking, MIN_MOTION), r)
                    for r in self.records
                    if r["mouth"]
                    and r["mouth"][k]["silent"] is not None
                    and r["mouth"][k]["silent_frames"] >= 5
                ]
                if rows:
                    value, rec = max(rows, key=lambda v: v[0])
                    worst = {"value": _round(value), "window": rec["window"], "time": rec["time"]}
            result.append(
                {
                    "speaker": k + 1,
                    "silent": _round(silent),
                    "speaking": _round(speaking),
                    "silent_ratio": _round(ratio),
                    "silent_frames": sum(n for _, n in sil),
                    "speaking_frames": sum(n for _, n in spk),
                    "worst": worst,
                }
            )
        return result

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue after the last closed window (small: the records, the last frame's
        grey image and the tracked boxes)."""
        if self._window is not None and self._window.frames:
            raise ValueError("telemetry state asked in the middle of a window: call end_window() first")
        return {
            "version": 1,
            "records": [dict(r) for r in self.records],
            "frame_index": self.frame_index,
            # a tensor, not an array: the resume state is read back with safe (weights-only) loading
            "prev_grey": None if self._prev_grey is None else torch.from_numpy(self._prev_grey.copy()),
            "prev_median": self._prev_median,
            "boxes": None if self._boxes is None else [list(b) for b in self._boxes],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != 1:
            raise ValueError(f"telemetry state version {state.get('version')} is unknown")
        self.records = [dict(r) for r in state["records"]]
        self.frame_index = int(state["frame_index"])
        grey = state["prev_grey"]
        self._prev_grey = (
            None if grey is None else np.asarray(grey.numpy() if torch.is_tensor(grey) else grey)
        )
        self._prev_median = state["prev_median"]
        self._boxes = None if state["boxes"] is None else [tuple(b) for b in state["boxes"]]
        self._window = None


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


def _mean_of(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def _weighted(pairs: list[tuple[float | None, int]]) -> float | None:
    total = sum(n for v, n in pairs if v is not None)
    return sum(v * n for v, n in pairs if v is not None) / total if total else None


def _slope(records: list[dict[str, Any]], name: str) -> float | None:
    """Least-squares change of ``name`` per frame over the windows (at their middle frames)."""
    pts = [(r["start"] + r["frames"] / 2, r[name]) for r in records if r.get(name) is not None]
    if len(pts) < 2:
        return None
    x, y = np.array(pts, np.float64).T
    if np.ptp(x) == 0:
        return None
    return float(np.polyfit(x, y, 1)[0])


def format_time(seconds: float) -> str:
    """``83.2`` -> ``"01:23.2"`` (``h:mm:ss.s`` past an hour)."""
    seconds = max(0.0, float(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{int(h)}:{int(m):02d}:{s:04.1f}" if h else f"{int(m):02d}:{s:04.1f}"


def warnings_for(summary: dict[str, Any], t: Thresholds = THRESHOLDS) -> list[str]:
    """One line per measure past its threshold: what, how much, where (the worst window's time), what to try."""
    lines, worst = [], summary.get("worst", {})

    def line(name: str, text: str) -> None:
        lines.append(f"{text} at {format_time(worst[name]['time'])}: try {KNOBS[name]}")

    if "face_de" in worst and worst["face_de"]["value"] > t.face_de:
        line("face_de", f"face colour drifts from the reference (ΔE {worst['face_de']['value']:.1f})")
    if "background_de" in worst and worst["background_de"]["value"] > t.background_de:
        line("background_de", f"background colour drifts (ΔE {worst['background_de']['value']:.1f})")
    if "sharpness" in worst and worst["sharpness"]["value"] < t.sharpness:
        v = worst["sharpness"]["value"]
        line("sharpness", f"the face is softer than the reference ({100 * v:.0f}% of its detail)")
    if "face_shift" in worst and worst["face_shift"]["value"] > t.face_shift:
        v = worst["face_shift"]["value"]
        line("face_shift", f"the face has moved {v:.2f} face widths from its place in the reference")
    if "face_size" in worst and abs(worst["face_size"]["value"] - 1) > t.face_size:
        v = worst["face_size"]["value"]
        line("face_size", f"the face is {100 * v:.0f}% of its size in the reference")
    if "seam" in worst and worst["seam"]["value"] > t.seam:
        v = worst["seam"]["value"]
        line("seam", f"a window join jumps ({v:.1f}x an ordinary frame's change)")
    for m in summary.get("mouth", []):
        if m["silent_ratio"] is not None and m["silent_ratio"] > t.silent_ratio and m["worst"]:
            lines.append(
                f"speaker {m['speaker']}'s mouth moves in silences ({100 * m['silent_ratio']:.0f}% of its "
                f"speaking motion) at {format_time(m['worst']['time'])}: try {KNOBS['silent_ratio']}"
            )
    return lines


# ============================================================================ feeding the meter
class TelemetrySink:
    """A :class:`~infinitetalk.sinks.FrameSink` that measures every window on its way to ``sink``.

    The pipeline writes each window's frames in one ``write``; that call is one window of telemetry.
    ``on_window(meter, record)`` is called after each measured window (e.g. to redraw the report).
    Every other attribute is ``sink``'s (``expect_windows``, ``size``, ``directory``, ``finalize`` ...).
    """

    def __init__(self, sink, meter: DriftMeter, on_window=None):
        self.sink, self.meter, self.on_window = sink, meter, on_window

    def write(self, frames: np.ndarray) -> None:
        self.sink.write(frames)
        try:
            self.meter.add(frames)
            record = self.meter.end_window()
        except Exception as err:  # noqa: BLE001 - telemetry must never stop a generation
            logger.warning("telemetry of this window skipped: %s", err)
            self.meter._window = None
            return
        if self.on_window is not None and record is not None:
            self.on_window(self.meter, record)

    def close(self) -> None:
        self.sink.close()

    def __getattr__(self, name: str):
        return getattr(self.sink, name)


class ResumableTelemetrySink(TelemetrySink):
    """:class:`TelemetrySink` over a resumable sink: the meter's state is committed with each window and
    given back on resume (key ``"telemetry"`` of the pipeline's state), so the telemetry continues."""

    STATE_KEY = "telemetry"

    def begin(self, fingerprint: str, resume: bool = False):
        state = self.sink.begin(fingerprint, resume)
        if state is not None and self.STATE_KEY in state:
            self.meter.load_state_dict(state.pop(self.STATE_KEY))
        return state

    def commit(self, window: int, state: dict[str, Any] | None = None) -> None:
        if state is not None:
            state = {**state, self.STATE_KEY: self.meter.state_dict()}
        self.sink.commit(window, state)

    def mark_complete(self) -> None:
        self.sink.mark_complete()


def observe(sink, meter: DriftMeter, on_window=None) -> TelemetrySink:
    """``sink`` with ``meter`` fed by its frames; resumable when ``sink`` is."""

    cls = ResumableTelemetrySink if isinstance(sink, ResumableSink) else TelemetrySink
    return cls(sink, meter, on_window)


def window_lengths(num_frames: int, frame_num: int = 81, motion_frame: int = 9) -> list[int]:
    """New frames per window of a streamed run (``frame_num`` then ``frame_num - motion_frame`` each): the
    window joins of a video made by this pipeline (or the reference's, or the wrapper's defaults)."""
    lengths, done = [], 0
    while done < num_frames:
        n = min(frame_num if not lengths else frame_num - motion_frame, num_frames - done)
        lengths.append(n)
        done += n
    return lengths


def measure_frames(
    frames: Iterable[np.ndarray],
    meter: DriftMeter,
    num_frames: int,
    frame_num: int = 81,
    motion_frame: int = 9,
    chunk: int = 8,
) -> dict[str, Any]:
    """Feed frames ``uint8 (H, W, 3)`` (an iterator: at most ``chunk`` frames are held) into ``meter`` with
    windows laid out as a streamed run's; returns ``meter.summary()``."""
    lengths = iter(window_lengths(num_frames, frame_num, motion_frame))
    left = next(lengths, 0)
    batch: list[np.ndarray] = []
    for frame in frames:
        batch.append(frame)
        left -= 1
        if len(batch) == chunk or left == 0:
            meter.add(np.stack(batch))
            batch = []
        if left == 0:
            meter.end_window()
            left = next(lengths, 0)
            if left == 0:
                break
    if batch:
        meter.add(np.stack(batch))
    meter.end_window()
    return meter.summary()
