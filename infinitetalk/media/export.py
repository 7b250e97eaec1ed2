"""Output formats: what the final video is written as, from frames streamed chunk by chunk.

| format | picture | sound | subtitles |
|---|---|---|---|
| ``h264-mp4`` (default) | H.264 4:2:0 8-bit, BT.709 limited range, CRF + preset | AAC 320 kb/s stereo, own rate | mov_text |
| ``prores-mov`` | ProRes 422 HQ 10-bit 4:2:2, BT.709 limited range | 24-bit PCM, own rate and channels | mov_text |
| ``ffv1-mkv`` | FFV1 lossless RGB (bit-exact frames) | 24-bit PCM, own rate and channels | SubRip |
| ``png-wav`` | folder of ``frame_000000.png`` ... (RGB, lossless) | ``soundtrack.wav`` 24-bit PCM | ``captions.srt`` |

Frame ``k`` is shown at ``k / fps`` seconds in every format; the sound starts at 0 and is cut (or padded with
silence) to the picture's length. Everything goes through PyAV's bundled FFmpeg and soundfile.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import soundfile

from ..errors import InputError
from .audio import as_soundtrack, fit_length
from .captions import Cue, burn_captions, srt_format
from .mux import mux
from .video import VideoWriter

logger = logging.getLogger(__name__)

PNG_PATTERN = "frame_{:06d}.png"
WAV_NAME = "soundtrack.wav"
SRT_NAME = "captions.srt"


@dataclass(frozen=True)
class OutputFormat:
    name: str
    codec: str | None  # VideoWriter codec; None: PNG sequence
    suffix: str  # file suffix; "" for a folder
    description: str


FORMATS = {
    "h264-mp4": OutputFormat("h264-mp4", "h264", ".mp4", "H.264 + AAC in mp4 (plays everywhere)"),
    "prores-mov": OutputFormat("prores-mov", "prores", ".mov", "ProRes 422 HQ + 24-bit PCM in mov (editing)"),
    "ffv1-mkv": OutputFormat("ffv1-mkv", "ffv1", ".mkv", "FFV1 lossless RGB + 24-bit PCM in mkv (archive)"),
    "png-wav": OutputFormat("png-wav", None, "", "PNG sequence + 24-bit WAV in a folder (compositing)"),
}


def output_format(name: str) -> OutputFormat:
    if name not in FORMATS:
        raise InputError(f"output format '{name}' is unknown: use one of {', '.join(FORMATS)}")
    return FORMATS[name]


def output_path(path: str | Path, fmt: str) -> Path:
    """``path`` with the suffix of ``fmt`` (a folder name without suffix for ``png-wav``)."""
    path, spec = Path(path), output_format(fmt)
    if path.suffix.lower() in (".mp4", ".mov", ".mkv", ".m4v"):
        path = path.with_suffix("")
    return path.with_name(path.name + spec.suffix)


def write_video(
    out_path: str | Path,
    chunks: Iterable[np.ndarray],
    *,
    fps: int,
    width: int,
    height: int,
    fmt: str = "h264-mp4",
    crf: int = 18,
    preset: str = "medium",
    audio: tuple[np.ndarray, int] | None = None,
    subtitles: Sequence[Cue] | None = None,
    burn: Sequence[Cue] | None = None,
) -> Path:
    """Encode ``uint8 (T, H, W, 3)`` chunks into ``out_path`` in format ``fmt`` (module table), with the
    soundtrack ``audio = (wave, rate)`` and ``subtitles`` as a stream (or ``captions.srt``), ``burn`` cues
    drawn into the picture. Memory stays flat: chunks are encoded as they come. The suffix follows the
    format (:func:`output_path`); returns the written path (a folder for ``png-wav``)."""
    spec = output_format(fmt)
    out_path = output_path(out_path, fmt)
    chunks = _burnt(chunks, burn, fps) if burn else chunks
    if spec.codec is None:
        return write_png_sequence(out_path, chunks, fps=fps, audio=audio, subtitles=subtitles)
    video_only = out_path.with_name(out_path.stem + ".video.partial" + spec.suffix)
    try:
        with VideoWriter(video_only, fps, width, height, crf, preset, codec=spec.codec) as writer:
            for chunk in chunks:
                writer.write(chunk)
        if writer.frames_written == 0:
            raise InputError(f"no frames to write into '{out_path}': the video is empty")
        mux([video_only], out_path, audio=audio, subtitles=subtitles, fps=fps)
    finally:
        video_only.unlink(missing_ok=True)
    return out_path


def _burnt(chunks: Iterable[np.ndarray], cues: Sequence[Cue], fps: int) -> Iterable[np.ndarray]:
    written = 0
    for chunk in chunks:
        yield burn_captions(chunk, cues, written / fps, fps=fps)
        written += chunk.shape[0]


def write_png_sequence(
    folder: str | Path,
    chunks: Iterable[np.ndarray],
    *,
    fps: int,
    audio: tuple[np.ndarray, int] | None = None,
    subtitles: Sequence[Cue] | None = None,
) -> Path:
    """``folder/frame_000000.png`` ... (frame k at k / fps s), ``folder/soundtrack.wav`` (24-bit PCM at the
    soundtrack's own rate and channels, cut or padded to the frames) and ``folder/captions.srt``.

    Written into ``folder.partial`` and renamed when complete, so a folder under the final name is whole.
    """
    folder = Path(folder)
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        frames = _write_pngs(partial, chunks, fps)
        if frames == 0:
            raise InputError(f"no frames to write into '{folder}': the video is empty")
        if audio is not None:
            track = fit_length(as_soundtrack(audio), frames / fps)
            soundfile.write(partial / WAV_NAME, track.wave.T, track.sample_rate, subtype="PCM_24")
        if subtitles:
            (partial / SRT_NAME).write_text(srt_format(subtitles), encoding="utf-8")
        if folder.exists():
            raise InputError(f"'{folder}' already exists: pick another output name")
        partial.replace(folder)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    logger.info(
        "wrote %d PNG frames%s into %s", frames, " + soundtrack.wav" if audio is not None else "", folder
    )
    return folder


def _write_pngs(folder: Path, chunks: Iterable[np.ndarray], fps: int) -> int:
    pattern = str(folder / PNG_PATTERN.replace("{:06d}", "%06d"))
    with av.open(pattern, "w", format="image2", options={"start_number": "0"}) as out:
        stream, count = None, 0
        for chunk in chunks:
            for frame in chunk:
                if stream is None:
                    stream = out.add_stream("png", rate=fps)
                    stream.width, stream.height, stream.pix_fmt = frame.shape[1], frame.shape[0], "rgb24"
                    stream.thread_type = "AUTO"
                vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
                vf.pts, vf.time_base = count, Fraction(1, fps)
                out.mux(stream.encode(vf))
                count += 1
        if stream is not None:
            out.mux(stream.encode(None))
    return count
