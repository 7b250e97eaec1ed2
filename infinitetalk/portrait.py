"""Portrait check, head-and-shoulders crop, and speaker regions found from faces.

``check_portrait(image)`` measures what production guides for talking-head video ask of the input
photo and returns one warning line per failed rule, each with its fix (rules and thresholds:
``RULES`` below and docs/PRODUCTION.md). ``crop_head_and_shoulders`` frames the main face at the aspect of a
size bucket. ``find_speakers`` turns the two faces of a two-person image into the two person regions
of the two-speaker mode (left to right), expanded from each face down to the body like the reference's
default regions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from .buckets import resize_and_crop_image, target_size
from .config import SpeakerRegions
from .errors import InputError
from .faces import Face, detect_faces

logger = logging.getLogger(__name__)

# Thresholds of the rules (documented in docs/PRODUCTION.md; tests use the same names).
MIN_IMAGE_SIDE = 512  # px, shorter image side
MIN_FACE_PX = 128  # px, face box side in the image
FACE_HEIGHT_RANGE = (0.15, 0.55)  # face box height / image height for head-and-shoulders framing
MAX_CENTRE_OFFSET = 0.15  # |face centre x - image centre x| / image width
EYE_LINE_RANGE = (0.2, 0.5)  # eye height / image height (the upper third is ideal)
EDGE_MARGIN = 0.02  # a face box closer than this fraction of the image to an edge is cut off
MAX_ROLL_DEG = 12.0  # tilt of the eye line
MAX_YAW = 0.12  # |eye midpoint x - face centre x| / face width
MIN_SHARPNESS = 60.0  # variance of the Laplacian of the face at 128 px
EXPOSURE_RANGE = (70.0, 200.0)  # mean face brightness (0-255)
MAX_CLIPPED = 0.05  # fraction of face pixels at 0-4 or 251-255

RULES = {
    "no_face": "no face found: use a photo with one clear, frontal, unoccluded face",
    "faces": "{n} faces found, {expected} expected: {fix}",
    "image_small": "image is {w}x{h} px: use a photo of at least {min} px on the shorter side",
    "face_small": "face is {px} px: use a sharper or closer photo where the face is at least {min} px",
    "too_far": "face fills {pct}% of the height: crop closer, to head and shoulders (15-55%)",
    "too_close": "face fills {pct}% of the height: show more, head and shoulders (15-55%)",
    "off_centre": "face is off-centre ({pct}% of the width {side}): crop so the face is centred",
    "eye_line": "eyes at {pct}% of the height: frame so the eyes sit near the upper third (20-50%)",
    "cropped": "face touches the {edge} edge: leave space around the head",
    "no_eyes": "eyes not found: use a frontal photo with open eyes, no sunglasses or hair over them",
    "tilted": "head tilted {deg} degrees: straighten the photo or use one with a level head",
    "turned": "face turned to the side: use a frontal photo (looking at the camera)",
    "blurry": "face is blurry (sharpness {value}): use a sharper photo (focus on the eyes)",
    "dark": "face is dark (brightness {value}/255): use a brighter photo or raise the exposure",
    "bright": "face is overexposed (brightness {value}/255): use a photo with less light on the face",
    "clipped": "{pct}% of the face is pure black or white: use a photo with even lighting",
}


@dataclass
class PortraitReport:
    """What :func:`check_portrait` measured; ``warnings`` holds one line per failed rule."""

    faces: list[Face]
    warnings: list[str] = field(default_factory=list)
    codes: list[str] = field(default_factory=list)  # rule names of the warnings, same order
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.warnings

    def text(self) -> str:
        """Multi-line summary: the measures, then the warnings (or that all rules pass)."""
        lines = [f"faces: {len(self.faces)}"]
        lines += [f"{k}: {v:g}" for k, v in self.metrics.items()]
        lines += [f"WARNING: {w}" for w in self.warnings] or ["all portrait checks passed"]
        return "\n".join(lines)

    def _warn(self, code: str, **values) -> None:
        self.codes.append(code)
        self.warnings.append(RULES[code].format(**values))


def check_portrait(
    image: np.ndarray, expected_faces: int = 1, faces: list[Face] | None = None
) -> PortraitReport:
    """Measure ``image`` (uint8 ``(H, W, 3)``) against the portrait rules; the main face is the largest."""
    image = _check_image(image)
    faces = detect_faces(image) if faces is None else faces
    report = PortraitReport(faces=faces)
    h, w = image.shape[:2]
    if min(h, w) < MIN_IMAGE_SIDE:
        report._warn("image_small", w=w, h=h, min=MIN_IMAGE_SIDE)
    if not faces:
        report._warn("no_face")
        return report
    if len(faces) != expected_faces:
        fix = (
            "crop the photo to one person, or use two speakers"
            if len(faces) > expected_faces
            else "use a photo showing every speaker's face"
        )
        report._warn("faces", n=len(faces), expected=expected_faces, fix=fix)
    main = sorted(faces[:expected_faces], key=lambda f: f.center[0])  # left to right
    for i, face in enumerate(main):
        one = PortraitReport(faces=[face])
        _check_framing(one, face, h, w, single=expected_faces == 1)
        _check_pose(one, face)
        _check_quality(one, image, face)
        side = "" if len(main) == 1 else ("left", "right")[i] if len(main) == 2 else f"face {i + 1}"
        report.metrics.update({f"{side}_{k}" if side else k: v for k, v in one.metrics.items()})
        report.codes += one.codes
        report.warnings += [f"{side} face: {w}" if side else w for w in one.warnings]
    return report


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise InputError(f"portrait {image.dtype} {tuple(image.shape)}: expected a uint8 (H, W, 3) RGB image")
    return image


def _check_framing(report: PortraitReport, face: Face, h: int, w: int, single: bool) -> None:
    m = report.metrics
    m["face_px"] = round(face.size)
    m["face_height_pct"] = round(100 * face.height / h, 1)
    if face.size < MIN_FACE_PX:
        report._warn("face_small", px=round(face.size), min=MIN_FACE_PX)
    lo, hi = FACE_HEIGHT_RANGE
    if face.height / h < lo:
        report._warn("too_far", pct=round(100 * face.height / h))
    elif face.height / h > hi:
        report._warn("too_close", pct=round(100 * face.height / h))
    offset = (face.center[0] - w / 2) / w
    m["centre_offset_pct"] = round(100 * offset, 1)
    if single and abs(offset) > MAX_CENTRE_OFFSET:
        report._warn("off_centre", pct=round(100 * abs(offset)), side="left" if offset < 0 else "right")
    eye_y = _eye_y(face)
    m["eye_line_pct"] = round(100 * eye_y / h, 1)
    if not EYE_LINE_RANGE[0] <= eye_y / h <= EYE_LINE_RANGE[1]:
        report._warn("eye_line", pct=round(100 * eye_y / h))
    x0, y0, x1, y1 = face.box
    for edge, gap in (("top", y0 / h), ("bottom", (h - y1) / h), ("left", x0 / w), ("right", (w - x1) / w)):
        if gap < EDGE_MARGIN:
            report._warn("cropped", edge=edge)


def _eye_y(face: Face) -> float:
    if "left_eye" in face.landmarks:
        return (face.landmarks["left_eye"][1] + face.landmarks["right_eye"][1]) / 2
    return face.box[1] + 0.4 * face.height  # eyes sit at about 40% of a Haar face box


def face_pose(face: Face) -> tuple[float, float] | None:
    """(roll in degrees, yaw as the eye midpoint's offset from the box centre / face width), or None."""
    if "left_eye" not in face.landmarks:
        return None
    (lx, ly), (rx, ry) = face.landmarks["left_eye"], face.landmarks["right_eye"]
    roll = float(np.degrees(np.arctan2(ry - ly, rx - lx)))
    yaw = ((lx + rx) / 2 - face.center[0]) / face.width
    return roll, float(yaw)


def _check_pose(report: PortraitReport, face: Face) -> None:
    pose = face_pose(face)
    if pose is None:
        report._warn("no_eyes")
        return
    roll, yaw = pose
    report.metrics["roll_deg"] = round(roll, 1)
    report.metrics["yaw"] = round(yaw, 3)
    if abs(roll) > MAX_ROLL_DEG:
        report._warn("tilted", deg=round(abs(roll)))
    if abs(yaw) > MAX_YAW:
        report._warn("turned")


def _face_grey(image: np.ndarray, face: Face, side: int = 128) -> np.ndarray:
    import cv2

    x0, y0, x1, y1 = (int(round(v)) for v in face.box)
    crop = image[max(0, y0) : y1, max(0, x0) : x1]
    grey = cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, (side, side), interpolation=cv2.INTER_AREA)


def sharpness(image: np.ndarray, face: Face) -> float:
    """Variance of the Laplacian of the face resized to 128x128 and scaled to a contrast (standard
    deviation) of 50 grey levels, so that a dark or flat but sharp photo is not called blurry."""
    import cv2

    grey = _face_grey(image, face).astype(np.float64)
    grey = (grey - grey.mean()) * (50.0 / max(grey.std(), 1.0))
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def _check_quality(report: PortraitReport, image: np.ndarray, face: Face) -> None:
    m = report.metrics
    m["sharpness"] = round(sharpness(image, face), 1)
    if m["sharpness"] < MIN_SHARPNESS:
        report._warn("blurry", value=m["sharpness"])
    grey = _face_grey(image, face)
    m["brightness"] = round(float(grey.mean()), 1)
    clipped = float(((grey < 5) | (grey > 250)).mean())
    m["clipped_pct"] = round(100 * clipped, 1)
    if m["brightness"] < EXPOSURE_RANGE[0]:
        report._warn("dark", value=round(m["brightness"]))
    elif m["brightness"] > EXPOSURE_RANGE[1]:
        report._warn("bright", value=round(m["brightness"]))
    if clipped > MAX_CLIPPED:
        report._warn("clipped", pct=round(100 * clipped))


# ============================================================================ head-and-shoulders crop
def head_and_shoulders_box(
    face: Face, height: int, width: int, aspect: float, face_fraction: float = 0.3
) -> tuple[int, int, int, int]:
    """Crop box ``(x0, y0, x1, y1)`` of aspect ``aspect`` (= h / w) framing head and shoulders.

    The face box fills ``face_fraction`` of the crop height, the eyes sit on the upper third line and the
    face is centred horizontally; the box is moved (then shrunk, keeping its aspect) to stay inside the image.
    """
    ch = face.height / face_fraction
    cw = ch / aspect
    scale = min(1.0, height / ch, width / cw)
    ch, cw = ch * scale, cw * scale
    top = _eye_y(face) - ch / 3
    left = face.center[0] - cw / 2
    top = min(max(0.0, top), height - ch)
    left = min(max(0.0, left), width - cw)
    return round(left), round(top), round(left + cw), round(top + ch)


def crop_head_and_shoulders(image: np.ndarray, face: Face, size: str = "infinitetalk-480") -> np.ndarray:
    """The image cropped to head-and-shoulders framing and resized to its size bucket (or ``WxH``)."""
    image = _check_image(image)
    h, w = image.shape[:2]
    th, tw = target_size(size, h, w)
    x0, y0, x1, y1 = head_and_shoulders_box(face, h, w, th / tw)
    th, tw = target_size(size, y1 - y0, x1 - x0)
    return resize_and_crop_image(image[y0:y1, x0:x1], (th, tw))


# ============================================================================ two speakers
def find_speakers(
    image: np.ndarray,
    faces: list[Face] | None = None,
    margin: float = 0.05,
    regions_name: str = "speaker_boxes / speaker_masks",
) -> SpeakerRegions:
    """Person regions of a two-person image from its two largest faces, person 1 on the left.

    Each face box grows into a body region: 2 face widths to each side, from half a face height above
    the face down to the bottom, kept ``margin`` (the reference's ``face_scale``) away from the top and
    bottom edges, and split at the midpoint between the two faces so the regions never overlap.
    Raises ``InputError`` when fewer than two faces are found (naming ``regions_name``, the host's inputs
    for the regions).
    """
    image = _check_image(image)
    faces = detect_faces(image) if faces is None else faces
    if len(faces) < 2:
        raise InputError(
            f"two speakers but {len(faces)} face{'s' if len(faces) != 1 else ''} found in the image: use a "
            f"photo showing both faces clearly, or give {regions_name} (person 1, person 2)"
        )
    if len(faces) > 2:
        logger.info("%d faces found: the two largest are the speakers", len(faces))
    h, w = image.shape[:2]
    left, right = sorted(faces[:2], key=lambda f: f.center[0])
    split = (left.center[0] + right.center[0]) / 2
    gap = margin * w / 4
    boxes = [
        _body_box(left, h, 0.0, split - gap, margin),
        _body_box(right, h, split + gap, float(w), margin),
    ]
    return SpeakerRegions(bboxes=boxes, face_scale=margin)


def _body_box(
    face: Face, h: int, x_min: float, x_max: float, margin: float
) -> tuple[float, float, float, float]:
    cx = face.center[0]
    x0 = max(x_min, cx - 2.0 * face.width)
    x1 = min(x_max, cx + 2.0 * face.width)
    y0 = max(margin * h, face.box[1] - 0.5 * face.height)
    y1 = (1 - margin) * h
    return float(round(x0)), float(round(y0)), float(round(x1)), float(round(y1))


def draw_regions(image: np.ndarray, regions: SpeakerRegions, faces: list[Face] = ()) -> np.ndarray:
    """Preview: the image with person 1's region tinted red, person 2's blue, and the face boxes drawn."""
    import cv2

    out = _check_image(image).astype(np.float32)
    colours = ((255, 60, 60), (60, 120, 255))
    for (x0, y0, x1, y1), colour in zip(regions.bboxes, colours, strict=False):
        x0, y0, x1, y1 = (int(round(v)) for v in (x0, y0, x1, y1))
        out[y0:y1, x0:x1] = 0.65 * out[y0:y1, x0:x1] + 0.35 * np.asarray(colour, np.float32)
    out = np.ascontiguousarray(out.clip(0, 255).astype(np.uint8))
    for i, (x0, y0, x1, y1) in enumerate(regions.bboxes):
        cv2.rectangle(out, (int(x0), int(y0)), (int(x1) - 1, int(y1) - 1), colours[i % 2], 3)
        cv2.putText(
            out, f"{i + 1}", (int(x0) + 8, int(y0) + 36), cv2.FONT_HERSHEY_SIMPLEX, 1.2, colours[i % 2], 3
        )
    for face in faces:
        x0, y0, x1, y1 = (int(round(v)) for v in face.box)
        cv2.rectangle(out, (x0, y0), (x1, y1), (255, 255, 0), 2)
    return out


def auto_speaker_regions(
    image: np.ndarray, regions_name: str = "speaker_boxes / speaker_masks"
) -> SpeakerRegions | None:
    """Person regions for a two-speaker run when the user gave none: from the faces of ``image``.

    Two or more faces: :func:`find_speakers` (person 1 on the left). One face: ``InputError`` (the second
    speaker has no face to bind to). No face (a drawing, a tiny or turned face): ``None`` with a logged
    warning, so the caller falls back to the reference's left and right halves.
    """
    faces = detect_faces(_check_image(image))
    if not faces:
        logger.warning("two speakers: no face found in the image, using its left and right halves")
        return None
    regions = find_speakers(image, faces, regions_name=regions_name)
    logger.info("two speakers: regions from the faces, person 1 %s, person 2 %s", *regions.bboxes)
    return regions


def format_boxes(boxes) -> str:
    """Boxes as the text of the Sampler's ``speaker_boxes`` input: ``x0,y0,x1,y1; x0,y0,x1,y1``."""
    return "; ".join(",".join(str(round(v)) for v in box) for box in boxes)
