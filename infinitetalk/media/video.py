"""Video reading at 25 fps, still images, and streaming video writers (PyAV, no ffmpeg binary).

Frames are ``uint8 (H, W, 3)`` RGB; batches ``uint8 (T, H, W, 3)``.

Colour: RGB is converted to Y'CbCr with the BT.709 matrix in limited ("TV", 16-235) range and the stream
is tagged so (matrix, primaries and transfer BT.709, range limited), in the codec's headers and in the
container's ``colr`` box, so players and editors need not guess. Lossless RGB codecs keep RGB and are
tagged as RGB with BT.709 primaries. Decoding (:func:`frame_to_rgb`) honours whatever a file is tagged with.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction
from math import ceil
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import Interpolation
from PIL import Image, ImageOps, UnidentifiedImageError

from ..config import VIDEO_FPS
from ..errors import InputError
from ..validation import MAX_IMAGE_SIDE as MAX_SIDE
from ..validation import check_image_size, to_rgb8

logger = logging.getLogger(__name__)

_SEEK_AHEAD_S = 4  # forward jumps longer than this seek instead of decoding every frame
_X264_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
)


# AVColorSpace (the tag a decoded frame carries) -> swscale's matrix name; others use FFmpeg's default (BT.601)
_MATRIX = {1: "ITU709", 4: "FCC", 5: "ITU601", 6: "SMPTE170M", 7: "SMPTE240M", 9: "BT2020", 10: "BT2020"}
# exact rounding and full chroma interpolation: 10-bit 4:2:2 round trips come back exact
_ACCURATE = Interpolation.BILINEAR | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT
_BT709, _RGB, _LIMITED, _FULL = 1, 0, 1, 2  # AVCOL_SPC_BT709 / _PRI_BT709 / _TRC_BT709, AVCOL_SPC_RGB, ranges


def frame_to_rgb(frame: av.VideoFrame) -> np.ndarray:
    """A decoded frame as ``uint8 (H, W, 3)`` RGB, honouring its colour tags: the matrix it is tagged with
    (BT.601 when untagged, as FFmpeg assumes) and its range (limited unless tagged full or a ``yuvj`` format)."""
    name = frame.format.name
    if not name.startswith("yuv"):  # RGB, grey, palette: no matrix involved
        return frame.to_ndarray(format="rgb24")
    matrix = _MATRIX.get(int(frame.colorspace))
    full = int(frame.color_range) == _FULL or name.startswith("yuvj")
    rgb = frame.reformat(
        format="rgb24",
        src_colorspace=matrix,
        src_color_range="JPEG" if full else "MPEG",
        dst_color_range="JPEG",
        interpolation=_ACCURATE,
    )
    return rgb.to_ndarray()


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as ``uint8 (H, W, 3)`` RGB; EXIF rotation applied. Transparency is composited over
    white, greyscale repeated, 16-bit scaled (not clipped); sizes are checked before the pixels are decoded."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"image file '{path}' does not exist: check the path or pick another file")
    try:
        with Image.open(path) as img:
            check_image_size(
                img.height, img.width, name=f"image '{path.name}'", min_side=1
            )  # before decoding
            img = ImageOps.exif_transpose(img)
            return to_rgb8(_pil_array(img), name=f"image '{path.name}'")
    except Image.DecompressionBombError as err:
        raise InputError(
            f"image '{path}' is too large to decode safely ({err}): downscale it below {MAX_SIDE} pixels a side"
        ) from err
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise InputError(f"'{path}' is not a readable image ({err}): use a png or jpg file") from err


def _pil_array(img: Image.Image) -> np.ndarray:
    """Pixels in their own depth: uint8 for 8-bit modes, uint16 for 16/32-bit greyscale, float for 'F'."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(img)
        return np.clip(a, 0, 65535).astype(np.uint16) if a.dtype != np.uint16 else a
    if img.mode == "F":
        a = np.asarray(img, dtype=np.float32)
        top = float(a.max()) if a.size else 1.0
        return a / top if top > 1.0 else a
    keep = {"L": "L", "LA": "LA", "RGB": "RGB", "RGBA": "RGBA", "1": "L"}
    target = keep.get(img.mode) or ("RGBA" if "transparency" in img.info or "A" in img.mode else "RGB")
    return np.asarray(img.convert(target), dtype=np.uint8)


class VideoReader:
    """Frames of a video resampled to ``fps`` (default 25): frame ``i`` is the source frame shown at time
    ``i / fps``, i.e. the last source frame whose timestamp is at or before it.

    ``frame(i)`` decodes on demand and keeps only two source frames in memory, so increasing indices are
    cheap; a backward (or long forward) jump seeks to the previous keyframe and decodes from there.
    ``num_frames`` is ``ceil(duration * fps)``; if the file ends before its header said, later indices
    return the last decoded frame. A phone video's display rotation is applied (frames come upright and
    ``size`` is the displayed size); a variable frame rate is followed by timestamps, and the length is
    taken from the last frame shown when the header under-reports it.

    ``start`` / ``duration`` (seconds) read a trim window of the file without re-encoding it: frame 0 is
    the frame shown at ``start``; ``duration`` 0 means to the end.
    """

    def __init__(self, path: str | Path, fps: int = VIDEO_FPS, start: float = 0.0, duration: float = 0.0):
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"video file '{self.path}' does not exist: check the path or pick another file")
        if fps <= 0:
            raise InputError(f"video fps must be positive, got {fps}")
        if start < 0 or duration < 0:
            raise InputError(f"video trim start {start} s / duration {duration} s must not be negative")
        self.fps = Fraction(fps)
        self.trim_start = Fraction(start).limit_denominator(1 << 20)
        try:
            self._container = av.open(str(self.path))
        except av.FFmpegError as err:
            raise InputError(f"'{self.path}' is not a readable video ({err}): convert it to mp4") from err
        if not self._container.streams.video:
            self._container.close()
            raise InputError(f"'{self.path}' has no video stream: pick a video file (or load it as audio)")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"
        self._start = self._start_time()
        self.native_fps = float(self._stream.average_rate or self._stream.guessed_rate or 0)
        self.duration = max(self._probe_duration(), self._presentation_end()) - self.trim_start  # seconds
        if duration > 0:
            self.duration = min(self.duration, Fraction(duration).limit_denominator(1 << 20))
        if self.duration <= 0 < self.trim_start:
            self._container.close()
            raise InputError(
                f"video '{self.path}': trim start {float(self.trim_start):.2f} s is past its end: trim less"
            )
        self.num_frames = ceil(self.duration * self.fps) if self.duration > 0 else 0  # exact (Fraction)
        self._reset_decoder()
        self.rotation = _rotation(self._next)  # degrees counter-clockwise to show the frame upright

    # -- properties ---------------------------------------------------------------------------------
    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` in pixels, as displayed (a rotated phone video's sides swapped)."""
        w, h = self._stream.codec_context.width, self._stream.codec_context.height
        return (h, w) if getattr(self, "rotation", 0) in (90, 270) else (w, h)

    @property
    def width(self) -> int:
        return self.size[0]

    @property
    def height(self) -> int:
        return self.size[1]

    def __len__(self) -> int:
        return self.num_frames

    # -- probing ------------------------------------------------------------------------------------
    def _start_time(self) -> Fraction:
        s = self._stream
        if s.start_time is not None:
            return Fraction(s.start_time) * s.time_base
        return Fraction(0)

    def _probe_duration(self) -> Fraction:
        s = self._stream
        if s.duration:
            return Fraction(s.duration) * s.time_base
        if self._container.duration:
            return Fraction(self._container.duration, av.time_base) - self._start
        if s.frames and self.native_fps:
            return Fraction(s.frames) / Fraction(self.native_fps).limit_denominator(1001000)
        logger.warning("%s: duration unknown, decoding once to count frames", self.path)
        return self._count_duration()

    def _presentation_end(self) -> Fraction:
        """When the last frame stops showing (its time plus duration), from the packets of the last GOP:
        a variable-frame-rate file's header can say less. 0 when that cannot be read."""
        s = self._stream
        try:
            self._container.seek(2**62, backward=True, any_frame=False, stream=s)
            end = Fraction(0)
            for packet in self._container.demux(s):
                if packet.pts is not None:
                    end = max(end, Fraction(packet.pts + (packet.duration or 0)) * s.time_base)
            self._container.seek(0)
        except av.FFmpegError:
            self._container.seek(0)
            return Fraction(0)
        return max(Fraction(0), end - self._start)

    def _count_duration(self) -> Fraction:
        last, step = Fraction(0), Fraction(0)
        for frame in self._container.decode(self._stream):
            t = self._frame_time(frame)
            step, last = t - last, t
        self._container.seek(0)
        return last + step - self._start

    # -- decoding -----------------------------------------------------------------------------------
    def _frame_time(self, frame: av.VideoFrame) -> Fraction:
        if frame.pts is None:
            return Fraction(frame.time or 0).limit_denominator(1 << 20)
        return Fraction(frame.pts) * frame.time_base

    def _reset_decoder(self) -> None:
        self._frames = self._container.decode(self._stream)
        self._current: av.VideoFrame | None = None  # last frame at or before the last request
        self._next: av.VideoFrame | None = self._pull()
        self._last_index = -1
        self._last_time = -1 / self.fps  # time of the last request (the decoder sits at the start)

    def _pull(self) -> av.VideoFrame | None:
        try:
            return next(self._frames)
        except StopIteration:
            return None
        except av.FFmpegError as err:
            raise InputError(f"video '{self.path}' cannot be decoded ({err}): re-encode it") from err

    def _seek(self, t: Fraction) -> None:
        target = int((t + self._start) / self._stream.time_base)
        self._container.seek(target, backward=True, any_frame=False, stream=self._stream)
        self._reset_decoder()
        if self._next is not None and self._frame_time(self._next) - self._start > t:
            self._container.seek(0)  # the demuxer landed after the target: decode from the start
            self._reset_decoder()

    def frame(self, i: int) -> np.ndarray:
        """Frame ``i`` at ``fps`` as ``uint8 (H, W, 3)`` RGB."""
        if not 0 <= i < self.num_frames:
            raise IndexError(
                f"frame {i} out of range: '{self.path}' has {self.num_frames} frames at {self.fps} fps"
            )
        t = self.trim_start + Fraction(i) / self.fps  # seconds from the stream start
        if i < self._last_index or t - self._last_time > _SEEK_AHEAD_S:
            self._seek(t)
        while self._next is not None and self._frame_time(self._next) - self._start <= t:
            self._current, self._next = self._next, self._pull()
        if self._current is None:  # the first frame starts after t (stream offset): show it anyway
            self._current, self._next = self._next, self._pull()
        if self._current is None:
            raise InputError(f"video '{self.path}' holds no decodable frames: re-encode it")
        self._last_index, self._last_time = i, t
        return _upright(frame_to_rgb(self._current), self.rotation)

    def __iter__(self):
        for i in range(self.num_frames):
            yield self.frame(i)

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _rotation(frame) -> int:
    """A decoded frame's display rotation, counter-clockwise, as 0, 90, 180 or 270 degrees."""
    degrees = getattr(frame, "rotation", 0) if frame is not None else 0
    return int(round((degrees or 0) / 90)) % 4 * 90


def _upright(rgb: np.ndarray, rotation: int) -> np.ndarray:
    return np.ascontiguousarray(np.rot90(rgb, k=rotation // 90)) if rotation else rgb


@dataclass(frozen=True)
class VideoCodec:
    """How :class:`VideoWriter` encodes: FFmpeg encoder, pixel format, options, colour handling."""

    encoder: str
    pix_fmt: str
    rgb: bool  # True: RGB stored as is (lossless); False: BT.709 limited-range Y'CbCr
    even_width: bool  # chroma subsampled horizontally
    even_height: bool  # chroma subsampled vertically
    description: str


CODECS = {
    "h264": VideoCodec("libx264", "yuv420p", False, True, True, "H.264 4:2:0 8-bit (CRF, preset)"),
    "h264-lossless": VideoCodec("libx264rgb", "rgb24", True, False, False, "H.264 lossless RGB (qp 0)"),
    "prores": VideoCodec("prores_ks", "yuv422p10le", False, True, False, "Apple ProRes 422 HQ 10-bit"),
    "ffv1": VideoCodec("ffv1", "bgr0", True, False, False, "FFV1 lossless RGB"),
}


class VideoWriter:
    """Streaming video writer: frames are encoded as they arrive, memory stays flat.

    ``codec``: ``h264`` (libx264 yuv420p, ``crf`` and ``preset``), ``h264-lossless`` (libx264rgb, exact RGB),
    ``prores`` (ProRes 422 HQ, yuv422p10le) or ``ffv1`` (lossless RGB). The container follows the file
    suffix (``.mp4``, ``.mov``, ``.mkv``). Y'CbCr codecs get BT.709 limited range, tagged (module doc).
    Sizes a chroma-subsampled format cannot hold (odd width or height) are padded by one replicated
    row/column at the bottom/right, so the file is ``encoded_size`` (logged once). Frames must all have
    the declared size.
    """

    def __init__(
        self,
        path: str | Path,
        fps: int = VIDEO_FPS,
        width: int = 0,
        height: int = 0,
        crf: int = 18,
        preset: str = "medium",
        codec: str = "h264",
    ):
        if width <= 0 or height <= 0:
            raise InputError(f"video size {width}x{height} is invalid: width and height must be positive")
        if codec not in CODECS:
            raise InputError(f"video codec '{codec}' is unknown: use one of {', '.join(CODECS)}")
        if not 0 <= crf <= 51:
            raise InputError(
                f"crf {crf} out of range: use 0 (lossless) .. 51 (worst), 18 is visually lossless"
            )
        if preset not in _X264_PRESETS:
            raise InputError(f"x264 preset '{preset}' is unknown: use one of {', '.join(_X264_PRESETS)}")
        self.path = Path(path)
        self.codec = CODECS[codec]
        self.fps, self.width, self.height = int(fps), int(width), int(height)
        spec = self.codec
        self.encoded_size = (
            width + (width % 2 if spec.even_width else 0),
            height + (height % 2 if spec.even_height else 0),
        )
        if self.encoded_size != (width, height):
            logger.info(
                "%s: %dx%d padded to %dx%d for %s", self.path, width, height, *self.encoded_size, spec.pix_fmt
            )
        self.frames_written = 0
        self._failed = False  # an encoder error: close() must not flush it again
        self._container = av.open(str(self.path), mode="w")
        self._stream = self._container.add_stream(
            spec.encoder, rate=self.fps, options=self._options(codec, crf, preset)
        )
        self._stream.width, self._stream.height = self.encoded_size
        self._stream.pix_fmt = spec.pix_fmt
        ctx = self._stream.codec_context
        ctx.color_primaries, ctx.color_trc = _BT709, _BT709
        ctx.colorspace, ctx.color_range = (_RGB, _FULL) if spec.rgb else (_BT709, _LIMITED)

    @staticmethod
    def _options(codec: str, crf: int, preset: str) -> dict[str, str]:
        if codec == "h264":
            return {"crf": str(crf), "preset": preset}
        if codec == "h264-lossless":
            return {"qp": "0", "preset": preset}
        if codec == "prores":
            return {"profile": "3", "vendor": "apl0"}  # 3 = HQ
        return {"level": "3", "slicecrc": "1", "g": "1"}  # ffv1: intra only, CRC per slice

    def _convert(self, rgb: np.ndarray) -> av.VideoFrame:
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        if self.codec.rgb:
            return frame.reformat(format=self.codec.pix_fmt)
        return frame.reformat(
            format=self.codec.pix_fmt,
            src_color_range="JPEG",
            dst_colorspace="ITU709",
            dst_color_range="MPEG",
            interpolation=_ACCURATE,
        )

    def write(self, frames: np.ndarray) -> None:
        """Encode ``uint8 (T, H, W, 3)`` (or one ``(H, W, 3)`` frame)."""
        if self._container is None:
            raise RuntimeError(f"VideoWriter for '{self.path}' is closed")
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1:] != (self.height, self.width, 3):
            raise InputError(
                f"frames {frames.dtype} {tuple(frames.shape)} do not fit '{self.path}': "
                f"expected uint8 (T, {self.height}, {self.width}, 3)"
            )
        pad_w, pad_h = self.encoded_size[0] - self.width, self.encoded_size[1] - self.height
        for frame in frames:  # (H, W, 3)
            if pad_w or pad_h:
                frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
            vf = self._convert(frame)
            vf.pts = self.frames_written
            vf.time_base = Fraction(1, self.fps)
            try:
                self._container.mux(self._stream.encode(vf))
            except av.FFmpegError:
                self._failed = True
                raise
            self.frames_written += 1

    def close(self) -> None:
        """Flush the encoder and finish the file (idempotent)."""
        if self._container is None:
            return
        try:
            if not self._failed:
                self._container.mux(self._stream.encode(None))
        finally:
            self._container.close()
            self._container = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Mp4Writer(VideoWriter):
    """:class:`VideoWriter` with the H.264 default (the per-window segments of :class:`~infinitetalk.sinks.SegmentStore`)."""
