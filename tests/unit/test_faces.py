"""Face detection, portrait check and automatic speakers on real photographs (scikit-image, matplotlib).

Failure cases are built from the same photos: shrunk into a large canvas (too small), pushed to the
side (off-centre), cut at an edge (cropped), two people where one is expected, blurred, darkened.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from infinitetalk.errors import InputError
from infinitetalk.faces import Face, detect_faces, feathered_mask, track_faces
from infinitetalk.pipeline import speaker_masks
from infinitetalk.portrait import (
    RULES,
    check_portrait,
    crop_head_and_shoulders,
    draw_regions,
    find_speakers,
    head_and_shoulders_box,
)
from tests.needs import need_module
from tests.photos import ASTRONAUT_FACE, GRACE_FACE, astronaut, grace_hopper, iou, two_people

need_module("cv2", "pip install -r requirements.txt (opencv-python-headless<5)")


@pytest.fixture(scope="module")
def grace():
    return grace_hopper()


def _rule_line(report, code: str) -> str:
    """The warning line of ``code``; it must start with the documented text up to its first value."""
    assert code in report.codes, f"{code} not in {report.codes}"
    line = report.warnings[report.codes.index(code)]
    assert line.startswith(RULES[code].split("{")[0]), line
    return line


# ============================================================================ detection
@pytest.mark.parametrize(("photo", "truth"), [(astronaut, ASTRONAUT_FACE), (grace_hopper, GRACE_FACE)])
def test_one_face_found_on_real_portraits(photo, truth):
    faces = detect_faces(photo())
    assert len(faces) == 1
    face = faces[0]
    assert iou(face.box, truth) > 0.5  # hand-labelled box, forehead to chin
    assert 0.5 <= face.confidence <= 1.0
    # both eyes, inside the upper half of the face, left one on the left
    (lx, ly), (rx, ry) = face.landmarks["left_eye"], face.landmarks["right_eye"]
    x0, y0, x1, y1 = face.box
    assert x0 < lx < face.center[0] < rx < x1
    assert y0 < ly < face.center[1] and y0 < ry < face.center[1]


def test_two_real_people_side_by_side():
    image, truth = two_people()
    faces = sorted(detect_faces(image), key=lambda f: f.center[0])
    assert len(faces) == 2
    for face, box in zip(faces, truth, strict=True):
        assert iou(face.box, box) > 0.5


def test_no_face_in_a_photo_without_people():
    from skimage import data

    assert detect_faces(data.coffee()) == []
    assert detect_faces(np.full((256, 256, 3), 128, np.uint8)) == []


def test_boxes_are_in_the_pixels_of_the_image_given(grace):
    """The detector runs at 640 px at most; boxes are mapped back to the input's pixels."""
    big = np.asarray(Image.fromarray(grace).resize((1024, 1200), Image.BILINEAR))  # 2x
    small, large = detect_faces(grace)[0], detect_faces(big)[0]
    assert np.allclose(np.asarray(large.box) / 2, small.box, atol=8)


def test_grey_and_bad_shapes(grace):
    grey = grace.mean(-1).astype(np.uint8)
    assert len(detect_faces(grey)) == 1
    with pytest.raises(InputError, match="expected"):
        detect_faces(np.zeros((4, 4, 4, 3), np.uint8))


# ============================================================================ portrait check
def test_good_portrait_passes_every_rule(grace):
    report = check_portrait(grace)
    assert report.ok, report.warnings
    assert report.metrics["face_px"] >= 200
    assert "all portrait checks passed" in report.text()


def test_small_photo_and_small_face(grace):
    canvas = np.full((600, 512, 3), 128, np.uint8)
    canvas[225:375, 192:320] = np.asarray(Image.fromarray(grace).resize((128, 150), Image.BOX))
    report = check_portrait(canvas)
    assert len(report.faces) == 1
    assert "face is 5" in _rule_line(report, "face_small")  # about 55 px
    assert "crop closer" in _rule_line(report, "too_far")


def test_off_centre(grace):
    canvas = np.full((600, 1200, 3), 128, np.uint8)
    canvas[:, :512] = grace
    line = _rule_line(check_portrait(canvas), "off_centre")
    assert "width left" in line and "crop so the face is centred" in line


def test_cropped_at_an_edge(grace):
    report = check_portrait(grace[:, 170:])  # the left of the face is cut away
    assert "left edge" in _rule_line(report, "cropped")
    assert "shorter side" in _rule_line(report, "image_small")


def test_two_faces_when_one_expected():
    image, _ = two_people()
    line = _rule_line(check_portrait(image), "faces")
    assert line.startswith("2 faces found, 1 expected")
    assert check_portrait(image, expected_faces=2).codes.count("faces") == 0


def test_no_face():
    from skimage import data

    report = check_portrait(data.coffee())
    assert report.codes[-1] == "no_face" and report.warnings[-1] == RULES["no_face"]


def test_blurry_dark_overexposed(grace):
    import cv2

    assert "blurry" in check_portrait(cv2.GaussianBlur(grace, (0, 0), 3)).codes
    dark = check_portrait((grace * 0.3).astype(np.uint8))
    assert "dark" in dark.codes and "blurry" not in dark.codes  # sharpness is contrast-normalised
    bright = check_portrait(np.clip(grace.astype(np.float32) * 2.2, 0, 255).astype(np.uint8))
    assert "clipped" in bright.codes


def test_tilted_and_turned_from_the_eyes():
    face = Face((100, 100, 200, 200), 0.9, {"left_eye": (125, 130), "right_eye": (175, 150)})  # 21.8 deg
    report = check_portrait(np.full((600, 600, 3), 128, np.uint8), faces=[face])
    assert "tilted 22 degrees" in _rule_line(report, "tilted")
    turned = Face((100, 100, 200, 200), 0.9, {"left_eye": (160, 140), "right_eye": (195, 140)})
    assert "turned" in check_portrait(np.full((600, 600, 3), 128, np.uint8), faces=[turned]).codes


def test_head_and_shoulders_crop_frames_the_face():
    image = astronaut()  # face 94 px high, eyes at 20% of the height
    face = detect_faces(image)[0]
    crop = crop_head_and_shoulders(image, face, "infinitetalk-480")
    assert crop.shape == (640, 640, 3)  # the square bucket of a square photo
    report = check_portrait(crop)
    assert len(report.faces) == 1
    assert 25 <= report.metrics["face_height_pct"] <= 38  # 30% wanted (the detector's box varies)
    assert abs(report.metrics["centre_offset_pct"]) < 5
    assert 28 <= report.metrics["eye_line_pct"] <= 40  # the upper third


def test_head_and_shoulders_box_stays_inside_the_image():
    face = Face((10, 10, 110, 110), 0.9)  # top-left corner, large
    x0, y0, x1, y1 = head_and_shoulders_box(face, 300, 400, aspect=480 / 832)
    assert 0 <= x0 < x1 <= 400 and 0 <= y0 < y1 <= 300
    assert abs((y1 - y0) / (x1 - x0) - 480 / 832) < 0.01


# ============================================================================ two speakers
def test_real_two_person_photo_gives_two_regions_left_then_right():
    image, truth = two_people()
    regions = find_speakers(image)
    (a0, ay0, a1, ay1), (b0, by0, b1, by1) = regions.bboxes
    assert a1 <= b0  # person 1 left of person 2, no overlap
    for (x0, y0, x1, y1), face in zip(regions.bboxes, truth, strict=True):
        assert x0 <= face[0] and face[2] <= x1  # each region holds its face ...
        assert y0 <= face[1] and y1 >= 0.9 * image.shape[0]  # ... and the body below it
    masks = speaker_masks(regions, *image.shape[:2])  # what the pipeline builds from them
    assert masks[0, 150, 220] == 1 and masks[1, 250, 700] == 1 and masks[2, 2, 2] == 1
    preview = draw_regions(image, regions, detect_faces(image))
    assert preview.shape == image.shape and not np.array_equal(preview, image)


def test_one_face_in_a_two_speaker_run_is_a_clear_error():
    with pytest.raises(InputError, match="two speakers but 1 face found.*speaker_boxes"):
        find_speakers(astronaut())


def test_speaker_regions_from_given_faces_follow_the_documented_rule():
    """Person 1 is the left face whatever the order given; each region spans 2 face widths to each side of
    its face (docs/PRODUCTION.md), stops short of the midpoint between the faces by margin * w / 4, and runs
    from half a face height above the face to the bottom, kept margin * h away from the top and bottom."""
    h, w = 400, 1000
    right = Face((360, 100, 440, 200), 0.9)  # 80 x 100, centre x 400
    left = Face((200, 20, 260, 90), 0.8)  # 60 x 70, centre x 230
    regions = find_speakers(np.full((h, w, 3), 128, np.uint8), faces=[right, left], margin=0.04)
    assert regions.face_scale == 0.04
    split, gap = (230 + 400) / 2, 0.04 * w / 4  # 315 and 10
    assert regions.bboxes == [
        (230 - 2 * 60, 0.04 * h, split - gap, 0.96 * h),  # 20 - 70 / 2 is above the top margin
        (split + gap, 100 - 100 / 2, 400 + 2 * 80, 0.96 * h),  # the outer sides: 2 face widths
    ]


# ============================================================================ video helpers
def test_feathered_mask_is_exactly_zero_beyond_the_feather():
    mask = feathered_mask((40, 40, 80, 80), 160, 160, grow=0.25, feather=6)
    assert mask.max() == 1.0 and mask.min() == 0.0
    hard = feathered_mask((40, 40, 80, 80), 160, 160, grow=0.25, feather=0)
    ys, xs = np.nonzero(hard)
    # further than the feather from the hard ellipse (Chebyshev distance): exactly 0
    far = np.ones_like(hard, bool)
    far[max(0, ys.min() - 6) : ys.max() + 7, max(0, xs.min() - 6) : xs.max() + 7] = False
    assert (mask[far] == 0).all()
    assert mask[60, 62] == 1.0


def test_track_faces_follows_a_moving_face_smoothly():
    grace = grace_hopper()
    small = np.asarray(Image.fromarray(grace).resize((256, 300), Image.BILINEAR))
    frames = []
    for t in range(8):
        canvas = np.full((300, 400, 3), 100, np.uint8)
        canvas[:, 8 * t : 8 * t + 256] = small
        frames.append(canvas)
    frames[3] = np.full((300, 400, 3), 100, np.uint8)  # face lost in one frame: filled from neighbours
    boxes = track_faces(frames, smooth=1)
    assert all(b is not None for b in boxes)
    centres = np.array([(b[0] + b[2]) / 2 for b in boxes])
    assert np.all(np.diff(centres[4:]) > 0)  # follows the motion to the right
    assert abs(centres[-1] - centres[0] - 56) < 16  # 7 frames x 8 px (smoothing lags at the ends)
    assert track_faces([np.full((64, 64, 3), 9, np.uint8)] * 3) == [None, None, None]


def test_automatic_regions_for_the_sampler(caplog):
    from infinitetalk.portrait import auto_speaker_regions, format_boxes

    image, _ = two_people()
    assert auto_speaker_regions(image).bboxes == find_speakers(image).bboxes
    with pytest.raises(InputError, match="1 face found"):
        auto_speaker_regions(astronaut())
    with caplog.at_level("WARNING"):
        assert auto_speaker_regions(np.full((128, 256, 3), 90, np.uint8)) is None  # halves
    assert "left and right halves" in caplog.text
    assert format_boxes([(0, 1.4, 10.6, 20), (5, 5, 9, 9)]) == "0,1,11,20; 5,5,9,9"
