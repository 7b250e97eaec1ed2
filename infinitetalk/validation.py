"""Input checks shared by the command line and the nodes: one message per case.

Every check raises :class:`~infinitetalk.errors.InputError` with one line that says what is wrong, names the
input (``name=``: the node input such as ``speaker_boxes`` or the flag such as ``--bbox``) and gives the fix.
Callers run them before the first weight is read. Conversions that are safe (RGBA, greyscale, 16-bit images;
any sample rate or channel count of speech) are done here rather than refused.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import NamedTuple

import numpy as np
import torch

from .buckets import target_size
from .config import VIDEO_FPS, SpeakerRegions
from .errors import InfiniteTalkError, InputError
from .sampling import SAMPLERS

logger = logging.getLogger(__name__)

Box = tuple[float, float, float, float]  # (x_min, y_min, x_max, y_max) in pixels, x = column

MIN_IMAGE_SIDE = 16  # pixels: smaller cannot hold a face the model can animate
MAX_IMAGE_SIDE = 16384  # pixels: larger is refused before it is decoded (PIL's bomb limit is ~13k x 13k)
UPSCALE_WARNING = 2.0  # warn when the reference is enlarged more than this to fill the output
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 4000, 768000  # Hz: below is not speech, above is not audio
MAX_CHANNELS = 8  # 7.1; media.to_mono and the muxer take at most 8 channels
SILENCE_PEAK = 1e-4  # -80 dBFS: quieter audio is treated as silence (no lip motion to follow)
MIN_AUDIO_S = 1 / VIDEO_FPS  # one video frame
SIZE_NAMES = ("infinitetalk-480", "infinitetalk-720")


class Range(NamedTuple):
    """Bounds of a number setting: ``lo <= value <= hi``, ``value - lo`` a multiple of ``step``."""

    lo: int
    hi: int
    step: int = 1


# ============================================================================ limits
# What the node widgets promise is enforced here too: the widgets read these numbers, and ComfyUI's own range
# check is switched off for every input a node names in validate_inputs (and the API can send any value).
# docs/HARDENING.md lists them.
FRAME_NUM = Range(5, 201, 4)  # frames per window (81 as trained)
MOTION_FRAME = Range(1, 197, 4)  # frames carried into the next window
STEPS = Range(1, 100)  # denoising steps per window
MAX_FRAMES = Range(0, 1_000_000)  # length cap in frames (0 = the whole audio; 1e6 frames = 11 hours)
OUTPUT_SIDE = Range(16, 2048, 16)  # custom output width / height in pixels
AUDIO_SECONDS = Range(0, 36_000)  # start / duration of a slice of an audio file (10 hours)
MAX_TEXT_CHARS = 20_000  # one TTS text or one prompt (about 20 minutes of speech; umT5 reads 512 tokens)
MAX_SCRIPT_CHARS = 200_000  # one script
MAX_SEGMENTS = 1_000  # segments of one script
MAX_SCHEDULE_ENTRIES = 200  # timed prompts of one schedule (each one is a umT5 encoding)
MAX_SPEAKERS = 2  # the multi adapter animates two people
ENCODE_BATCH = 8  # prompts encoded by umT5 at a time


def check_seconds(value: float, *, name: str, bounds: Range = AUDIO_SECONDS) -> float:
    """A time in seconds within ``bounds`` (finite, not negative)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not bounds.lo <= value <= bounds.hi:
        raise InputError(
            f"{name} {value!r} must be a number of seconds between {bounds.lo} and {bounds.hi:,}"
        )
    return float(value)


def check_text_length(text: str, limit: int, *, name: str, what: str = "text") -> None:
    """``text`` holds at most ``limit`` characters (a cap on the work a prompt can ask for)."""
    if isinstance(text, str) and len(text) > limit:
        raise InputError(
            f"{name} is {len(text):,} characters long, more than the {limit:,} allowed for one {what}: "
            "split it into several runs"
        )


_WXH = re.compile(r"^\s*(\d+)\s*[xX*]\s*(\d+)\s*$")


# ============================================================================ sampler settings
def check_window(
    frame_num: int, motion_frame: int, *, frame_name: str = "frame_num", motion_name: str = "motion_frame"
) -> None:
    """``frame_num`` and ``motion_frame`` are 4n+1 within their :data:`FRAME_NUM` / :data:`MOTION_FRAME`
    ranges and ``motion_frame < frame_num``."""
    if (
        isinstance(frame_num, bool)
        or not isinstance(frame_num, int)
        or frame_num < FRAME_NUM.lo
        or (frame_num - 1) % 4
    ):
        raise InputError(
            f"{frame_name} {frame_num} must be 4n+1 and at least 5: use 81 (as trained), 49, 33 or 17"
        )
    if frame_num > FRAME_NUM.hi:
        raise InputError(f"{frame_name} {frame_num} is above {FRAME_NUM.hi}: use 81 (as trained)")
    if isinstance(motion_frame, bool) or not isinstance(motion_frame, int) or motion_frame < 1:
        raise InputError(f"{motion_name} {motion_frame} must be 4n+1 and positive: use 9 (the default) or 5")
    if (motion_frame - 1) % 4:
        raise InputError(f"{motion_name} {motion_frame} must be 4n+1: use 9 (the default) or 5")
    if motion_frame >= frame_num:
        raise InputError(
            f"{motion_name} {motion_frame} must be smaller than {frame_name} {frame_num}: "
            "use 9 with 81 frames, 5 with 17 or 33"
        )


def check_size(size: str, *, name: str = "size") -> tuple[int, int] | None:
    """A bucket name (returns None) or ``WxH`` in multiples of 16 (returns ``(height, width)``)."""
    if not isinstance(size, str):
        raise InputError(f"{name} {size!r} is not text: use infinitetalk-480, infinitetalk-720 or WxH")
    if size in SIZE_NAMES:
        return None
    match = _WXH.match(size)
    if match is None:
        raise InputError(
            f"{name} '{size}' is unknown: use infinitetalk-480, infinitetalk-720 or WxH (e.g. 832x480)"
        )
    w, h = int(match[1]), int(match[2])
    if w < 16 or h < 16 or w % 16 or h % 16:
        raise InputError(
            f"{name} '{size}': width and height must be multiples of 16, at least 16 (e.g. 832x480)"
        )
    if w > OUTPUT_SIDE.hi or h > OUTPUT_SIDE.hi:
        raise InputError(
            f"{name} '{size}' is larger than {OUTPUT_SIDE.hi} pixels on a side: use 832x480 or 1280x720"
        )
    return h, w


def check_config(config, *, size_name: str = "size") -> None:
    """Every setting of a :class:`~infinitetalk.pipeline.GenerationConfig` (no inputs needed)."""
    c = config
    if c.mode not in ("streaming", "clip"):
        raise InputError(f"mode '{c.mode}' is unknown: use 'streaming' or 'clip'")
    check_window(c.frame_num, c.motion_frame)
    check_size(c.size, name=size_name)
    if isinstance(c.steps, bool) or not isinstance(c.steps, int) or not STEPS.lo <= c.steps <= STEPS.hi:
        raise InputError(
            f"steps {c.steps} must be between {STEPS.lo} and {STEPS.hi} (40 is the default, 4-8 with a distill LoRA)"
        )
    if c.max_frame_num is not None and not 1 <= c.max_frame_num <= MAX_FRAMES.hi:
        raise InputError(
            f"max_frame_num {c.max_frame_num} must be between 1 and {MAX_FRAMES.hi:,} (or None for the whole audio)"
        )
    if not 0.0 <= c.color_correction_strength <= 1.0:
        raise InputError(f"color_correction_strength {c.color_correction_strength} must be in [0, 1]")
    if not 0.0 <= getattr(c, "color_anchor", 0.0) <= 100.0:
        raise InputError(f"color_anchor {c.color_anchor} must be a ΔE in 0..100 (about 4; 0 = off)")
    if not c.effective_shift > 0:
        raise InputError(f"shift {c.shift} must be positive (7 at 480p, 11 at 720p)")
    if c.sampler not in SAMPLERS:
        raise InputError(f"sampler '{c.sampler}' is unknown: use one of {', '.join(SAMPLERS)}")
    for field, value in (("text_scale", c.text_scale), ("audio_scale", c.audio_scale)):
        if not math.isfinite(value) or value < 0:
            raise InputError(f"{field} {value} must be a number >= 0 (5 for text, 4 for audio by default)")


# ============================================================================ boxes and masks
def _fmt_box(box: Sequence[float]) -> str:
    return ",".join(f"{v:g}" for v in box)


def parse_boxes(spec: str | Sequence[str], *, name: str = "speaker_boxes") -> list[Box]:
    """``'x0,y0,x1,y1; x0,y0,x1,y1'`` (or a list of such strings) -> two boxes, or ``[]`` for an empty spec."""
    text = spec if isinstance(spec, str) else ";".join(str(s) for s in spec)
    parts = [p.strip() for p in re.split(r"[;\n]", text) if p.strip()]
    boxes = [_parse_box(part, name) for part in parts]
    if boxes and len(boxes) != 2:
        raise InputError(
            f"{name}: give exactly two boxes (person 1; person 2), got {len(boxes)}: "
            "e.g. '0,0,416,480; 416,0,832,480'"
        )
    return boxes


def parse_speaker_regions(text: str, *, name: str = "speaker_boxes") -> SpeakerRegions:
    """``'x0,y0,x1,y1; x0,y0,x1,y1'`` (pixels; ``;`` or newlines between people) -> two people's regions
    (:func:`parse_boxes`' messages; an empty text is refused)."""
    boxes = parse_boxes(text, name=name)
    if not boxes:
        raise InputError(f"{name}: give exactly two boxes (person 1; person 2), got 0")
    return SpeakerRegions(bboxes=boxes)


def _parse_box(part: str, name: str) -> Box:
    fields = [f for f in re.split(r"[,\s]+", part) if f]
    try:
        values = [float(f) for f in fields]
    except ValueError:
        values = []
    if len(values) != 4:
        raise InputError(f"{name}: '{part}' is not 'x0,y0,x1,y1' (pixels, e.g. '0,0,416,480')")
    if not all(math.isfinite(v) for v in values):
        raise InputError(f"{name}: '{part}' holds a value that is not a finite number: use pixel coordinates")
    x0, y0, x1, y1 = values
    if x1 <= x0 or y1 <= y0:
        raise InputError(
            f"{name}: '{part}' is empty or inverted: x1 must exceed x0 and y1 exceed y0 (x0,y0 = top left)"
        )
    return x0, y0, x1, y1


def check_boxes_in_frame(
    boxes: Sequence[Box], width: int, height: int, *, name: str = "speaker_boxes"
) -> None:
    """Every box lies inside the ``width x height`` reference image (pixels)."""
    for i, box in enumerate(boxes):
        x0, y0, x1, y1 = box
        if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
            raise InputError(
                f"{name}: box {i + 1} '{_fmt_box(box)}' lies outside the {width}x{height} reference image: "
                f"keep x within 0..{width} and y within 0..{height} (pixels of the input image)"
            )


def masks_to_boxes(
    masks: np.ndarray | torch.Tensor, frame_hw: tuple[int, int] | None, *, name: str = "speaker_masks"
) -> list[Box]:
    """Two person masks ``(2, H, W)`` (values > 0.5 are the person) -> their bounding boxes, checked against
    the reference frame size ``(H, W)``."""
    m = masks.detach().cpu().numpy() if isinstance(masks, torch.Tensor) else np.asarray(masks)
    if m.ndim != 3 or m.shape[0] != 2:
        raise InputError(
            f"{name}: expected a batch of 2 masks (person 1, person 2), got shape {tuple(m.shape)}: "
            "join two masks into one batch"
        )
    if frame_hw is not None and tuple(m.shape[1:]) != tuple(frame_hw):
        raise InputError(
            f"{name} are {m.shape[2]}x{m.shape[1]} but the reference is {frame_hw[1]}x{frame_hw[0]}: "
            "draw the masks on the same image (or resize them to it)"
        )
    boxes = []
    for i in range(2):
        ys, xs = np.nonzero(np.asarray(m[i], dtype=np.float64) > 0.5)
        if ys.size == 0:
            raise InputError(f"{name}: mask {i + 1} is empty: paint the region of person {i + 1}")
        boxes.append((float(xs.min()), float(ys.min()), float(xs.max()) + 1, float(ys.max()) + 1))
    return boxes


def check_speaker_layout(
    num_speakers: int, *, regions_given: bool, name: str = "speaker_boxes", fix: str = ""
) -> None:
    """Person regions only make sense with two speakers' audio."""
    if num_speakers == 1 and regions_given:
        raise InputError(
            f"{name} place two people but the audio has one speaker: "
            + (fix or "give the second speaker's audio, or clear the regions")
        )


def speaker_regions(
    num_speakers: int,
    frame_hw: tuple[int, int],
    *,
    boxes: str | Sequence[str] = "",
    masks=None,
    boxes_name: str = "speaker_boxes",
    masks_name: str = "speaker_masks",
    fix: str = "connect audio_2 on InfiniteTalk Audio Embed, or clear the boxes and masks",
):
    """Person regions from box text or two masks, checked against the reference frame ``(H, W)`` and the
    number of speakers: a :class:`~infinitetalk.config.SpeakerRegions`, or None (left/right halves)."""
    parsed = parse_boxes(boxes, name=boxes_name) if boxes else []
    given = boxes_name if parsed else masks_name if masks is not None else ""
    check_speaker_layout(num_speakers, regions_given=bool(given), name=given, fix=fix)
    if num_speakers < 2:
        return None
    if parsed:
        check_boxes_in_frame(parsed, frame_hw[1], frame_hw[0], name=boxes_name)
        return SpeakerRegions(bboxes=parsed)
    if masks is not None:
        return SpeakerRegions(bboxes=masks_to_boxes(masks, frame_hw, name=masks_name))
    return None


# ============================================================================ images
def to_rgb8(image: np.ndarray, *, name: str = "image") -> np.ndarray:
    """Any image array -> ``uint8 (H, W, 3)``: greyscale repeated, alpha composited over white,
    16-bit and float (``[0, 1]``) scaled. Anything else is refused."""
    a = np.asarray(image)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[-1] not in (1, 2, 3, 4) or a.shape[0] < 1 or a.shape[1] < 1:
        raise InputError(
            f"{name} has shape {tuple(np.asarray(image).shape)}: expected one picture (height, width, 3); "
            "give an RGB image (a batch goes to the sampler as a video)"
        )
    a = _to_unit_float(a, name)  # float32 in [0, 1]
    if a.shape[-1] in (2, 4):
        alpha = a[..., -1:]
        if float(alpha.min()) < 1.0:
            logger.info("%s has transparency: composited over white", name)
        a = a[..., :-1] * alpha + (1.0 - alpha)
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    return np.ascontiguousarray(np.round(a * 255.0).astype(np.uint8))


def _to_unit_float(a: np.ndarray, name: str) -> np.ndarray:
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    if a.dtype == np.uint16:
        return a.astype(np.float32) / 65535.0
    if a.dtype == np.bool_:
        return a.astype(np.float32)
    if np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise InputError(f"{name} holds NaN or infinite pixels: check the node that made it")
        return np.clip(a, 0.0, 1.0).astype(np.float32)
    raise InputError(f"{name} has pixel type {a.dtype}: give an 8-bit, 16-bit or float image")


def check_image_size(height: int, width: int, *, name: str = "image", min_side: int = MIN_IMAGE_SIDE) -> None:
    """Refuse images too small to hold a face (below ``min_side``) or too large to decode safely."""
    if min(height, width) < min_side:
        raise InputError(
            f"{name} is {width}x{height} pixels: too small to hold a face (at least {MIN_IMAGE_SIDE} pixels a "
            "side); use a larger portrait, 480 pixels or more looks best"
        )
    if max(height, width) > MAX_IMAGE_SIDE:
        raise InputError(
            f"{name} is {width}x{height} pixels: larger than {MAX_IMAGE_SIDE} on a side; downscale it "
            "(the output is 832x480 or 1280x720 anyway)"
        )


def warn_if_upscaled(height: int, width: int, out_h: int, out_w: int, *, name: str = "image") -> float:
    """Log a warning when the reference is enlarged more than ``UPSCALE_WARNING`` times; returns the factor."""
    scale = max(out_h / height, out_w / width)
    if scale > UPSCALE_WARNING:
        logger.warning(
            "%s is %dx%d, smaller than the %dx%d output: it is enlarged %.1fx and will look soft; "
            "use a larger image or a smaller size",
            name, width, height, out_w, out_h, scale,
        )  # fmt: skip
    return scale


def output_size(size: str, height: int, width: int, *, name: str = "size") -> tuple[int, int]:
    """``(height, width)`` of the video for a size option and a reference of ``height x width``."""
    check_size(size, name=name)
    return target_size(size, height, width)


# ============================================================================ audio
def check_sample_rate(sample_rate: int, *, name: str = "audio") -> None:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)):
        raise InputError(f"{name} sample rate {sample_rate!r} is not a whole number of Hz")
    if not MIN_SAMPLE_RATE <= int(sample_rate) <= MAX_SAMPLE_RATE:
        raise InputError(
            f"{name} sample rate {sample_rate} Hz is outside {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz: "
            "re-export the audio at 16, 44.1 or 48 kHz"
        )


def check_audio(wave: np.ndarray, sample_rate: int, *, name: str = "audio") -> np.ndarray:
    """A waveform ``(N,)`` or ``(channels, N)`` at ``sample_rate`` -> float32 ``(channels, N)``, checked."""
    check_sample_rate(sample_rate, name=name)
    w = np.asarray(wave)
    if w.ndim == 1:
        w = w[None]
    if w.ndim != 2 or w.shape[0] < 1 or w.shape[0] > MAX_CHANNELS:
        raise InputError(
            f"{name} waveform has shape {tuple(np.asarray(wave).shape)}: expected (samples,) or "
            f"(channels, samples) with at most {MAX_CHANNELS} channels, channels first"
        )
    if not np.issubdtype(w.dtype, np.floating):
        raise InputError(f"{name} samples are {w.dtype}: expected float samples in [-1, 1]")
    if w.shape[1] == 0:
        raise InputError(f"{name} holds no samples: pick a file with sound in it")
    if w.shape[1] / sample_rate < MIN_AUDIO_S:
        raise InputError(
            f"{name} lasts {1000 * w.shape[1] / sample_rate:.1f} ms: shorter than one video frame (40 ms); "
            "give at least a syllable of speech (shorter than one window is fine: it is padded)"
        )
    w = w.astype(np.float32, copy=False)
    if not np.isfinite(w).all():
        raise InputError(f"{name} holds NaN or infinite samples: re-export the audio file")
    return w


def peak_dbfs(wave: np.ndarray) -> float:
    peak = float(np.max(np.abs(wave))) if np.size(wave) else 0.0
    return 20 * math.log10(peak) if peak > 0 else float("-inf")


def check_not_silent(tracks: Sequence[np.ndarray], names: Sequence[str]) -> None:
    """Refuse speech when every track is silent (nothing for the lips to follow)."""
    peaks = [peak_dbfs(t) for t in tracks]
    if peaks and all(p < 20 * math.log10(SILENCE_PEAK) for p in peaks):
        what = " and ".join(names)
        loudest = max(peaks)
        level = "digital silence" if loudest == float("-inf") else f"peak {loudest:.0f} dBFS"
        raise InputError(
            f"{what} {'is' if len(names) == 1 else 'are'} silent ({level}): the lips would not move; "
            "check the file, its start/duration and that the right track is connected"
        )


# ============================================================================ video
def check_video_frames(num_frames: int, path: str | os.PathLike, *, name: str = "video") -> None:
    if num_frames < 1:
        raise InputError(f"{name} '{path}' holds no video frames: re-encode it or pick another video")


# ============================================================================ outputs
def safe_output_path(prefix: str, root: str | os.PathLike, *, name: str = "filename_prefix") -> Path:
    """``root / prefix``, refusing anything that could leave ``root``: absolute paths, drive letters,
    ``..`` parts, NUL bytes, and symbolic links that point outside. Returns the joined (unresolved) path."""
    if not isinstance(prefix, str) or not prefix.strip():
        raise InputError(f"{name} is empty: give a relative name such as 'InfiniteTalk/video'")
    if "\x00" in prefix:
        raise InputError(f"{name} {prefix!r} holds a NUL character: use letters, digits, '_', '-' and '/'")
    fix = "use a relative name inside the output folder such as 'InfiniteTalk/video'"
    posix, windows = PurePosixPath(prefix), PureWindowsPath(prefix)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or prefix.startswith(("\\", "~")):
        raise InputError(f"{name} '{prefix}' is an absolute path: {fix}")
    if ".." in posix.parts or ".." in windows.parts:
        raise InputError(f"{name} '{prefix}' climbs out of the output folder with '..': {fix}")
    root = Path(root)
    target = root / prefix
    real_root = os.path.realpath(root)
    real_parent = os.path.realpath(target.parent)
    if os.path.commonpath([real_root, real_parent]) != real_root:
        raise InputError(f"{name} '{prefix}' leads outside the output folder through a link: {fix}")
    return target


# ============================================================================ memory
MEMORY_FIX = (
    "load the DiT as fp8 (quantization fp8_e4m3fn), keep DiT blocks in CPU memory (block_swap -1 = auto, "
    "or 10-40; --block_swap auto, --offload_model), or use a smaller size or frame_num"
)


class OutOfMemory(InfiniteTalkError, torch.OutOfMemoryError):
    """Device memory ran out. Still a ``torch.OutOfMemoryError`` so hosts (ComfyUI) free their models."""


@contextlib.contextmanager
def explain_out_of_memory(stage: str) -> Iterator[None]:
    """Turn an out-of-memory error during ``stage`` into one line that names the fixes."""
    try:
        yield
    except OutOfMemory:
        raise
    except torch.OutOfMemoryError as err:
        first = (str(err).strip().splitlines() or ["out of memory"])[0]
        raise OutOfMemory(f"out of memory while {stage} ({first[:160]}): {MEMORY_FIX}") from err
