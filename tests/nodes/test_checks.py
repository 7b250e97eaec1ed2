"""Portrait Check, Find Speakers, Audio Check and Script nodes; the Sampler's automatic speakers."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.photos import astronaut, grace_hopper, two_people

from .conftest import PACK_MODULE


def _image(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(array)).float()[None] / 255.0


def test_portrait_check_node_reports_and_crops(nodes):
    node = nodes["InfiniteTalkPortraitCheck"]
    out = node.execute(_image(grace_hopper()), 1, "none")
    image, warnings, boxes, report = out.args
    assert warnings == "" and "all portrait checks passed" in report
    assert image.shape == (1, 600, 512, 3)
    assert len(boxes.split(";")) == 1 and out.ui.as_dict()["text"] == (report,)
    cropped = node.execute(_image(astronaut()), 1, "infinitetalk-480").args
    assert cropped[0].shape == (1, 640, 640, 3)  # head-and-shoulders crop at the square 480p bucket
    assert "face is 94 px" in cropped[1]  # the warnings are about the input photo
    two = node.execute(_image(two_people()[0]), 1, "none").args
    assert two[1].startswith("2 faces found, 1 expected") and len(two[2].split(";")) == 2


def test_find_speakers_node(nodes, pack):
    image, faces = two_people()
    masks, boxes, preview = nodes["InfiniteTalkFindSpeakers"].execute(_image(image)).args
    assert masks.shape == (2, 512, image.shape[1])
    for mask, (x0, y0, x1, y1) in zip(masks, faces, strict=True):
        assert mask[int((y0 + y1) / 2), int((x0 + x1) / 2)] == 1  # each face inside its person's mask
    assert (masks[0].nonzero()[:, 1].max() < masks[1].nonzero()[:, 1].min()).item()  # person 1 left
    validation = importlib.import_module(f"{PACK_MODULE}.infinitetalk.validation")
    assert len(validation.parse_boxes(boxes)) == 2  # the Sampler's speaker_boxes format (checked by it)
    assert preview.shape == (1, 512, image.shape[1], 3)
    with pytest.raises(ValueError, match="two speakers but 1 face found"):
        nodes["InfiniteTalkFindSpeakers"].execute(_image(astronaut()))


def test_sampler_finds_speakers_when_none_given(pack):
    sampler = importlib.import_module(f"{PACK_MODULE}.nodes.sampler")
    image, faces = two_people()
    regions, preview = sampler._regions("", None, 2, sampler._as_source(image))
    (a, b) = regions.bboxes
    assert a[0] <= faces[0][0] and a[2] <= b[0] and faces[1][2] <= b[2]
    assert preview.shape == (1, 512, image.shape[1], 3)
    with pytest.raises(ValueError, match="1 face found"):
        sampler._regions("", None, 2, sampler._as_source(astronaut()))
    blank = sampler._as_source(np.full((64, 96, 3), 90, np.uint8))
    assert sampler._regions("", None, 2, blank) == (None, None)  # no face: the reference's halves
    assert sampler._regions("", None, 1, sampler._as_source(image)) == (None, None)


def test_audio_check_node_measures_and_cleans(nodes):
    sr = 16000
    t = np.arange(3 * sr) / sr
    rng = np.random.default_rng(0)
    wave = (0.02 * np.sin(2 * np.pi * 150 * t) * (t % 1 < 0.6) + 0.01 * rng.standard_normal(t.size)).astype(
        np.float32
    )
    audio = {"waveform": torch.from_numpy(wave)[None, None], "sample_rate": sr}
    out, warnings, report = nodes["InfiniteTalkAudioCheck"].execute(audio, 0.0, False).args
    assert out is audio and "signal-to-noise ratio" in warnings and "noise floor" in report
    cleaned = nodes["InfiniteTalkAudioCheck"].execute(audio, 80.0, True, -20.0).args[0]
    from infinitetalk.audio_check import check_audio

    assert abs(check_audio(cleaned["waveform"][0].numpy(), sr).lufs - (-20.0)) < 0.2


def test_script_node_tracks_captions_and_prompt_schedule(nodes, tiny_models, comfy):
    sr = 16000
    input_dir = comfy.get_input_directory()
    for name, seconds in (("seg_a.wav", 0.5), ("seg_b.wav", 0.7)):
        t = np.arange(int(seconds * sr)) / sr
        sf.write(f"{input_dir}/{name}", (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), sr)
    encoder = nodes["InfiniteTalkTextEncoderLoader"].execute("umt5_xxl_fp16.safetensors", "fp32").args[0]
    script = (
        "prompt: a calm start\naudio: seg_a.wav | One.\nprompt: a lively end\n[S2] audio: seg_b.wav | Two."
    )
    mix, one, two, embeds, srt = (
        nodes["InfiniteTalkScript"].execute(encoder, script, "af_heart", "am_adam", 1.0).args
    )
    assert mix["sample_rate"] == 24000 and mix["waveform"].shape[-1] == round(1.2 * 24000)
    assert one["waveform"][..., :12000].abs().sum() > 0 and two["waveform"][..., :12000].abs().sum() == 0
    assert embeds.schedule == [(0, "a calm start"), (12, "a lively end")]
    assert set(embeds.by_prompt) == {"a calm start", "a lively end"}
    assert torch.equal(embeds.positive, embeds.by_prompt["a calm start"])
    assert "S1: One." in srt and "S2: Two." in srt
