"""The three folders users already have (tests/user_trees.py), under the exact published names: the
command line, pointed at the root, finds every file by content and makes a video from each; the doctor
says which tree it recognised (issue #14)."""

from __future__ import annotations

import logging

import av
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from infinitetalk.cli import main
from infinitetalk.doctor import diagnose
from infinitetalk.loading.discover import find_weights, search_paths_for
from tests.user_trees import TREES, build, template_files

# what the command line must pick in each tree (relative to the ComfyUI models/ or the official root)
EXPECTED = {
    "template": {
        "dit": "models/diffusion_models/Wan2_1-I2V-14B-480p_fp8_e4m3fn_scaled_KJ.safetensors",
        "adapter": "models/model_patches/wan2.1_infiniteTalk_single_fp16.safetensors",
        "text_encoder": "models/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors",
        "clip": "models/clip_vision/clip_vision_h.safetensors",
        "vae": "models/vae/Wan2_1_VAE_bf16.safetensors",
        "audio_encoder": "models/audio_encoders/wav2vec2-chinese-base_fp16.safetensors",
        "tokenizer": None,  # inside umt5_xxl_fp8_e4m3fn_scaled.safetensors
    },
    "wrapper": {
        "dit": "models/diffusion_models/WanVideo/Wan2_1-I2V-14B-480P_fp8_e4m3fn.safetensors",
        "adapter": "models/diffusion_models/WanVideo/InfiniteTalk/Wan2_1-InfiniTetalk-Single_fp16.safetensors",
        "text_encoder": "models/text_encoders/umt5-xxl-enc-bf16.safetensors",
        "clip": "models/clip_vision/clip_vision_h.safetensors",
        "vae": "models/vae/wanvideo/Wan2_1_VAE_bf16.safetensors",
        "audio_encoder": "models/transformers/TencentGameMate/chinese-wav2vec2-base",
        "tokenizer": "custom_nodes/ComfyUI-WanVideoWrapper/configs/T5_tokenizer",
    },
    "official": {
        "dit": "weights/Wan2.1-I2V-14B-480P",
        "adapter": "weights/InfiniteTalk/single/infinitetalk.safetensors",
        "text_encoder": "weights/Wan2.1-I2V-14B-480P/models_t5_umt5-xxl-enc-bf16.pth",
        "clip": "weights/Wan2.1-I2V-14B-480P/models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth",
        "vae": "weights/Wan2.1-I2V-14B-480P/Wan2.1_VAE.pth",
        "audio_encoder": "weights/chinese-wav2vec2-base",
        "tokenizer": None,  # google/umt5-xxl beside the .pth
    },
}
RECOGNISED = {
    "template": "ComfyUI InfiniteTalk template files (7 of 7 names)",
    "wrapper": "WanVideoWrapper files (",
    "official": "official weights/ tree (",
}


@pytest.fixture(scope="module")
def trees(tiny_root, tmp_path_factory):
    base = tmp_path_factory.mktemp("user_trees")
    return {tree: build(tree, tiny_root, base / tree) for tree in TREES}


def test_the_template_tree_holds_exactly_the_files_of_the_model_links_note(trees):
    names = sorted(
        p.relative_to(trees["template"] / "models").as_posix()
        for p in (trees["template"] / "models").rglob("*.safetensors")
    )
    assert names == [
        "audio_encoders/wav2vec2-chinese-base_fp16.safetensors",
        "clip_vision/clip_vision_h.safetensors",  # not in the note: see tests/user_trees.py
        "diffusion_models/Wan2_1-I2V-14B-480p_fp8_e4m3fn_scaled_KJ.safetensors",
        "loras/lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors",
        "model_patches/wan2.1_infiniteTalk_multi_fp16.safetensors",
        "model_patches/wan2.1_infiniteTalk_single_fp16.safetensors",
        "text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors",
        "vae/Wan2_1_VAE_bf16.safetensors",
    ]
    assert len(template_files()) == 7


@pytest.mark.parametrize("tree", TREES)
def test_every_file_is_found_by_content_in_each_tree(trees, tree):
    root = trees[tree]
    paths = find_weights(root, speakers=1)
    for field, rel in EXPECTED[tree].items():
        got = getattr(paths, field)
        assert (got is None) if rel is None else got == root / rel, (field, got)
    report = diagnose(search_paths_for(root))
    assert report.ready, report.text()
    assert RECOGNISED[tree] in report.text()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("inputs")
    sr = 16000
    t = np.arange(sr) / sr
    sf.write(tmp / "speech.wav", (np.sin(2 * np.pi * 220 * t) * 0.3).astype(np.float32), sr)
    yy, xx = np.mgrid[0:48, 0:64]
    Image.fromarray(np.stack([xx * 3, yy * 4, np.full_like(xx, 90)], -1).astype(np.uint8)).save(
        tmp / "face.png"
    )
    return tmp / "face.png", tmp / "speech.wav"


@pytest.mark.parametrize("tree", TREES)
def test_the_command_line_makes_a_video_from_each_tree(trees, tree, inputs, tmp_path, caplog):
    face, speech = inputs
    out = tmp_path / f"{tree}.mp4"
    argv = ["--weights", str(trees[tree]), "--input_path", str(face), "--audio_path", str(speech),
            "--output_path", str(out), "--size", "32x32", "--sample_steps", "1", "--mode", "clip",
            "--frame_num", "9", "--motion_frame", "5", "--prompt", "a face"]  # fmt: skip
    if tree == "template":  # the template's step-distill LoRA, from its loras/ folder
        argv += [
            "--lora",
            str(trees[tree] / "models/loras/lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors"),
        ]
    with caplog.at_level(logging.INFO):
        assert main(argv) == 0
    with av.open(str(out)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 9
        assert c.streams.audio[0].codec_context.name == "aac"
    log = caplog.text
    assert (
        f"dit: using {EXPECTED[tree]['dit'].split('/', 2)[-1] if tree != 'official' else EXPECTED[tree]['dit']}"
        in log
    )
    if tree == "wrapper":  # Kijai's umT5 has no tokenizer: the wrapper's, next to the pack, is used
        assert "umT5 tokenizer for umt5-xxl-enc-bf16.safetensors: " in log and "configs/T5_tokenizer" in log
