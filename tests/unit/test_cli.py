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
from infinitetalk.weights import find_weights


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
    assert "'weights/InfiniteTalk/single/infinitetalk.safetensors' (Hugging Face MeiGen-AI/InfiniteTalk)" in msg
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
    assert kinds[:2] == ["audio", "subtitle"] or kinds == ["audio", "video"]  # mov_text needs PyAV >= 17
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
