"""Command line: flags, weight discovery in both trees, clear errors, and runs on tiny weights."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from infinitetalk.cli import build_parser, main, parse_boxes
from infinitetalk.errors import CheckpointError, InputError
from infinitetalk.loading.discover import find_weights


def _inputs(tmp_path, seconds=1.0, h=48, w=64):
    sr = 16000
    t = np.arange(int(sr * seconds)) / sr
    sf.write(tmp_path / "speech.wav", (np.sin(2 * np.pi * 200 * t) * 0.3).astype(np.float32), sr)
    yy, xx = np.mgrid[0:h, 0:w]
    Image.fromarray(np.stack([xx * 3, yy * 4, np.full_like(xx, 99)], -1).astype(np.uint8)).save(
        tmp_path / "face.png"
    )
    return tmp_path / "face.png", tmp_path / "speech.wav"


def _probe(path):
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = sum(1 for _ in c.decode(video=0))
        rate, size = v.average_rate, (v.codec_context.width, v.codec_context.height)
    with av.open(str(path)) as c:
        a = c.streams.audio[0]
        seconds = sum(f.samples for f in c.decode(audio=0)) / a.rate
        codec = a.codec_context.name
    return frames, rate, size, codec, seconds


def test_reference_flags_and_defaults():
    args = build_parser().parse_args(
        [
            "--input_path",
            "x.png",
            "--audio_path",
            "a.wav",
            "--lora",
            "l.safetensors:0.5",
            "--lora",
            "m.safetensors",
            "--offload_model",
            "--base_seed",
            "3",
        ]
    )
    assert (args.sample_steps, args.sample_text_guide_scale, args.sample_audio_guide_scale) == (40, 5.0, 4.0)
    assert (args.frame_num, args.motion_frame, args.mode, args.size) == (
        81,
        9,
        "streaming",
        "infinitetalk-480",
    )
    assert args.sample_shift is None and args.color_correction_strength == 1.0 and args.seed == 3
    assert args.offload_model is True and args.lora == ["l.safetensors:0.5", "m.safetensors"]
    args = build_parser().parse_args(["--offload_model", "false", "--sampler", "unipc", "--quant", "fp8"])
    assert args.offload_model is False and args.sampler == "unipc" and args.quant == "fp8"


def test_bbox_parsing():
    assert parse_boxes(["0,0,10,20", "30,0,40,20"]) == [(0, 0, 10, 20), (30, 0, 40, 20)]
    assert parse_boxes(["0,0,10,20;30,0,40,20"]) == [(0, 0, 10, 20), (30, 0, 40, 20)]
    assert parse_boxes([]) == []
    with pytest.raises(InputError, match="bbox"):
        parse_boxes(["0,0,10"])
    with pytest.raises(InputError, match="2"):
        parse_boxes(["0,0,10,20"])


def test_find_weights_official_and_comfy_trees(tiny_root):
    off = find_weights(tiny_root / "weights", speakers=2, need_kokoro=True)
    assert off.dit.name == "Wan2.1-I2V-14B-480P" and off.adapter.parent.name == "multi"
    assert off.text_encoder.name == "models_t5_umt5-xxl-enc-bf16.pth" and off.kokoro.name == "Kokoro-82M"
    comfy = find_weights(tiny_root / "models", speakers=1)
    assert comfy.dit.name == "wan2.1_i2v_480p_14B_fp16.safetensors"
    assert comfy.adapter.name == "wan2.1_infiniteTalk_single_fp16.safetensors"
    assert comfy.vae.name == "wan_2.1_vae.safetensors" and comfy.clip.name == "clip_vision_h.safetensors"
    assert "wav2vec2" in comfy.audio_encoder.name and comfy.kokoro is None


def test_missing_weights_name_file_folder_and_source(tmp_path, tiny_dit_root):
    (tmp_path / "weights" / "Wan2.1-I2V-14B-480P").mkdir(parents=True)  # an empty folder is no DiT
    with pytest.raises(CheckpointError) as err:
        find_weights(tmp_path, speakers=1)
    msg = str(err.value)
    assert msg.startswith("DiT (Wan2.1 I2V 14B) not found") and str(tmp_path) in msg
    assert "'models/diffusion_models/wan2.1_i2v_480p_14B_fp16.safetensors'" in msg
    assert "'weights/Wan2.1-I2V-14B-480P' (Hugging Face Wan-AI/Wan2.1-I2V-14B-480P)" in msg
    assert "diffusion_models, unet" in msg and "\n" not in msg
    dit = tmp_path / "models" / "diffusion_models" / "WanVideo" / "any_name.safetensors"  # found by content
    dit.parent.mkdir(parents=True)
    dit.symlink_to(tiny_dit_root / "models/diffusion_models/wan2.1_i2v_480p_14B_fp16.safetensors")
    with pytest.raises(CheckpointError) as err:
        find_weights(tmp_path, speakers=1)
    msg = str(err.value)
    assert "InfiniteTalk adapter, one speaker not found" in msg
    assert (
        "'weights/InfiniteTalk/single/infinitetalk.safetensors' (Hugging Face MeiGen-AI/InfiniteTalk)" in msg
    )
    assert "'models/model_patches/wan2.1_infiniteTalk_single_fp16.safetensors'" in msg


def test_cli_errors_are_one_line_exit_2(tmp_path, capsys):
    assert (
        main(
            ["--input_path", str(tmp_path / "none.png"), "--audio_path", "a.wav", "--weights", str(tmp_path)]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_cli_clip_run_on_tiny_weights(tiny_root, tmp_path):
    face, speech = _inputs(tmp_path, seconds=1.0)
    out = tmp_path / "out.mp4"
    rc = main(
        [
            "--weights",
            str(tiny_root / "models"),
            "--input_path",
            str(face),
            "--audio_path",
            str(speech),
            "--output_path",
            str(out),
            "--size",
            "32x32",
            "--sample_steps",
            "2",
            "--mode",
            "clip",
            "--prompt",
            "a face",
        ]
    )
    assert rc == 0
    frames, rate, size, codec, seconds = _probe(out)
    assert (frames, rate, size, codec) == (25, 25, (32, 32), "aac")  # audio shorter than a window: 25 frames
    assert abs(seconds - 1.0) < 0.05
    assert not (tmp_path / "out.mp4.parts").exists()


def test_cli_json_input_two_speakers(tiny_root, tmp_path):
    face, speech = _inputs(tmp_path, seconds=0.6)
    data = {
        "prompt": "two people",
        "cond_video": face.name,
        "audio_type": "add",
        "cond_audio": {"person1": speech.name, "person2": speech.name},
        "bbox": {"person1": [0, 0, 48, 32], "person2": [0, 32, 48, 64]},
    }  # reference order: rows first
    (tmp_path / "in.json").write_text(json.dumps(data))
    out = tmp_path / "two.mp4"
    rc = main(
        [
            "--weights",
            str(tiny_root),
            "--input_json",
            str(tmp_path / "in.json"),
            "--output_path",
            str(out),
            "--size",
            "32x32",
            "--sample_steps",
            "1",
            "--sample_text_guide_scale",
            "1",
            "--keep_segments",
        ]
    )
    assert rc == 0
    frames, *_ = _probe(out)
    assert frames == 30  # add mode: 0.6 s + 0.6 s
    manifest = json.loads((tmp_path / "two.mp4.parts" / "manifest.json").read_text())
    assert manifest["complete"] and manifest["frames_written"] == 30


def test_cli_tts_dialogue_with_subtitles(tiny_root, tmp_path):
    face, _ = _inputs(tmp_path)
    out = tmp_path / "tts.mp4"
    rc = main(
        [
            "--weights",
            str(tiny_root),
            "--input_path",
            str(face),
            "--text",
            "(s1) Hello there. (s2) Hi!",
            "--lang",
            "a",
            "--subtitles",
            "--output_path",
            str(out),
            "--size",
            "32x32",
            "--sample_steps",
            "1",
            "--sample_text_guide_scale",
            "1",
        ]
    )
    assert rc == 0
    with av.open(str(out)) as c:
        kinds = sorted(s.type for s in c.streams)
        assert c.streams.audio[0].sample_rate == 24000  # Kokoro's own rate, not the 16 kHz speech path
    assert kinds == ["audio", "subtitle", "video"]  # mov_text subtitles (requirements: PyAV >= 17)
    frames, rate, _, codec, seconds = _probe(out)
    assert frames >= 1 and rate == 25 and codec == "aac" and abs(seconds - frames / 25) < 0.05


def test_cli_lora_quant_offload_and_resume_of_finished_run(tiny_root, tmp_path, caplog):
    import logging

    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    save_file(
        {
            "diffusion_model.blocks.0.self_attn.q.lora_down.weight": torch.randn(4, 256, generator=g) * 0.01,
            "diffusion_model.blocks.0.self_attn.q.lora_up.weight": torch.randn(256, 4, generator=g) * 0.01,
        },
        tmp_path / "lora.safetensors",
    )
    face, speech = _inputs(tmp_path, seconds=0.4)
    out = tmp_path / "q.mp4"
    argv = [
        "--weights",
        str(tiny_root),
        "--input_path",
        str(face),
        "--audio_path",
        str(speech),
        "--output_path",
        str(out),
        "--size",
        "32x32",
        "--sample_steps",
        "1",
        "--quant",
        "int8",
        "--offload_model",
        "--lora",
        f"{tmp_path / 'lora.safetensors'}:0.5",
        "--keep_segments",
    ]
    with caplog.at_level(logging.INFO):
        assert main(argv) == 0
    assert "merged into 1 weights at scale 0.5" in caplog.text and "to int8" in caplog.text
    first = _probe(out)
    out.unlink()
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert main([*argv, "--resume"]) == 0  # everything committed: nothing to denoise, just mux again
    assert "window 1/1" not in caplog.text and _probe(out) == first


# ---------------------------------------------------------------- the user's soundtrack in the output (issue 15)
def _music(seconds: float, sr: int) -> np.ndarray:
    """Stereo, different per channel, with 12 kHz content: ``(2, N)`` float32."""
    t = np.arange(round(seconds * sr)) / sr
    left = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 12000 * t)
    right = 0.3 * np.sin(2 * np.pi * 660 * t + 1) + 0.08 * np.sin(2 * np.pi * 9000 * t)
    return np.stack([left, right]).astype(np.float32)


def _stream_facts(path):
    """(video frames, audio rate, channels, codec, audio seconds the container states)."""
    with av.open(str(path)) as c:
        frames = sum(1 for _ in c.decode(video=0))
    with av.open(str(path)) as c:
        a = c.streams.audio[0]
        return frames, a.sample_rate, a.channels, a.codec_context.name, float(a.duration * a.time_base)


def _tiny_run(tiny_root, face, audio, out, *extra):
    argv = ["--weights", str(tiny_root / "models"), "--input_path", str(face), "--audio_path", str(audio)]
    argv += [
        "--output_path",
        str(out),
        "--size",
        "32x32",
        "--sample_steps",
        "1",
        "--sample_text_guide_scale",
        "1",
    ]
    argv += ["--frame_num", "17", "--motion_frame", "5", *extra]
    assert main(argv) == 0


def test_cli_keeps_a_44k_stereo_wav_and_publishes_a_live_playlist(tiny_root, tmp_path):
    """Must show: 44.1 kHz stereo in, 44.1 kHz stereo out, samples within AAC tolerance, length = video."""
    from infinitetalk.media import load_audio

    face, _ = _inputs(tmp_path)
    song = _music(1.0, 44100)
    sf.write(tmp_path / "song.wav", song.T, 44100, subtype="PCM_16")
    source, _ = load_audio(tmp_path / "song.wav")  # what the user gave, as float
    out = tmp_path / "song.mp4"
    _tiny_run(tiny_root, face, tmp_path / "song.wav", out, "--keep_segments")
    frames, rate, channels, codec, seconds = _stream_facts(out)
    assert (rate, channels, codec) == (44100, 2, "aac")
    assert frames == 25  # two windows: 17 frames, then 8 more after the 5 motion frames
    assert abs(seconds - frames / 25) < 1 / 25  # the sound lasts as long as the picture, to one frame
    got, got_rate = load_audio(out)
    assert got_rate == 44100 and abs(got.shape[1] - frames / 25 * 44100) < 44100 / 25
    n = got.shape[1]
    snr = 10 * np.log10((source[:, :n] ** 2).sum(-1) / ((got - source[:, :n]) ** 2).sum(-1))
    assert snr.min() >= 25, snr  # AAC at 320 kb/s stereo: ~34 dB measured on this signal
    spectrum = np.abs(np.fft.rfft(got[0])) ** 2
    freqs = np.fft.rfftfreq(n, 1 / 44100)
    assert (
        spectrum[(freqs > 11900) & (freqs < 12100)].sum()
        > 0.5 * spectrum[(freqs > 400) & (freqs < 480)].sum() * (0.1 / 0.3) ** 2
    )
    # the live playlist grew with the run and ends with it
    playlist = tmp_path / "song.mp4.parts" / "live" / "live.m3u8"
    text = playlist.read_text()
    assert text.count("#EXTINF") == 2 and text.rstrip().endswith("#EXT-X-ENDLIST")
    with av.open(str(playlist)) as c:
        assert sum(1 for _ in c.decode(video=0)) == frames and c.streams.audio[0].sample_rate == 44100


def test_cli_dubbing_keeps_the_videos_48k_soundtrack_exactly_in_prores_pcm(tiny_root, tmp_path):
    """Must show: a video's own 48 kHz stereo soundtrack as the speech source; 24-bit PCM keeps it exactly."""
    from infinitetalk.media import Mp4Writer, load_audio, mux

    frames_in = np.stack([np.full((48, 64, 3), 40 + 4 * i, np.uint8) for i in range(15)])
    with Mp4Writer(tmp_path / "picture.mp4", 25, 64, 48) as w:
        w.write(frames_in)
    clip = mux([tmp_path / "picture.mp4"], tmp_path / "clip.mp4", audio=(_music(0.6, 48000), 48000))
    source, source_rate = load_audio(clip)  # the soundtrack as the user's player decodes it
    out = tmp_path / "dub.mov"
    _tiny_run(tiny_root, clip, clip, out, "--format", "prores-mov")
    frames, rate, channels, codec, seconds = _stream_facts(out)
    assert (rate, channels, codec) == (source_rate, 2, "pcm_s24le") and source_rate == 48000
    assert frames == 15 and abs(seconds - frames / 25) < 1 / 25
    got, _ = load_audio(out)
    assert got.shape == (2, 48000 * frames // 25)
    np.testing.assert_allclose(got, source[:, : got.shape[1]], rtol=0, atol=2**-24)  # 24-bit rounding only
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.name == "prores"


def test_cli_loudness_target(tiny_root, tmp_path):
    from infinitetalk.media import load_audio, measure_loudness, true_peak

    face, _ = _inputs(tmp_path)
    sf.write(tmp_path / "quiet.wav", (_music(0.6, 48000) * 0.1).T, 48000, subtype="FLOAT")
    out = tmp_path / "loud.mkv"
    _tiny_run(tiny_root, face, tmp_path / "quiet.wav", out, "--format", "ffv1-mkv", "--loudness", "-16")
    got, rate = load_audio(out)
    assert rate == 48000 and abs(measure_loudness(got, rate) - -16) < 0.5 and true_peak(got, rate) <= -0.95
