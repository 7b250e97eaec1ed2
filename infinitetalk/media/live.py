"""Watch a video while it is generated: an HLS playlist that grows window by window, and window clips.

- :class:`LivePlaylist` keeps ``live.m3u8`` (HLS, ``EVENT`` type) next to one MPEG-TS file per finished
  window (``live_00000.ts`` ...): video remuxed from the window's segment (no re-encode) and the soundtrack
  of the same span as AAC. Timestamps run on across files, so the playlist plays as one video, and audio
  packets lie on one 1024-sample grid (each file's encoder is primed with the audio before it), so the
  joins are seamless. VLC, mpv, ffplay, Safari and every HLS player open it while it grows and keep
  polling it; ``#EXT-X-ENDLIST`` marks the end of the run.
- :func:`write_clip` writes one window as a small standalone mp4 with its sound (the editor's preview).

Both take H.264 4:2:0 segments as they are; other segments (lossless RGB H.264, which browsers and hardware
decoders do not play) are first encoded to an H.264 4:2:0 copy like the default segments (CRF 18).
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from math import ceil
from pathlib import Path

import av
import numpy as np

from ..config import VIDEO_FPS
from .audio import Soundtrack, as_soundtrack, fit_aac_channels, resample
from .mux import aac_rate, add_audio_stream, audio_packets, mux, probe_segment, video_packets
from .video import VideoWriter, frame_to_rgb

logger = logging.getLogger(__name__)

PLAYLIST = "live.m3u8"
_TS = "live_{:05d}.ts"
_AAC_FRAME = 1024  # samples per AAC packet
_PREROLL = 2 * _AAC_FRAME  # audio encoded before a file's start so that its first packets are primed
PLAYABLE_PIX_FMT = "yuv420p"  # what every player and browser decodes
PLAYABLE_CRF = 18  # H.264 copies of other segments look like the default segments


@dataclass(frozen=True)
class LiveSegment:
    index: int  # window
    start_frame: int  # first frame of the window in the whole video
    frames: int
    file: str  # TS file name inside the playlist's folder


class LivePlaylist:
    """HLS playlist of the windows written so far (module doc). ``audio``: the soundtrack (or None)."""

    def __init__(
        self, directory: str | os.PathLike, fps: int = VIDEO_FPS, audio: tuple[np.ndarray, int] | None = None
    ):
        self.directory = Path(directory)
        self.fps = int(fps)
        self.audio: Soundtrack | None = None
        if audio is not None:
            track = as_soundtrack(audio)
            rate = aac_rate(track.sample_rate)
            wave = fit_aac_channels(track.wave, track.sample_rate)
            self.audio = Soundtrack(resample(wave, track.sample_rate, rate), rate)
        self.segments: list[LiveSegment] = []
        self.target_duration = 0
        self.ended = False

    @property
    def path(self) -> Path:
        return self.directory / PLAYLIST

    def add(self, index: int, segment: str | Path, start_frame: int, frames: int) -> Path:
        """Write window ``index`` (its segment file, first frame, frame count) and publish it."""
        self.directory.mkdir(parents=True, exist_ok=True)
        name = _TS.format(index)
        write_ts(segment, self.directory / name, start_frame, self.fps, self.audio)
        self.segments.append(LiveSegment(index, start_frame, frames, name))
        self._publish()
        return self.directory / name

    def restore(self, entries: Sequence[tuple[int, str | Path, int, int]]) -> None:
        """After a resume: publish the windows already written (rewriting any TS file that is missing)."""
        self.segments, self.ended = [], False
        for index, segment, start, frames in entries:
            name = _TS.format(index)
            if not (self.directory / name).is_file():
                self.directory.mkdir(parents=True, exist_ok=True)
                write_ts(segment, self.directory / name, start, self.fps, self.audio)
            self.segments.append(LiveSegment(index, start, frames, name))
        if self.segments:
            self._publish()

    def end(self) -> None:
        """Mark the playlist complete (players stop polling)."""
        self.ended = True
        if self.segments:
            self._publish()

    def _publish(self) -> None:
        if not self.target_duration:  # the first window is the longest (later ones skip the motion frames)
            self.target_duration = max(1, ceil(max(s.frames for s in self.segments) / self.fps))
        lines = [
            "#EXTM3U",
            "#EXT-X-VERSION:3",
            f"#EXT-X-TARGETDURATION:{self.target_duration}",
            "#EXT-X-PLAYLIST-TYPE:EVENT",
            "#EXT-X-MEDIA-SEQUENCE:0",
        ]
        for seg in self.segments:
            lines += [f"#EXTINF:{seg.frames / self.fps:.3f},", seg.file]
        if self.ended:
            lines.append("#EXT-X-ENDLIST")
        tmp = self.path.with_name(PLAYLIST + ".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, self.path)


def write_ts(
    segment: str | Path, out_path: str | Path, start_frame: int, fps: int, audio: Soundtrack | None
) -> Path:
    """One window as MPEG-TS at its place in the whole video: video packets shifted by ``start_frame``,
    AAC packets on the global 1024-sample grid that start in this window's span (module doc)."""
    segment, out_path = Path(segment), Path(out_path)
    with playable(segment, out_path.with_name(out_path.name + ".h264.mp4"), fps) as video:
        return _write_ts(video, out_path, start_frame, fps, audio)


def _write_ts(segment: Path, out_path: Path, start_frame: int, fps: int, audio: Soundtrack | None) -> Path:
    count, delay_s, _ = probe_segment(segment)
    fps_q = Fraction(int(fps))
    delay = ceil(delay_s * fps_q)
    start, end = Fraction(start_frame) / fps_q, Fraction(start_frame + count) / fps_q
    partial = out_path.with_name(out_path.name + ".partial")
    # timestamps are absolute and must stay so (the muxer would shift a first file's negative decode times)
    with av.open(str(partial), "w", format="mpegts", options={"avoid_negative_ts": "disabled"}) as out:
        with av.open(str(segment)) as src:
            v_out = out.add_stream_from_template(src.streams.video[0], opaque=True)
        sources = [video_packets([segment], [count], delay, fps_q, v_out, start=start)]
        if audio is not None:
            rate = audio.sample_rate
            first = _grid(start * rate)  # packets [first, last) belong to this file
            last = _grid(end * rate)
            lo = max(0, first - _PREROLL)
            wave = audio.wave[:, lo : last + _PREROLL]
            if wave.shape[1] < last + _PREROLL - lo:  # past the end of the sound: silence
                wave = np.pad(wave, ((0, 0), (0, last + _PREROLL - lo - wave.shape[1])))
            a_out = add_audio_stream(out, "aac", wave.shape[0], rate)
            keep_from = first - (_AAC_FRAME if first == 0 else 0)  # the very first file keeps its priming
            packets = audio_packets(a_out, wave, first_sample=lo, keep_from=keep_from)
            sources.append(item for item in packets if item[2].pts < last)
        out.start_encoding()
        for _, _, packet in heapq.merge(*sources, key=lambda item: (item[0], item[1])):
            out.mux(packet)
    partial.replace(out_path)
    return out_path


def _grid(samples: Fraction) -> int:
    return int(samples // _AAC_FRAME) * _AAC_FRAME


def write_clip(
    segment: str | Path,
    out_path: str | Path,
    start_frame: int,
    fps: int,
    audio: tuple[np.ndarray, int] | None,
) -> Path:
    """One window as a standalone mp4 (H.264 4:2:0 remuxed, AAC of the window's span): a playable preview."""
    out_path = Path(out_path)
    with playable(Path(segment), out_path.with_name(out_path.stem + ".h264.mp4"), fps) as video:
        count = probe_segment(video)[0]
        sound = None
        if audio is not None:
            track = as_soundtrack(audio)
            a = round(Fraction(start_frame, fps) * track.sample_rate)
            b = round(Fraction(start_frame + count, fps) * track.sample_rate)
            sound = (track.wave[:, a:b], track.sample_rate)
        return mux([video], out_path, audio=sound, fps=fps)


@contextlib.contextmanager
def playable(segment: Path, scratch: Path, fps: int) -> Iterator[Path]:
    """``segment`` itself when it is H.264 4:2:0, else an H.264 4:2:0 copy written to ``scratch`` (removed on
    exit): lossless RGB H.264 is High 4:4:4, which browsers, Safari and hardware decoders do not play."""
    codec, pix_fmt, _ = probe_segment(segment)[2].split(" ")
    if (codec, pix_fmt) == ("h264", PLAYABLE_PIX_FMT):
        yield segment
        return
    try:
        with av.open(str(segment)) as src:
            ctx = src.streams.video[0].codec_context
            with VideoWriter(scratch, fps, ctx.width, ctx.height, PLAYABLE_CRF, "veryfast") as out:
                for frame in src.decode(video=0):
                    out.write(frame_to_rgb(frame))
        yield scratch
    finally:
        scratch.unlink(missing_ok=True)
