"""Media I/O: audio loading/preparation, VideoReader, Mp4Writer + mux, captions.

Every file is produced here with PyAV / soundfile; sizes are tiny so the file runs in seconds.
"""

from __future__ import annotations

import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile
from av.subtitles.subtitle import SubtitleSet

from infinitetalk.errors import InputError
from infinitetalk.media import (
    Cue,
    Mp4Writer,
    VideoReader,
    audio_num_frames,
    burn_captions,
    combine_speakers,
    downmix,
    load_audio,
    loudness_normalize,
    measure_loudness,
    mux,
    prepare_speech,
    read_image,
    resample,
    srt_format,
    srt_parse,
)

HAS_SUBTITLE_ENCODER = hasattr(SubtitleSet, "create")  # PyAV >= 17


def sine(freq: float, seconds: float, sr: int, amp: float = 0.3) -> np.ndarray:
    t = np.arange(round(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(wave: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return float(np.fft.rfftfreq(len(wave), 1 / sr)[np.argmax(spectrum)])


def encode_audio(path, wave: np.ndarray, sr: int, codec: str, fmt: str) -> None:
    """Mono float wave -> compressed file through PyAV."""
    with av.open(str(path), "w") as c:
        stream = c.add_stream(codec, rate=sr, layout="mono")
        frame = av.AudioFrame.from_ndarray(wave[None], format="flt", layout="mono")
        frame.sample_rate, frame.pts = sr, 0
        for packet in stream.encode(frame):
            c.mux(packet)
        c.mux(stream.encode(None))


def write_video(path, frames: np.ndarray, fps: int, crf: int = 18) -> None:
    with Mp4Writer(path, fps=fps, width=frames.shape[2], height=frames.shape[1], crf=crf) as w:
        w.write(frames)


def decode_all(path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


# -- audio ---------------------------------------------------------------------------------------
def test_resample_keeps_frequency():
    out = resample(sine(1000, 1.0, 24000), 24000, 16000)
    assert out.dtype == np.float32 and out.shape == (16000,)
    assert abs(peak_hz(out, 16000) - 1000) <= 1.0  # 1 s of signal: 1 Hz bins


def test_resample_multichannel_last_axis():
    out = resample(np.stack([sine(500, 0.5, 44100), sine(700, 0.5, 44100)]), 44100, 16000)
    assert out.shape == (2, 8000)
    assert abs(peak_hz(out[1], 16000) - 700) <= 2.0  # 0.5 s: 2 Hz bins


def test_loudness_normalize_reaches_target_and_skips_silence():
    rng = np.random.default_rng(0)
    speechlike = (0.05 * rng.standard_normal(32000)).astype(np.float32) * sine(3, 2.0, 16000, 1.0)
    out = loudness_normalize(speechlike, 16000)
    assert abs(measure_loudness(out, 16000) - (-23.0)) < 0.5
    assert abs(measure_loudness(speechlike, 16000) - (-23.0)) > 3  # the input really was off target
    silence = np.zeros(16000, np.float32)
    assert np.array_equal(loudness_normalize(silence, 16000), silence)


def test_loudness_normalize_short_audio_is_measured_by_tiling():
    short = sine(440, 0.2, 16000, 0.01)  # shorter than the meter's 0.4 s block
    out = loudness_normalize(short, 16000)
    assert out.shape == short.shape
    assert abs(measure_loudness(out, 16000) - (-23.0)) < 0.5


def test_prepare_speech_mono_16k_normalised():
    stereo = np.stack([sine(440, 1.0, 44100, 0.5), sine(440, 1.0, 44100, 0.1)])
    out = prepare_speech(stereo, 44100)
    assert out.dtype == np.float32 and out.shape == (16000,)
    assert abs(measure_loudness(out, 16000) + 23.0) < 0.5
    raw = prepare_speech(stereo, 44100, normalize=False)
    assert abs(np.abs(raw).max() - 0.3) < 0.01  # channel mean of 0.5 and 0.1 amplitudes


def test_channels_last_audio_is_refused():
    with pytest.raises(InputError, match="channels first"):
        prepare_speech(np.zeros((16000, 2), np.float32), 16000)


def test_audio_num_frames_follows_reference_float_formula():
    assert [audio_num_frames(n) for n in (0, 639, 640, 1920, 16000, 16639)] == [0, 0, 1, 3, 25, 25]
    # the reference's float int(n/16000*25) is one below the exact floor here; we keep the reference's
    assert audio_num_frames(18560) == 28 == int(18560 / 16000 * 25)


def test_load_audio_soundfile_formats(tmp_path):
    wave = np.stack([sine(440, 0.5, 22050), sine(880, 0.5, 22050)])  # (2, N)
    for ext in ("wav", "flac"):
        soundfile.write(tmp_path / f"a.{ext}", wave.T, 22050, subtype="PCM_16")
        got, sr = load_audio(tmp_path / f"a.{ext}")
        assert sr == 22050 and got.shape == wave.shape and got.dtype == np.float32
        assert np.abs(got - wave).max() < 1e-3  # 16-bit quantisation


@pytest.mark.parametrize("ext,codec", [("mp3", "libmp3lame"), ("m4a", "aac")])
def test_load_audio_compressed_via_pyav(tmp_path, ext, codec):
    path = tmp_path / f"a.{ext}"
    encode_audio(path, sine(440, 1.0, 44100), 44100, codec, ext)
    got, sr = load_audio(path)
    assert sr == 44100 and got.ndim == 2 and got.shape[0] == 1
    assert abs(got.shape[1] - 44100) <= 2 * 1152  # codec padding: at most two codec frames
    assert abs(peak_hz(got[0], sr) - 440) <= 2.0


def test_load_audio_track_of_a_video(tmp_path):
    path = tmp_path / "v.mp4"
    write_video(tmp_path / "seg.mp4", np.zeros((25, 32, 32, 3), np.uint8), 25)
    mux([tmp_path / "seg.mp4"], path, audio=(sine(300, 1.0, 16000), 16000))
    got, sr = load_audio(path)
    assert sr == 16000 and abs(got.shape[1] - 16000) <= 1024
    assert abs(peak_hz(got[0], sr) - 300) <= 2.0


def test_load_audio_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_audio(tmp_path / "missing.wav")
    write_video(tmp_path / "silent.mp4", np.zeros((5, 32, 32, 3), np.uint8), 25)
    with pytest.raises(InputError, match="no audio stream"):
        load_audio(tmp_path / "silent.mp4")
    soundfile.write(tmp_path / "empty.wav", np.zeros((0, 1), np.float32), 16000)
    with pytest.raises(InputError, match="no samples"):
        load_audio(tmp_path / "empty.wav")
    (tmp_path / "junk.mp3").write_bytes(b"not audio at all" * 10)
    with pytest.raises(InputError):
        load_audio(tmp_path / "junk.mp3")


def test_combine_speakers_para_and_add():
    w1, w2 = np.full(100, 0.5, np.float32), np.full(60, -0.25, np.float32)
    t1, t2, mix = combine_speakers(w1, w2, "para")
    assert t1.shape == t2.shape == mix.shape == (100,)
    assert np.array_equal(t1, w1) and np.array_equal(t2[:60], w2) and not t2[60:].any()
    assert np.array_equal(mix, t1 + t2)
    t1, t2, mix = combine_speakers(w1, w2, "add")
    assert t1.shape == t2.shape == (160,)
    assert np.array_equal(t1[:100], w1) and not t1[100:].any()
    assert not t2[:100].any() and np.array_equal(t2[100:], w2)
    assert np.array_equal(mix, np.concatenate([w1, w2]))
    t1, t2, mix = combine_speakers(None, w2, "para")  # silent speaker 1
    assert not t1.any() and np.array_equal(t2, w2)
    with pytest.raises(InputError, match="para"):
        combine_speakers(w1, w2, "mix")


# -- video in ------------------------------------------------------------------------------------
def index_frames(n: int, h: int = 32, w: int = 48) -> np.ndarray:
    """Frame j is flat grey at level 5*j: the decoded level gives the index back."""
    return np.repeat((5 * np.arange(n, dtype=np.uint8))[:, None, None, None], h * w * 3, 1).reshape(
        n, h, w, 3
    )


def level_to_index(frame: np.ndarray) -> int:
    return round(float(frame.mean()) / 5)


def test_video_reader_resamples_30_to_25_fps(tmp_path):
    path = tmp_path / "src30.mp4"
    write_video(path, index_frames(45), fps=30, crf=0)  # 1.5 s
    with VideoReader(path) as reader:
        assert reader.size == (48, 32) and abs(reader.native_fps - 30) < 1e-6
        assert reader.num_frames == 38  # ceil(1.5 * 25)
        got = [level_to_index(reader.frame(i)) for i in range(reader.num_frames)]
        assert got == [i * 30 // 25 for i in range(38)]  # last source frame at or before i/25
        assert level_to_index(reader.frame(10)) == 12  # backward jump re-seeks
        assert level_to_index(reader.frame(37)) == 44
        with pytest.raises(IndexError):
            reader.frame(38)


def test_video_reader_forward_seek(tmp_path, monkeypatch):
    import infinitetalk.media.video as video

    monkeypatch.setattr(video, "_SEEK_AHEAD_S", 0.2)  # jumps over 5 frames seek instead of decoding on
    path = tmp_path / "src.mp4"
    with av.open(str(path), "w") as c:  # keyframe every 10 frames: seeks land before their target
        stream = c.add_stream("libx264", rate=25, options={"crf": "0", "g": "10", "keyint_min": "10"})
        stream.width, stream.height, stream.pix_fmt = 48, 32, "yuv420p"
        for j, frame in enumerate(index_frames(50)):
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts = j
            c.mux(stream.encode(vf))
        c.mux(stream.encode(None))
    with VideoReader(path) as reader:
        assert [level_to_index(reader.frame(i)) for i in (0, 1, 30, 31, 49, 3)] == [0, 1, 30, 31, 49, 3]


def test_video_reader_errors_and_images(tmp_path):
    soundfile.write(tmp_path / "a.wav", sine(440, 0.5, 16000), 16000)
    with pytest.raises(InputError, match="no video stream"):
        VideoReader(tmp_path / "a.wav")
    with pytest.raises(InputError, match="does not exist"):
        VideoReader(tmp_path / "none.mp4")
    from PIL import Image

    rgba = np.zeros((7, 9, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 255
    Image.fromarray(rgba).save(tmp_path / "i.png")
    img = read_image(tmp_path / "i.png")
    assert img.shape == (7, 9, 3) and img.dtype == np.uint8 and img[..., 0].min() == 200
    with pytest.raises(InputError):
        read_image(tmp_path / "a.wav")


# -- video out -----------------------------------------------------------------------------------
def test_mux_round_trip_segments_audio_subtitles(tmp_path):
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (50, 32, 48, 3), dtype=np.uint8)
    write_video(tmp_path / "s0.mp4", frames[:30], 25)
    write_video(tmp_path / "s1.mp4", frames[30:], 25)
    cues = [Cue(0.1, 0.9, "héllo 你好"), Cue(1.0, 1.8, "second\nline")]
    out = mux(
        [tmp_path / "s0.mp4", tmp_path / "s1.mp4"],
        tmp_path / "out.mp4",
        audio=(sine(440, 2.0, 16000), 16000),
        subtitles=cues,
    )
    # remuxed, not re-encoded: decoded pixels equal those of the segments
    ref = decode_all(tmp_path / "s0.mp4") + decode_all(tmp_path / "s1.mp4")
    got = decode_all(out)
    assert len(got) == 50 and all(np.array_equal(x, y) for x, y in zip(ref, got, strict=True))
    with av.open(str(out)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        assert v.average_rate == 25 and a.codec_context.name == "aac"
        assert abs(float(a.duration * a.time_base) - 2.0) <= 1024 / 16000  # one AAC frame
        if not HAS_SUBTITLE_ENCODER:  # PyAV < 17: skipped with a warning
            assert not c.streams.subtitles
            return
        s = c.streams.subtitles[0]
        assert s.codec_context.name == "mov_text"
        texts = [sub.dialogue.decode() for p in c.demux(s) for sub in s.decode(p)]
    assert texts == ["héllo 你好", "second\nline"]


def test_mux_uneven_segments_and_audio_fit(tmp_path):
    frames = index_frames(20)
    paths = []
    for k, (a, b) in enumerate([(0, 1), (1, 9), (9, 10), (10, 20)]):  # 1-frame segments have no B-frames
        write_video(tmp_path / f"s{k}.mp4", frames[a:b], 25, crf=0)
        paths.append(tmp_path / f"s{k}.mp4")
    long_stereo = np.stack([sine(440, 3.0, 44100), sine(660, 3.0, 44100)])  # (2, N)
    out = mux(paths, tmp_path / "out.mp4", audio=(long_stereo, 44100))
    with av.open(str(out)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        pts = sorted(p.pts for p in c.demux(v) if p.size)
        assert a.channels == 2 and abs(float(a.duration * a.time_base) - 0.8) <= 1024 / 44100  # cut
    step = Fraction(1, 25) / v.time_base
    assert [p - pts[0] for p in pts] == [round(i * step) for i in range(20)]  # no gaps at segment joins
    assert [level_to_index(f) for f in decode_all(out)] == list(range(20))
    out = mux(paths, tmp_path / "pad.mp4", audio=(sine(440, 0.3, 12345), 12345))  # short, odd rate
    with av.open(str(out)) as c:
        a = c.streams.audio[0]
        assert a.sample_rate == 48000 and abs(float(a.duration * a.time_base) - 0.8) <= 1024 / 48000  # padded
    five_channels = np.stack([sine(440, 1.0, 16000)] * 5)  # AAC carries 5.0 as it is
    with av.open(str(mux(paths, tmp_path / "five.mp4", audio=(five_channels, 16000)))) as c:
        assert c.streams.audio[0].channels == 5
    with av.open(str(mux(paths, tmp_path / "five.mov", audio=(five_channels, 16000)))) as c:
        a = c.streams.audio[0]  # 24-bit PCM keeps every channel and the rate
        assert (a.channels, a.sample_rate, a.codec_context.name) == (5, 16000, "pcm_s24le")


def test_mux_refuses_mismatched_segments(tmp_path):
    write_video(tmp_path / "a.mp4", np.zeros((2, 32, 32, 3), np.uint8), 25)
    write_video(tmp_path / "b.mp4", np.zeros((2, 32, 48, 3), np.uint8), 25)
    with pytest.raises(InputError, match="share codec and size"):
        mux([tmp_path / "a.mp4", tmp_path / "b.mp4"], tmp_path / "out.mp4")
    with pytest.raises(InputError, match="does not exist"):
        mux([tmp_path / "a.mp4", tmp_path / "c.mp4"], tmp_path / "out.mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4", "b.mp4"]  # nothing half-written left


def test_mp4_writer_odd_size_and_bad_frames(tmp_path):
    frames = np.random.default_rng(2).integers(0, 256, (3, 21, 33, 3), dtype=np.uint8)
    with Mp4Writer(tmp_path / "odd.mp4", width=33, height=21, crf=0) as w:
        assert w.encoded_size == (34, 22)
        w.write(frames)
        with pytest.raises(InputError, match="expected uint8"):
            w.write(frames[:, :20])
    got = decode_all(tmp_path / "odd.mp4")
    assert len(got) == 3 and got[0].shape == (22, 34, 3)
    with pytest.raises(InputError):
        Mp4Writer(tmp_path / "x.mp4", width=0, height=8)
    with pytest.raises(InputError, match="preset"):
        Mp4Writer(tmp_path / "x.mp4", width=8, height=8, preset="fastest")


_MP4_RSS = r"""
import os, sys
import numpy as np
sys.path.insert(0, {root!r})
from infinitetalk.media import Mp4Writer

def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

frames = np.random.default_rng(3).integers(0, 256, (50, 96, 96, 3), dtype=np.uint8)
with Mp4Writer({path!r}, width=96, height=96, preset="ultrafast") as w:
    for _ in range(4):  # warm-up: encoder buffers and lookahead allocated
        w.write(frames)
    before = rss()
    for _ in range(36):  # 1800 more frames (2000 in all); keeping them would cost 50 MB
        w.write(frames)
    grown = rss() - before
print(w.frames_written, grown)
"""


def test_mp4_writer_constant_memory(tmp_path):
    """Writing 1800 more frames grows the resident memory of a fresh process by less than 8 MiB, where
    keeping them would cost 50 MB (a child process: the pytest process's own allocations are not noise)."""
    code = _MP4_RSS.format(root=str(Path(__file__).resolve().parents[2]), path=str(tmp_path / "long.mp4"))
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    written, grown = (int(v) for v in proc.stdout.split())
    assert written == 2000
    assert grown < 8 * 2**20, grown  # measured 0.07-0.15 MiB; keeping the frames would cost 50 MB


# -- captions ------------------------------------------------------------------------------------
def test_srt_round_trip_and_tolerant_parse():
    cues = [Cue(0.0, 1.5, "Hello"), Cue(61.25, 3725.007, "two\nlines")]
    text = srt_format(cues)
    assert text.startswith("1\n00:00:00,000 --> 00:00:01,500\nHello\n")
    assert "01:02:05,007" in text
    assert srt_parse(text) == cues
    messy = "\ufeff1\r\n00:00:01.5 --> 00:00:02,000\r\nA\r\n\r\n00:00:03,000 --> 00:00:04,000\r\nB\r\n"
    assert srt_parse(messy) == [Cue(1.5, 2.0, "A"), Cue(3.0, 4.0, "B")]
    with pytest.raises(InputError, match="block 2"):
        srt_parse("1\n00:00:01,000 --> 00:00:02,000\nA\n\n2\nsoon --> later\nB\n")


def test_burn_captions_only_while_a_cue_is_active():
    frames = np.full((25, 64, 96, 3), 90, np.uint8)
    cues = [Cue(1.18, 1.58, "Hi there")]  # frames at 1.0 + j/25: j = 5..14 are inside
    out = burn_captions(frames, cues, t0=1.0, fps=25)
    changed = [j for j in range(25) if not np.array_equal(out[j], frames[j])]
    assert changed == list(range(5, 15))
    assert (frames == 90).all()  # input untouched
    rows = np.nonzero((out[5] != 90).any(axis=(1, 2)))[0]
    assert rows.min() > 64 // 2  # drawn in the bottom half
    assert out[5].max() > 200 and out[5].min() < 40  # white fill and black outline


def _dominant_hz(wave: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return float(np.fft.rfftfreq(len(wave), 1 / sr)[np.argmax(spectrum)])


def test_surround_soundtracks_keep_their_channels_in_mp4(tmp_path):
    """5.1 stays 5.1 in AAC, each channel in its place (a tone of its own; the LFE a low one); 7.1 is
    downmixed to 5.1 for AAC and kept whole in PCM."""
    write_video(tmp_path / "v.mp4", np.zeros((25, 32, 32, 3), np.uint8), 25)
    sr, tones = 48000, [300.0, 500.0, 700.0, 60.0, 900.0, 1100.0]  # FL FR FC LFE BL BR
    surround = np.stack([sine(f, 1.0, sr, amp=0.2) for f in tones])
    out = mux([tmp_path / "v.mp4"], tmp_path / "surround.mp4", audio=(surround, sr))
    with av.open(str(out)) as c:
        a = c.streams.audio[0]
        assert (a.channels, a.layout.name, a.sample_rate) == (6, "5.1", sr)
        decoded = np.concatenate([f.to_ndarray() for f in c.decode(a)], axis=1)
    middle = decoded[:, 4096 : 4096 + 32768]  # away from the encoder's priming and the end
    for channel, tone in enumerate(tones):
        assert abs(_dominant_hz(middle[channel], sr) - tone) < 3.0, channel
        rms = np.sqrt(np.mean(middle[channel] ** 2))
        assert abs(20 * np.log10(rms / (0.2 / np.sqrt(2)))) < 1.0, channel  # level kept within 1 dB

    eight = np.stack([sine(200.0 + 100 * i, 1.0, sr, amp=0.1) for i in range(8)])
    with av.open(str(mux([tmp_path / "v.mp4"], tmp_path / "eight.mp4", audio=(eight, sr)))) as c:
        assert (c.streams.audio[0].channels, c.streams.audio[0].layout.name) == (6, "5.1")
    with av.open(str(mux([tmp_path / "v.mp4"], tmp_path / "eight.mov", audio=(eight, sr)))) as c:
        assert c.streams.audio[0].channels == 8


def test_downmix_takes_every_layout_up_to_eight_channels():
    """FFmpeg's matrix for 3-8 channels (8 planar channels once crashed PyAV's frame constructor)."""
    sr = 48000
    for channels in range(1, 9):
        wave = np.stack([sine(200.0 + 50 * i, 0.1, sr, amp=0.1) for i in range(channels)])
        stereo = downmix(wave, sr, 2)
        assert stereo.shape == (2, wave.shape[1]) and np.isfinite(stereo).all()
        if channels == 2:
            assert np.array_equal(stereo, wave)
    front = np.stack([sine(440.0, 0.1, sr, amp=0.1)] * 2 + [np.zeros(4800, np.float32)] * 4)
    assert np.allclose(downmix(front, sr, 2), front[:2], atol=1e-6)  # 5.1 with only FL/FR: FL/FR unchanged
