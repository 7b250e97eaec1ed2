"""Final file assembly: video segments remuxed (never re-encoded) + the soundtrack + optional subtitles.

Everything goes through PyAV (no ffmpeg binary). Packets of the three streams are interleaved by decode time
as they are produced, so memory does not grow with the video length (the audio array itself is in memory).

The container follows the suffix, and the audio codec the container: ``.mp4`` AAC (at the soundtrack's own
rate when AAC has it, else 48 kHz; mono to 5.1 kept, 6.1 and 7.1 downmixed to 5.1), ``.mov`` and
``.mkv`` 24-bit PCM (any rate, 1-8 channels, bit-exact for 16- and 24-bit sources), ``.ts`` AAC. Subtitles:
``mov_text`` in mp4/mov, SubRip in mkv.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Iterator, Sequence
from fractions import Fraction
from math import ceil
from pathlib import Path

import av
import numpy as np
from av.subtitles.subtitle import SubtitleSet

from ..config import VIDEO_FPS
from ..errors import InputError
from .audio import as_soundtrack, channel_layout, fit_aac_channels, resample
from .captions import Cue

logger = logging.getLogger(__name__)

_AAC_RATES = {96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350}
_AUDIO_CHUNK = 1024 * 16  # samples per AudioFrame handed to the encoder
AAC_BIT_RATE_PER_CHANNEL = 160_000  # 320 kb/s stereo: transparent for speech and music with FFmpeg's AAC
_CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".ts": "mpegts"}
_AUDIO_CODEC = {"mp4": "aac", "mov": "pcm_s24le", "matroska": "pcm_s24le", "mpegts": "aac"}
_SUBTITLE_CODEC = {"mp4": "mov_text", "mov": "mov_text", "matroska": "subrip"}
_PCM_SCALE = float(1 << 23)  # 24-bit PCM full scale
_SUB_TB = Fraction(1, 1000)  # mov_text timestamps in milliseconds
_ASS_HEADER = (
    "[Script Info]\nScriptType: v4.00+\nPlayResX: 384\nPlayResY: 288\n\n[V4+ Styles]\n"
    "Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, Bold, "
    "Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, Shadow, Alignment, "
    "MarginL, MarginR, MarginV, Encoding\n"
    "Style: Default,Arial,16,&Hffffff,&Hffffff,&H0,&H0,0,0,0,0,100,100,0,0,1,1,0,2,10,10,10,0\n\n"
    "[Events]\nFormat: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\n"
)


def mux(
    video_segments: Sequence[str | Path],
    out_path: str | Path,
    audio: tuple[np.ndarray, int] | None = None,
    subtitles: Sequence[Cue] | None = None,
    fps: int = VIDEO_FPS,
    audio_codec: str | None = None,
) -> Path:
    """Concatenate video segments (as written by ``VideoWriter``, same codec, size and settings) into
    ``out_path`` without re-encoding, adding ``audio = (wave (N,) or (C, N), sample_rate)`` cut or
    zero-padded to the video length, and ``subtitles`` as a text stream (overlapping cues are cut at the
    next cue's start; cues past the end are dropped). ``audio_codec`` (``aac`` or ``pcm_s24le``) overrides
    the container's default (module doc). Returns ``out_path``."""
    segments = [Path(p) for p in video_segments]
    if not segments:
        raise InputError("mux: no video segments given: write at least one segment first")
    for seg in segments:
        if not seg.is_file():
            raise InputError(f"video segment '{seg}' does not exist: check the segment folder")
    out_path = Path(out_path)
    container = container_format(out_path)
    codec = audio_codec or _AUDIO_CODEC[container]
    if codec not in ("aac", "pcm_s24le"):
        raise InputError(f"audio codec '{codec}' is not offered: use 'aac' or 'pcm_s24le'")
    fps_q = Fraction(int(fps))
    probes = [probe_segment(seg) for seg in segments]
    for seg, probe in zip(segments[1:], probes[1:], strict=True):
        if probe[2] != probes[0][2]:
            raise InputError(
                f"video segment '{seg}' is {probe[2]}, '{segments[0]}' is {probes[0][2]}: "
                "all segments must share codec and size (write them with the same VideoWriter settings)"
            )
    counts = [count for count, _, _ in probes]
    delay = max(ceil(d * fps_q) for _, d, _ in probes)  # frames
    duration = Fraction(sum(counts)) / fps_q  # seconds
    partial = out_path.with_name(out_path.stem + ".partial" + out_path.suffix)
    try:
        _write(partial, container, codec, segments, counts, delay, fps_q, duration, audio, subtitles)
        partial.replace(out_path)
    finally:
        partial.unlink(missing_ok=True)
    logger.info(
        "muxed %d segments (%d frames, %.2f s) into %s", len(segments), sum(counts), duration, out_path
    )
    return out_path


def container_format(path: str | Path) -> str:
    """FFmpeg muxer name for a file suffix (``.mp4``, ``.mov``, ``.mkv``, ``.ts``)."""
    suffix = Path(path).suffix.lower()
    if suffix not in _CONTAINERS:
        raise InputError(f"output '{path}': unknown container '{suffix}': use .mp4, .mov, .mkv or .ts")
    return _CONTAINERS[suffix]


def _write(
    out_path: Path, container, codec, segments, counts, delay, fps_q, duration, audio, subtitles
) -> None:
    options = {"movflags": "faststart"} if container in ("mp4", "mov") else {}
    with av.open(str(out_path), "w", format=container, options=options) as out:
        with av.open(str(segments[0])) as first:
            v_out = out.add_stream_from_template(first.streams.video[0], opaque=True)
        wave, rate = _fit_audio(audio, duration, codec) if audio is not None else (None, 0)  # (C, N)
        a_out = add_audio_stream(out, codec, wave.shape[0], rate) if wave is not None else None
        s_out = _add_subtitle_stream(out, container) if subtitles else None
        out.start_encoding()
        sources = [video_packets(segments, counts, delay, fps_q, v_out)]
        if a_out is not None:
            sources.append(audio_packets(a_out, wave))
        if s_out is not None:
            sources.append(_subtitle_packets(s_out, subtitles, duration))
        for _, _, packet in heapq.merge(*sources, key=lambda item: (item[0], item[1])):
            out.mux(packet)


def probe_segment(path: Path) -> tuple[int, Fraction, str]:
    """``(frame count, decode delay in seconds, "codec WxH")``; the delay is how far the first decode time
    precedes the first presentation time (B-frames)."""
    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise InputError(f"video segment '{path}' has no video stream: rewrite it with Mp4Writer")
            stream = c.streams.video[0]
            count, start, first_dts = 0, None, None
            for packet in c.demux(stream):
                if packet.size == 0 or packet.pts is None:
                    continue
                count += 1
                pts = Fraction(packet.pts) * stream.time_base
                start = pts if start is None else min(start, pts)
                if first_dts is None and packet.dts is not None:
                    first_dts = Fraction(packet.dts) * stream.time_base
            if count == 0:
                raise InputError(f"video segment '{path}' holds no frames: rewrite it with Mp4Writer")
            delay = max(Fraction(0), start - (first_dts if first_dts is not None else start))
            ctx = stream.codec_context
            return count, delay, f"{ctx.name} {ctx.pix_fmt} {ctx.width}x{ctx.height}"
    except av.FFmpegError as err:
        raise InputError(f"video segment '{path}' is unreadable ({err}): rewrite it") from err


def video_packets(
    segments, counts, delay: int, fps: Fraction, stream, start: Fraction = Fraction(0)
) -> Iterator[tuple[Fraction, int, av.Packet]]:
    """Packets of every segment, presentation times shifted by the frames before it (and ``start`` s).

    Decode times are renumbered: packet k (over all segments, decode order) gets ``(k - delay) / fps``.
    Segments can carry different decode delays (a 1-frame segment has no B-frames), so shifting their own
    decode times would collide; with ``delay`` the largest one, ``dts <= pts`` still holds everywhere.
    """
    offset, k = Fraction(start), round(start * fps)  # seconds before this segment, packets so far
    for seg, count in zip(segments, counts, strict=True):
        with av.open(str(seg)) as c:
            src = c.streams.video[0]
            tb = src.time_base
            start = None
            for packet in c.demux(src):
                if packet.size == 0 or packet.pts is None:
                    continue
                start = packet.pts if start is None else start  # first packet is the keyframe at pts start
                dts = Fraction(k - delay) / fps
                packet.pts = round(offset / tb) + packet.pts - start
                packet.dts = round(dts / tb)
                packet.stream = stream
                k += 1
                yield dts, 0, packet
        offset += Fraction(count) / fps


def _add_subtitle_stream(out, container: str):
    """A ``mov_text`` (mp4/mov) or SubRip (mkv) stream, or None on PyAV < 17 (no subtitle encoding API
    there; FFmpeg's text encoders refuse to open without the ASS header that only PyAV >= 17 can set)."""
    if container not in _SUBTITLE_CODEC:
        logger.warning("%s files carry no subtitle stream here: write a sidecar .srt instead", container)
        return None
    if not hasattr(SubtitleSet, "create"):
        logger.warning(
            "PyAV %s cannot encode subtitles (needs >= 17): subtitle stream skipped; "
            "write a sidecar .srt with srt_format() instead",
            av.__version__,
        )
        return None
    stream = out.add_stream(_SUBTITLE_CODEC[container])
    stream.codec_context.subtitle_header = _ASS_HEADER.encode()
    stream.time_base = _SUB_TB
    return stream


def aac_rate(sr: int) -> int:
    """The soundtrack's own rate when AAC has it, else 48 kHz."""
    return int(sr) if int(sr) in _AAC_RATES else 48000


def add_audio_stream(out, codec: str, channels: int, rate: int):
    """An ``aac`` or ``pcm_s24le`` stream of ``channels`` at ``rate`` (already valid for the codec)."""
    stream = out.add_stream(codec, rate=rate, layout=channel_layout(channels))
    if codec == "aac":
        stream.bit_rate = AAC_BIT_RATE_PER_CHANNEL * channels
    return stream


def _fit_audio(audio, duration: Fraction, codec: str) -> tuple[np.ndarray, int]:
    """``(wave (N,) or (C, N), sr)`` -> ``(float32 (C, N), rate)`` valid for ``codec``, cut or zero-padded to
    ``duration``. AAC keeps mono to 5.1 and an AAC rate; PCM keeps everything."""
    wave, sr = as_soundtrack(audio)
    rate = sr
    if codec == "aac":
        rate = aac_rate(sr)
        if rate != sr:
            logger.info("AAC has no %d Hz: soundtrack resampled to %d Hz", sr, rate)
        wave = fit_aac_channels(wave, sr)
        wave = resample(wave, sr, rate)  # (C, N)
    n = round(duration * rate)
    wave = wave[:, :n]
    return np.pad(wave, ((0, 0), (0, n - wave.shape[1]))), rate


def _audio_frame(stream, wave: np.ndarray, start: int) -> av.AudioFrame:
    """Samples ``wave (C, n)`` as a frame for ``stream``'s encoder, ``pts`` = ``start`` (in samples)."""
    layout = channel_layout(wave.shape[0])
    if stream.codec_context.name == "aac":
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(wave, np.float32), format="fltp", layout=layout
        )
    else:  # 24-bit PCM from 32-bit integers whose low byte is zero (FFmpeg's s32 input of pcm_s24le)
        ints = np.clip(np.round(wave.T * _PCM_SCALE), -_PCM_SCALE, _PCM_SCALE - 1).astype(np.int32) << 8
        frame = av.AudioFrame.from_ndarray(ints.reshape(1, -1), format="s32", layout=layout)
    rate = stream.codec_context.sample_rate
    frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
    return frame


def audio_packets(
    stream, wave: np.ndarray, first_sample: int = 0, keep_from: int | None = None
) -> Iterator[tuple[Fraction, int, av.Packet]]:
    """Encoded packets of ``wave (C, N)`` whose first sample sits at ``first_sample`` (in samples of the
    stream's rate), chunk by chunk as the merge asks for them. ``keep_from``: drop packets that start
    earlier (pre-roll encoded only to prime the encoder)."""

    def encoded():
        for start in range(0, wave.shape[1], _AUDIO_CHUNK):
            chunk = wave[:, start : start + _AUDIO_CHUNK]
            yield from stream.encode(_audio_frame(stream, chunk, first_sample + start))
        yield from stream.encode(None)

    for packet in encoded():
        if keep_from is not None and packet.pts < keep_from:
            continue
        yield Fraction(packet.dts) * packet.time_base, 1, packet


def _subtitle_packets(
    stream, cues: Sequence[Cue], duration: Fraction
) -> Iterator[tuple[Fraction, int, av.Packet]]:
    ms = [(round(c.start * 1000), round(c.end * 1000), c.text) for c in sorted(cues, key=lambda c: c.start)]
    end_ms = round(duration * 1000)
    for k, (start, end, text) in enumerate(ms):
        end = min(end, end_ms, ms[k + 1][0] if k + 1 < len(ms) else end_ms)
        start = max(start, 0)
        if end <= start or not text.strip():
            continue
        dialogue = "0,0,Default,,0,0,0,," + text.strip().replace("\r", "").replace("\n", "\\N")  # ASS event
        packet = stream.codec_context.encode_subtitle(
            SubtitleSet.create(dialogue.encode(), 0, end - start, 0)
        )
        packet.stream = stream
        packet.time_base = _SUB_TB
        packet.pts = packet.dts = start
        packet.duration = end - start
        yield Fraction(start) * _SUB_TB, 2, packet
