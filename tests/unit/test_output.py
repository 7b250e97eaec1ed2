"""Production output (issue 15): the user's soundtrack, colour, formats, and watching while it is made.

Every file is written with the library and read back through PyAV / soundfile. Tolerances:

- colour: flat patches, measured 8 px inside each 32 px patch (away from chroma-subsampled edges), max
  abs error per channel in 8-bit levels: H.264 CRF 18 4:2:0 <= 3 (measured 2), ProRes 422 HQ 10-bit <= 1
  (measured 0), lossless RGB codecs and PNG 0. Decoding the same H.264 file as BT.601 (ignoring the tags)
  errs by 10+ levels on saturated patches: the tags matter and are read;
- sound: AAC (mp4) reproduces a music-like 44.1 kHz stereo signal at >= 25 dB SNR per channel (measured
  ~34) and keeps its 12 kHz content (the 16 kHz speech path would keep none); 24-bit PCM (mov, mkv, wav)
  is bit-exact for a 16-bit source; lengths equal the picture's within one frame (40 ms).
"""

from __future__ import annotations

import json
from fractions import Fraction

import av
import numpy as np
import pytest
import soundfile

from infinitetalk.errors import InputError
from infinitetalk.media import (
    Cue,
    Mp4Writer,
    VideoWriter,
    combine_soundtracks,
    frame_to_rgb,
    load_audio,
    measure_loudness,
    normalize_delivery,
    true_peak,
    write_video,
)
from infinitetalk.media.export import SRT_NAME, WAV_NAME
from infinitetalk.sinks import SegmentStore

FPS = 25
PATCH = 32
COLOURS = np.array(
    [
        [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [0, 255, 255], [255, 0, 255],
        [255, 255, 255], [0, 0, 0], [128, 128, 128], [224, 172, 140], [90, 60, 40], [16, 16, 16],
        [235, 235, 235], [200, 30, 60], [40, 120, 200], [250, 250, 10],
    ],
    np.uint8,
)  # fmt: skip


def patches() -> np.ndarray:
    """4x4 flat colour patches of 32 px: primaries, secondaries, greys, skin tones, near-limits."""
    img = np.zeros((4 * PATCH, 4 * PATCH, 3), np.uint8)
    for k, colour in enumerate(COLOURS):
        y, x = divmod(k, 4)
        img[y * PATCH : (y + 1) * PATCH, x * PATCH : (x + 1) * PATCH] = colour
    return img


def patch_errors(rgb: np.ndarray) -> np.ndarray:
    errors = []
    for k, colour in enumerate(COLOURS):
        y, x = divmod(k, 4)
        inner = rgb[y * PATCH + 8 : (y + 1) * PATCH - 8, x * PATCH + 8 : (x + 1) * PATCH - 8].astype(int)
        errors.append(np.abs(inner - colour).max())
    return np.array(errors)


def music(seconds: float, sr: int, seed: int = 0) -> np.ndarray:
    """Stereo, different per channel, with content up to 12 kHz and some noise: ``(2, N)`` float32."""
    t = np.arange(round(seconds * sr)) / sr
    noise = np.random.default_rng(seed).standard_normal(t.size) * 0.02
    left = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 12000 * t) + noise
    right = 0.3 * np.sin(2 * np.pi * 660 * t + 1) + 0.08 * np.sin(2 * np.pi * 9000 * t)
    return np.stack([left, right]).astype(np.float32)


def snr_db(got: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Per-channel SNR over the common length."""
    n = min(got.shape[-1], ref.shape[-1])
    got, ref = got[..., :n], ref[..., :n]
    return 10 * np.log10((ref**2).sum(-1) / ((got - ref) ** 2).sum(-1))


def band_energy(wave: np.ndarray, sr: int, lo: float, hi: float) -> float:
    spectrum = np.abs(np.fft.rfft(wave)) ** 2
    freqs = np.fft.rfftfreq(wave.shape[-1], 1 / sr)
    return float(spectrum[(freqs > lo) & (freqs < hi)].sum())


def index_frames(start: int, stop: int, h: int = 32, w: int = 32) -> np.ndarray:
    """Frame i shows i in binary: 16 blocks (4x4 grid), dark for 0, bright for 1; robust to lossy coding."""
    out = np.zeros((stop - start, h, w, 3), np.uint8)
    bh, bw = h // 4, w // 4
    for k, i in enumerate(range(start, stop)):
        for bit in range(16):
            y, x = divmod(bit, 4)
            out[k, y * bh : (y + 1) * bh, x * bw : (x + 1) * bw] = 220 if (i >> bit) & 1 else 30
    return out


def level_to_index(frame: np.ndarray) -> int:
    h, w = frame.shape[0] // 4, frame.shape[1] // 4
    bits = [
        frame[y * h + 2 : (y + 1) * h - 2, x * w + 2 : (x + 1) * w - 2].mean() > 125
        for y in range(4)
        for x in range(4)
    ]
    return sum(1 << b for b, on in enumerate(bits) if on)


def decode_video(path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [frame_to_rgb(f) for f in c.decode(video=0)]


def audio_info(path) -> tuple[int, int, str, float]:
    """(rate, channels, codec, duration the container states in seconds)."""
    with av.open(str(path)) as c:
        a = c.streams.audio[0]
        if a.duration:  # mp4/mov state it (edit list: AAC priming and padding excluded)
            duration = float(a.duration * a.time_base)
        else:  # matroska: the packets' durations (PCM has no priming)
            duration = float(sum(p.duration for p in c.demux(a) if p.duration) * a.time_base)
        return a.sample_rate, a.channels, a.codec_context.name, duration


# ============================================================================ colour
@pytest.mark.parametrize(
    ("codec", "suffix", "tolerance"),
    [("h264", ".mp4", 3), ("prores", ".mov", 1), ("h264-lossless", ".mp4", 0), ("ffv1", ".mkv", 0)],
)
def test_colour_patches_round_trip_with_bt709_tags(tmp_path, codec, suffix, tolerance):
    path = tmp_path / f"patches{suffix}"
    with VideoWriter(path, FPS, 4 * PATCH, 4 * PATCH, codec=codec) as writer:
        writer.write(np.stack([patches()] * 3))
    with av.open(str(path)) as c:
        ctx = c.streams.video[0].codec_context
        tags = (ctx.colorspace, ctx.color_primaries, ctx.color_trc, ctx.color_range)
        frames = [(f, frame_to_rgb(f)) for f in c.decode(video=0)]
    rgb_codec = codec in ("h264-lossless", "ffv1")
    # matrix BT.709 (1) or RGB (0); primaries and transfer BT.709 (1); range limited (1) or full (2)
    assert tags == ((0, 1, 1, 2) if rgb_codec else (1, 1, 1, 1))
    assert len(frames) == 3
    for _, rgb in frames:
        assert patch_errors(rgb).max() <= tolerance, patch_errors(rgb)
    if suffix in (".mp4", ".mov"):  # the container says it too: 'colr' box (nclx in mp4, nclc in mov)
        kind = b"nclx" if suffix == ".mp4" else b"nclc"
        matrix = b"\x00\x00" if rgb_codec else b"\x00\x01"
        assert b"colr" + kind + b"\x00\x01\x00\x01" + matrix in path.read_bytes()
    if codec == "h264":  # decoding as BT.601 (what an untagged file gets) would be visibly wrong
        wrong = frames[0][0].reformat(format="rgb24", src_colorspace="ITU601", src_color_range="MPEG")
        assert patch_errors(wrong.to_ndarray()).max() >= 10


def test_untagged_video_is_decoded_as_bt601(tmp_path):
    """Files from elsewhere without tags keep FFmpeg's assumption (BT.601), as players do."""
    path = tmp_path / "untagged.mp4"
    with av.open(str(path), "w") as c:
        stream = c.add_stream("libx264", rate=FPS, options={"crf": "10"})
        stream.width = stream.height = 4 * PATCH
        stream.pix_fmt = "yuv420p"
        frame = av.VideoFrame.from_ndarray(patches(), format="rgb24").reformat(
            format="yuv420p", dst_colorspace="ITU601", dst_color_range="MPEG"
        )
        frame.pts, frame.time_base = 0, Fraction(1, FPS)
        c.mux(stream.encode(frame))
        c.mux(stream.encode(None))
    assert patch_errors(decode_video(path)[0]).max() <= 3


# ============================================================================ formats
@pytest.mark.parametrize("fmt", ["h264-mp4", "prores-mov", "ffv1-mkv", "png-wav"])
def test_each_format_decodes_with_its_picture_sound_and_captions(tmp_path, fmt):
    sr = 44100
    sound = music(1.5, sr)  # longer than the picture: cut
    sound16 = np.round(sound * 32767) / 32768  # a 16-bit source, as most WAV files are
    frames = index_frames(0, 30, 48, 64)
    cues = [Cue(0.1, 0.5, "hello"), Cue(0.6, 1.0, "world")]
    out = write_video(
        tmp_path / "talk",
        iter([frames[:17], frames[17:]]),
        fps=FPS,
        width=64,
        height=48,
        fmt=fmt,
        audio=(sound16, sr),
        subtitles=cues,
    )
    seconds = 30 / FPS
    if fmt == "png-wav":
        names = sorted(p.name for p in out.iterdir())
        assert names == sorted([f"frame_{i:06d}.png" for i in range(30)] + [WAV_NAME, SRT_NAME])
        pictures = [
            np.asarray(
                av.open(str(out / f"frame_{i:06d}.png")).decode(video=0).__next__().to_ndarray(format="rgb24")
            )
            for i in (0, 29)
        ]
        assert all(np.array_equal(p, frames[i]) for p, i in zip(pictures, (0, 29), strict=True))
        wave, rate = soundfile.read(out / WAV_NAME, dtype="float32", always_2d=True)
        assert soundfile.info(out / WAV_NAME).subtype == "PCM_24"
        assert rate == sr and wave.shape == (round(seconds * sr), 2)
        np.testing.assert_array_equal(wave.T, sound16[:, : wave.shape[0]])  # bit-exact
        assert "00:00:00,600 --> 00:00:01,000" in (out / SRT_NAME).read_text()
        return
    assert out.suffix == {"h264-mp4": ".mp4", "prores-mov": ".mov", "ffv1-mkv": ".mkv"}[fmt]
    got = decode_video(out)
    assert len(got) == 30 and got[0].shape == (48, 64, 3)
    if fmt == "ffv1-mkv":
        assert all(np.array_equal(a, b) for a, b in zip(got, frames, strict=True))
    assert [level_to_index(f) for f in got] == list(range(30))
    rate, channels, codec, duration = audio_info(out)
    assert (rate, channels) == (sr, 2)
    assert abs(duration - seconds) < 1 / FPS
    wave, rate = load_audio(out)
    assert abs(wave.shape[1] / rate - seconds) < 1 / FPS
    with av.open(str(out)) as c:
        assert len(c.streams.subtitles) == 1
    if fmt == "h264-mp4":
        assert codec == "aac"
        assert snr_db(wave, sound16).min() >= 25
        kept = band_energy(wave[0], sr, 11500, 12500) / band_energy(
            sound16[0, : wave.shape[1]], sr, 11500, 12500
        )
        assert 0.8 < kept < 1.2
    else:
        assert codec == "pcm_s24le"
        np.testing.assert_array_equal(wave, sound16[:, : wave.shape[1]])


def test_format_errors(tmp_path):
    with pytest.raises(InputError, match="output format 'gif' is unknown"):
        write_video(tmp_path / "x", iter([]), fps=FPS, width=8, height=8, fmt="gif")
    with pytest.raises(InputError, match="no frames"):
        write_video(tmp_path / "x.mp4", iter([]), fps=FPS, width=8, height=8)
    with pytest.raises(InputError, match="no frames"):
        write_video(tmp_path / "seq", iter([]), fps=FPS, width=8, height=8, fmt="png-wav")
    assert not list(tmp_path.iterdir())  # nothing half-written left


# ============================================================================ the user's soundtrack
def test_soundtrack_one_speaker_is_untouched():
    sound = music(1.0, 44100)
    track = combine_soundtracks([(sound, 44100)])
    assert track.sample_rate == 44100 and track.wave is sound  # not even copied


def test_soundtrack_two_speakers_para_and_add():
    a = music(1.0, 48000)  # stereo 48 kHz
    b = np.sin(2 * np.pi * 300 * np.arange(22050) / 22050).astype(np.float32) * 0.2  # mono 22.05 kHz, 1 s
    para = combine_soundtracks([(a, 48000), (b, 22050)], "para")
    assert para.sample_rate == 48000 and para.channels == 2 and para.num_samples == 48000
    # the mix is the sum, without any gain: subtracting speaker 1 leaves speaker 2 on both channels
    rest = para.wave - a
    assert np.allclose(rest[0], rest[1], atol=1e-6) and abs(np.abs(rest).max() - 0.2) < 0.01
    add = combine_soundtracks([(a, 48000), (b, 22050)], "add", speaker2_start=1.25)
    assert add.num_samples == round(1.25 * 48000) + 48000
    np.testing.assert_array_equal(add.wave[:, :48000], a)  # speaker 1 first, untouched
    assert np.abs(add.wave[:, 48000:60000]).max() == 0  # silence until speaker 2 starts at 1.25 s
    assert np.abs(add.wave[:, 60000:60100]).max() > 0.01


def test_prepare_audio_keeps_the_soundtrack_and_times_add_by_the_frames(tiny_root):
    import torch

    from infinitetalk.encoders.wav2vec2 import load_audio_encoder
    from infinitetalk.pipeline import InfiniteTalkPipeline

    encoder = load_audio_encoder(tiny_root / "weights" / "chinese-wav2vec2-base", dtype=torch.float32)
    pipe = InfiniteTalkPipeline(None, None, None, None, encoder)
    one = music(0.7, 44100)
    two = music(0.5, 44100, seed=1)[:1]  # mono
    single = pipe.prepare_audio([(one, 44100)])
    assert single.soundtrack is one and single.soundtrack_rate == 44100
    assert single.waveform_16k_mix.ndim == 1  # the 16 kHz speech stays in the embedding path
    both = pipe.prepare_audio([(one, 44100), (two, 44100)], audio_type="add")
    speech1 = round(0.7 * 16000)  # the 16 kHz track of speaker 1: speaker 2's speech starts after it
    assert both.soundtrack_rate == 44100 and both.soundtrack.shape[0] == 2
    start2 = round(speech1 / 16000 * 44100)
    np.testing.assert_array_equal(
        both.soundtrack[:, :start2], np.pad(one, ((0, 0), (0, start2 - one.shape[1])))
    )
    np.testing.assert_allclose(both.soundtrack[:, start2 : start2 + two.shape[1]], np.repeat(two, 2, 0))
    # the soundtrack and the frames last equally long (to one frame)
    assert abs(both.soundtrack.shape[1] / 44100 - both.num_frames / FPS) < 1 / FPS


def test_load_audio_of_an_mp4_drops_the_aac_padding(tmp_path):
    with Mp4Writer(tmp_path / "v.mp4", FPS, 16, 16) as w:
        w.write(index_frames(0, 25, 16, 16))
    from infinitetalk.media import mux

    mux([tmp_path / "v.mp4"], tmp_path / "a.mp4", audio=(music(1.0, 48000), 48000))
    wave, sr = load_audio(tmp_path / "a.mp4")
    assert sr == 48000 and wave.shape == (2, 48000)  # not 47 x 1024 + priming


# ============================================================================ delivery loudness
def speech_like_stereo(sr: int = 48000, seconds: float = 6.0) -> np.ndarray:
    t = np.arange(round(seconds * sr)) / sr
    gate = (np.sin(2 * np.pi * 3 * t) > 0).astype(np.float32)
    noise = np.random.default_rng(0).standard_normal(t.size) * 0.01
    wave = np.stack(
        [0.05 * np.sin(2 * np.pi * 220 * t) * gate + noise, 0.04 * np.sin(2 * np.pi * 330 * t) * gate]
    )
    wave[:, 20000:20010] = 0.9  # a click far above the rest
    return wave.astype(np.float32)


@pytest.mark.parametrize("target", [-16.0, -23.0])
def test_delivery_loudness_hits_the_target_under_the_true_peak_ceiling(target):
    sr, wave = 48000, speech_like_stereo()
    before = measure_loudness(wave, sr)
    out = normalize_delivery((wave, sr), target, true_peak_dbtp=-1.0)
    assert abs(measure_loudness(out.wave, sr) - target) < 0.5  # ±0.5 LU, the EBU R128 tolerance
    assert true_peak(out.wave, sr) <= -1.0 + 0.05
    assert out.wave.shape == wave.shape and out.sample_rate == sr
    # away from the click (and from any peak over the ceiling) the signal only gets one plain gain
    far = slice(100000, 200000)
    loud = np.abs(wave[:, far]) > 0.01
    ratio = out.wave[:, far][loud] / wave[:, far][loud]
    assert ratio.std() / ratio.mean() < 1e-4
    assert before < target and ratio.mean() > 1  # quieter than the target: raised


def test_delivery_loudness_leaves_silence_and_refuses_bad_targets():
    silence = np.zeros((2, 48000), np.float32)
    assert normalize_delivery((silence, 48000), -16).wave is silence
    with pytest.raises(InputError, match="loudness target"):
        normalize_delivery((silence, 48000), 5)
    with pytest.raises(InputError, match="true-peak"):
        normalize_delivery((silence, 48000), -16, true_peak_dbtp=1)


# ============================================================================ sync, resume, live
def clicks(frame_indices, total_frames: int, sr: int) -> np.ndarray:
    """Stereo silence with a 2 ms click at the start of each listed frame."""
    wave = np.zeros((2, round(total_frames / FPS * sr)), np.float32)
    for i in frame_indices:
        s = round(i / FPS * sr)
        wave[:, s : s + sr // 500] = 0.8
    return wave


def click_times(wave: np.ndarray, sr: int, count: int) -> list[float]:
    """Onsets of the ``count`` loudest clicks, in seconds."""
    env = np.abs(wave).max(axis=0)
    above = np.flatnonzero(env > 0.3)
    onsets = [above[0]] + [b for a, b in zip(above[:-1], above[1:], strict=True) if b - a > sr // 50]
    assert len(onsets) == count, onsets
    return [o / sr for o in onsets]


def test_av_sync_within_one_frame_across_windows_and_a_resume(tmp_path):
    """Windows committed, the process 'dies', a new store resumes: picture and sound still agree."""
    sr, total = 44100, 80
    sound = clicks([5, 35, 70], total, sr)
    store = SegmentStore(tmp_path / "run", soundtrack=(sound, sr), live=True)
    store.begin("fp")
    for window, (a, b) in enumerate([(0, 33), (33, 57)]):
        store.write(index_frames(a, b))
        store.commit(window, {"window": window})
    store.write(index_frames(57, 60))  # half a window, never committed: lost with the 'crash'
    resumed = SegmentStore(tmp_path / "run", soundtrack=(sound, sr), live=True)
    assert resumed.begin("fp", resume=True) == {"window": 1, "complete": False}
    resumed.write(index_frames(57, total))
    resumed.commit(2, {"window": 2})
    resumed.mark_complete()
    out = resumed.finalize(tmp_path / "talk.mp4", audio=(sound, sr))
    for path in (out, tmp_path / "run" / "live" / "live.m3u8"):  # the final file and the live playlist
        with av.open(str(path)) as c:
            picture = {level_to_index(frame_to_rgb(f)): float(f.time) for f in c.decode(video=0)}
        wave, rate = load_audio(path)
        assert sorted(picture) == list(range(total))
        start = min(picture.values())
        for index, t in zip([5, 35, 70], click_times(wave, rate, 3), strict=True):
            shown = picture[index] - start
            assert abs(t - shown) < 1 / FPS, (path.name, index, t, shown)
        assert abs(wave.shape[1] / rate - total / FPS) < 1 / FPS + 1024 / rate  # TS keeps AAC priming


def test_live_playlist_and_window_clips_grow_with_each_commit(tmp_path):
    sr = 48000
    sound = music(3.0, sr)
    seen = []
    store = SegmentStore(
        tmp_path / "run", soundtrack=(sound, sr), live=True, clips=True, on_segment=seen.append
    )
    store.begin("fp")
    store.expect_windows(3)
    playlist = tmp_path / "run" / "live" / "live.m3u8"
    for window, (a, b) in enumerate([(0, 33), (33, 57), (57, 75)]):
        store.write(index_frames(a, b))
        store.commit(window, {"window": window})
        text = playlist.read_text()
        assert text.count("#EXTINF") == window + 1 and "#EXT-X-ENDLIST" not in text
        # playable as it stands (a copy marked ended: FFmpeg's HLS reader would wait for more, as players do)
        snapshot = playlist.with_name("snapshot.m3u8")
        snapshot.write_text(text + "#EXT-X-ENDLIST\n")
        with av.open(str(snapshot)) as c:
            assert sum(1 for _ in c.decode(video=0)) == b
        snapshot.unlink()
        info = seen[-1]
        assert (info.window, info.start_frame, info.frames, info.num_windows) == (window, a, b - a, 3)
        assert info.live == playlist
        with av.open(str(info.clip)) as c:  # the window alone, with its own stretch of the sound
            assert sum(1 for _ in c.decode(video=0)) == b - a
            assert c.streams.audio[0].sample_rate == sr
        clip_sound, _ = load_audio(info.clip)
        span = sound[:, round(a / FPS * sr) : round(b / FPS * sr)]
        assert snr_db(clip_sound, span).min() > 20
    store.mark_complete()
    assert playlist.read_text().rstrip().endswith("#EXT-X-ENDLIST")
    kept = sorted(p.name for p in (tmp_path / "run" / "preview").iterdir())
    assert kept == ["window_00001.mp4", "window_00002.mp4"]  # the latest two clips
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["codec"] == "h264"
    fresh = SegmentStore(tmp_path / "run", live=True)
    fresh.begin("other")  # a new run clears the old previews
    assert not (tmp_path / "run" / "preview").exists() and not playlist.exists()


def test_lossless_segments_give_exact_master_frames(tmp_path):
    store = SegmentStore(tmp_path / "run", codec="h264-lossless")
    store.begin("fp")
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (12, 32, 48, 3), dtype=np.uint8)
    store.write(frames)
    store.commit(0, {"window": 0})
    out = store.finalize(tmp_path / "master.mkv", fmt="ffv1-mkv")
    assert all(np.array_equal(a, b) for a, b in zip(decode_video(out), frames, strict=True))


def codec_of(path) -> tuple[str, str]:
    with av.open(str(path)) as c:
        ctx = c.streams.video[0].codec_context
        return ctx.name, ctx.pix_fmt


def test_lossless_segments_are_previewed_as_h264_420_and_finalized_both_ways(tmp_path):
    """Lossless RGB H.264 (High 4:4:4) plays in no browser: the live playlist and the window clips get an
    H.264 4:2:0 copy (the frames within CRF 18's error: index blocks read back exactly), while the segments
    stay exact for every master format, and h264-mp4 is re-encoded from them."""
    sr = 48000
    sound = music(2.0, sr)
    seen = []
    store = SegmentStore(
        tmp_path / "run",
        codec="h264-lossless",
        soundtrack=(sound, sr),
        live=True,
        clips=True,
        on_segment=seen.append,
    )
    store.begin("fp")
    windows = [index_frames(0, 17), index_frames(17, 29)]
    for window, frames in enumerate(windows):
        store.write(frames)
        store.commit(window, {"window": window})
        info = seen[-1]
        assert codec_of(info.path) == ("h264", "gbrp")  # the segment itself: lossless RGB
        assert codec_of(info.clip) == ("h264", "yuv420p")
        clip = decode_video(info.clip)
        assert [level_to_index(f) for f in clip] == list(
            range(info.start_frame, info.start_frame + len(frames))
        )
        assert not list(info.clip.parent.glob("*.h264.mp4"))  # the scratch copy is gone
    store.mark_complete()
    live = tmp_path / "run" / "live"
    assert [codec_of(ts) for ts in sorted(live.glob("*.ts"))] == [("h264", "yuv420p")] * 2
    with av.open(str(live / "live.m3u8")) as c:
        assert [level_to_index(frame_to_rgb(f)) for f in c.decode(video=0)] == list(range(29))
    assert not list(live.glob("*.h264.mp4"))
    exact = np.concatenate(windows)
    png = store.finalize(tmp_path / "master", fmt="png-wav")
    assert np.array_equal(np.stack(decode_video(png / "frame_%06d.png")), exact)
    mp4 = store.finalize(tmp_path / "delivery.mp4", fmt="h264-mp4")
    assert codec_of(mp4) == ("h264", "yuv420p")
    assert [level_to_index(f) for f in decode_video(mp4)] == list(range(29))


def test_resume_keeps_the_runs_kind_of_segment(tmp_path, caplog):
    """Segments are concatenated, so a run keeps one codec: resuming an H.264 run with lossless asked
    continues in H.264 (said in a warning: its frames are not exact), and the other way round too."""
    first = SegmentStore(tmp_path / "run")
    first.begin("fp")
    first.write(index_frames(0, 9))
    first.commit(0, {"window": 0})
    resumed = SegmentStore(tmp_path / "run", codec="h264-lossless")
    with caplog.at_level("WARNING", logger="infinitetalk.sinks"):
        assert resumed.begin("fp", resume=True) == {"window": 0, "complete": False}
    assert "continuing with the run's H.264 segments (asked: h264-lossless)" in caplog.text
    resumed.write(index_frames(9, 14))
    resumed.commit(1, {"window": 1})
    assert resumed.codec == "h264" and {codec_of(p) for p in resumed.segment_paths} == {("h264", "yuv420p")}
    other = SegmentStore(tmp_path / "lossless", codec="h264-lossless")
    other.begin("fp")
    other.write(index_frames(0, 9))
    other.commit(0, {"window": 0})
    again = SegmentStore(tmp_path / "lossless")
    again.begin("fp", resume=True)
    assert again.codec == "h264-lossless"
