"""The drift report: a chart over time (PNG), every figure (JSON) and one warning line per measure past its
threshold, from :mod:`infinitetalk.telemetry`.

For a generated run the telemetry is measured as the frames stream (``python -m infinitetalk`` writes
``OUTPUT.report.png`` / ``.json`` beside the video and into the run folder; the Sampler keeps it for the Run
Report node). For any existing video, made by this pack or elsewhere::

    python -m infinitetalk.report VIDEO --reference IMAGE [--audio AUDIO] [--audio2 AUDIO] [--out DIR]

streams the file frame by frame (memory does not grow with its length) and lays the windows out as a
streamed run's (``--frame_num 81 --motion_frame 9``: joins at frame 81, 153, 225, ...). ``--audio`` (and
``--audio2`` for a second speaker, ``--audio_type para|add``) gives the speech the mouths are compared with.

The chart is drawn with Pillow (no plotting library needed): one panel per measure against time, the
threshold dashed, the worst window of each panel marked with its time.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .errors import InfiniteTalkError, InputError
from .media import VideoReader, prepare_speech, read_image
from .media.stream import SPEECH_SR, StreamResampler, iter_audio, probe_audio
from .telemetry import (
    MIN_MOTION,
    DriftMeter,
    activity_from_rms,
    format_time,
    frame_rms,
    measure_frames,
    observe,
    speech_for_run,
)
from .validation import check_window

logger = logging.getLogger(__name__)

WIDTH = 1200
PANEL_H = 150
MARGIN_L, MARGIN_R, HEADER = 70, 30, 50
COLOURS = {
    "face": (228, 108, 10),
    "background": (40, 110, 200),
    "sharpness": (120, 60, 170),
    "shift": (30, 150, 90),
    "size": (150, 150, 40),
    "seam": (200, 40, 40),
    "speaker1": (228, 108, 10),
    "speaker2": (40, 110, 200),
    "grid": (225, 225, 225),
    "axis": (90, 90, 90),
    "text": (30, 30, 30),
    "warn": (190, 20, 20),
    "ok": (20, 120, 40),
}


# ============================================================================ files
def report_paths(stem: str | os.PathLike) -> tuple[Path, Path]:
    """``out/talk`` -> (``out/talk.report.png``, ``out/talk.report.json``); a folder -> its ``report.*``."""
    stem = Path(stem)
    if stem.is_dir():
        return stem / "report.png", stem / "report.json"
    return stem.with_name(stem.name + ".report.png"), stem.with_name(stem.name + ".report.json")


def write_report(summary: dict[str, Any], stem: str | os.PathLike, title: str = "") -> tuple[Path, Path]:
    """Write the chart and the JSON of ``summary`` (:meth:`DriftMeter.summary`); atomic, so a viewer never
    sees half a file. Returns ``(png, json)``."""
    png, js = report_paths(stem)
    png.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps(summary, indent=1, ensure_ascii=False).encode()
    _atomic(js, data)
    image = render_chart(summary, title)
    tmp = png.with_name(png.name + ".tmp")
    image.save(tmp, format="PNG")
    os.replace(tmp, png)
    return png, js


def _atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# ============================================================================ the chart
def _font(size: int):

    return ImageFont.load_default(size=size)


class _Panel:
    """One measure against time: x in seconds (shared), y from ``lo`` to ``hi``."""

    def __init__(self, draw, top: int, seconds: float, lo: float, hi: float, label: str, unit: str = ""):
        self.draw, self.top, self.seconds = draw, top, max(seconds, 1e-3)
        self.step = _nice((hi - lo) / 4 if hi > lo else 0.25)
        self.lo, self.hi = lo, lo + 4 * self.step
        self.x0, self.x1 = MARGIN_L, WIDTH - MARGIN_R
        self.y0, self.y1 = top + 22, top + PANEL_H - 18
        self.label, self.unit = label, unit

    def x(self, t: float) -> float:
        return self.x0 + (self.x1 - self.x0) * t / self.seconds

    def y(self, v: float) -> float:
        v = min(max(v, self.lo), self.hi)
        return self.y1 - (self.y1 - self.y0) * (v - self.lo) / (self.hi - self.lo)

    def frame(self, legend: Sequence[tuple[str, tuple[int, int, int]]]) -> None:
        d, small = self.draw, _font(12)
        d.text((self.x0, self.top + 4), self.label, fill=COLOURS["text"], font=_font(14))
        lx = self.x1
        for name, colour in reversed(legend):
            w = d.textlength(name, font=small)
            lx -= w + 6
            d.text((lx, self.top + 6), name, fill=colour, font=small)
            lx -= 14
            d.line([(lx, self.top + 13), (lx + 10, self.top + 13)], fill=colour, width=3)
            lx -= 10
        for k in range(5):
            v = self.lo + (self.hi - self.lo) * k / 4
            y = self.y(v)
            d.line([(self.x0, y), (self.x1, y)], fill=COLOURS["grid"])
            d.text((4, y - 7), f"{round(v, 6):g}{self.unit}", fill=COLOURS["axis"], font=small)
        d.rectangle([self.x0, self.y0, self.x1, self.y1], outline=COLOURS["axis"])

    def threshold(self, value: float) -> None:
        if not self.lo <= value <= self.hi:
            return
        y, x = self.y(value), self.x0
        while x < self.x1:
            self.draw.line([(x, y), (min(x + 8, self.x1), y)], fill=COLOURS["warn"], width=1)
            x += 14

    def line(self, points: Sequence[tuple[float, float]], colour) -> None:
        pts = [(self.x(t), self.y(v)) for t, v in points]
        if len(pts) > 1:
            self.draw.line(pts, fill=colour, width=2)
        for px, py in pts:
            self.draw.ellipse([px - 2.5, py - 2.5, px + 2.5, py + 2.5], fill=colour)

    def bars(self, points: Sequence[tuple[float, float]], colour, base: float = 0.0) -> None:
        for t, v in points:
            x = self.x(t)
            self.draw.line([(x, self.y(base)), (x, self.y(v))], fill=colour, width=4)

    def mark(self, rec: dict[str, Any], v: float, bad: bool, at: float | None = None) -> None:
        """The worst window ``rec``: a triangle over its point and its time span."""
        t = (rec["time"] + rec["end_time"]) / 2 if at is None else at
        x, y = self.x(t), self.y(v)
        colour = COLOURS["warn"] if bad else COLOURS["axis"]
        self.draw.polygon([(x, y - 4), (x - 6, y - 14), (x + 6, y - 14)], fill=colour)
        text = f"{format_time(rec['time'])}-{format_time(rec['end_time'])}"
        w = self.draw.textlength(text, font=_font(12))
        tx = min(max(x - w / 2, self.x0), self.x1 - w)
        self.draw.text((tx, max(self.y0, y - 30)), text, fill=colour, font=_font(12))


def _nice(step: float) -> float:
    """The smallest 1, 2, 2.5 or 5 x 10^k at or above ``step``."""
    exp = 10 ** math.floor(math.log10(step))
    return next(m * exp for m in (1, 2, 2.5, 5, 10) if m * exp >= step * (1 - 1e-9))


def _series(records, name: str) -> list[tuple[float, float]]:
    return [((r["time"] + r["end_time"]) / 2, r[name]) for r in records if r.get(name) is not None]


def _top(values: Sequence[float], floor: float) -> float:
    return max([floor, *values]) * 1.15


def render_chart(summary: dict[str, Any], title: str = ""):
    """A PIL image: header (length, verdict, warnings) and five panels over time."""

    recs, seconds = summary.get("windows", []), float(summary.get("seconds") or 0.0)
    t, warnings = summary.get("thresholds", {}), summary.get("warnings", [])
    height = HEADER + 18 * max(1, len(warnings)) + 5 * PANEL_H + 30
    image = Image.new("RGB", (WIDTH, height), "white")
    d = ImageDraw.Draw(image)
    head = f"Drift report{' - ' + title if title else ''}: {format_time(seconds)}, {len(recs)} windows"
    d.text((MARGIN_L, 10), head, fill=COLOURS["text"], font=_font(18))
    y = 36
    for line in warnings or ["no measure passes its threshold"]:
        line = line.replace("ΔE", "dE")  # the built-in font has no Greek
        d.text(
            (MARGIN_L, y),
            ("! " if warnings else "") + line,
            fill=COLOURS["warn" if warnings else "ok"],
            font=_font(13),
        )
        y += 18
    top = y + 8
    worst = summary.get("worst", {})
    panels = (_colour_panel, _sharpness_panel, _face_panel, _seam_panel)  # 1.-4.
    for k, panel in enumerate(panels):
        panel(d, top + k * PANEL_H, seconds, recs, t, worst)
    top += len(panels) * PANEL_H
    _mouth_panel(d, top, seconds, recs, t, worst, summary.get("mouth", []))  # 5.
    _time_axis(d, top + PANEL_H, seconds)
    return image


def _colour_panel(d, top: int, seconds: float, recs, t, worst) -> None:
    """1. Colour distance of face and background to the reference."""
    face, bg = _series(recs, "face_de"), _series(recs, "background_de")
    p = _Panel(
        d,
        top,
        seconds,
        0.0,
        _top([v for _, v in face + bg], t.get("face_de", 5) * 1.2),
        "Colour distance to the reference (dE76 of the mean Lab colour)",
    )
    p.frame([("face", COLOURS["face"]), ("background", COLOURS["background"])])
    p.threshold(t.get("face_de", 5.0))
    p.line(bg, COLOURS["background"])
    p.line(face, COLOURS["face"])
    _mark(p, recs, worst.get("face_de"), "face_de", lambda v: v > t.get("face_de", 5.0))
    if worst.get("background_de") and worst["background_de"]["window"] != (worst.get("face_de") or {}).get(
        "window"
    ):
        _mark(p, recs, worst["background_de"], "background_de", lambda v: v > t.get("background_de", 6.0))


def _sharpness_panel(d, top: int, seconds: float, recs, t, worst) -> None:
    """2. Face sharpness against the reference."""
    sharp = _series(recs, "sharpness")
    p = _Panel(
        d,
        top,
        seconds,
        0.0,
        _top([v for _, v in sharp], 1.2),
        "Face sharpness against the reference (1 = as sharp)",
    )
    p.frame([("face detail", COLOURS["sharpness"])])
    p.threshold(t.get("sharpness", 0.6))
    p.line(sharp, COLOURS["sharpness"])
    _mark(p, recs, worst.get("sharpness"), "sharpness", lambda v: v < t.get("sharpness", 0.6))


def _face_panel(d, top: int, seconds: float, recs, t, worst) -> None:
    """3. Face position and size drift."""
    shift = _series(recs, "face_shift")
    size = [(x, abs(v - 1)) for x, v in _series(recs, "face_size")]
    p = _Panel(
        d,
        top,
        seconds,
        0.0,
        _top([v for _, v in shift + size], t.get("face_shift", 0.25) * 1.4),
        "Face position and size drift (face widths; |size ratio - 1|)",
    )
    p.frame([("position", COLOURS["shift"]), ("size", COLOURS["size"])])
    p.threshold(t.get("face_shift", 0.25))
    p.line(size, COLOURS["size"])
    p.line(shift, COLOURS["shift"])
    _mark(p, recs, worst.get("face_shift"), "face_shift", lambda v: v > t.get("face_shift", 0.25))


def _seam_panel(d, top: int, seconds: float, recs, t, worst) -> None:
    """4. Window joins against the typical change inside windows."""
    seams = [(r["time"], r["seam"]) for r in recs if r.get("seam") is not None]
    p = _Panel(
        d,
        top,
        seconds,
        0.0,
        _top([v for _, v in seams], t.get("seam", 3.0) * 1.2),
        "Window joins: change across the join / typical change inside windows",
        "x",
    )
    p.frame([("join", COLOURS["seam"])])
    p.threshold(t.get("seam", 3.0))
    p.bars(seams, COLOURS["seam"])
    if worst.get("seam") and worst["seam"]["window"] < len(recs):
        w = worst["seam"]
        p.mark(recs[w["window"]], w["value"], w["value"] > t.get("seam", 3.0), at=w["time"])


def _mouth_panel(d, top: int, seconds: float, recs, t, worst, mouths) -> None:
    """5. Mouth motion in silence against speaking, per speaker."""
    series = []
    for k, m in enumerate(mouths):
        speaking = m.get("speaking")
        pts = []
        for r in recs:
            if (
                r.get("mouth")
                and speaking is not None
                and r["mouth"][k]["silent"] is not None
                and r["mouth"][k]["silent_frames"] >= 5
            ):
                pts.append(
                    ((r["time"] + r["end_time"]) / 2, r["mouth"][k]["silent"] / max(speaking, MIN_MOTION))
                )
        series.append(pts)
    label = "Mouth motion in silence / while speaking, per speaker"
    if not mouths:
        label += " (no speech given)"
    p = _Panel(d, top, seconds, 0.0, _top([v for s in series for _, v in s], 1.0), label)
    p.frame([(f"speaker {k + 1}", COLOURS[f"speaker{min(k, 1) + 1}"]) for k in range(len(mouths))])
    p.threshold(t.get("silent_ratio", 0.5))
    for k, pts in enumerate(series):
        p.line(pts, COLOURS[f"speaker{min(k, 1) + 1}"])
    for m in mouths:
        if m.get("worst") and m["worst"]["window"] < len(recs):
            w = m["worst"]
            p.mark(recs[w["window"]], w["value"], w["value"] > t.get("silent_ratio", 0.5))


def _time_axis(d, top: int, seconds: float) -> None:
    """Time ticks under the last panel."""
    small = _font(12)
    step = _tick_step(seconds)
    k = 0
    while k * step <= seconds + 1e-9:
        x = MARGIN_L + (WIDTH - MARGIN_L - MARGIN_R) * k * step / max(seconds, 1e-3)
        d.line([(x, top - 18), (x, top - 12)], fill=COLOURS["axis"])
        d.text((x - 14, top - 10), format_time(k * step).split(".")[0], fill=COLOURS["axis"], font=small)
        k += 1


def _mark(panel: _Panel, recs, worst, name, is_bad) -> None:
    if worst and worst["window"] < len(recs):
        panel.mark(recs[worst["window"]], worst["value"], is_bad(worst["value"]))


def _tick_step(seconds: float) -> float:
    for step in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600):
        if seconds / step <= 12:
            return float(step)
    return 7200.0


# ============================================================================ a generation run
class RunReport:
    """The telemetry of one generation run: :meth:`wrap` its sink, and after every window the report in
    ``folder`` (``report.png`` / ``report.json``, the run folder) is redrawn, so it can be watched while the
    run goes on; :meth:`write` puts it beside the output at the end. A resumed run continues the telemetry
    (its state rides in the run's resume state).

    ``reference``: the run's reference image (a video source's first frame); ``audio``: its
    :class:`~infinitetalk.pipeline.AudioEmbedding`; ``tracks``: per-speaker 16 kHz speech laid out in the
    video's time when the caller kept them (else the embedding's, :func:`telemetry.speech_for_run`);
    ``regions``: the speakers' :class:`~infinitetalk.config.SpeakerRegions` (their faces are told apart by them).
    """

    def __init__(
        self, reference: np.ndarray, audio, folder=None, *, regions=None, tracks=None, title: str = ""
    ):

        boxes = regions.bboxes if regions is not None and getattr(regions, "bboxes", None) else None
        self.meter = DriftMeter(reference, speech=speech_for_run(audio, tracks), speaker_boxes=boxes)
        self.folder = Path(folder) if folder is not None else None
        self.title = title

    def wrap(self, sink):
        """``sink`` with the telemetry fed by its frames (resumable when ``sink`` is)."""

        return observe(sink, self.meter, self._on_window)

    def _on_window(self, meter, record) -> None:
        if self.folder is None:
            return
        try:
            write_report(meter.summary(), self.folder, self.title)
        except OSError as err:  # a report must never stop a generation
            logger.warning("drift report not written to %s: %s", self.folder, err)

    def summary(self) -> dict[str, Any]:
        return self.meter.summary()

    def write(self, stem: str | os.PathLike) -> tuple[Path, Path]:
        """The report beside ``stem`` (``talk.mp4`` -> ``talk.mp4.report.png`` / ``.json``); logs its warnings."""
        summary = self.summary()
        for line in summary["warnings"]:
            logger.warning("drift: %s", line)
        png, js = write_report(summary, stem, self.title)
        logger.info("drift report: %s", png)
        return png, js


# ============================================================================ any video: the CLI
def speech_of_file(
    path: str | os.PathLike, num_frames: int, start_frame: int = 0, *, name: str
) -> np.ndarray:
    """``bool (num_frames,)`` speech activity of an audio file, decoded block by block (16 kHz mono)."""

    parts: list[np.ndarray] = []
    resampler, pending = None, np.zeros(0, np.float32)

    def take(samples: np.ndarray) -> None:
        nonlocal pending
        pending = np.concatenate([pending, samples])
        whole = len(pending) // 640 * 640
        if whole:
            parts.append(frame_rms(pending[:whole]))
            pending = pending[whole:]

    for block, sr in iter_audio(path, name=name):
        if resampler is None:
            resampler = StreamResampler(sr, SPEECH_SR)
        take(resampler.push(block.mean(axis=0, dtype=np.float32)))
    if resampler is not None:
        take(resampler.finish())
    if len(pending):
        parts.append(frame_rms(pending))
    rms = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    return activity_from_rms(rms, num_frames, start_frame)


def report_video(
    video: str | os.PathLike,
    reference: np.ndarray,
    audio: Sequence[str | os.PathLike] = (),
    audio_type: str = "para",
    frame_num: int = 81,
    motion_frame: int = 9,
    speaker_boxes=None,
) -> dict[str, Any]:
    """Telemetry of an existing video file against ``reference`` (uint8 RGB), streamed frame by frame."""

    reader = VideoReader(video, fps=25)
    n = reader.num_frames
    speech = None
    if audio:
        tracks = [speech_of_file(audio[0], n, name="--audio")]
        if len(audio) > 1:
            start = _audio_frames(audio[0]) if audio_type == "add" else 0  # add: person 2 follows person 1
            tracks.append(speech_of_file(audio[1], n, start, name="--audio2"))
        speech = np.stack(tracks)
    meter = DriftMeter(reference, speech=speech, speaker_boxes=speaker_boxes, fps=25)
    try:
        return measure_frames((reader.frame(i) for i in range(n)), meter, n, frame_num, motion_frame)
    finally:
        reader.close()


def speech_of_wave(wave: np.ndarray, sample_rate: int, num_frames: int, start_frame: int = 0) -> np.ndarray:
    """``bool (num_frames,)`` speech activity of a ``(C, N)`` or ``(N,)`` wave at any rate (a host's audio)."""

    speech = prepare_speech(np.asarray(wave, np.float32), int(sample_rate), normalize=False)  # 16 kHz mono
    return activity_from_rms(frame_rms(speech), num_frames, start_frame)


def report_frames(
    frames,
    num_frames: int,
    reference: np.ndarray,
    speech: np.ndarray | None = None,
    frame_num: int = 81,
    motion_frame: int = 9,
) -> dict[str, Any]:
    """Telemetry of ``frames`` (an iterator of uint8 ``(H, W, 3)``, read once) against ``reference``."""
    meter = DriftMeter(reference, speech=speech, fps=25)
    return measure_frames(frames, meter, num_frames, frame_num, motion_frame)


def _audio_frames(path) -> int:

    return int(math.ceil(probe_audio(path).duration * 25))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m infinitetalk.report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("video", help="the video to check (any length: it is streamed)")
    p.add_argument("--reference", required=True, help="the image the video was made from")
    p.add_argument("--audio", help="speech of person 1 (default: none, no mouth measure)")
    p.add_argument("--audio2", help="speech of person 2")
    p.add_argument(
        "--audio_type",
        choices=("para", "add"),
        default="para",
        help="two speakers: para = together, add = person 1 then person 2",
    )
    p.add_argument(
        "--out", help="folder for report.png / report.json (default: beside the video, VIDEO.report.*)"
    )
    p.add_argument("--frame_num", type=int, default=81, help="frames per window of the run that made it (81)")
    p.add_argument("--motion_frame", type=int, default=9, help="frames carried between its windows (9)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    try:
        check_window(args.frame_num, args.motion_frame)
        if not Path(args.reference).is_file():
            raise InputError(
                f"--reference '{args.reference}' does not exist: give the image the video was made from"
            )
        if args.audio2 and not args.audio:
            raise InputError("--audio2 without --audio: give person 1's speech too")
        reference = read_image(args.reference)
        audio = [a for a in (args.audio, args.audio2) if a]
        summary = report_video(
            args.video, reference, audio, args.audio_type, args.frame_num, args.motion_frame
        )
        video = Path(args.video)
        stem = Path(args.out) if args.out else video
        if args.out:
            stem.mkdir(parents=True, exist_ok=True)
        png, js = write_report(summary, stem, title=video.name)
    except InfiniteTalkError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for line in summary["warnings"]:
        print(f"warning: {line}")
    print(png)
    print(js)
    return 0


if __name__ == "__main__":
    sys.exit(main())
