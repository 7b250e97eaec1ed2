"""InfiniteTalk Run Report: the chart on the node for a core VIDEO against its reference, and for the Sampler's
frames (the report measured while they streamed)."""

from __future__ import annotations

import importlib
import json

import numpy as np
import torch

from tests import drift_videos as dv

from .conftest import PACK_MODULE


def _image(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(array)).float()[None] / 255.0


def _write(video: dv.Synthetic, path):
    from infinitetalk.media import VideoWriter

    writer = VideoWriter(path, 25, video.image.shape[1], video.image.shape[0])
    for chunk in video.chunks():
        writer.write(chunk)
    writer.close()


def test_run_report_on_a_core_video_shows_the_chart(nodes, comfy, tmp_path):
    from comfy_api.latest import InputImpl

    video = dv.jumps(12.0, 2.0, 160)  # 81 + 72 + 7 frames, a jump at each join
    _write(video, tmp_path / "v.mp4")
    active = dv.speech_pattern(160)
    audio = {"waveform": torch.from_numpy(dv.speech_wave(active))[None, None], "sample_rate": 16000}
    out = nodes["InfiniteTalkRunReport"].execute(
        video=InputImpl.VideoFromFile(str(tmp_path / "v.mp4")), reference=_image(video.image), audio=audio
    )
    chart, warnings, report = out.args
    summary = json.loads(report)
    assert [r["frames"] for r in summary["windows"]] == [81, 72, 7]
    assert summary["windows"][1]["seam_jump"] > 10 and "window join jumps" in warnings
    assert chart.shape[0] == 1 and chart.shape[2] == 1200 and chart.std() > 0.05
    shown = out.ui.as_dict()["images"]
    assert len(shown) == 1 and shown[0]["type"] == "temp"  # the chart, previewed on the node
    assert nodes["InfiniteTalkRunReport"].GET_SCHEMA().is_output_node  # it runs where a graph ends in it


def test_run_report_refuses_a_video_without_its_reference(nodes, comfy, tmp_path):
    import pytest
    from comfy_api.latest import InputImpl

    _write(dv.undrifted(10), tmp_path / "v.mp4")
    with pytest.raises(ValueError, match="'reference'"):
        nodes["InfiniteTalkRunReport"].execute(video=InputImpl.VideoFromFile(str(tmp_path / "v.mp4")))
    with pytest.raises(ValueError, match="one of them"):
        nodes["InfiniteTalkRunReport"].execute()


def test_sampler_frames_carry_their_report_to_the_node(nodes, tiny_models, comfy, monkeypatch):
    """A tiny Sampler run (1 s, 21-frame windows): its frames hold the report measured while they streamed."""
    from comfy_api.latest import io

    loaders = {
        "model": nodes["InfiniteTalkModelLoader"].execute(
            "wan2.1_i2v_480p_14B_fp16.safetensors",
            "wan2.1_infiniteTalk_single_fp16.safetensors",
            "fp32",
            "none",
        ),
        "vae": nodes["InfiniteTalkVAELoader"].execute("wan_2.1_vae.safetensors", "auto"),
        "clip_vision": nodes["InfiniteTalkClipVisionLoader"].execute("clip_vision_h.safetensors", "auto"),
        "audio_encoder": nodes["InfiniteTalkAudioEncoderLoader"].execute(
            "wav2vec2-chinese-base_fp16.safetensors", "auto"
        ),
    }
    m = {k: v.args[0] for k, v in loaders.items()}
    text_encoder = nodes["InfiniteTalkTextEncoderLoader"].execute("umt5_xxl_fp16.safetensors", "auto").args[0]
    text = nodes["InfiniteTalkTextEncode"].execute(text_encoder, "a face", "").args[0]
    active = dv.speech_pattern(25, period=8)
    audio = {"waveform": torch.from_numpy(dv.speech_wave(active))[None, None], "sample_rate": 16000}
    embeds = nodes["InfiniteTalkAudioEmbed"].execute(m["audio_encoder"], audio, True, "para").args[0]
    options = nodes["InfiniteTalkSamplerOptions"].execute(frame_num=21, motion_frame=5).args[0]
    bridge = importlib.import_module(f"{PACK_MODULE}.nodes._bridge")
    monkeypatch.setattr(bridge, "_server", lambda: None)
    sampler = nodes["InfiniteTalkSampler"].PREPARE_CLASS_CLONE(
        {io.Hidden.unique_id: "5", io.Hidden.prompt: {}}
    )
    frames = sampler.execute(
        m["model"], m["vae"], m["clip_vision"], text, embeds, "streaming", "custom", 1, 3, 1.0, 1.0,
        image=_image(dv.base_image()[::2, ::2]), options=options, width=128, height=128,
    ).args[0]  # fmt: skip
    assert frames.report is not None
    chart, warnings, report = nodes["InfiniteTalkRunReport"].execute(frames=frames).args
    summary = json.loads(report)
    assert [r["frames"] for r in summary["windows"]] == [21, 4]  # 25 frames: 21, then 4 new
    assert summary["mouth"][0]["speaking_frames"] > 0
    assert chart.shape[2] == 1200
