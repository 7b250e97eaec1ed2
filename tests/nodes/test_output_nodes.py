"""The nodes keep the user's soundtrack and show each finished window (issue 15), called in-process on the
tiny checkpoints: Audio Embed passes the original AUDIO through, the Sampler's frames carry it to Video
Combine (44.1 kHz stereo in, 44.1 kHz stereo out), every window is announced to the editor as a playable
clip while the sampler runs, and Video Combine writes each format."""

from __future__ import annotations

import importlib
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from .conftest import PACK_MODULE

SR = 44100


def _music(seconds: float) -> torch.Tensor:
    t = np.arange(round(seconds * SR)) / SR
    left = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 12000 * t)
    right = 0.3 * np.sin(2 * np.pi * 660 * t + 1)
    return torch.from_numpy(np.stack([left, right]).astype(np.float32))[None]  # (1, 2, N)


class _Server:
    """Records what the sampler sends to the editor (stands in for ComfyUI's PromptServer)."""

    client_id = "test-client"

    def __init__(self):
        self.messages, self.texts = [], []

    def send_sync(self, event, data, sid=None):
        self.messages.append((event, data, sid))

    def send_progress_text(self, text, node_id, sid=None):
        self.texts.append((node_id, text))


@pytest.fixture(scope="module")
def chain(nodes, tiny_models):
    """Loaded tiny models and the text embeddings, shared by the tests of this file."""
    return {
        "model": nodes["InfiniteTalkModelLoader"]
        .execute(
            "wan2.1_i2v_480p_14B_fp16.safetensors",
            "wan2.1_infiniteTalk_single_fp16.safetensors",
            "fp32",
            "none",
        )
        .args[0],
        "vae": nodes["InfiniteTalkVAELoader"].execute("wan_2.1_vae.safetensors", "auto").args[0],
        "clip_vision": nodes["InfiniteTalkClipVisionLoader"]
        .execute("clip_vision_h.safetensors", "auto")
        .args[0],
        "audio_encoder": nodes["InfiniteTalkAudioEncoderLoader"]
        .execute("wav2vec2-chinese-base_fp16.safetensors", "auto")
        .args[0],
        "text_embeds": nodes["InfiniteTalkTextEncode"]
        .execute(
            nodes["InfiniteTalkTextEncoderLoader"].execute("umt5_xxl_fp16.safetensors", "auto").args[0],
            "a face",
            "",
        )
        .args[0],
    }


def test_audio_embed_passes_the_original_audio_through(nodes, chain):
    audio = {"waveform": _music(0.5), "sample_rate": SR}
    embed = nodes["InfiniteTalkAudioEmbed"]
    embeds, out = embed.execute(chain["audio_encoder"], audio, True, "para").args
    assert out is audio  # untouched: same rate, channels, level
    assert embeds.soundtrack_rate == SR and embeds.soundtrack.shape == (2, round(0.5 * SR))
    mono = {"waveform": _music(0.3)[:, :1] * 0.5, "sample_rate": 22050}
    embeds, out = embed.execute(chain["audio_encoder"], audio, True, "add", audio_2=mono).args
    assert out["sample_rate"] == SR and out["waveform"].shape[:2] == (1, 2)  # the wider layout, higher rate
    np.testing.assert_array_equal(out["waveform"][0, :, : audio["waveform"].shape[-1]], audio["waveform"][0])
    assert np.abs(out["waveform"][0].numpy()).max() > 0  # speaker 2 follows, at its own level


def _watched_sampler(nodes, chain, monkeypatch, node_id: str, audio: dict):
    """(Sampler with its hidden inputs, the recording server, the audio embeds of ``audio``)."""
    bridge = importlib.import_module(f"{PACK_MODULE}.nodes._bridge")
    server = _Server()
    monkeypatch.setattr(bridge, "_server", lambda: server)
    embeds, _ = nodes["InfiniteTalkAudioEmbed"].execute(chain["audio_encoder"], audio, True, "para").args
    from comfy_api.latest import io  # importable once the fixtures put ComfyUI on the path

    hidden = {io.Hidden.unique_id: node_id, io.Hidden.prompt: {}}
    return nodes["InfiniteTalkSampler"].PREPARE_CLASS_CLONE(hidden), server, embeds


def test_sampler_frames_carry_the_soundtrack_and_each_window_is_previewed(nodes, chain, comfy, monkeypatch):
    bridge = importlib.import_module(f"{PACK_MODULE}.nodes._bridge")
    audio = {"waveform": _music(1.0), "sample_rate": SR}
    sampler, server, embeds = _watched_sampler(nodes, chain, monkeypatch, "9", audio)
    image = torch.rand(1, 48, 48, 3, generator=torch.Generator().manual_seed(0))
    options = importlib.import_module(f"{PACK_MODULE}.nodes.sampler").SamplerOptions(
        frame_num=17, motion_frame=5, resume=False
    )
    frames, _ = sampler.execute(
        chain["model"], chain["vae"], chain["clip_vision"], chain["text_embeds"], embeds, "streaming",
        "custom", 1, 3, 1.0, 4.0, image=image, width=32, height=32, options=options,
    ).args  # fmt: skip
    assert frames.num_frames == 25
    wave, rate = frames.soundtrack
    assert rate == SR and wave.shape == (2, SR) and np.array_equal(wave, audio["waveform"][0].numpy())
    # one "executed" UI message per window (2 windows), each a playable clip in ComfyUI's temp folder
    executed = [data for event, data, _ in server.messages if event == "executed"]
    assert [m["node"] for m in executed] == ["9", "9"]
    temp = Path(comfy.get_temp_directory())
    for k, message in enumerate(executed):
        item = message["output"]["images"][0]
        assert message["output"]["animated"] == [True] and item["type"] == "temp"
        assert item["filename"] == f"window_{k:05d}.mp4"
        clip = temp / item["subfolder"] / item["filename"]
        with av.open(str(clip)) as c:
            assert c.streams.audio[0].sample_rate == SR and c.streams.audio[0].channels == 2
            assert sum(1 for _ in c.decode(video=0)) == (17, 8)[k]
    assert [t for _, t in server.texts] == ["window 1/2 ready (0.7 s)", "window 2/2 ready (1.0 s)"]
    # in a graph, the clips go to the Video Combine nodes fed by the frames (their preview is idle)
    graph = {
        "9": {"class_type": "InfiniteTalkSampler", "inputs": {}},
        "4": {"class_type": "InfiniteTalkVideoCombine", "inputs": {"frames": ["9", 0]}},
        "5": {"class_type": "InfiniteTalkVideoCombine", "inputs": {"images": ["9", 1]}},
    }
    assert bridge.preview_nodes(graph, "9") == ["4"] and bridge.preview_nodes({}, "9") == ["9"]

    combine = nodes["InfiniteTalkVideoCombine"]
    out_dir = Path(comfy.get_output_directory())
    result = combine.execute("none", "t/sound", frames=frames)
    saved = result.ui.as_dict()["images"][0]
    with av.open(str(out_dir / saved["subfolder"] / saved["filename"])) as c:
        a = c.streams.audio[0]
        assert (a.sample_rate, a.channels, a.codec_context.name) == (SR, 2, "aac")
        assert abs(float(a.duration * a.time_base) - 1.0) < 1 / 25
    # another format: the file in the output folder, an H.264 copy in temp for the browser
    result = combine.execute("none", "t/master", frames=frames, format="prores-mov", loudness="-23 LUFS")
    preview = result.ui.as_dict()["images"][0]
    assert preview["type"] == "temp" and preview["filename"].endswith("_preview.mp4")
    master = Path(result.args[0].get_stream_source())
    assert master.suffix == ".mov" and master.parent.is_relative_to(out_dir)
    with av.open(str(master)) as c:
        assert c.streams.video[0].codec_context.name == "prores"
        assert c.streams.audio[0].codec_context.name == "pcm_s24le" and c.streams.audio[0].sample_rate == SR
    from infinitetalk.media import load_audio, measure_loudness

    got, rate = load_audio(master)
    assert abs(measure_loudness(got, rate) - -23) < 0.5
    result = combine.execute("none", "t/sequence", frames=frames, format="png-wav")
    folder = out_dir / "t"
    sequence = [p for p in folder.iterdir() if p.name.startswith("sequence_") and p.is_dir()]
    assert len(sequence) == 1 and len(list(sequence[0].glob("frame_*.png"))) == 25
    assert (sequence[0] / "soundtrack.wav").is_file()


def _decoded(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def test_lossless_storage_gives_masters_with_the_exact_generated_frames(nodes, chain, comfy, monkeypatch):
    """storage h264-lossless on the options node: FFV1 and PNG masters hold bit for bit the frames the
    pipeline gave its sink (recorded there), the window clips stay browser-playable H.264 4:2:0, and a run
    with the default H.264 storage (same inputs) is another run in another folder, whose masters are not
    exact."""
    sinks = importlib.import_module(f"{PACK_MODULE}.infinitetalk.sinks")
    sampler_mod = importlib.import_module(f"{PACK_MODULE}.nodes.sampler")
    received: list[np.ndarray] = []
    write = sinks.SegmentStore.write

    def recording_write(self, frames):
        received.append(np.array(frames, copy=True))
        write(self, frames)

    monkeypatch.setattr(sinks.SegmentStore, "write", recording_write)
    audio = {"waveform": _music(1.0), "sample_rate": SR}
    sampler, server, embeds = _watched_sampler(nodes, chain, monkeypatch, "12", audio)
    image = torch.rand(1, 48, 48, 3, generator=torch.Generator().manual_seed(1))
    runs = {}
    for storage in ("h264", "h264-lossless"):
        values = {**sampler_mod.asdict(sampler_mod.DEFAULTS), "frame_num": 17, "motion_frame": 5}
        options = nodes["InfiniteTalkSamplerOptions"].execute(**{**values, "storage": storage}).args[0]
        received.clear()
        frames, _ = sampler.execute(
            chain["model"], chain["vae"], chain["clip_vision"], chain["text_embeds"], embeds, "streaming",
            "custom", 1, 3, 1.0, 4.0, image=image, width=32, height=32, options=options,
        ).args  # fmt: skip
        runs[storage] = (frames, np.concatenate(received))
    (h264, generated_h264), (lossless, generated) = runs["h264"], runs["h264-lossless"]
    assert generated.shape == (25, 32, 32, 3) and np.array_equal(generated, generated_h264)  # same seed
    assert h264.directory != lossless.directory  # the storage is part of the run's fingerprint
    assert [_codec(p) for p in lossless.store.segment_paths] == [("h264", "gbrp")] * 2
    clips = [m["output"]["images"][0] for e, m, _ in server.messages if e == "executed"][-2:]
    temp = Path(comfy.get_temp_directory())
    assert [_codec(temp / c["subfolder"] / c["filename"]) for c in clips] == [("h264", "yuv420p")] * 2

    combine = nodes["InfiniteTalkVideoCombine"]
    out_dir = Path(comfy.get_output_directory())
    master = Path(
        combine.execute("none", "exact/ffv1", frames=lossless, format="ffv1-mkv").args[0].get_stream_source()
    )
    assert master.suffix == ".mkv" and np.array_equal(_decoded(master), generated)
    combine.execute("none", "exact/png", frames=lossless, format="png-wav")
    (folder,) = [p for p in (out_dir / "exact").iterdir() if p.is_dir() and p.name.startswith("png_")]
    assert np.array_equal(_decoded(folder / "frame_%06d.png"), generated)
    result = combine.execute(
        "none", "exact/delivery", frames=lossless
    )  # h264-mp4: encoded from the exact frames
    delivery = Path(result.args[0].get_stream_source())
    assert _codec(delivery) == ("h264", "yuv420p") and len(_decoded(delivery)) == 25
    # the default storage: small H.264 4:2:0 segments, so a master made from them is not exact (the tiny
    # random model draws noise, which 4:2:0 CRF 18 keeps badly: mean error measured 14 levels)
    approx = Path(
        combine.execute("none", "exact/approx", frames=h264, format="ffv1-mkv").args[0].get_stream_source()
    )
    error = np.abs(_decoded(approx).astype(int) - generated.astype(int))
    assert error.mean() > 1


def _codec(path: Path) -> tuple[str, str]:
    with av.open(str(path)) as c:
        ctx = c.streams.video[0].codec_context
        return ctx.name, ctx.pix_fmt
