"""Face detectors side by side: accuracy on real photos shipped by registry packages, and speed.

    python bench/face_detection.py                       # OpenCV candidates + the pack's detector
    /tmp/mpvenv/bin/python bench/face_detection.py --only mediapipe-short mediapipe-full

Test images (nothing downloaded):

- ``lfw-faces``: the 100 face crops of scikit-image's ``lfw_subset()`` (real LFW photographs, 25x25 grey),
  upscaled 4x and centred on a 200x200 grey canvas. A hit is a detection whose centre lies in the crop.
- ``lfw-nonfaces``: the 100 non-face crops of the same set, prepared the same way: every detection is a
  false positive.
- ``portraits``: scikit-image ``astronaut()``, matplotlib's ``grace_hopper.jpg``, both side by side
  (two people), and both shrunk so the face is about 48 px: each must give exactly its faces, each
  within IoU >= 0.4 of a hand-labelled box.
- ``camera``: scikit-image ``camera()`` (a face of about 30 px turned to the side): reported, not scored.

Speed: median of 5 runs on a 512x512 portrait and on a 1280x720 frame (one thread, this machine).

mediapipe: only its 0.10.x wheels carry the BlazeFace models, and they pin ``numpy<2`` (0.10.21 and
older) and pull ``opencv-contrib-python``: measure them in a separate virtual environment::

    python3.11 -m venv /tmp/mpvenv && /tmp/mpvenv/bin/pip install "numpy<2" absl-py attrs flatbuffers \\
        "protobuf<5,>=4.25.3" "opencv-python-headless<4.11" pillow scikit-image matplotlib
    /tmp/mpvenv/bin/pip install --no-deps mediapipe==0.10.21
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.photos import ASTRONAUT_FACE, GRACE_FACE, astronaut, grace_hopper, iou, two_people  # noqa: E402


# ============================================================================ candidates
def _cv2_cascade(file: str, neighbours: int = 3):
    import cv2

    path = file if Path(file).is_file() else cv2.data.haarcascades + file
    cascade = cv2.CascadeClassifier(path)

    def run(image: np.ndarray) -> list[tuple]:
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
        scale = min(1.0, 640 / max(grey.shape))
        small = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        small = cv2.equalizeHist(small)
        side = max(20, round(0.05 * min(small.shape)))
        rects = cascade.detectMultiScale(small, 1.1, neighbours, minSize=(side, side))
        return [
            tuple(v / scale for v in (x, y, x + w, y + h)) for x, y, w, h in np.asarray(rects).reshape(-1, 4)
        ]

    return run


def _ours():
    from infinitetalk.faces import detect_faces

    return lambda image: [f.box for f in detect_faces(image)]


def _mediapipe(model: int):
    from mediapipe.python.solutions import face_detection

    detector = face_detection.FaceDetection(model_selection=model, min_detection_confidence=0.5)

    def run(image: np.ndarray) -> list[tuple]:
        rgb = np.ascontiguousarray(np.stack([image] * 3, -1) if image.ndim == 2 else image)
        h, w = rgb.shape[:2]
        out = detector.process(rgb)
        boxes = []
        for d in out.detections or []:
            b = d.location_data.relative_bounding_box
            boxes.append((b.xmin * w, b.ymin * h, (b.xmin + b.width) * w, (b.ymin + b.height) * h))
        return boxes

    return run


CANDIDATES = {
    "ours (haar alt2 + eyes)": _ours,
    "haar default": lambda: _cv2_cascade("haarcascade_frontalface_default.xml"),
    "haar alt": lambda: _cv2_cascade("haarcascade_frontalface_alt.xml"),
    "haar alt2": lambda: _cv2_cascade("haarcascade_frontalface_alt2.xml"),
    "mediapipe-short": lambda: _mediapipe(0),
    "mediapipe-full": lambda: _mediapipe(1),
}


# ============================================================================ images
def _rgb(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.stack([image] * 3, -1) if image.ndim == 2 else image[..., :3])


def lfw_sets() -> tuple[list[np.ndarray], list[np.ndarray]]:
    from skimage import data

    crops = (data.lfw_subset() * 255).astype(np.uint8)  # (200, 25, 25): 100 faces, then 100 non-faces
    out = []
    for crop in crops:
        big = np.asarray(Image.fromarray(crop).resize((100, 100), Image.BICUBIC))
        canvas = np.full((200, 200), 128, np.uint8)
        canvas[50:150, 50:150] = big
        out.append(_rgb(canvas))
    return out[:100], out[100:]


def portraits() -> list[tuple[str, np.ndarray, list[tuple]]]:
    astro, grace = astronaut(), grace_hopper()
    two, boxes = two_people()
    cases = [
        ("astronaut", astro, [ASTRONAUT_FACE]),
        ("grace_hopper", grace, [GRACE_FACE]),
        ("two people", two, boxes),
    ]
    for name, img, face in (("astronaut", astro, ASTRONAUT_FACE), ("grace_hopper", grace, GRACE_FACE)):
        k = 48 / (face[2] - face[0])
        size = (round(img.shape[1] * k), round(img.shape[0] * k))
        cases.append(
            (
                f"{name} face 48px",
                np.asarray(Image.fromarray(img).resize(size, Image.BOX)),
                [tuple(v * k for v in face)],
            )
        )
    return cases


# ============================================================================ scoring
def score(run, faces, nonfaces, cases) -> dict:
    hits = sum(
        any(50 <= (b[0] + b[2]) / 2 <= 150 and 50 <= (b[1] + b[3]) / 2 <= 150 for b in run(im))
        for im in faces
    )
    fp_nonfaces = sum(len(run(im)) for im in nonfaces)
    ok, notes = 0, []
    for name, img, truth in cases:
        boxes = run(img)
        matched = all(any(iou(b, t) >= 0.4 for b in boxes) for t in truth)
        good = matched and len(boxes) == len(truth)
        ok += good
        if not good:
            notes.append(f"{name}: {len(boxes)} found")
    from skimage import data

    camera = len(run(data.camera()))
    return {
        "lfw_recall": hits,
        "lfw_fp": fp_nonfaces,
        "portraits": f"{ok}/{len(cases)}",
        "notes": notes,
        "camera": camera,
    }


def speed(run, cases) -> tuple[float, float]:
    portrait = cases[0][1]
    frame = np.zeros((720, 1280, 3), np.uint8)
    frame[104:616, 384:896] = portrait
    out = []
    for img in (portrait, frame):
        run(img)
        times = []
        for _ in range(5):
            t = time.perf_counter()
            run(img)
            times.append(time.perf_counter() - t)
        out.append(statistics.median(times) * 1000)
    return out[0], out[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="+", help="candidates to run (default: all that import)")
    args = parser.parse_args()
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:
        pass
    faces, nonfaces = lfw_sets()
    cases = portraits()
    print(
        "| detector | LFW faces found /100 | detections on 100 non-faces | portraits right | camera() faces | ms 512x512 | ms 1280x720 |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, make in CANDIDATES.items():
        if args.only and not any(o in name for o in args.only):
            continue
        try:
            run = make()
        except ImportError as err:
            print(f"| {name} | not installed ({err.name}) | | | | | |")
            continue
        s = score(run, faces, nonfaces, cases)
        t512, t720 = speed(run, cases)
        print(
            f"| {name} | {s['lfw_recall']} | {s['lfw_fp']} | {s['portraits']} | {s['camera']} | {t512:.1f} | {t720:.1f} |"
        )
        for note in s["notes"]:
            print(f"|   | {note} | | | | | |")


if __name__ == "__main__":
    main()
