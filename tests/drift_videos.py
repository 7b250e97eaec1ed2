"""Synthetic talking-head videos with known, injected drift (for the telemetry tests).

Every video is a real face (scikit-image's astronaut, 256x256, so the Haar detector finds it) at 25 fps,
streamed chunk by chunk from a function of the frame index; the injected amount at each frame is known, so
a test can say what each window should measure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from tests.photos import astronaut

SIZE = 256
FPS = 25
JOINS = (81, 153, 225)  # window joins of a streamed run (81-frame windows, 9 motion frames)


def base_image(two: bool = False) -> np.ndarray:
    from PIL import Image

    img = np.asarray(Image.fromarray(astronaut()).resize((SIZE, SIZE), Image.BILINEAR))
    return np.concatenate([img, img], axis=1) if two else img


def face_box(image: np.ndarray, k: int = 0) -> tuple[float, float, float, float]:
    """The detector's face box (person ``k`` from the left) in the undrifted image, as the meter finds it."""
    from infinitetalk.faces import detect_faces
    from infinitetalk.telemetry import DETECT_SIDE

    faces = sorted(detect_faces(image, work_size=DETECT_SIDE, landmarks=False)[:2], key=lambda f: f.box[0])
    return faces[k].box


class Synthetic:
    """``frame(i) -> uint8 (H, W, 3)``; ``chunks(n)`` streams them; ``num_frames``."""

    def __init__(self, num_frames: int, make: Callable[[int], np.ndarray], image: np.ndarray):
        self.num_frames, self.make, self.image = num_frames, make, image

    def frame(self, i: int) -> np.ndarray:
        return self.make(i)

    def chunks(self, size: int = 16) -> Iterator[np.ndarray]:
        for a in range(0, self.num_frames, size):
            yield np.stack([self.make(i) for i in range(a, min(self.num_frames, a + size))])


def undrifted(num_frames: int = 250) -> Synthetic:
    image = base_image()
    return Synthetic(num_frames, lambda i: image, image)


def colour_ramp(de_per_minute: float, num_frames: int = 250) -> Synthetic:
    """Every pixel shifted in Lab by ``de_per_minute * t / 60`` along (a*, b*) = (0.6, 0.8): the ΔE76 between
    frame and reference means grows by exactly that much (before uint8 rounding and gamut clipping)."""
    import cv2

    image = base_image()
    lab = cv2.cvtColor(image.astype(np.float32) / 255, cv2.COLOR_RGB2Lab)
    direction = np.array([0.0, 0.6, 0.8], np.float32)

    def make(i: int) -> np.ndarray:
        shifted = cv2.cvtColor(lab + direction * (de_per_minute * i / FPS / 60), cv2.COLOR_Lab2RGB)
        return np.clip(shifted * 255 + 0.5, 0, 255).astype(np.uint8)

    return Synthetic(num_frames, make, image)


def blur_ramp(max_sigma: float, num_frames: int = 250) -> Synthetic:
    """Gaussian blur whose sigma grows linearly from 0 to ``max_sigma`` px."""
    import cv2

    image = base_image()

    def make(i: int) -> np.ndarray:
        sigma = max_sigma * i / (num_frames - 1)
        return image if sigma < 0.05 else cv2.GaussianBlur(image, (0, 0), sigma)

    return Synthetic(num_frames, make, image)


def jumps(jump: float, flicker: float = 2.0, num_frames: int = 250) -> Synthetic:
    """Brightness flickers by ``flicker`` grey levels every other frame (the ordinary change inside windows,
    up on odd frames) and steps up by ``jump`` grey levels at each window join (all odd frames): the change
    across a join is ``jump + flicker``, ``jump`` more than an ordinary frame's."""
    image = base_image().astype(np.float32) * 0.7 + 20  # room above for three steps

    def offset(i: int) -> float:
        return jump * sum(1 for j in JOINS if i >= j) + (flicker if i % 2 else 0.0)

    return Synthetic(num_frames, lambda i: np.clip(image + offset(i), 0, 255).astype(np.uint8), base_image())


def mouth_moves(
    speaking: np.ndarray,
    silent_amp: float,
    speaking_amp: float = 12.0,
    two: bool = False,
    silent_amp2: float | None = None,
) -> Synthetic:
    """The mouth region (:data:`infinitetalk.telemetry.MOUTH_BOX` of the face box) flickers by ``±amp`` grey
    levels every frame: ``speaking_amp`` where ``speaking[k, i]``, ``silent_amp`` (speaker 2:
    ``silent_amp2``) where not. Everything else is still."""
    from infinitetalk.telemetry import MOUTH_BOX, _clip_box, _sub_box

    image = base_image(two)
    boxes = [
        _clip_box(_sub_box(face_box(image, k), MOUTH_BOX), *image.shape[:2]) for k in range(2 if two else 1)
    ]
    amps = [silent_amp, silent_amp if silent_amp2 is None else silent_amp2]
    base = image.astype(np.float32)

    def make(i: int) -> np.ndarray:
        out = base.copy()
        for k, (x0, y0, x1, y1) in enumerate(boxes):
            amp = speaking_amp if speaking[k, i] else amps[k]
            out[y0:y1, x0:x1] += amp if i % 2 else -amp
        return np.clip(out, 0, 255).astype(np.uint8)

    return Synthetic(speaking.shape[1], make, image)


def moving_face(px_per_frame: float, num_frames: int = 250) -> Synthetic:
    """The whole picture slides right by ``px_per_frame`` (bilinear, edges reflected)."""
    import cv2

    image = base_image()

    def make(i: int) -> np.ndarray:
        m = np.float32([[1, 0, px_per_frame * i], [0, 1, 0]])
        return cv2.warpAffine(image, m, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)

    return Synthetic(num_frames, make, image)


def speech_pattern(num_frames: int = 250, period: int = 50, offset: int = 0) -> np.ndarray:
    """``bool (num_frames,)``: speaking for ``period`` frames, silent for ``period``, ... (starting at ``offset``)."""
    i = np.arange(num_frames) + offset
    return (i // period) % 2 == 0


def speech_wave(active: np.ndarray) -> np.ndarray:
    """A 16 kHz track that is a voiced buzz on active frames and digital silence elsewhere."""
    t = np.arange(len(active) * 640) / 16000
    buzz = 0.3 * np.sin(2 * np.pi * 160 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    return (buzz * np.repeat(active, 640)).astype(np.float32)
