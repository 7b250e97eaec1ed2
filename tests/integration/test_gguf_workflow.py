"""A GGUF tree on the real server: the image-to-video workflow with a Q4_K DiT, a Q8_0 adapter and a Q8_0 umT5
(tokenizer rebuilt from the file) gives the same video as with safetensors files holding the dequantised
values. Lossless output (segments stored h264-lossless, ffv1-mkv), fp32 on the CPU: tolerance 0 levels."""

from __future__ import annotations

import json
import shutil

import av
import numpy as np
import pytest

from .harness import REPO, ComfyServer, ensure_comfyui
from .test_workflows import load_api, node_of

pytestmark = pytest.mark.integration
pytest.importorskip("gguf")

GGUF = {"dit": "wan2.1-i2v-14b-480p-Q4_K_M.gguf", "adapter": "Wan2_1-InfiniteTalk_Single_Q8.gguf",
        "umt5": "umt5-xxl-encoder-Q8_0.gguf"}  # fmt: skip
DEQUANT = {"dit": "dequant/wan2.1_i2v_480p_14B_fp16.safetensors",
           "adapter": "dequant/wan2.1_infiniteTalk_single_fp16.safetensors", "umt5": "dequant/umt5_xxl_fp16.safetensors"}  # fmt: skip


@pytest.fixture(scope="module")
def gguf_server(tiny_models, tmp_path_factory):
    from infinitetalk.tiny.gguf import write_gguf_trees

    trees = write_gguf_trees(tiny_models, tmp_path_factory.mktemp("gguf_trees"))
    models = trees["gguf"] / "models"
    for key, folder in (("dit", "diffusion_models"), ("adapter", "model_patches"), ("umt5", "text_encoders")):
        (models / folder / "dequant").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(trees[f"{key}_dequant"], models / folder / "dequant" / trees[f"{key}_dequant"].name)
    ensure_comfyui()
    server = ComfyServer(tmp_path_factory.mktemp("gguf_server"), trees["gguf"], name="gguf")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _run(server, names: dict) -> np.ndarray:
    prompt = load_api(
        REPO / "example_workflows" / "api" / "infinitetalk_image_to_video_api.json", resume=False
    )
    prompt[node_of(prompt, "InfiniteTalkSamplerOptions")]["inputs"].update(storage="h264-lossless")
    prompt[node_of(prompt, "InfiniteTalkModelLoader")]["inputs"].update(
        dit=names["dit"], adapter=names["adapter"], precision="fp32", quantization="none", block_swap=0
    )
    prompt[node_of(prompt, "InfiniteTalkTextEncoderLoader")]["inputs"].update(
        name=names["umt5"], precision="fp32"
    )
    prompt[node_of(prompt, "InfiniteTalkVideoCombine")]["inputs"].update(format="ffv1-mkv")
    before = set(server.output_dir.rglob("*.mkv"))
    entry = server.run(prompt, timeout=900)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000]
    videos = sorted(set(server.output_dir.rglob("*.mkv")) - before)  # the ui shows an mp4 preview of ffv1
    assert len(videos) == 1, videos
    with av.open(str(videos[0])) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)]).astype(int)


def test_gguf_workflow_equals_dequantised_safetensors(gguf_server):
    a, b = _run(gguf_server, GGUF), _run(gguf_server, DEQUANT)
    assert a.shape == b.shape and a.shape[0] == 29
    assert np.abs(a - b).max() == 0
