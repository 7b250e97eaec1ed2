"""The three folders users already have (tests/user_trees.py), each behind its own real ComfyUI server:
the loader nodes list the tree's files under their published names (the preferred one first) and the
image-to-video workflow makes a video from them (tiny: 64x64, 1 step, one 9-frame window).

The three servers start in parallel (about the time of one on two cores) and are stopped at the end.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.user_trees import TREES, build

from .harness import REPO, ComfyServer, ensure_comfyui, output_files
from .test_workflows import load_api, node_of, probe

pytestmark = pytest.mark.integration

FOLDERS = (
    "diffusion_models",
    "model_patches",
    "text_encoders",
    "clip_vision",
    "vae",
    "audio_encoders",
    "loras",
    "wav2vec2",
)
# (node, input) -> what the tree's loaders must offer first
EXPECTED = {
    "template": {
        ("InfiniteTalkModelLoader", "dit"): "Wan2_1-I2V-14B-480p_fp8_e4m3fn_scaled_KJ.safetensors",
        ("InfiniteTalkModelLoader", "adapter"): "wan2.1_infiniteTalk_single_fp16.safetensors",
        ("InfiniteTalkTextEncoderLoader", "name"): "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
        ("InfiniteTalkVAELoader", "name"): "Wan2_1_VAE_bf16.safetensors",
        ("InfiniteTalkAudioEncoderLoader", "name"): "wav2vec2-chinese-base_fp16.safetensors",
        ("InfiniteTalkClipVisionLoader", "name"): "clip_vision_h.safetensors",
        ("InfiniteTalkLoraLoader", "lora"): "lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors",
    },
    "wrapper": {
        ("InfiniteTalkModelLoader", "dit"): "WanVideo/Wan2_1-I2V-14B-480P_fp8_e4m3fn.safetensors",
        (
            "InfiniteTalkModelLoader",
            "adapter",
        ): "WanVideo/InfiniteTalk/Wan2_1-InfiniTetalk-Single_fp16.safetensors",
        ("InfiniteTalkTextEncoderLoader", "name"): "umt5-xxl-enc-bf16.safetensors",
        ("InfiniteTalkVAELoader", "name"): "wanvideo/Wan2_1_VAE_bf16.safetensors",
        ("InfiniteTalkAudioEncoderLoader", "name"): "transformers/TencentGameMate/chinese-wav2vec2-base",
        ("InfiniteTalkClipVisionLoader", "name"): "clip_vision_h.safetensors",
    },
    "official": {
        ("InfiniteTalkModelLoader", "dit"): "weights/Wan2.1-I2V-14B-480P",
        ("InfiniteTalkModelLoader", "adapter"): "weights/InfiniteTalk/single/infinitetalk.safetensors",
        (
            "InfiniteTalkTextEncoderLoader",
            "name",
        ): "weights/Wan2.1-I2V-14B-480P/models_t5_umt5-xxl-enc-bf16.pth",
        ("InfiniteTalkVAELoader", "name"): "weights/Wan2.1-I2V-14B-480P/Wan2.1_VAE.pth",
        ("InfiniteTalkAudioEncoderLoader", "name"): "weights/chinese-wav2vec2-base",
        ("InfiniteTalkClipVisionLoader", "name"): (
            "weights/Wan2.1-I2V-14B-480P/models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"
        ),
    },
}
TINY_RUN = {"steps": 1, "frame_num": 9, "motion_frame": 5, "max_frames": 9}


def model_paths(tree: str, root) -> str:
    """extra_model_paths.yaml of a user's tree: its models/ folders (and custom_nodes), or its weights/."""
    if tree == "official":
        return f"user_tree:\n  infinitetalk_weights: {root / 'weights'}\n"
    lines = ["user_tree:", f"  base_path: {root / 'models'}"]
    lines += [f"  {f}: {f}" for f in FOLDERS if (root / "models" / f).is_dir()]
    if (root / "custom_nodes").is_dir():  # the WanVideoWrapper's tokenizer lives there
        lines.append(f"  custom_nodes: {root / 'custom_nodes'}")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def user_servers(tiny_models, tmp_path_factory):
    ensure_comfyui()
    base = tmp_path_factory.mktemp("user_tree_servers")
    roots = {tree: build(tree, tiny_models, base / tree / "tree") for tree in TREES}
    servers = {
        tree: ComfyServer(
            base / tree / "server", tiny_models, model_paths=model_paths(tree, roots[tree]), name=tree
        )
        for tree in TREES
    }
    try:
        with ThreadPoolExecutor(len(servers)) as pool:
            list(pool.map(lambda s: s.start(timeout=300), servers.values()))
        yield servers
    finally:
        for server in servers.values():
            server.stop()


def _options(server: ComfyServer, node: str, name: str) -> list[str]:
    spec = server.get(f"/object_info/{node}")[node]["input"]
    entry = spec["required"].get(name) or spec["optional"][name]
    return entry[1]["options"] if isinstance(entry[1], dict) and "options" in entry[1] else entry[0]


@pytest.mark.parametrize("tree", TREES)
def test_loader_nodes_list_the_tree_and_make_a_video(user_servers, tree):
    server = user_servers[tree]
    for (node, name), want in EXPECTED[tree].items():
        options = _options(server, node, name)
        assert options[0] == want, (node, name, options)
    prompt = load_api(REPO / "example_workflows" / "api" / "infinitetalk_image_to_video_api.json", **TINY_RUN)
    for (node, name), want in EXPECTED[tree].items():
        if node != "InfiniteTalkLoraLoader":
            prompt[node_of(prompt, node)]["inputs"][name] = want
    if tree == "template":  # the template's LoRA, between the model loader and the sampler
        sampler = prompt[node_of(prompt, "InfiniteTalkSampler")]
        prompt["99"] = {
            "class_type": "InfiniteTalkLoraLoader",
            "inputs": {"model": sampler["inputs"]["model"], "lora": EXPECTED[tree][("InfiniteTalkLoraLoader", "lora")],
                       "strength": 1.0},
        }  # fmt: skip
        sampler["inputs"]["model"] = ["99", 0]
    entry = server.run(prompt, timeout=900)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000]
    (video,) = [p for p in output_files(entry, server.output_dir) if p.suffix == ".mp4"]
    info = probe(video)
    assert (info["frames"], info["size"], info["codecs"]) == (9, (64, 64), ("h264", "aac"))
    if tree == "wrapper":  # Kijai's umT5 carries no tokenizer: the wrapper's configs/T5_tokenizer was used
        assert "configs/T5_tokenizer" in server.log_text()
