"""The command line and the Sampler node are two hosts of the one run (:class:`infinitetalk.runs.GenerationRun`).

One tiny job (same weights, inputs, seed and options) through ``infinitetalk.cli.main`` and through the
Sampler node called directly gives bit-identical frames: lossless segments (``--format ffv1-mkv`` /
``storage h264-lossless``), decoded frames compared exactly. With two speakers and no boxes both hosts find
the speakers from the faces of a real two-person photo; a one-person photo for two speakers is refused by
both with the same reason.
"""

from __future__ import annotations

import importlib
import logging

import av
import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from tests.photos import astronaut, two_people

from .conftest import PACK_MODULE

DIT = "wan2.1_i2v_480p_14B_fp16.safetensors"
ADAPTERS = {1: "wan2.1_infiniteTalk_single_fp16.safetensors", 2: "wan2.1_infiniteTalk_multi_fp16.safetensors"}
FILES = {  # folder -> file: the node picks them by name, the command line finds exactly these by content
    "diffusion_models": DIT,
    "text_encoders": "umt5_xxl_fp16.safetensors",
    "clip_vision": "clip_vision_h.safetensors",
    "vae": "wan_2.1_vae.safetensors",
    "audio_encoders": "wav2vec2-chinese-base_fp16.safetensors",
}
PROMPT, NEGATIVE, SEED, SIZE = "people talking", "blurry, static", 3, (96, 48)


def _mod(name):
    return importlib.import_module(f"{PACK_MODULE}.{name}")


def _weights(tiny_models, tmp_path, speakers: int):
    """A models/ folder holding one file per component (links to the tiny files the node loads)."""
    root = tmp_path / "models"
    for folder, name in {**FILES, "model_patches": ADAPTERS[speakers]}.items():
        (root / folder).mkdir(parents=True)
        (root / folder / name).symlink_to(tiny_models / "models" / folder / name)
    return root


def _speech(path, seconds: float, pitch: float):
    sr = 16000
    t = np.arange(int(sr * seconds)) / sr
    sf.write(
        path, (0.3 * np.sin(2 * np.pi * pitch * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32), sr
    )
    return path


def _decoded(path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def _cli_frames(weights, image_path, audio_paths, tmp_path) -> np.ndarray:
    from infinitetalk.cli import main

    out = tmp_path / "cli.mkv"
    audio = ["--audio_path", str(audio_paths[0])] + (
        ["--audio_path2", str(audio_paths[1])] if len(audio_paths) > 1 else []
    )
    argv = [
        "--weights", str(weights), "--input_path", str(image_path), *audio, "--output_path", str(out),
        "--format", "ffv1-mkv", "--size", f"{SIZE[0]}x{SIZE[1]}", "--prompt", PROMPT, "--n_prompt", NEGATIVE,
        "--sample_steps", "2", "--sample_text_guide_scale", "1", "--frame_num", "17", "--motion_frame", "5",
        "--max_frame_num", "29", "--seed", str(SEED), "--device", "cpu", "--no_live",
    ]  # fmt: skip
    assert main(argv) == 0
    return _decoded(out)


def _node_frames(nodes, image: np.ndarray, audio_paths):
    from comfy_api.latest import io

    from infinitetalk.media.stream import read_audio

    run = lambda node_id, *args, **kw: nodes[node_id].execute(*args, **kw)  # noqa: E731
    speakers = len(audio_paths)
    model = run("InfiniteTalkModelLoader", DIT, ADAPTERS[speakers], "fp32", "none").args[0]
    vae = run("InfiniteTalkVAELoader", FILES["vae"], "fp32").args[0]
    clip = run("InfiniteTalkClipVisionLoader", FILES["clip_vision"], "fp32").args[0]
    text_encoder = run("InfiniteTalkTextEncoderLoader", FILES["text_encoders"], "fp32").args[0]
    text = run("InfiniteTalkTextEncode", text_encoder, PROMPT, NEGATIVE).args[0]
    wav2vec = run("InfiniteTalkAudioEncoderLoader", FILES["audio_encoders"], "fp32").args[0]
    tracks = []
    for path in audio_paths:  # what Load Audio gives for the file the command line reads
        wave, sr = read_audio(path)
        tracks.append(_mod("nodes.audio").numpy_to_audio(wave, sr))
    embeds = run("InfiniteTalkAudioEmbed", wav2vec, tracks[0], True, "para", *tracks[1:]).args[0]
    options = _mod("nodes.sampler").SamplerOptions(
        frame_num=17, motion_frame=5, max_frames=29, storage="h264-lossless"
    )
    sampler = nodes["InfiniteTalkSampler"].PREPARE_CLASS_CLONE(
        {io.Hidden.unique_id: "one_run", io.Hidden.prompt: {}}
    )
    image_batch = torch.from_numpy(image).float()[None] / 255.0
    out = sampler.execute(
        model, vae, clip, text, embeds, "streaming", "custom", 2, SEED, 1.0, 4.0,
        image=image_batch, options=options, width=SIZE[0], height=SIZE[1],
    )  # fmt: skip
    frames = out.args[0]
    return np.stack(list(frames.iter_frames()))[: frames.num_frames], out


@pytest.mark.parametrize("speakers", [1, 2])
def test_cli_and_sampler_give_bit_identical_frames(nodes, tiny_models, tmp_path, caplog, speakers):
    """Two speakers: no boxes given, a real photo of two people: both hosts find the regions from the faces."""
    image = two_people()[0] if speakers == 2 else astronaut()
    Image.fromarray(image).save(tmp_path / "photo.png")
    audio = [
        _speech(tmp_path / f"speech{k}.wav", 1.2, 180 + 60 * k) for k in range(speakers)
    ]  # 30 frames: cut to 29
    weights = _weights(tiny_models, tmp_path, speakers)
    with caplog.at_level(logging.INFO):
        cli = _cli_frames(weights, tmp_path / "photo.png", audio, tmp_path)
        cli_found = caplog.text.count("two speakers: regions from the faces")
        node, out = _node_frames(nodes, image, audio)
    node_found = caplog.text.count("two speakers: regions from the faces") - cli_found
    assert cli.shape == node.shape == (29, SIZE[1], SIZE[0], 3)
    assert np.array_equal(cli, node), f"{np.count_nonzero(cli != node)} values differ"
    assert cli.std() > 1  # real frames, not a constant picture on both sides
    if speakers == 2:
        assert (cli_found, node_found) == (1, 1)  # each host found the two speakers from the faces
        assert out.ui is not None  # the Sampler shows the regions it found
    else:
        assert (cli_found, node_found) == (0, 0)


def test_one_person_photo_for_two_speakers_is_refused_by_both(nodes, tiny_models, tmp_path, capsys):
    """The library decides (``runs.speaker_layout``): each host names its own inputs for the regions."""
    from infinitetalk.cli import main

    Image.fromarray(astronaut()).save(tmp_path / "one.png")
    a, b = (_speech(tmp_path / f"s{k}.wav", 0.5, 200) for k in range(2))
    weights = _weights(tiny_models, tmp_path, 2)
    argv = ["--weights", str(weights), "--input_path", str(tmp_path / "one.png"), "--audio_path", str(a),
            "--audio_path2", str(b), "--output_path", str(tmp_path / "x.mp4"), "--device", "cpu"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "two speakers but 1 face found in the image" in err and "give --bbox (person 1, person 2)" in err
    assert err.count("\n") == 1
    sampler = _mod("nodes.sampler")
    with pytest.raises(
        ValueError, match=r"two speakers but 1 face found .* give speaker_boxes / speaker_masks"
    ):
        sampler._regions("", None, 2, sampler._as_source(astronaut()))
