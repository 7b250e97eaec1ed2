"""The example workflows, queued on a real ComfyUI server (CPU, tiny random checkpoints).

Each API twin in ``example_workflows/api/`` is queued through POST /prompt exactly as shipped, except for
the sampler inputs in ``CPU_OVERRIDES`` (and ``CPU_OPTIONS`` on its options node): the shipped values (480p
buckets, 40 steps, 81-frame windows) are what users want on a GPU with the real weights, but would take
hours on two CPU cores. The overrides keep every code path (streaming over two windows with motion frames,
guidance, colour correction, muxing): 64x64 pixels, 2 steps, 17-frame windows with 5 motion frames, and at
most 29 frames (two windows).

Workflows saved with the older 26-input Sampler (``tests/legacy/``) are queued too: the server migrates them
(expert inputs into an options node) and they must give the same video as the current twins.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import av
import pytest

from ..expected import NODE_IDS
from .harness import REPO, output_files

pytestmark = pytest.mark.integration

WORKFLOWS = sorted((REPO / "example_workflows" / "api").glob("*_api.json"))
CPU_OVERRIDES = {"size": "custom", "width": 64, "height": 64, "steps": 2}  # sampler
CPU_OPTIONS = {"frame_num": 17, "motion_frame": 5, "max_frames": 29}  # its options node
EXPECTED_FRAMES = 29  # every sample input is longer than 29 / 25 s
OPTION_KEYS = ("frame_num", "motion_frame", "max_frames", "shift", "scheduler", "color_correction", "apg",
               "teacache", "speaker_boxes", "resume")  # fmt: skip
# the user's own soundtrack reaches the video: the sample recording is 44.1 kHz stereo, Kokoro speaks 24 kHz mono
SOUNDTRACK = {
    "infinitetalk_image_to_video_api": (44100, 2),
    "infinitetalk_video_dubbing_api": (44100, 2),
    "infinitetalk_tts_to_video_api": (24000, 1),
    "infinitetalk_two_person_dialogue_api": (24000, 1),
    "infinitetalk_talking_head_production_api": (24000, 1),  # Kokoro mix through Audio Check
    "infinitetalk_comfyui_loaders_api": (44100, 2),
}
CORE_NODES = {"Note", "LoadImage", "LoadVideo", "CLIPLoader", "VAELoader", "CLIPVisionLoader"}  # ComfyUI's own


def load_api(path: Path, **overrides) -> dict:
    """An API prompt with the CPU overrides; ``overrides`` go to the sampler or its options node by name."""
    prompt = json.loads(path.read_text())
    for node in prompt.values():
        if node["class_type"] == "InfiniteTalkSampler":
            node["inputs"].update(
                {**CPU_OVERRIDES, **{k: v for k, v in overrides.items() if k not in OPTION_KEYS}}
            )
        if node["class_type"] == "InfiniteTalkSamplerOptions":
            node["inputs"].update({**CPU_OPTIONS, **{k: v for k, v in overrides.items() if k in OPTION_KEYS}})
    return prompt


def node_of(prompt: dict, class_type: str) -> str:
    return next(k for k, v in prompt.items() if v["class_type"] == class_type)


def probe(path: Path) -> dict:
    with av.open(str(path)) as c:
        video = c.streams.video[0]
        frames = sum(1 for _ in c.decode(video=0))
        audio = c.streams.audio[0] if c.streams.audio else None
        return {
            "frames": frames,
            "fps": float(video.average_rate),
            "size": (video.codec_context.width, video.codec_context.height),
            "audio_s": float(audio.duration * audio.time_base) if audio is not None else 0.0,
            "audio_layout": (audio.sample_rate, audio.channels) if audio is not None else None,
            "subtitles": len(c.streams.subtitles),
            "codecs": (video.codec_context.name, audio.codec_context.name if audio is not None else None),
        }


def test_object_info_lists_the_pack(comfy_server):
    info = comfy_server.get("/object_info")
    assert NODE_IDS <= set(info)
    for node_id in NODE_IDS:
        assert info[node_id]["category"].startswith("InfiniteTalk/"), node_id
    assert info["InfiniteTalkVideoCombine"]["output_node"] is True


def test_templates_are_served(comfy_server):
    listed = comfy_server.get("/workflow_templates")["ComfyUI-InfiniteTalk"]
    assert sorted(listed) == sorted(p.stem for p in (REPO / "example_workflows").glob("*.json"))
    assert not any(name.endswith("_api") for name in listed)  # API twins stay out of the template browser
    for name in listed:
        ui = comfy_server.get(f"/api/workflow_templates/ComfyUI-InfiniteTalk/{name}.json")
        assert {n["type"] for n in ui["nodes"]} - CORE_NODES <= NODE_IDS


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.stem)
def test_example_workflow(comfy_server, workflow):
    prompt = load_api(workflow)
    sampler = node_of(prompt, "InfiniteTalkSampler")
    progress = []

    def on_message(msg):
        if msg.get("type") == "progress" and msg["data"].get("node") == sampler:
            progress.append((msg["data"]["value"], msg["data"]["max"]))

    entry = comfy_server.run(prompt, timeout=900, on_message=on_message)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000]
    videos = [p for p in output_files(entry, comfy_server.output_dir) if p.suffix == ".mp4"]
    assert len(videos) == 1 and videos[0].is_file()
    info = probe(videos[0])
    assert info["frames"] == EXPECTED_FRAMES
    assert info["fps"] == 25.0
    assert info["size"] == (64, 64)
    assert info["codecs"] == ("h264", "aac")
    assert info["audio_layout"] == SOUNDTRACK[workflow.stem]
    # audio cut to the video: 29 / 25 = 1.16 s, AAC adds at most one 1024-sample frame of padding
    assert abs(info["audio_s"] - EXPECTED_FRAMES / 25) < 0.07, info
    captions = prompt[node_of(prompt, "InfiniteTalkVideoCombine")]["inputs"]["captions"]
    assert info["subtitles"] == (1 if captions == "subtitle track" else 0)
    # progress: 2 windows x 2 steps, reported step by step up to the end
    assert progress and progress[-1] == (4, 4), progress


LEGACY = sorted((REPO / "tests" / "legacy").glob("*_api.json"))


def load_legacy_api(path: Path) -> dict:
    """A prompt saved with the 26-input Sampler, with the CPU overrides on the sampler as it had them."""
    prompt = json.loads(path.read_text())
    prompt[node_of(prompt, "InfiniteTalkSampler")]["inputs"].update({**CPU_OVERRIDES, **CPU_OPTIONS})
    return prompt


@pytest.mark.parametrize("legacy", LEGACY, ids=lambda p: p.stem)
def test_legacy_workflow_is_migrated(comfy_server, legacy):
    """An API prompt of the old 26-input Sampler runs as the current twin: its expert inputs move to an options
    node with the same values, so ComfyUI finds the sampler's result of the current twin in its cache."""
    current = load_api(REPO / "example_workflows" / "api" / legacy.name)
    current[node_of(current, "InfiniteTalkModelLoader")]["inputs"]["block_swap"] = 0  # the old default, saved
    assert comfy_server.run(current, timeout=900)["status"]["status_str"] == "success"
    prompt = load_legacy_api(legacy)
    old_sampler = node_of(prompt, "InfiniteTalkSampler")
    assert "frame_num" in prompt[old_sampler]["inputs"] and "options" not in prompt[old_sampler]["inputs"]
    entry = comfy_server.run(prompt, timeout=900)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000]
    ran = entry["prompt"][2]  # the prompt as executed, after the server-side migration
    options = ran[old_sampler]["inputs"]["options"]
    assert ran[options[0]]["class_type"] == "InfiniteTalkSamplerOptions"
    assert ran[options[0]]["inputs"]["frame_num"] == 17 and ran[options[0]]["inputs"]["max_frames"] == 29
    assert not set(OPTION_KEYS) & set(ran[old_sampler]["inputs"])
    # same inputs as the current twin, node for node: the sampler's output comes from ComfyUI's cache
    assert old_sampler in _cached_nodes(entry)


def test_interrupt_then_next_prompt_runs(comfy_server):
    path = REPO / "example_workflows" / "api" / "infinitetalk_image_to_video_api.json"
    slow = load_api(path, steps=40, max_frames=0, seed=7)  # long enough to be caught mid-sampling
    sampler = node_of(slow, "InfiniteTalkSampler")
    sent = {"steps_after": 0}

    def on_message(msg):
        data = msg.get("data", {})
        sampler_step = msg.get("type") == "progress" and data.get("node") == sampler
        if sampler_step and "at" in sent and "stopped" not in sent:
            sent["steps_after"] += 1
        if sampler_step and "at" not in sent and data["value"] >= 1:
            comfy_server.post("/interrupt")
            sent["at"] = data["value"]
        if msg.get("type") == "execution_interrupted" and "at" in sent:
            sent["stopped"] = True

    entry = comfy_server.run(slow, timeout=900, on_message=on_message)
    assert "at" in sent, "no sampler progress seen before the run ended"
    assert entry["status"]["status_str"] == "error"
    kinds = [m[0] for m in entry["status"]["messages"]]
    assert "execution_interrupted" in kinds, kinds
    # latency in sampler steps, not seconds: the step in flight when /interrupt arrived may still report
    # its progress, the next one must not start (40 steps per window were queued)
    assert sent.get("stopped"), "no execution_interrupted message was seen"
    assert sent["steps_after"] <= 1, sent
    # the server is healthy: the next prompt runs to the end
    again = comfy_server.run(load_api(path, seed=8), timeout=900)
    assert again["status"]["status_str"] == "success", json.dumps(again["status"])[:3000]


def test_bad_inputs_give_clear_messages(comfy_server):
    from .harness import PromptError

    prompt = load_api(
        REPO / "example_workflows" / "api" / "infinitetalk_image_to_video_api.json", frame_num=80
    )
    with pytest.raises(PromptError) as err:
        comfy_server.queue(prompt)
    assert "frame_num 80 must be 4n+1" in err.value.body
    with pytest.raises(PromptError) as err:  # ComfyUI's own bound checks still run next to ours
        comfy_server.queue(
            load_api(REPO / "example_workflows" / "api" / "infinitetalk_image_to_video_api.json", steps=0)
        )
    assert "steps" in err.value.body
    bad = copy.deepcopy(prompt)
    bad[node_of(bad, "InfiniteTalkSamplerOptions")]["inputs"]["frame_num"] = 17
    bad[node_of(bad, "InfiniteTalkModelLoader")]["inputs"]["dit"] = "no_such_model.safetensors"
    entry = comfy_server.run(bad, timeout=300)  # 0.3.75 does not check V3 combo values: the loader must
    errors = [m[1] for m in entry["status"]["messages"] if m[0] == "execution_error"]
    assert errors and errors[0]["node_type"] == "InfiniteTalkModelLoader"
    message = errors[0]["exception_message"]
    assert "no_such_model.safetensors" in message and "diffusion_models" in message
    assert message.count("\n") <= 1  # one line


def _cached_nodes(entry: dict) -> set[str]:
    for kind, data in entry["status"]["messages"]:
        if kind == "execution_cached":
            return set(data["nodes"])
    return set()


def test_cache_stays_valid_when_one_input_changes(comfy_server):
    """Re-queue with one input changed: only that node and what depends on it run again."""
    path = REPO / "example_workflows" / "api" / "infinitetalk_image_to_video_api.json"
    first = load_api(path, seed=21)
    assert comfy_server.run(first, timeout=900)["status"]["status_str"] == "success"
    sampler, combine = node_of(first, "InfiniteTalkSampler"), node_of(first, "InfiniteTalkVideoCombine")

    # 1. new seed: the sampler and the combine run again, every loader and encoder comes from the cache
    second = copy.deepcopy(first)
    second[sampler]["inputs"]["seed"] = 22
    entry = comfy_server.run(second, timeout=900)
    assert entry["status"]["status_str"] == "success"
    cached = _cached_nodes(entry)
    assert set(first) - {sampler, combine} <= cached, (cached, sorted(first))
    assert sampler not in cached and combine not in cached

    # 2. only the file name changes: the sampler's output is reused as well
    third = copy.deepcopy(second)
    third[combine]["inputs"]["filename_prefix"] = "infinitetalk/cache_check"
    entry = comfy_server.run(third, timeout=900)
    assert entry["status"]["status_str"] == "success"
    assert set(first) - {combine} <= _cached_nodes(entry)
