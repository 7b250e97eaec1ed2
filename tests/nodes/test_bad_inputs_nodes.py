"""Hostile inputs through the nodes called directly: each is refused up front with one line naming the input
and the fix (or converted, where that is safe); an interrupted Sampler leaves a playable partial video in the
output folder and resumes; out of memory names the fixes."""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile
import torch

from tests import hostile as H

from .conftest import PACK_MODULE

DIT = "wan2.1_i2v_480p_14B_fp16.safetensors"
ADAPTER = "wan2.1_infiniteTalk_single_fp16.safetensors"


def _mod(name):
    return importlib.import_module(f"{PACK_MODULE}.{name}")


def one_line(exc) -> str:
    text = str(exc.value)
    assert "\n" not in text, text
    return text


def audio(seconds=0.5, sr=16000, channels=1, level=0.3) -> dict:
    wave = torch.from_numpy(H.tone(seconds, sr, channels, level).T.copy())
    return {"waveform": wave[None], "sample_rate": sr}


def image(h=48, w=64, channels=3) -> torch.Tensor:
    rgb = torch.from_numpy(H.face(h, w)).float() / 255
    if channels == 1:
        rgb = rgb[..., :1]
    elif channels == 4:
        rgb = torch.cat([rgb, torch.ones(h, w, 1)], -1)
    return rgb[None]


def embeds(speakers=1, frames=12):
    pipeline = _mod("infinitetalk.pipeline")
    return pipeline.AudioEmbedding(torch.rand(speakers, frames, 2, 32), np.zeros(frames * 640, np.float32))


OPTION_KEYS = ("frame_num", "motion_frame", "speaker_boxes", "max_frames", "resume", "face_only")


def _with_options(args: dict) -> dict:
    """The sampler's expert knobs move to an InfiniteTalk Sampler Options value."""
    options = {k: args.pop(k) for k in OPTION_KEYS if k in args}
    args["options"] = _mod("nodes.sampler").SamplerOptions(**options)
    return args


def sampler_checks(nodes, **kw):
    """Run the Sampler up to its input checks (no model is needed before they pass)."""
    args = dict(
        model=None, vae=None, clip_vision=None, text_embeds=None, audio_embeds=embeds(), mode="streaming",
        size="custom", steps=1, seed=1, text_scale=1.0, audio_scale=2.0, width=32, height=32,
        frame_num=5, motion_frame=1,
    )  # fmt: skip
    args.update(kw)
    node = nodes["InfiniteTalkSampler"].PREPARE_CLASS_CLONE({})
    return node.execute(**_with_options(args))


# ------------------------------------------------------------------------------------------- sampler
class FakeVideo:
    def __init__(self, path):
        self.path = path

    def get_stream_source(self):
        return str(self.path)


SAMPLER = [
    ("image-and-video", lambda d: dict(image=image(), video=FakeVideo(H.video(d))), ["got both 'image' and 'video'"]),
    ("image-wrong-shape", lambda d: dict(image=image()[0]), ["image has shape (48, 64, 3)", "IMAGE batch"]),
    ("image-5-channels", lambda d: dict(image=torch.rand(1, 48, 64, 5)), ["image has shape (48, 64, 5)"]),
    ("image-nan", lambda d: dict(image=torch.full((1, 48, 64, 3), float("nan"))), ["image holds NaN"]),
    ("image-too-small", lambda d: dict(image=image(8, 8)), ["image is 8x8 pixels: too small"]),
    ("image-too-large", lambda d: dict(image=torch.zeros(1, 16, 16400, 3)), ["larger than 16384 on a side"]),
    ("video-corrupt", lambda d: dict(video=FakeVideo(H.garbage(d, "c.mp4"))), ["c.mp4' is not a readable video"]),
    ("video-no-frames", lambda d: dict(video=FakeVideo(H.video(d, "a.mp4", frames=0, audio_s=1))), ["has no video stream"]),
    ("masks-size", lambda d: dict(image=image(), audio_embeds=embeds(2), speaker_masks=torch.ones(2, 32, 32)),
     ["speaker_masks are 32x32 but the reference is 64x48"]),
    ("masks-one-speaker", lambda d: dict(image=image(), speaker_masks=torch.ones(2, 48, 64)),
     ["speaker_masks place two people but the audio has one speaker", "audio_2"]),
    ("masks-three", lambda d: dict(image=image(), audio_embeds=embeds(2), speaker_masks=torch.ones(3, 48, 64)),
     ["expected a batch of 2 masks"]),
    ("mask-empty", lambda d: dict(image=image(), audio_embeds=embeds(2),
                                  speaker_masks=torch.stack([torch.ones(48, 64), torch.zeros(48, 64)])),
     ["mask 2 is empty"]),
    ("boxes-outside", lambda d: dict(image=image(), audio_embeds=embeds(2), speaker_boxes="0,0,32,48; 32,0,65,48"),
     ["box 2 '32,0,65,48' lies outside the 64x48 reference image"]),
    ("boxes-one-speaker", lambda d: dict(image=image(), speaker_boxes="0,0,32,48; 32,0,64,48"),
     ["speaker_boxes place two people but the audio has one speaker"]),
    ("size-string", lambda d: dict(image=image(), size="enormous"), ["size 'enormous' is unknown"]),
]  # fmt: skip


@pytest.mark.parametrize(("make", "needles"), [c[1:] for c in SAMPLER], ids=[c[0] for c in SAMPLER])
def test_sampler_refuses(nodes, tmp_path, make, needles):
    with pytest.raises(ValueError) as exc:
        sampler_checks(nodes, **make(tmp_path))
    for needle in needles:
        assert needle in one_line(exc)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"size": "enormous"}, "size 'enormous' is unknown"),
        ({"frame_num": 33, "motion_frame": 37}, "motion_frame 37 must be smaller than frame_num 33"),
        ({"speaker_boxes": "0,0,inf,4; 1,1,2,2"}, "not a finite number"),
    ],
)
def test_sampler_validate_inputs(nodes, kwargs, needle):
    node = "InfiniteTalkSampler" if "size" in kwargs else "InfiniteTalkSamplerOptions"
    result = nodes[node].validate_inputs(**kwargs)
    assert isinstance(result, str) and needle in result


# ------------------------------------------------------------------------------------------- audio
AUDIO_EMBED = [
    ("silent", dict(audio_1=audio(level=0.0)), ["audio_1 is silent (digital silence)"]),
    ("both-silent", dict(audio_1=audio(level=0.0), audio_2=audio(level=1e-6)), ["audio_1 and audio_2 are silent"]),
    ("nan", dict(audio_1={"waveform": torch.full((1, 1, 800), float("nan")), "sample_rate": 16000}),
     ["audio_1 holds NaN or infinite samples"]),
    ("rate-100", dict(audio_1={"waveform": torch.rand(1, 1, 800), "sample_rate": 100}),
     ["audio_1 sample rate 100 Hz is outside 4000..768000 Hz"]),
    ("10-ms", dict(audio_1=audio(0.01)), ["audio_1 lasts 10.0 ms: shorter than one video frame"]),
    ("channels-last", dict(audio_1={"waveform": torch.rand(1, 8000, 2), "sample_rate": 16000}),
     ["audio_1 waveform has shape (8000, 2)", "channels first"]),
    ("not-audio", dict(audio_1={"samples": torch.rand(1)}), ["audio_1 input must be a ComfyUI AUDIO"]),
]  # fmt: skip


@pytest.mark.parametrize(("kwargs", "needles"), [c[1:] for c in AUDIO_EMBED], ids=[c[0] for c in AUDIO_EMBED])
def test_audio_embed_refuses(nodes, kwargs, needles):
    with pytest.raises(ValueError) as exc:
        nodes["InfiniteTalkAudioEmbed"].execute(None, normalize_loudness=True, mode="para", **kwargs)
    for needle in needles:
        assert needle in one_line(exc)


@pytest.fixture(scope="module")
def audio_encoder(nodes, tiny_models):
    return (
        nodes["InfiniteTalkAudioEncoderLoader"]
        .execute("wav2vec2-chinese-base_fp16.safetensors", "fp32")
        .args[0]
    )


@pytest.mark.parametrize(("sr", "channels"), [(8000, 1), (96000, 6), (44100, 2)])
def test_audio_embed_takes_any_rate_and_channels(nodes, audio_encoder, sr, channels):
    given = audio(0.6, sr, channels)
    emb, sound = nodes["InfiniteTalkAudioEmbed"].execute(audio_encoder, given, True, "para").args
    assert emb.num_frames == 15 and emb.features.shape[0] == 1  # 0.6 s at 25 fps
    assert sound["sample_rate"] == sr and sound["waveform"].shape == given["waveform"].shape  # kept as given


@pytest.fixture()
def input_dir(comfy):
    return Path(comfy.get_input_directory())


LOAD_AUDIO = [
    ("garbage", lambda d: H.garbage(d, "static.wav"), ["static.wav' is not a readable audio or video file"]),
    ("mute-video", lambda d: H.video(d, "mute.mp4", frames=5), ["mute.mp4' has no audio stream"]),
    ("nine-channels", lambda d: H.wav(d, "nine.wav", 0.2, 16000, 9), ["has 9 channels", "downmix it to stereo"]),
    ("rate-2k", lambda d: H.wav(d, "low.wav", 0.5, 2000), ["sample rate 2000 Hz is outside"]),
]  # fmt: skip


@pytest.mark.parametrize(("make", "needles"), [c[1:] for c in LOAD_AUDIO], ids=[c[0] for c in LOAD_AUDIO])
def test_load_audio_refuses(nodes, input_dir, make, needles):
    path = make(input_dir)
    with pytest.raises(ValueError) as exc:
        nodes["InfiniteTalkLoadAudio"].execute(path.name, 0.0, 0.0)
    for needle in needles:
        assert needle in one_line(exc)


def test_load_audio_streams_a_slice_of_a_long_file(nodes, input_dir):
    sr = 8000
    soundfile.write(input_dir / "long.flac", H.tone(600.0, sr, 2), sr)  # 10 minutes, 2 channels
    out = nodes["InfiniteTalkLoadAudio"].execute("long.flac", 300.0, 2.0).args[0]
    expected = soundfile.read(input_dir / "long.flac", start=300 * sr, frames=2 * sr, dtype="float32")[0].T
    assert out["waveform"].shape == (1, 2, 2 * sr)
    np.testing.assert_array_equal(out["waveform"][0].numpy(), expected)


# ------------------------------------------------------------------------------------------- TTS
TTS = [
    ("InfiniteTalkTTS", dict(text="Hi.", voice="zz_nobody"), "voice 'zz_nobody' is not a Kokoro voice"),
    ("InfiniteTalkTTS", dict(text="Hi.", voice="af_heart", language="xx: Klingon"), "language 'xx: Klingon' is unknown"),
    ("InfiniteTalkTTS", dict(text="  \n ", voice="af_heart"), "text is empty"),
    ("InfiniteTalkTTS", dict(text="[S1] ... !!", voice="af_heart"), "holds only markup and symbols"),
    ("InfiniteTalkDialogueTTS", dict(text="(s1) (s2)", voice_1="af_heart", voice_2="am_adam"), "holds only markup"),
    ("InfiniteTalkDialogueTTS", dict(text="(s1) Hi. (s3) Yo.", voice_1="af_heart", voice_2="am_adam"),
     "names speaker 3, which has no voice"),
    ("InfiniteTalkDialogueTTS", dict(text="(s1) Hi.", voice_1="af_heart", voice_2="nobody"), "voice_2 'nobody'"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("node", "kwargs", "needle"), TTS, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(TTS)]
)
def test_tts_validate_inputs(nodes, tiny_models, node, kwargs, needle):
    result = nodes[node].validate_inputs(**kwargs)
    assert isinstance(result, str) and "\n" not in result and needle in result, result


# ------------------------------------------------------------------------------------------- outputs
PREFIXES = [
    ("../escape", "climbs out of the output folder with '..'"),
    ("InfiniteTalk/../../x", "climbs out of the output folder"),
    ("/tmp/evil", "is an absolute path"),
    ("C:\\Windows\\evil", "is an absolute path"),
    ("~/evil", "is an absolute path"),
    ("", "filename_prefix is empty"),
]


@pytest.mark.parametrize(("prefix", "needle"), PREFIXES)
def test_filename_prefix_cannot_escape(nodes, prefix, needle):
    result = nodes["InfiniteTalkVideoCombine"].validate_inputs(filename_prefix=prefix)
    assert isinstance(result, str) and needle in result
    with pytest.raises(ValueError, match="filename_prefix"):  # also when the prefix comes from a link
        nodes["InfiniteTalkVideoCombine"].execute("none", prefix, images=torch.zeros(2, 16, 16, 3))


def test_filename_prefix_cannot_escape_through_a_link(nodes, comfy, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    link = Path(comfy.get_output_directory()) / "shortcut"
    link.symlink_to(outside, target_is_directory=True)
    try:
        result = nodes["InfiniteTalkVideoCombine"].validate_inputs(filename_prefix="shortcut/video")
        assert isinstance(result, str) and "leads outside the output folder through a link" in result
        assert nodes["InfiniteTalkVideoCombine"].validate_inputs(filename_prefix="InfiniteTalk/v") is True
    finally:
        link.unlink()
    assert not any(outside.iterdir())


# ------------------------------------------------------------------------------------------- weights
def test_loaders_refuse_wrong_and_truncated_files(nodes, comfy, tiny_models, tmp_path):
    hostile = tmp_path / "hostile"
    hostile.mkdir()
    os.symlink(tiny_models / "models/vae/wan_2.1_vae.safetensors", hostile / "vae_as_dit.safetensors")
    data = (tiny_models / "models/vae/wan_2.1_vae.safetensors").read_bytes()
    (hostile / "cut_vae.safetensors").write_bytes(data[: len(data) // 2])
    os.symlink(
        tiny_models / "models/clip_vision/clip_vision_h.safetensors", hostile / "clip_as_vae.safetensors"
    )
    for folder in ("diffusion_models", "vae"):
        comfy.add_model_folder_path(folder, str(hostile))
    try:
        with pytest.raises(ValueError) as exc:
            nodes["InfiniteTalkModelLoader"].execute("vae_as_dit.safetensors", ADAPTER, "fp32", "none")
        assert "not a Wan2.1 DiT checkpoint" in one_line(exc)
        with pytest.raises(ValueError) as exc:
            nodes["InfiniteTalkVAELoader"].execute("cut_vae.safetensors", "fp32")
        assert "file truncated" in one_line(exc) and "download the file again" in one_line(exc)
        with pytest.raises(ValueError) as exc:
            nodes["InfiniteTalkVAELoader"].execute("clip_as_vae.safetensors", "fp32")
        assert "is not a Wan VAE" in one_line(exc)
    finally:
        for folder in ("diffusion_models", "vae"):
            comfy.folder_names_and_paths[folder][0].remove(str(hostile))


# ------------------------------------------------------------------------------------------- runs
@pytest.fixture(scope="module")
def models(nodes, tiny_models):
    load = lambda node, *a: nodes[node].execute(*a).args[0]  # noqa: E731
    text = load("InfiniteTalkTextEncoderLoader", "umt5_xxl_fp16.safetensors", "fp32")
    return {
        "model": load("InfiniteTalkModelLoader", DIT, ADAPTER, "fp32", "none"),
        "vae": load("InfiniteTalkVAELoader", "wan_2.1_vae.safetensors", "fp32"),
        "clip_vision": load("InfiniteTalkClipVisionLoader", "clip_vision_h.safetensors", "fp32"),
        "text_embeds": nodes["InfiniteTalkTextEncode"].execute(text, "a face", "").args[0],
        "audio_encoder": load(
            "InfiniteTalkAudioEncoderLoader", "wav2vec2-chinese-base_fp16.safetensors", "fp32"
        ),
    }


def _run(nodes, models, node_id, **kw):
    emb = nodes["InfiniteTalkAudioEmbed"].execute(models["audio_encoder"], audio(0.5), True, "para").args[0]
    prompt = {node_id: {"class_type": "InfiniteTalkSampler", "inputs": {}},
              "99": {"class_type": "InfiniteTalkVideoCombine",
                     "inputs": {"frames": [node_id, 0], "filename_prefix": "hardening/run"}}}  # fmt: skip
    node = nodes["InfiniteTalkSampler"].PREPARE_CLASS_CLONE({"UNIQUE_ID": node_id, "PROMPT": prompt})
    args = {k: models[k] for k in ("model", "vae", "clip_vision", "text_embeds")}
    args.update(audio_embeds=emb, image=image(), mode="streaming", size="custom", width=32, height=32, steps=1,
                seed=3, text_scale=1.0, audio_scale=2.0, frame_num=5, motion_frame=1)  # fmt: skip
    args.update(kw)
    return node.execute(**_with_options(args)).args[0]


def _decoded(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def test_interrupt_leaves_a_partial_video_and_resumes(nodes, models, comfy, monkeypatch):
    import comfy.model_management as mm

    bridge = _mod("nodes._bridge")
    calls = {"n": 0}

    def cancel_in_window_3():
        calls["n"] += 1
        if calls["n"] == 3:  # 1 step per window: the check before window 3's step
            raise mm.InterruptProcessingException()
        return False

    monkeypatch.setattr(bridge, "should_cancel", cancel_in_window_3)
    with pytest.raises(mm.InterruptProcessingException):
        _run(nodes, models, "7")
    out = Path(comfy.get_output_directory()) / "hardening"
    partial = next(out.glob("run_*_partial.mp4"))
    assert len(_decoded(partial)) == 9  # windows 1 and 2: 5 + 4 frames, playable
    runs_root = _mod("nodes._runs").runs_root()
    (run,) = [p for p in runs_root.iterdir() if p.name.startswith("7_")]
    assert json.loads((run / "manifest.json").read_text())["complete"] is False

    monkeypatch.undo()
    resumed = _run(nodes, models, "7")  # queue again: resumes after window 2
    assert resumed.num_frames == 12 and not partial.exists()
    fresh = _run(nodes, models, "8")  # the same run, uninterrupted, in its own folder
    hashes = [[s["sha256"] for s in f.store.segments] for f in (resumed, fresh)]
    assert hashes[0] == hashes[1] and len(hashes[0]) == 3  # the raw frames of every window, bit for bit
    run_dir = resumed.directory
    del resumed
    import gc

    gc.collect()
    assert not run_dir.exists()  # a complete run is removed once ComfyUI no longer holds its output


def test_out_of_memory_names_the_fixes(nodes, models, monkeypatch):
    dit = models["model"].patcher.model

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(dit, "forward", oom)
    with pytest.raises(torch.OutOfMemoryError) as exc:  # still an OOM: ComfyUI frees its models
        _run(nodes, models, "9", seed=4)
    message = one_line(exc)
    # the stage (size and window) and the original error, then the fixes
    assert "out of memory while sampling at 32x32 with 5-frame windows (CUDA out of memory. Tried" in message
    for fix in ("fp8", "block_swap", "smaller size"):
        assert fix in message
