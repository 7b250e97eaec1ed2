"""Face-only dubbing (exact source pixels outside the face), per-window prompts, scripts of many segments."""

from __future__ import annotations

import json
import logging

import av
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from infinitetalk.dubbing import FaceOnlyCompositor, FaceOnlyOptions, match_region_colors
from infinitetalk.errors import InputError
from infinitetalk.media import audio_num_frames, srt_parse
from infinitetalk.script import load_script, parse_script, render_script
from infinitetalk.sinks import MemorySink
from infinitetalk.windows import plan_windows, window_prompts
from tests.photos import grace_hopper
from tests.unit.test_pipeline import (
    audio_embedding,
    fake_pipeline,
    small_config,
    test_image,
    tiny_audio,
    tiny_pipeline,
)


class GraceVideo:
    """A real face moving right by 2 px a frame (128x128, 25 fps), as a video source."""

    is_video = True

    def __init__(self, num_frames: int = 24):
        small = np.asarray(Image.fromarray(grace_hopper()).resize((96, 112), Image.BILINEAR))
        self.frames = []
        for t in range(num_frames):
            canvas = np.full((128, 128, 3), 70, np.uint8)
            canvas[10:122, 2 + 2 * t // 3 : 98 + 2 * t // 3] = small
            canvas[:, :, 2] = (canvas[:, :, 2].astype(int) + t) % 256  # every frame differs
            self.frames.append(canvas)
        self.num_frames = num_frames

    def frame(self, i: int) -> np.ndarray:
        return self.frames[min(i, self.num_frames - 1)]


# ============================================================================ face-only dubbing
def test_face_only_keeps_every_source_pixel_outside_the_face_on_a_tiny_run(tiny_root):
    """Tiny real weights, video-to-video: the frames leaving the pipeline (before any H.264 encoding) equal
    the source frames exactly wherever the feathered face mask is 0, and the composite of the generated
    frames inside it. The source is 128x128 (the face is tracked there), the output 64x64."""
    from infinitetalk.buckets import resize_and_crop_image

    source = GraceVideo(20)
    cfg = small_config(size="64x64", steps=1, text_scale=1.0, frame_num=13, motion_frame=5)
    compositor = FaceOnlyCompositor(source, (64, 64), 20, FaceOnlyOptions(feather=3))
    generated = []

    def recording_filter(frames, first):
        generated.append((first, frames.copy()))
        return compositor(frames, first)

    sink = MemorySink()
    tiny_pipeline(tiny_root).generate(source, tiny_audio(20), cfg, sink, frame_filter=recording_filter)
    out = sink.frames
    assert out.shape == (20, 64, 64, 3) and [f for f, _ in generated] == [0, 13]  # two windows
    raw = np.concatenate([g for _, g in generated])
    for t in range(20):
        src = resize_and_crop_image(source.frame(t), (64, 64))
        mask = compositor.mask(t)
        outside = mask == 0
        assert 0.4 < outside.mean() < 0.95  # the face region is a part of the frame, not all of it
        np.testing.assert_array_equal(out[t][outside], src[outside])
        np.testing.assert_array_equal(out[t], compositor.composite(raw[t], t))
        inside = mask == 1
        assert np.abs(out[t][inside].astype(int) - src[inside].astype(int)).mean() > 2  # generated there
    # the region follows the moving face (13 px in the 128 px source: about 6 px at 64)
    centre = [(compositor.boxes[t][0] + compositor.boxes[t][2]) / 2 for t in (0, 19)]
    assert 3 < centre[1] - centre[0] < 10


def test_face_only_needs_a_face():
    class Blank(GraceVideo):
        def frame(self, i):
            return np.full((128, 128, 3), 50, np.uint8)

    with pytest.raises(InputError, match="no face found in the source video"):
        FaceOnlyCompositor(Blank(3), (64, 64), 3)


def test_region_colour_matching_moves_the_face_statistics():
    rng = np.random.default_rng(0)
    ref = rng.integers(100, 160, (32, 32, 3)).astype(np.uint8)
    img = np.clip(ref.astype(int) * 0.5 + 10, 0, 255).astype(np.uint8)  # darker, less contrast
    weights = np.zeros((32, 32), np.float32)
    weights[8:24, 8:24] = 1
    out = match_region_colors(img, ref, weights)
    inside = weights > 0
    assert abs(out[inside].mean() - ref[inside].mean()) < 3
    assert abs(img[inside].mean() - ref[inside].mean()) > 40


# ============================================================================ per-window prompts
def test_window_prompts_follow_the_schedule():
    plans, _ = plan_windows(
        60, 17, 5, "streaming"
    )  # new frames 0-16, 17-28, 29-40, 41-52, 53-59: middles 8, 22, 34, 46, 56
    assert window_prompts([(0, "a"), (25, "b"), (45, "c")], plans, "x") == ["a", "a", "b", "c", "c"]
    assert window_prompts([(30, "late")], plans, "x") == ["x", "x", "late", "late", "late"]


def test_prompt_schedule_switches_context_per_window_and_default_path_unchanged(caplog):
    cfg = small_config(frame_num=17, motion_frame=5, text_scale=1.0, steps=1)
    base, same, switched = MemorySink(), MemorySink(), MemorySink()
    fake_pipeline().generate(test_image(), audio_embedding(40), cfg, base)
    fake_pipeline().generate(test_image(), audio_embedding(40), cfg, same, prompts=[(0, cfg.prompt)])
    np.testing.assert_array_equal(base.frames, same.frames)  # one prompt: identical frames
    pipe = fake_pipeline()
    with caplog.at_level(logging.INFO, logger="infinitetalk.pipeline"):
        pipe.generate(
            test_image(),
            audio_embedding(40),
            cfg,
            switched,
            prompts=[(0, "first prompt"), (20, "second prompt here")],
        )
    assert "window 1/3 prompt: first prompt" in caplog.text
    assert "window 2/3 prompt: second prompt here" in caplog.text
    contexts = [c["ctx"][0] for c in pipe.dit.calls if c["speakers"] == 1]
    assert contexts[0] != contexts[-1]  # the model saw a different text context
    assert not np.array_equal(base.frames[20:], switched.frames[20:])


# ============================================================================ scripts
def _tone(path, seconds, freq, sr=16000):
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, (0.2 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr)


def test_plain_text_and_json_formats(tmp_path):
    text = """
    # a comment
    prompt: A woman talks.
    voice 2: bf_emma
    pause: 0.25
    [S1] Hello there! (laughs)
    prompt: She leans in.   # inline comment
    [S2] audio: two.wav | The recorded answer.
    Untagged line.
    """
    s = parse_script(text, tmp_path)
    assert [(g.speaker, g.audio, g.prompt) for g in s.segments] == [
        (1, None, "A woman talks."),
        (2, "two.wav", "She leans in."),
        (1, None, "She leans in."),
    ]
    assert s.segments[1].text == "The recorded answer." and s.voices == {2: "bf_emma"}
    assert s.pause_s == 0.25 and s.num_speakers == 2 and s.needs_tts
    data = {"prompt": "p", "segments": [{"audio": "a.wav"}, {"text": "[S2] hi", "prompt": "q"}]}
    (tmp_path / "s.json").write_text(json.dumps(data))
    j = load_script(tmp_path / "s.json")
    assert j.num_speakers == 2 and j.segments[1].prompt == "q" and j.segments[0].prompt is None
    with pytest.raises(InputError, match="segment 1 needs 'text' or 'audio'"):
        parse_script('{"segments": [{}]}')
    with pytest.raises(InputError, match="no segments"):
        parse_script("prompt: only a prompt")
    with pytest.raises(InputError, match="load Kokoro"):
        render_script(parse_script("Hello."))


def test_render_three_recorded_segments(tmp_path):
    for name, sec, f in (("a.wav", 0.6, 200), ("b.wav", 0.44, 300), ("c.wav", 0.5, 400)):
        _tone(tmp_path / name, sec, f)
    script = parse_script(
        "prompt: one\naudio: a.wav | First.\nprompt: two\n[S2] audio: b.wav | Second.\nprompt: three\naudio: c.wav | Third.",
        tmp_path,
    )
    r = render_script(script)
    assert len(r.tracks) == 2 and abs(r.duration - 1.54) < 1e-6
    assert [round(a, 3) for a, _ in r.spans] == [0.0, 0.6, 1.04]
    assert r.prompts == [(0, "one"), (15, "two"), (26, "three")]
    assert [c.text for c in r.cues] == ["S1: First.", "S2: Second.", "S1: Third."]
    assert not r.tracks[1][: int(0.6 * 24000)].any() and r.tracks[1][int(0.7 * 24000)] != 0


def test_cli_script_of_three_segments_one_video(tiny_root, tmp_path, caplog):
    """Three segments -> one video as long as their audio, captions across all three, prompt per window."""
    from infinitetalk.cli import main

    for name, sec, f in (("a.wav", 0.64, 200), ("b.wav", 0.6, 300), ("c.wav", 0.72, 400)):
        _tone(tmp_path / name, sec, f)
    Image.fromarray(np.full((48, 64, 3), 120, np.uint8)).save(tmp_path / "face.png")
    script = {
        "prompt": "a person talks",
        "segments": [
            {"audio": "a.wav", "text": "First part.", "prompt": "calm intro"},
            {"audio": "b.wav", "text": "Second part.", "prompt": "excited middle"},
            {"audio": "c.wav", "text": "Third part.", "prompt": "quiet ending"},
        ],
    }
    (tmp_path / "script.json").write_text(json.dumps(script))
    out = tmp_path / "script.mp4"
    args = ["--weights", str(tiny_root), "--input_path", str(tmp_path / "face.png"), "--script"]
    args += [str(tmp_path / "script.json"), "--subtitles", "--output_path", str(out), "--size", "32x32"]
    args += [
        "--sample_steps",
        "1",
        "--sample_text_guide_scale",
        "1",
        "--frame_num",
        "17",
        "--motion_frame",
        "5",
    ]
    with caplog.at_level(logging.INFO):
        assert main(args) == 0
    total_16k = round(0.64 * 16000) + round(0.6 * 16000) + round(0.72 * 16000)
    with av.open(str(out)) as c:
        frames = sum(1 for _ in c.decode(video=0))
    assert frames == audio_num_frames(total_16k) == 49  # 1.96 s
    with av.open(str(out)) as c:
        subs = [s for s in c.streams if s.type == "subtitle"]
    assert subs, "no subtitle track"
    cues = _subtitle_cues(out)
    assert [c.text for c in cues] == ["First part.", "Second part.", "Third part."]
    assert cues[-1].end == pytest.approx(1.96, abs=0.05) and cues[1].start == pytest.approx(0.64, abs=0.05)
    log = caplog.text
    # segments start at frames 0, 16, 31; windows add frames 0-16, 17-28, 29-40, 41-48 (middles 8, 22, 34, 44)
    for k, prompt in enumerate(["calm intro", "excited middle", "quiet ending", "quiet ending"], 1):
        assert f"window {k}/4 prompt: {prompt}" in log


def _subtitle_cues(path):
    from infinitetalk.media import Cue

    cues = []
    with av.open(str(path)) as c:
        stream = next(s for s in c.streams if s.type == "subtitle")
        for packet in c.demux(stream):
            if packet.pts is None or not packet.size:
                continue
            raw = bytes(packet)
            text = raw[2 : 2 + int.from_bytes(raw[:2], "big")].decode()
            start = float(packet.pts * stream.time_base)
            if text:
                cues.append(Cue(start, start + float(packet.duration * stream.time_base), text))
    return cues


def test_srt_parse_round_trip_of_script_cues(tmp_path):
    from infinitetalk.media import srt_format

    _tone(tmp_path / "a.wav", 0.5, 200)
    r = render_script(parse_script("audio: a.wav | Hi.\naudio: a.wav | Again.", tmp_path))
    assert [c.text for c in srt_parse(srt_format(r.cues))] == ["Hi.", "Again."]


def test_cli_face_only_dubbing(tiny_root, tmp_path, caplog):
    """--face_only on a real video file: the face is tracked and the run completes; with an image it is refused."""
    from fractions import Fraction

    from infinitetalk.cli import main

    source = GraceVideo(12)
    with av.open(str(tmp_path / "source.mp4"), "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(25, 1))
        stream.width, stream.height, stream.pix_fmt = 128, 128, "yuv420p"
        for frame in source.frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())
    _tone(tmp_path / "speech.wav", 0.48, 200)
    Image.fromarray(source.frames[0]).save(tmp_path / "face.png")
    base = ["--weights", str(tiny_root), "--audio_path", str(tmp_path / "speech.wav"), "--face_only"]
    assert main([*base, "--input_path", str(tmp_path / "face.png")]) == 2  # one image: refused early
    out = tmp_path / "dub.mp4"
    args = [*base, "--input_path", str(tmp_path / "source.mp4"), "--output_path", str(out), "--size", "32x32"]
    args += [
        "--sample_steps",
        "1",
        "--sample_text_guide_scale",
        "1",
        "--frame_num",
        "13",
        "--motion_frame",
        "5",
    ]
    with caplog.at_level(logging.INFO):
        assert main(args) == 0
    assert "face-only dubbing: face tracked over 12 frames" in caplog.text
    with av.open(str(out)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 12
