"""InfiniteTalk Text Encode with a prompt schedule: scheduled embeds the Sampler switches per window; a prompt
without time tags gives exactly the embeds it gave before."""

from __future__ import annotations

import importlib
import logging

import numpy as np
import pytest
import torch

from .conftest import PACK_MODULE


@pytest.fixture(scope="module")
def encoder(nodes, tiny_models):
    return nodes["InfiniteTalkTextEncoderLoader"].execute("umt5_xxl_fp16.safetensors", "fp32").args[0]


def test_text_encode_without_tags_is_unchanged(nodes, encoder):
    conditioning = importlib.import_module(f"{PACK_MODULE}.nodes.conditioning")
    prompt = "a face\n[close-up] talking"
    embeds = nodes["InfiniteTalkTextEncode"].execute(encoder, prompt, "blurry").args[0]
    assert type(embeds) is conditioning.TextEmbeds  # not scheduled: the Sampler's single-prompt path
    positive, negative = encoder.obj.encode([prompt, "blurry"])
    assert torch.equal(embeds.positive, positive.float().cpu()) and torch.equal(
        embeds.negative, negative.float()
    )


def test_text_encode_schedule_drives_the_sampler_windows(nodes, encoder, tiny_models, caplog):
    text = "a calm face\n[0.8s] a smiling face\nwith bright eyes"
    embeds = nodes["InfiniteTalkTextEncode"].execute(encoder, text, "blurry").args[0]
    assert embeds.schedule == [(0, "a calm face"), (20, "a smiling face\nwith bright eyes")]
    calm, smiling, negative = encoder.obj.encode(
        ["a calm face", "a smiling face\nwith bright eyes", "blurry"]
    )
    assert torch.equal(embeds.by_prompt["a smiling face\nwith bright eyes"], smiling.float())
    assert torch.equal(embeds.positive, calm.float()) and torch.equal(embeds.negative, negative.float())
    errors = importlib.import_module(f"{PACK_MODULE}.infinitetalk.errors")  # the pack as ComfyUI imports it
    with pytest.raises(errors.InputError, match=r"prompt line 2: \[1:75\] is not a time"):
        nodes["InfiniteTalkTextEncode"].execute(encoder, "a\n[1:75] b", "")

    model = (
        nodes["InfiniteTalkModelLoader"]
        .execute(
            "wan2.1_i2v_480p_14B_fp16.safetensors",
            "wan2.1_infiniteTalk_single_fp16.safetensors",
            "fp32",
            "none",
        )
        .args[0]
    )
    vae = nodes["InfiniteTalkVAELoader"].execute("wan_2.1_vae.safetensors", "auto").args[0]
    clip = nodes["InfiniteTalkClipVisionLoader"].execute("clip_vision_h.safetensors", "auto").args[0]
    wav2vec = nodes["InfiniteTalkAudioEncoderLoader"].execute(
        "wav2vec2-chinese-base_fp16.safetensors", "auto"
    )
    t = np.arange(16000) / 16000
    audio = {"waveform": torch.from_numpy((0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32))[None, None]}
    audio["sample_rate"] = 16000
    audio_embeds, _ = nodes["InfiniteTalkAudioEmbed"].execute(wav2vec.args[0], audio, True, "para").args
    from comfy_api.latest import io  # importable once the fixtures put ComfyUI on the path

    sampler = nodes["InfiniteTalkSampler"].PREPARE_CLASS_CLONE(
        {io.Hidden.unique_id: "31", io.Hidden.prompt: {}}
    )
    options = importlib.import_module(f"{PACK_MODULE}.nodes.sampler").SamplerOptions(
        frame_num=17, motion_frame=5, resume=False
    )
    image = torch.rand(1, 48, 48, 3, generator=torch.Generator().manual_seed(0))
    with caplog.at_level(logging.INFO, logger=f"{PACK_MODULE}.infinitetalk.pipeline"):
        frames, _ = sampler.execute(
            model, vae, clip, embeds, audio_embeds, "streaming", "custom", 1, 3, 1.0, 4.0,
            image=image, width=32, height=32, options=options,
        ).args  # fmt: skip
    assert frames.num_frames == 25  # windows add frames 0-16 and 17-24 (middles 8 and 20)
    assert "window 1/2 prompt: a calm face" in caplog.text
    assert "window 2/2 prompt: a smiling face\nwith bright eyes" in caplog.text
