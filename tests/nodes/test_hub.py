"""infinitetalk.hub: the download plan matches what the loaders and example workflows expect; offline it
fails at once with one clear line."""

from __future__ import annotations

import json
import socket

import pytest

from infinitetalk.errors import CheckpointError
from infinitetalk.hub import download, plan
from tests.integration.harness import REPO

LOADER_FOLDERS = {
    "InfiniteTalkModelLoader": {"dit": "diffusion_models", "adapter": "model_patches"},
    "InfiniteTalkTextEncoderLoader": {"name": "text_encoders"},
    "InfiniteTalkClipVisionLoader": {"name": "clip_vision"},
    "InfiniteTalkVAELoader": {"name": "vae"},
    "InfiniteTalkAudioEncoderLoader": {"name": "audio_encoders"},
    "InfiniteTalkKokoroLoader": {"name": "kokoro"},
    "CLIPLoader": {"clip_name": "text_encoders"},  # ComfyUI's own loaders (infinitetalk_comfyui_loaders)
    "VAELoader": {"vae_name": "vae"},
    "CLIPVisionLoader": {"clip_name": "clip_vision"},
}


def test_comfyui_plan_covers_the_example_workflows():
    downloadable = {item.dest for item in plan("comfyui")}
    for path in (REPO / "example_workflows" / "api").glob("*_api.json"):
        for node in json.loads(path.read_text()).values():
            for key, folder in LOADER_FOLDERS.get(node["class_type"], {}).items():
                assert f"{folder}/{node['inputs'][key]}" in downloadable, (path.name, key)


def test_official_plan_matches_the_reference_layout():
    dests = {item.dest for item in plan("official")}
    assert "Wan2.1-I2V-14B-480P/diffusion_pytorch_model.safetensors.index.json" in dests
    assert "InfiniteTalk/single/infinitetalk.safetensors" in dests
    assert "chinese-wav2vec2-base/model.safetensors" in dests
    assert "Kokoro-82M/voices/af_heart.pt" in dests
    assert {i.part for i in plan("official", only=["adapter_single"])} == {"adapter_single"}
    revisions = {i.dest: i.revision for i in plan("official", only=["audio_encoder"])}
    assert revisions["chinese-wav2vec2-base/model.safetensors"] == "refs/pr/1"


def test_comfyui_sources_are_the_published_ones():
    """The sources ComfyUI's InfiniteTalk template and the pinned download scripts use (docs/WEIGHTS.md)."""
    urls = {i.dest: f"{i.repo_id}/{i.filename}" for i in plan("comfyui")}
    assert urls["audio_encoders/wav2vec2-chinese-base_fp16.safetensors"] == (
        "Kijai/wav2vec2_safetensors/wav2vec2-chinese-base_fp16.safetensors"
    )
    assert urls["model_patches/wan2.1_infiniteTalk_single_fp16.safetensors"] == (
        "Comfy-Org/Wan_2.1_ComfyUI_repackaged/split_files/model_patches/wan2.1_infiniteTalk_single_fp16.safetensors"
    )
    assert not any(i.part == "lora" for i in plan("comfyui"))  # LoRAs only on request
    (lora,) = plan("comfyui", only=["lora"])
    assert lora.repo_id == "Kijai/WanVideo_comfy" and lora.filename.startswith("Lightx2v/")


def test_unknown_names_are_clear_errors():
    with pytest.raises(CheckpointError, match="unknown download layout 'civitai'"):
        plan("civitai")
    with pytest.raises(CheckpointError, match=r"unknown components \['controlnet'\]: choose from dit, "):
        plan("comfyui", only=["controlnet"])


def test_offline_fails_fast_with_one_line(tmp_path, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    import huggingface_hub

    tries, real_connect = [], socket.create_connection

    def connect(address, *args, **kwargs):
        tries.append(address)
        return real_connect(address, *args, **kwargs)

    def no_download(*args, **kwargs):
        raise AssertionError("a file download was tried after the endpoint was found unreachable")

    monkeypatch.setattr(socket, "create_connection", connect)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_download)
    with pytest.raises(CheckpointError) as err:
        download("comfyui", tmp_path, only=["vae"])
    assert tries == [("127.0.0.1", port)]  # fast = one refused connection, no retries, no per-file tries
    message = str(err.value)
    assert "cannot reach 127.0.0.1" in message and "\n" not in message
    assert not (tmp_path / "vae").exists()
