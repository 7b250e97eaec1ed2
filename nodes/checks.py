"""Production checks: portrait check (+ head-and-shoulders crop), speakers found from faces, audio check."""

from __future__ import annotations

import logging

from ._api import io, ui
from ._bridge import image_to_uint8, uint8_to_image
from ._widgets import advanced
from .audio import audio_to_numpy, numpy_to_audio

log = logging.getLogger(__name__)

CATEGORY_CHECKS = "InfiniteTalk/checks"
CROP_OPTIONS = ["none", "infinitetalk-480", "infinitetalk-720"]


class PortraitCheck(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="InfiniteTalkPortraitCheck",
            display_name="InfiniteTalk Portrait Check",
            category=CATEGORY_CHECKS,
            description="Checks the input photo against what talking-head video needs: face count and size, "
            "centring, head-and-shoulders framing and eye line, frontal pose, sharpness, exposure. Each failed "
            "rule gives one warning line with its fix. Can crop the photo to head-and-shoulders framing.",
            inputs=[
                io.Image.Input("image", tooltip="The portrait (first image of a batch)."),
                io.Int.Input(
                    "expected_faces",
                    default=1,
                    min=1,
                    max=2,
                    tooltip="People who will speak: 1, or 2 for a two-person dialogue.",
                ),
                io.Combo.Input(
                    "crop",
                    options=CROP_OPTIONS,
                    default="none",
                    tooltip="none: pass the image through. A size bucket: crop to head and shoulders around "
                    "the main face (face ~30% of the height, eyes on the upper third, centred) and resize to "
                    "that bucket.",
                ),
            ],
            outputs=[
                io.Image.Output(display_name="image", tooltip="The image, cropped when 'crop' asks for it."),
                io.String.Output(
                    display_name="warnings", tooltip="One line per failed rule (empty if all pass)."
                ),
                io.String.Output(
                    display_name="face_boxes",
                    tooltip="Face boxes 'x0,y0,x1,y1; ...' in pixels of the input image, largest first.",
                ),
                io.String.Output(display_name="report", tooltip="Every measure and warning, as text."),
            ],
        )

    @classmethod
    def execute(cls, image, expected_faces, crop) -> io.NodeOutput:
        from ..infinitetalk.portrait import check_portrait, crop_head_and_shoulders, format_boxes

        array = image_to_uint8(image[0])
        report = check_portrait(array, expected_faces=expected_faces)
        out = image
        if crop != "none":
            if report.faces:
                out = uint8_to_image(crop_head_and_shoulders(array, report.faces[0], crop))
            else:
                log.warning("Portrait Check: no face found, so the image is not cropped")
        for line in report.warnings:
            log.warning("Portrait Check: %s", line)
        boxes = format_boxes(f.box for f in report.faces)
        return io.NodeOutput(
            out, "\n".join(report.warnings), boxes, report.text(), ui=ui.PreviewText(report.text())
        )


class FindSpeakers(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="InfiniteTalkFindSpeakers",
            display_name="InfiniteTalk Find Speakers",
            category=CATEGORY_CHECKS,
            description="Two-person video without typing boxes: finds the two faces and turns them into the "
            "two person regions (person 1 = left, person 2 = right), expanded from each face down to the body. "
            "Shows the regions on the image. The Sampler does the same by itself when given no masks or boxes.",
            inputs=[io.Image.Input("image", tooltip="The two-person image (first image of a batch).")],
            outputs=[
                io.Mask.Output(
                    display_name="speaker_masks",
                    tooltip="Two masks (person 1, person 2) for the Sampler's speaker_masks input.",
                ),
                io.String.Output(
                    display_name="speaker_boxes",
                    tooltip="The regions as 'x0,y0,x1,y1; x0,y0,x1,y1' (the Sampler's speaker_boxes format).",
                ),
                io.Image.Output(
                    display_name="preview", tooltip="The image with both regions and the faces drawn."
                ),
            ],
        )

    @classmethod
    def execute(cls, image) -> io.NodeOutput:
        from ..infinitetalk.faces import detect_faces
        from ..infinitetalk.pipeline import speaker_masks
        from ..infinitetalk.portrait import draw_regions, find_speakers, format_boxes

        array = image_to_uint8(image[0])
        faces = detect_faces(array)
        regions = find_speakers(array, faces)
        masks = speaker_masks(regions, *array.shape[:2])[:2]  # (2, H, W): person 1, person 2
        preview = uint8_to_image(draw_regions(array, regions, faces))
        return io.NodeOutput(
            masks, format_boxes(regions.bboxes), preview, ui=ui.PreviewImage(preview, cls=cls)
        )


class AudioCheck(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="InfiniteTalkAudioCheck",
            display_name="InfiniteTalk Audio Check",
            category=CATEGORY_CHECKS,
            description="Measures the speech: integrated loudness (LUFS), loudness range, peak and clipped "
            "samples, noise floor and signal-to-noise ratio, silence, sample rate; each problem gives one "
            "warning with its fix. Optional clean-up: high-pass filter and loudness normalisation.",
            inputs=[
                io.Audio.Input("audio", tooltip="The speech to check."),
                io.Float.Input(
                    "high_pass_hz",
                    default=0.0,
                    min=0.0,
                    max=400.0,
                    step=10.0,
                    tooltip="Clean-up: remove rumble and hum below this frequency (0 = off; 80 is typical).",
                ),
                io.Boolean.Input(
                    "normalize",
                    default=False,
                    tooltip="Clean-up: scale to the target loudness (ITU-R BS.1770), peaks kept under -1 dBFS.",
                ),
                advanced(
                    io.Float.Input(
                        "target_lufs",
                        default=-23.0,
                        min=-40.0,
                        max=-6.0,
                        step=0.5,
                        tooltip="Loudness of the normalised audio (-23 LUFS as the model's reference).",
                    )
                ),
            ],
            outputs=[
                io.Audio.Output(
                    display_name="audio", tooltip="The audio, cleaned when asked (else unchanged)."
                ),
                io.String.Output(
                    display_name="warnings", tooltip="One line per problem (empty if all pass)."
                ),
                io.String.Output(display_name="report", tooltip="Every measure and warning, as text."),
            ],
        )

    @classmethod
    def execute(cls, audio, high_pass_hz, normalize, target_lufs=-23.0) -> io.NodeOutput:
        from ..infinitetalk.audio_check import check_audio, clean_audio

        wave, sr = audio_to_numpy(audio)  # (C, N)
        report = check_audio(wave, sr)
        for line in report.warnings:
            log.warning("Audio Check: %s", line)
        out = audio
        if high_pass_hz > 0 or normalize:
            cleaned = clean_audio(wave, sr, high_pass_hz, target_lufs if normalize else None)
            out = numpy_to_audio(cleaned, sr)
        return io.NodeOutput(out, "\n".join(report.warnings), report.text(), ui=ui.PreviewText(report.text()))


NODES = [PortraitCheck, FindSpeakers, AudioCheck]
