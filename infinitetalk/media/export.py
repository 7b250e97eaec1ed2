"""Output formats: what the final video is written as, from frames streamed chunk by chunk.

| format | picture | sound | subtitles |
|---|---|---|---|
| ``h264-mp4`` (default) | H.264 4:2:0 8-bit, BT.709 limited range, CRF + preset | AAC 320 kb/s stereo, own rate | mov_text |
| ``prores-mov`` | ProRes 422 HQ 10-bit 4:2:2, BT.709 limited range | 24-bit PCM, own rate and channels | mov_text |
| ``ffv1-mkv`` | FFV1 lossless RGB (bit-exact frames) | 24-bit PCM, own rate and channels | SubRip |
| ``png-wav`` | folder of ``frame_000000.png`` ... (RGB, lossless) | ``soundtrack.wav`` 24-bit PCM | ``captions.srt`` |
| ``prores4444-mov`` | ProRes 4444 10-bit + 16-bit alpha, BT.709 limited range | 24-bit PCM | mov_text |
| ``webm-vp9`` | VP9 4:2:0 + alpha (``alpha_mode`` tagged: browsers show it), CRF | Opus 48 kHz | none (sidecar) |
| ``ffv1-rgba-mkv`` | FFV1 lossless RGBA (bit-exact frames and alpha) | 24-bit PCM | SubRip |
| ``png-rgba`` | folder of RGBA ``frame_000000.png`` ... (lossless) | ``soundtrack.wav`` 24-bit PCM | ``captions.srt`` |

The last four carry alpha (``OutputFormat.alpha``): they take straight (unpremultiplied) RGBA chunks
``uint8 (T, H, W, 4)``, as :mod:`infinitetalk.keying` makes them (RGB chunks are written opaque). Straight
alpha: a half-transparent pixel holds the subject's own colour, not colour times alpha; editors import it as
"straight" (Premiere, Resolve and After Effects detect it in ProRes 4444 and PNG). ``matte=True`` also writes
the alpha alone as a grey video beside it (``NAME_matte.mov`` ProRes 422 HQ, ``NAME_matte.mp4`` H.264 for
WebM, ``NAME_matte.mkv`` FFV1, ``matte_000000.png`` ... in the PNG folder) for editors that want a matte.

Frame ``k`` is shown at ``k / fps`` seconds in every format; the sound starts at 0 and is cut (or padded with
silence) to the picture's length. Everything goes through PyAV's bundled FFmpeg and soundfile.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable, Iterator, Sequence
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
from .video import VideoWriter, iter_rgba

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
    alpha: bool = False  # takes straight RGBA chunks


FORMATS = {
    "h264-mp4": OutputFormat("h264-mp4", "h264", ".mp4", "H.264 + AAC in mp4 (plays everywhere)"),
    "prores-mov": OutputFormat("prores-mov", "prores", ".mov", "ProRes 422 HQ + 24-bit PCM in mov (editing)"),
    "ffv1-mkv": OutputFormat("ffv1-mkv", "ffv1", ".mkv", "FFV1 lossless RGB + 24-bit PCM in mkv (archive)"),
    "png-wav": OutputFormat("png-wav", None, "", "PNG sequence + 24-bit WAV in a folder (compositing)"),
    "prores4444-mov": OutputFormat(
        "prores4444-mov", "prores4444", ".mov", "ProRes 4444 with alpha + 24-bit PCM in mov (editing)", True
    ),
    "webm-vp9": OutputFormat(
        "webm-vp9", "vp9-alpha", ".webm", "VP9 with alpha + Opus in WebM (browsers)", True
    ),
    "ffv1-rgba-mkv": OutputFormat(
        "ffv1-rgba-mkv", "ffv1-alpha", ".mkv", "FFV1 lossless RGBA + 24-bit PCM in mkv (archive)", True
    ),
    "png-rgba": OutputFormat("png-rgba", None, "", "RGBA PNG sequence + 24-bit WAV in a folder", True),
}
ALPHA_FORMATS = tuple(name for name, spec in FORMATS.items() if spec.alpha)
_MATTE = {"prores4444": ("prores", ".mov"), "vp9-alpha": ("h264", ".mp4"), "ffv1-alpha": ("ffv1", ".mkv")}
MATTE_PNG = "matte_{:06d}.png"


def output_format(name: str) -> OutputFormat:
    if name not in FORMATS:
        raise InputError(f"output format '{name}' is unknown: use one of {', '.join(FORMATS)}")
    return FORMATS[name]


def output_path(path: str | Path, fmt: str) -> Path:
    """``path`` with the suffix of ``fmt`` (a folder name without suffix for ``png-wav``)."""
    path, spec = Path(path), output_format(fmt)
    if path.suffix.lower() in (".mp4", ".mov", ".mkv", ".m4v", ".webm"):
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
    matte: bool = False,
) -> Path:
    """Encode ``uint8 (T, H, W, 3)`` chunks (straight RGBA ``(T, H, W, 4)`` for alpha formats) into ``out_path`` in format ``fmt`` (module table), with the
    soundtrack ``audio = (wave, rate)`` and ``subtitles`` as a stream (or ``captions.srt``), ``burn`` cues
    drawn into the picture. Memory stays flat: chunks are encoded as they come. The suffix follows the
    format (:func:`output_path`); returns the written path (a folder for the PNG formats). ``matte``: the
    alpha as a separate grey video too (alpha formats; module doc)."""
    spec = output_format(fmt)
    out_path = output_path(out_path, fmt)
    if matte and not spec.alpha:
        raise InputError(f"a matte needs an alpha format ({', '.join(ALPHA_FORMATS)}), not '{fmt}'")
    chunks = _checked(chunks, spec)
    chunks = _burnt(chunks, burn, fps) if burn else chunks
    if spec.codec is None:
        return write_png_sequence(
            out_path, chunks, fps=fps, audio=audio, subtitles=subtitles, alpha=spec.alpha, matte=matte
        )
    video_only = out_path.with_name(out_path.stem + ".video.partial" + spec.suffix)
    matte_writer = None
    if matte:
        codec, suffix = _MATTE[spec.codec]
        matte_path = out_path.with_name(out_path.stem + "_matte" + suffix)
        matte_writer = VideoWriter(matte_path, fps, width, height, crf, preset, codec=codec)
    try:
        with VideoWriter(video_only, fps, width, height, crf, preset, codec=spec.codec) as writer:
            for chunk in chunks:
                writer.write(chunk)
                if matte_writer is not None:
                    matte_writer.write(_matte_rgb(chunk))
        if matte_writer is not None:
            matte_writer.close()
            logger.info("wrote the matte %s", matte_writer.path)
        if writer.frames_written == 0:
            raise InputError(f"no frames to write into '{out_path}': the video is empty")
        mux([video_only], out_path, audio=audio, subtitles=subtitles, fps=fps)
    finally:
        video_only.unlink(missing_ok=True)
        if matte_writer is not None:
            matte_writer.close()
    return out_path


def _checked(chunks: Iterable[np.ndarray], spec: OutputFormat) -> Iterable[np.ndarray]:
    for chunk in chunks:
        if chunk.ndim == 4 and chunk.shape[-1] == 4 and not spec.alpha:
            raise InputError(
                f"'{spec.name}' has no alpha: pick {', '.join(ALPHA_FORMATS)}, or composite the frames first"
            )
        yield chunk


def _matte_rgb(chunk: np.ndarray) -> np.ndarray:
    """The alpha of RGBA ``(T, H, W, 4)`` as grey RGB (white: opaque); RGB chunks are all white."""
    if chunk.shape[-1] != 4:
        return np.full(chunk.shape, 255, np.uint8)
    return np.repeat(chunk[..., 3:4], 3, axis=-1)


def _burnt(chunks: Iterable[np.ndarray], cues: Sequence[Cue], fps: int) -> Iterable[np.ndarray]:
    written = 0
    for chunk in chunks:
        if chunk.shape[-1] == 4:  # captions drawn into the colour, opaque where they are
            drawn = burn_captions(np.ascontiguousarray(chunk[..., :3]), cues, written / fps, fps=fps)
            changed = np.any(drawn != chunk[..., :3], axis=-1, keepdims=True)
            alpha = np.where(changed, np.uint8(255), chunk[..., 3:4])
            yield np.concatenate([drawn, alpha], axis=-1)
        else:
            yield burn_captions(chunk, cues, written / fps, fps=fps)
        written += chunk.shape[0]


def write_png_sequence(
    folder: str | Path,
    chunks: Iterable[np.ndarray],
    *,
    fps: int,
    audio: tuple[np.ndarray, int] | None = None,
    subtitles: Sequence[Cue] | None = None,
    alpha: bool = False,
    matte: bool = False,
) -> Path:
    """``folder/frame_000000.png`` ... (frame k at k / fps s; RGBA with ``alpha``, and ``matte_000000.png``
    ... grey with ``matte``), ``folder/soundtrack.wav`` (24-bit PCM at the
    soundtrack's own rate and channels, cut or padded to the frames) and ``folder/captions.srt``.

    Written into ``folder.partial`` and renamed when complete, so a folder under the final name is whole.
    """
    folder = Path(folder)
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        frames = _write_pngs(partial, chunks, fps, alpha, matte)
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


def _write_pngs(
    folder: Path, chunks: Iterable[np.ndarray], fps: int, alpha: bool = False, matte: bool = False
) -> int:
    fmt = "rgba" if alpha else "rgb24"
    with (
        _PngSequence(folder, PNG_PATTERN, fps, fmt) as frames,
        _PngSequence(folder, MATTE_PNG, fps, "gray") as mattes,
    ):
        for chunk in chunks:
            for frame in chunk:
                if alpha and frame.shape[-1] == 3:
                    frame = np.concatenate([frame, np.full((*frame.shape[:2], 1), 255, np.uint8)], axis=-1)
                frames.write(frame)
                if matte:
                    mattes.write(
                        frame[..., 3] if frame.shape[-1] == 4 else np.full(frame.shape[:2], 255, np.uint8)
                    )
        return frames.count


class _PngSequence:
    """A numbered PNG sequence written through FFmpeg's image2 muxer (opened at the first frame)."""

    def __init__(self, folder: Path, pattern: str, fps: int, pix_fmt: str):
        self.path = str(folder / pattern.replace("{:06d}", "%06d"))
        self.fps, self.pix_fmt = fps, pix_fmt
        self.out = self.stream = None
        self.count = 0

    def write(self, frame: np.ndarray) -> None:
        if self.out is None:
            self.out = av.open(self.path, "w", format="image2", options={"start_number": "0"})
            self.stream = self.out.add_stream("png", rate=self.fps)
            self.stream.width, self.stream.height, self.stream.pix_fmt = (
                frame.shape[1],
                frame.shape[0],
                self.pix_fmt,
            )
            self.stream.thread_type = "AUTO"
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format=self.pix_fmt)
        vf.pts, vf.time_base = self.count, Fraction(1, self.fps)
        self.out.mux(self.stream.encode(vf))
        self.count += 1

    def __enter__(self) -> _PngSequence:
        return self

    def __exit__(self, *exc) -> None:
        if self.out is None:
            return
        try:
            if exc[0] is None:
                self.out.mux(self.stream.encode(None))
        finally:
            self.out.close()


def iter_written(path: str | Path, size: int = 25) -> Iterator[np.ndarray]:
    """The frames of a written output (a video file, or a PNG folder) as straight RGBA chunks
    ``uint8 (T <= size, H, W, 4)``, alpha included: what previews and checks read back."""
    path = Path(path)
    if path.is_dir():
        frames = (_read_png(p) for p in sorted(path.glob("frame_*.png")))
    else:
        frames = iter_rgba(path)
    batch = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield np.stack(batch)
            batch = []
    if batch:
        yield np.stack(batch)


def _read_png(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return next(c.decode(video=0)).to_ndarray(format="rgba")
