"""umT5 files without a tokenizer (Kijai's ``umt5-xxl-enc-*``): the tokenizer comes from what the user has,
in the order of issue #14 item 3, and the text they give is encoded exactly as with the official one."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from infinitetalk.encoders import load_text_encoder
from infinitetalk.encoders.text import own_tokenizer, tokenizer_search, wrapper_tokenizers
from infinitetalk.errors import CheckpointError
from infinitetalk.loading.discover import find_weights
from infinitetalk.tiny import encoders as tiny

PROMPTS = ["A woman talks to the camera.", "两个人在桌边聊天"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return tiny.write_umt5(tmp_path_factory.mktemp("umt5"), seed=0)


def _lonely(files, tmp_path: Path) -> Path:
    """Kijai's file alone in a text_encoders/ folder."""
    path = tmp_path / "models" / "text_encoders" / files["umt5_kijai_bf16"].name
    path.parent.mkdir(parents=True)
    os.link(files["umt5_kijai_bf16"], path)
    return path


def _wrapper(root: Path, files, name: str = "ComfyUI-WanVideoWrapper") -> Path:
    folder = root / "custom_nodes" / name / "configs" / "T5_tokenizer"
    shutil.copytree(files["umt5_tokenizer"], folder)
    return folder


def test_kijai_file_has_no_tokenizer_of_its_own(files, tmp_path):
    lonely = _lonely(files, tmp_path)
    assert not own_tokenizer(lonely)
    assert own_tokenizer(files["umt5_fp16"]) and own_tokenizer(files["umt5_pth"])  # inside / beside


def test_order_comfyui_file_then_wrapper_then_official(files, tmp_path):
    lonely = _lonely(files, tmp_path)
    wrapper = _wrapper(tmp_path, files)
    official = files["umt5_tokenizer"]
    comfy = files["umt5_fp16"]
    search = [tmp_path / "custom_nodes"]
    assert tokenizer_search(lonely, [files["umt5_pth"], comfy], search, [official]) == comfy  # (1)
    assert tokenizer_search(lonely, [files["umt5_pth"]], search, [official]) == wrapper  # (2)
    assert tokenizer_search(lonely, [], [tmp_path / "nowhere"], [official]) == official  # (3)


def test_wrapper_folder_name_as_registries_spell_it(files, tmp_path):
    folder = _wrapper(tmp_path, files, name="comfyui-wanvideowrapper")  # ComfyUI-Manager / registry installs
    assert wrapper_tokenizers([tmp_path / "custom_nodes"]) == [folder]


def test_no_tokenizer_anywhere_names_all_three_places(files, tmp_path):
    lonely = _lonely(files, tmp_path)
    with pytest.raises(CheckpointError) as err:
        tokenizer_search(lonely, [files["umt5_pth"]], [tmp_path], [tmp_path / "google" / "umt5-xxl"])
    msg = str(err.value)
    assert "\n" not in msg and str(lonely) in msg
    for place in ("(1) a ComfyUI umT5 file", "umt5_xxl_fp16.safetensors", "(2) ComfyUI-WanVideoWrapper's configs/T5_tokenizer/",
                  "(3) the official google/umt5-xxl/"):  # fmt: skip
        assert place in msg
    with pytest.raises(CheckpointError, match="no umT5 tokenizer found"):
        load_text_encoder(lonely)  # the loader alone says the same


@pytest.mark.parametrize("source", ["wrapper", "comfy_file"])
def test_kijai_file_encodes_like_the_official_one(files, tmp_path, source):
    official = load_text_encoder(files["umt5_pth"]).encode(PROMPTS)
    tokenizer = _wrapper(tmp_path, files) if source == "wrapper" else files["umt5_fp16"]
    kijai = load_text_encoder(_lonely(files, tmp_path), tokenizer=tokenizer).encode(PROMPTS)
    for a, b in zip(official, kijai, strict=True):
        assert a.shape == b.shape and torch.equal(a, b)  # same bf16 weights, same token ids: bit for bit


def test_find_weights_passes_the_tokenizer_on(files, tmp_path, tiny_root):
    """In a ComfyUI folder with Kijai's umT5 and the wrapper installed, the run gets the wrapper's tokenizer."""
    root = tmp_path / "ComfyUI"
    models = root / "models"
    for rel in ("diffusion_models/wan2.1_i2v_480p_14B_fp16.safetensors",
                "model_patches/wan2.1_infiniteTalk_single_fp16.safetensors", "clip_vision/clip_vision_h.safetensors",
                "vae/wan_2.1_vae.safetensors", "audio_encoders/wav2vec2-chinese-base_fp16.safetensors"):  # fmt: skip
        (models / rel).parent.mkdir(parents=True, exist_ok=True)
        os.link(tiny_root / "models" / rel, models / rel)
    (models / "text_encoders").mkdir()
    os.link(files["umt5_kijai_bf16"], models / "text_encoders" / files["umt5_kijai_bf16"].name)
    with pytest.raises(CheckpointError, match="no umT5 tokenizer found"):
        find_weights(root)  # validated before any weight is read
    wrapper = _wrapper(root, files)
    paths = find_weights(root)
    assert paths.text_encoder.name == "umt5-xxl-enc-bf16.safetensors" and paths.tokenizer == wrapper
