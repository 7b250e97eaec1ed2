"""InfiniteTalk Run Report: the drift report of a run (from the Sampler's frames) or of any video (a core VIDEO
against its reference image and speech), shown on the node as a chart. The measuring is the library's
(:mod:`infinitetalk.telemetry`, :mod:`infinitetalk.report`)."""

from __future__ import annotations

import json
import logging

import numpy as np

from . import _bridge
from . import _common as c
from ._api import io, ui
from ._widgets import advanced
from .audio import audio_to_numpy

log = logging.getLogger(__name__)


class RunReport(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="InfiniteTalkRunReport",
            display_name="InfiniteTalk Run Report",
            category=c.CATEGORY_VIDEO,
            is_output_node=True,  # the chart is shown on the node: it runs at the end of a graph too
            description="How far a long video drifts from its reference, window by window: colour of face and "
            "background, face sharpness, face position and size, jumps at window joins, mouths moving in "
            "silence (per speaker). From the Sampler's frames (measured while they were made) or any video "
            "(streamed: any length). Shows the chart; one warning line per problem with the time and the knob "
            "to try.",
            inputs=[
                io.Custom("INFINITETALK_FRAMES").Input(
                    "frames",
                    optional=True,
                    tooltip="From InfiniteTalk Sampler: its report was measured while the frames streamed.",
                ),
                io.Video.Input(
                    "video",
                    optional=True,
                    tooltip="Any video (this pack's, another tool's, an earlier run's) to check against "
                    "'reference'. Give this or 'frames'.",
                ),
                io.Image.Input(
                    "reference",
                    optional=True,
                    tooltip="The image the video was made from (needed with 'video', or with frames whose run "
                    "had no report).",
                ),
                io.Audio.Input(
                    "audio", optional=True, tooltip="Speech of person 1 (for the mouth-in-silence measure)."
                ),
                io.Audio.Input(
                    "audio2", optional=True, tooltip="Speech of person 2, laid out in the video's time."
                ),
                advanced(
                    io.Int.Input(
                        "frame_num",
                        default=81,
                        min=5,
                        max=201,
                        step=4,
                        tooltip="Frames per window of the run that made the video (where its joins are).",
                    )
                ),
                advanced(
                    io.Int.Input(
                        "motion_frame",
                        default=9,
                        min=1,
                        max=197,
                        step=4,
                        tooltip="Frames carried between its windows.",
                    )
                ),
            ],
            outputs=[
                io.Image.Output(display_name="chart", tooltip="The chart over time, as an image."),
                io.String.Output(
                    display_name="warnings",
                    tooltip="One line per measure past its threshold (empty if none).",
                ),
                io.String.Output(display_name="report", tooltip="Every figure, as JSON."),
            ],
        )

    @classmethod
    def validate_inputs(cls, frame_num=81, motion_frame=9):
        from .sampler import check_options

        return check_options(frame_num, motion_frame) or True

    @classmethod
    def execute(
        cls, frames=None, video=None, reference=None, audio=None, audio2=None, frame_num=81, motion_frame=9
    ) -> io.NodeOutput:
        from ..infinitetalk.report import render_chart

        summary = _summary(frames, video, reference, audio, audio2, frame_num, motion_frame)
        for line in summary["warnings"]:
            log.warning("InfiniteTalk Run Report: %s", line)
        chart = _bridge.uint8_to_image(np.array(render_chart(summary)))
        text = json.dumps(summary, ensure_ascii=False)
        return io.NodeOutput(chart, "\n".join(summary["warnings"]), text, ui=ui.PreviewImage(chart, cls=cls))


def _summary(frames, video, reference, audio, audio2, frame_num, motion_frame) -> dict:
    """The run's own report, or the telemetry of ``frames`` / ``video`` measured now (streamed)."""
    from ..infinitetalk.report import report_frames

    if (frames is None) == (video is None):
        raise ValueError(
            "InfiniteTalk Run Report: connect 'frames' (from the Sampler) or 'video', one of them"
        )
    if frames is not None and getattr(frames, "report", None) is not None:
        return frames.report.summary()
    if reference is None:
        raise ValueError(
            "InfiniteTalk Run Report: connect 'reference' (the image the video was made from) to measure "
            + ("a video" if video is not None else "frames made without a report")
        )
    ref = _bridge.image_to_uint8(reference[0])
    if frames is not None:
        speech = _speech(audio, audio2, frames.num_frames)
        return report_frames(frames.iter_frames(), frames.num_frames, ref, speech, frame_num, motion_frame)
    with _bridge.reference_source(None, video, c.FPS) as source:
        n = source.num_frames
        speech = _speech(audio, audio2, n)
        return report_frames((source.frame(i) for i in range(n)), n, ref, speech, frame_num, motion_frame)


def _speech(audio, audio2, num_frames: int):
    from ..infinitetalk.report import speech_of_wave

    tracks = [speech_of_wave(*audio_to_numpy(a), num_frames) for a in (audio, audio2) if a is not None]
    if audio2 is not None and audio is None:
        raise ValueError("InfiniteTalk Run Report: 'audio2' without 'audio': connect person 1's speech too")
    return np.stack(tracks) if tracks else None


NODES = [RunReport]
