"""Nodes called directly (no server): schema rules, input validation errors, media nodes end to end."""

from __future__ import annotations

import importlib

import av
import numpy as np
import pytest
import soundfile
import torch

from ..expected import NODE_IDS as EXPECTED_NODES
from .conftest import PACK_MODULE


def _mod(name):
    return importlib.import_module(f"{PACK_MODULE}.nodes.{name}")


# ---------------------------------------------------------------------------------------------- schema
def test_registered_nodes(nodes):
    assert set(nodes) == EXPECTED_NODES


def test_every_node_and_input_is_documented(nodes):
    for node_id, cls in nodes.items():
        schema = cls.GET_SCHEMA()
        assert schema.category.startswith("InfiniteTalk/"), node_id
        assert schema.description, f"{node_id} has no description"
        for inp in schema.inputs:
            assert inp.tooltip, f"{node_id}.{inp.id} has no tooltip"
        for out in schema.outputs:
            assert out.tooltip, f"{node_id} output {out.display_name} has no tooltip"


def test_sampler_bounds(nodes):
    info = nodes["InfiniteTalkSampler"].INPUT_TYPES()
    req = info["required"]
    assert req["width"][1]["step"] == 16 and req["height"][1]["step"] == 16
    assert req["width"][1].get("advanced") is True  # revealed by size=custom where DynamicCombo exists
    assert set(info["optional"]) == {"image", "video", "speaker_masks", "options"}
    # the Sampler keeps the inputs every run needs; the expert knobs are on the options node
    assert len(req) + len(info["optional"]) == 17  # was 26
    assert req["audio_embeds"][0] == "INFINITETALK_AUDIO_EMBEDS,AUDIO_ENCODER_OUTPUT"
    assert list(req)[-3:] == ["size", "width", "height"]  # revealed inputs last: saved widget order holds
    opts = nodes["InfiniteTalkSamplerOptions"].INPUT_TYPES()["required"]
    assert opts["frame_num"][1]["step"] == 4 and opts["frame_num"][1]["min"] == 5
    assert opts["motion_frame"][1]["step"] == 4 and opts["motion_frame"][1]["min"] == 1
    assert set(opts) == {
        "shift",
        "scheduler",
        "frame_num",
        "motion_frame",
        "max_frames",
        "color_correction",
        "apg",
        "teacache",
        "speaker_boxes",
        "face_only",
        "resume",
        "storage",
        "latent_motion",
        "color_anchor",
    }
    # each added last: options nodes saved before keep their widget values
    assert list(opts)[-3:] == ["storage", "latent_motion", "color_anchor"]
    assert (
        opts["storage"][1]["options"] == ["h264", "h264-lossless"] and opts["storage"][1]["default"] == "h264"
    )


# ---------------------------------------------------------------------------------------------- sampler
@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"frame_num": 80}, "frame_num 80 must be 4n+1"),
        ({"frame_num": 33, "motion_frame": 33}, "motion_frame 33"),
        ({"motion_frame": 8}, "motion_frame 8"),
        ({"speaker_boxes": "1,2,3"}, "is not 'x0,y0,x1,y1'"),
        ({"speaker_boxes": "0,0,10,10"}, "exactly two boxes"),
        ({"speaker_boxes": "10,0,5,10; 0,0,4,4"}, "is empty"),
    ],
)
def test_sampler_options_validation_errors(nodes, kwargs, needle):
    result = nodes["InfiniteTalkSamplerOptions"].validate_inputs(**kwargs)
    assert isinstance(result, str) and needle in result


def test_sampler_options_validation_accepts_defaults(nodes):
    node = nodes["InfiniteTalkSamplerOptions"]
    assert node.validate_inputs(frame_num=81, motion_frame=9, speaker_boxes="") is True
    assert node.validate_inputs(speaker_boxes="0,0,416,480; 416,0,832,480") is True


def test_sampler_options_node_output(nodes, pack):
    sampler = _mod("sampler")
    values = {**sampler.asdict(sampler.DEFAULTS), "frame_num": 17, "scheduler": "unipc", "apg": True}
    opts = nodes["InfiniteTalkSamplerOptions"].execute(**values).args[0]
    assert opts == sampler.SamplerOptions(**values)
    config = sampler._config("streaming", "custom", {"width": 64, "height": 96}, 2, 7, 5.0, 4.0, opts)
    assert (config.size, config.frame_num, config.sampler, config.use_apg) == ("64x96", 17, "unipc", True)
    assert (config.steps, config.seed, config.shift, config.max_frame_num) == (2, 7, None, None)


def test_sampler_needs_image_or_video(nodes):
    with pytest.raises(ValueError, match="needs a conditioning 'image'"):
        with _mod("_bridge").reference_source(None, None, 25):
            pass


def test_speaker_masks_become_boxes(pack):
    import numpy as np

    from infinitetalk.pipeline import StillImage

    sampler = _mod("sampler")
    frame = StillImage(np.zeros((40, 60, 3), np.uint8))  # the masks are drawn on this reference
    masks = torch.zeros(2, 40, 60)
    masks[0, 5:20, 2:10] = 1
    masks[1, 10:30, 40:55] = 1
    regions, preview = sampler._regions("", masks, 2, frame)
    assert regions.bboxes == [(2.0, 5.0, 10.0, 20.0), (40.0, 10.0, 55.0, 30.0)]
    assert preview is None  # given, not found: nothing to preview
    boxes, _ = sampler._regions("1,2,3,4; 5,6,7,8", masks, 2, frame)
    assert boxes.bboxes == [(1, 2, 3, 4), (5, 6, 7, 8)]  # boxes win
    assert sampler._regions("", None, 1, frame) == (None, None)  # one speaker: no regions
    with pytest.raises(ValueError, match="place two people but the audio has one speaker"):
        sampler._regions("", masks, 1, frame)  # regions given with one speaker's audio: refused
    with pytest.raises(ValueError, match="mask 2 is empty"):
        sampler._regions("", torch.stack([masks[0], torch.zeros(40, 60)]), 2, frame)


def test_output_connected(pack):
    sampler = _mod("sampler")
    prompt = {"1": {"inputs": {}}, "2": {"inputs": {"frames": ["1", 0]}}}
    assert not sampler._output_connected(prompt, "1", 1)
    prompt["3"] = {"inputs": {"images": ["1", 1]}}
    assert sampler._output_connected(prompt, "1", 1)


# ---------------------------------------------------------------------------------------------- loaders
def test_loader_placeholder_is_a_clear_error(pack):
    common = _mod("_common")
    vae = common.Component.VAE
    with pytest.raises(
        FileNotFoundError, match="no vae file found: put 'models/vae/wan_2.1_vae.safetensors'"
    ):
        common.resolve_component(vae, common.placeholder(vae))


def test_resolve_missing_files(pack):
    common = _mod("_common")
    with pytest.raises(FileNotFoundError, match="not found in any InfiniteTalk weights folder"):
        common.resolve("vae", "weights/nothing/here.pth")
    with pytest.raises(FileNotFoundError, match="'vae' model folder"):
        common.resolve("vae", "missing_vae.safetensors")


def test_loaders_list_both_layouts(nodes, tiny_models):
    info = nodes["InfiniteTalkModelLoader"].INPUT_TYPES()["required"]
    dits, adapters = info["dit"][1]["options"], info["adapter"][1]["options"]
    assert "wan2.1_i2v_480p_14B_fp16.safetensors" in dits
    assert "weights/Wan2.1-I2V-14B-480P" in dits
    assert "wan2.1_infiniteTalk_single_fp16.safetensors" in adapters
    assert "weights/InfiniteTalk/multi/infinitetalk.safetensors" in adapters
    kokoro = nodes["InfiniteTalkKokoroLoader"].INPUT_TYPES()["required"]["name"][1]["options"]
    assert "kokoro-v1_0.pth" in kokoro and "weights/Kokoro-82M" in kokoro


# ---------------------------------------------------------------------------------------------- audio
@pytest.fixture()
def wav_in_input(comfy):
    sr = 22050
    t = np.arange(int(1.5 * sr)) / sr
    wave = (
        np.stack([np.sin(2 * np.pi * 220 * t), np.sin(2 * np.pi * 330 * t)], axis=1).astype(np.float32) * 0.3
    )
    path = f"{comfy.get_input_directory()}/tone.wav"
    soundfile.write(path, wave, sr)
    return "tone.wav", sr, wave


def test_load_audio(nodes, wav_in_input):
    name, sr, wave = wav_in_input
    node = nodes["InfiniteTalkLoadAudio"]
    out = node.execute(name, 0.5, 0.0).args[0]
    assert out["sample_rate"] == sr
    assert out["waveform"].shape == (1, 2, wave.shape[0] - sr // 2)  # (B, C, N), half a second skipped
    np.testing.assert_allclose(out["waveform"][0, 0, :10].numpy(), wave[sr // 2 : sr // 2 + 10, 0], atol=1e-4)
    assert node.execute(name, 0.0, 1.0).args[0]["waveform"].shape[-1] == sr


def test_load_audio_errors(nodes, wav_in_input):
    node = nodes["InfiniteTalkLoadAudio"]
    assert "audio 'nope.wav' not found in the ComfyUI input folder" in node.validate_inputs("nope.wav")
    for hostile, needle in [
        ("../x.wav", "climbs out of its folder with '..'"),
        ("/etc/passwd", "is an absolute path"),
        ("C:\\x.wav", "names a drive"),
        ("\\\\host\\share\\x.wav", "is a network (UNC) path"),
        ("x\x00.wav", "holds a NUL byte"),
    ]:
        assert needle in node.validate_inputs(hostile), hostile
    with pytest.raises(ValueError, match="nothing left after start_seconds"):
        node.execute(wav_in_input[0], 5.0, 0.0)


def test_audio_embed_rejects_non_audio(nodes):
    with pytest.raises(ValueError, match="must be a ComfyUI AUDIO"):
        nodes["InfiniteTalkAudioEmbed"].execute(None, {"samples": 1}, True, "para")


# ---------------------------------------------------------------------------------------------- video
def test_video_combine_needs_frames(nodes):
    with pytest.raises(ValueError, match="needs 'frames'"):
        nodes["InfiniteTalkVideoCombine"].execute("none", "x")


def _probe(path):
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        has_audio = bool(c.streams.audio)
        duration = float(c.streams.audio[0].duration * c.streams.audio[0].time_base) if has_audio else 0.0
        subs = len(c.streams.subtitles)
        return frames, float(v.average_rate), duration, subs


def test_video_combine_images_audio_captions(nodes, comfy):
    images = torch.zeros(30, 64, 96, 3)
    images[:, :, :48] = 0.8  # left half bright
    sr = 16000
    audio = {"waveform": torch.zeros(1, 1, sr * 2), "sample_rate": sr}
    srt = "1\n00:00:00,000 --> 00:00:01,000\nHELLO\n"
    node = nodes["InfiniteTalkVideoCombine"]
    plain = node.execute("none", "t/plain", images=images, audio=audio, srt=srt, fps=25.0, crf=10)
    burnt = node.execute("burn-in", "t/burnt", images=images, audio=audio, srt=srt, fps=25.0, crf=10)
    track = node.execute("subtitle track", "t/track", images=images, audio=audio, srt=srt, fps=25.0, crf=10)
    out_dir = comfy.get_output_directory()
    paths = {}
    for key, res in (("plain", plain), ("burnt", burnt), ("track", track)):
        saved = res.ui.as_dict()["images"][0]
        paths[key] = f"{out_dir}/{saved['subfolder']}/{saved['filename']}"
        assert res.args[0].get_dimensions() == (96, 64)
    frames, fps, audio_s, subs = _probe(paths["plain"])
    assert len(frames) == 30 and fps == 25.0
    assert abs(audio_s - 1.2) < 0.05  # audio cut to the video length (30 / 25 s), AAC frame granularity
    assert subs == 0
    burnt_frames, _, _, _ = _probe(paths["burnt"])
    diff = [np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(frames, burnt_frames, strict=True)]
    assert min(diff[:25]) > 0.5  # caption drawn on every frame of its first second ...
    assert max(diff[26:]) < 0.5  # ... and gone afterwards (only codec noise)
    assert _probe(paths["track"])[3] == 1
