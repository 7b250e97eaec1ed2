"""The pack on the ComfyUI users run today, checked on the 0.3.75 that installs here.

Newer APIs are exercised through stand-ins written from a reading of the newest ComfyUI source (see
docs/COMPAT.md for the version and files): the edit-aware VIDEO (trim, crop, ``save_to``), ``advanced=``,
``DynamicCombo``, and core's InfiniteTalk sockets (``MODEL_PATCH``, ``AUDIO_ENCODER``,
``AUDIO_ENCODER_OUTPUT``). Each stand-in implements only what the newest source documents; the pack's
code under test is the real one.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from .conftest import PACK_MODULE

DIT = "wan2.1_i2v_480p_14B_fp16.safetensors"
SINGLE = "wan2.1_infiniteTalk_single_fp16.safetensors"
MULTI = "wan2.1_infiniteTalk_multi_fp16.safetensors"
WAV2VEC = "wav2vec2-chinese-base_fp16.safetensors"
COLOURS = [(220, 30, 30), (30, 200, 40), (30, 40, 220), (240, 240, 240)]  # one per second of the source
# yuv420p rounds a flat colour by a few levels per encode (up to two here); the colours differ by > 150
TOL = 10


def _mod(name):
    return importlib.import_module(f"{PACK_MODULE}.nodes.{name}")


def _lib(name):
    return importlib.import_module(f"{PACK_MODULE}.infinitetalk.{name}")


# ------------------------------------------------------------------------------------ advanced / DynamicCombo
def test_advanced_uses_the_native_flag_when_the_input_has_one(pack):
    from comfy_api.latest import io

    widgets = _mod("_widgets")
    old = widgets.advanced(io.Int.Input("steps", default=1))  # 0.3.75: no advanced= yet
    assert old.extra_dict["advanced"] is True and old.as_dict()["advanced"] is True

    class NewerInt(io.Int.Input):  # newer ComfyUI: Input(..., advanced=None) stores and serialises it
        def __init__(self, *args, advanced=None, **kwargs):
            super().__init__(*args, **kwargs)
            self.advanced = advanced

        def as_dict(self):
            return super().as_dict() | ({"advanced": self.advanced} if self.advanced is not None else {})

    new = widgets.advanced(NewerInt("steps", default=1))
    assert new.advanced is True and "advanced" not in new.extra_dict
    assert new.as_dict()["advanced"] is True


class _DynamicComboStandIn:
    """``io.DynamicCombo`` as in the newest ComfyUI: options (key + inputs) serialised under one input of
    type ``COMFY_DYNAMICCOMBO_V3``; revealed inputs are submitted as ``<combo>.<input>``."""

    io_type = "COMFY_DYNAMICCOMBO_V3"

    class Option:
        def __init__(self, key, inputs):
            self.key, self.inputs = key, inputs

    def __init__(self, io):
        outer = self

        class Input(io.Input):
            def __init__(self, id, options, display_name=None, optional=False, tooltip=None, lazy=None):
                super().__init__(id, display_name, optional, tooltip, lazy)
                self.options = options

            def get_io_type(self):
                return outer.io_type

            def as_dict(self):
                return super().as_dict() | {
                    "options": [{"key": o.key, "inputs": _v1_inputs(io, o.inputs)} for o in self.options]
                }

        self.Input = Input


def _v1_inputs(io, inputs) -> dict:
    """``{"required": {...}, "optional": {...}}`` of some inputs, as /object_info lists them."""
    out = {"required": {}}
    for inp in inputs:
        io.add_to_dict_v1(inp, out)
    return out


class _NewerIO:
    """The 0.3.75 ``io`` namespace plus a DynamicCombo."""

    def __init__(self, io):
        self._io = io
        self.DynamicCombo = _DynamicComboStandIn(io)

    def __getattr__(self, name):
        return getattr(self._io, name)


def _expand(info: dict, live: dict) -> dict:
    """The execute() kwargs the newest ComfyUI builds from a prompt's inputs (DynamicCombo part only):
    a combo and the inputs of its selected option arrive as one dict ``{combo: option, input: value}``."""
    kwargs = {}
    for category in ("required", "optional"):
        for name, (kind, opts) in info.get(category, {}).items():
            if kind == "COMFY_DYNAMICCOMBO_V3":
                option = next(o for o in opts["options"] if o["key"] == live[name])
                revealed = {**option["inputs"].get("required", {}), **option["inputs"].get("optional", {})}
                nested = {name: live[name]}
                for child in revealed:
                    if f"{name}.{child}" not in live and child in option["inputs"].get("required", {}):
                        raise KeyError(f"Required input is missing: {name}.{child}")
                    nested[child] = live.get(f"{name}.{child}")
                kwargs[name] = nested
            elif name in live:
                kwargs[name] = live[name]
    return kwargs


def test_size_is_a_dynamic_combo_where_comfyui_has_one(nodes, monkeypatch):
    from comfy_api.latest import io

    widgets, sampler = _mod("_widgets"), _mod("sampler")
    flat = nodes["InfiniteTalkSampler"].INPUT_TYPES()["required"]
    assert flat["size"][0] == "COMBO" and "width" in flat  # 0.3.75: flat, width/height advanced
    monkeypatch.setattr(widgets, "io", _NewerIO(io))
    info = nodes["InfiniteTalkSampler"].INPUT_TYPES()
    req = info["required"]
    assert "width" not in req and "height" not in req
    assert req["size"][0] == "COMFY_DYNAMICCOMBO_V3" and list(req)[-1] == "size"
    options = {o["key"]: o["inputs"] for o in req["size"][1]["options"]}
    assert list(options) == sampler.SIZES
    assert options["infinitetalk-480"] == {"required": {}} and set(options["custom"]["required"]) == {
        "width",
        "height",
    }
    # a prompt made by a newer editor, and a flat prompt migrated by the server, reach execute() alike
    native = {"size": "custom", "size.width": 64, "size.height": 96, "steps": 2}
    migrated = {"size": "custom", "width": 64, "height": 96, "steps": 2}
    _mod("_migrate").migrate_prompt(
        {"1": {"class_type": "InfiniteTalkSampler", "inputs": migrated}}, dynamic=True
    )
    assert _expand(info, migrated)["size"] == _expand(info, native)["size"]
    size = _expand(info, native)["size"]
    assert size == {"size": "custom", "width": 64, "height": 96}
    name, custom = widgets.choice(size, "size")
    config = sampler._config("streaming", name, custom, 2, 1, 5.0, 4.0, sampler.DEFAULTS)
    assert config.size == "64x96"
    assert widgets.choice("infinitetalk-720", "size", {"width": 1, "height": 2}) == (
        "infinitetalk-720",
        {"width": 1, "height": 2},
    )


def test_captions_reveal_the_srt_input_where_comfyui_has_dynamic_combo(nodes, comfy, monkeypatch):
    import av
    from comfy_api.latest import io

    node = nodes["InfiniteTalkVideoCombine"]
    flat = node.INPUT_TYPES()
    assert "srt" in flat["optional"] and flat["required"]["captions"][0] == "COMBO"  # 0.3.75: as before
    monkeypatch.setattr(_mod("_widgets"), "io", _NewerIO(io))
    info = node.INPUT_TYPES()
    assert "srt" not in info.get("optional", {})
    options = {o["key"]: o["inputs"] for o in info["required"]["captions"][1]["options"]}
    assert options["none"] == {"required": {}}
    assert set(options["burn-in"]["optional"]) == set(options["subtitle track"]["optional"]) == {"srt"}
    prompt = {
        "1": {"class_type": "InfiniteTalkVideoCombine", "inputs": {"captions": "subtitle track", "srt": "x"}}
    }
    _mod("_migrate").migrate_prompt(prompt, dynamic=True)  # a flat prompt on a newer ComfyUI
    got = prompt["1"]["inputs"]
    assert (got["captions"], got["captions.srt"], "srt" in got) == ("subtitle track", "x", False)
    srt = "1\n00:00:00,000 --> 00:00:01,000\nHELLO\n"
    kwargs = _expand(info, {"captions": "subtitle track", "captions.srt": srt, "filename_prefix": "t/dyn"})
    assert kwargs["captions"] == {"captions": "subtitle track", "srt": srt}
    out = node.execute(images=torch.zeros(10, 32, 32, 3), fps=25.0, crf=10, **kwargs)
    saved = out.ui.as_dict()["images"][0]
    with av.open(f"{comfy.get_output_directory()}/{saved['subfolder']}/{saved['filename']}") as container:
        assert len(container.streams.subtitles) == 1


# ------------------------------------------------------------------------------------------- migration
def test_legacy_sampler_prompt_is_migrated(pack):
    import json

    migrate = _mod("_migrate")
    legacy = json.loads(
        (Path(__file__).parents[1] / "legacy" / "infinitetalk_image_to_video_api.json").read_text()
    )
    sampler_id = next(k for k, v in legacy.items() if v["class_type"] == "InfiniteTalkSampler")
    legacy[sampler_id]["inputs"].update(frame_num=33, scheduler="unipc", speaker_boxes="0,0,1,1; 1,1,2,2")
    before = {k: v for k, v in legacy[sampler_id]["inputs"].items()}
    loader = next(v for v in legacy.values() if v["class_type"] == "InfiniteTalkModelLoader")["inputs"]
    loader.pop("attention")  # an input a user's API script left out: a file-free widget, filled in
    loader.pop("dit")  # a file choice: never filled in, validation names it
    changes = migrate.migrate_prompt(legacy, dynamic=False)
    assert sum("moved to a new options node" in line for line in changes) == 1
    combine = next(v for v in legacy.values() if v["class_type"] == "InfiniteTalkVideoCombine")["inputs"]
    assert (combine["format"], combine["loudness"], combine["preset"]) == ("h264-mp4", "original", "medium")
    assert loader["attention"] == "auto" and "dit" not in loader
    options_id = legacy[sampler_id]["inputs"]["options"][0]
    options = legacy[options_id]
    assert options["class_type"] == "InfiniteTalkSamplerOptions"
    assert set(options["inputs"]) == set(_mod("sampler").OPTION_NAMES)
    assert {k: options["inputs"][k] for k in before if k in options["inputs"]} == {
        k: v for k, v in before.items() if k in options["inputs"]
    }
    assert options["inputs"]["face_only"] is False  # an option the old sampler did not have: its default
    assert options["inputs"]["storage"] == "h264"
    kept = {k: v for k, v in legacy[sampler_id]["inputs"].items() if k != "options"}
    assert kept == {k: v for k, v in before.items() if k not in options["inputs"]}
    assert migrate.migrate_prompt(legacy, dynamic=False) == []  # idempotent
    # the 27-input sampler (with face_only) of the face-only release: that option moves too
    face = {"7": {"class_type": "InfiniteTalkSampler", "inputs": {**before, "face_only": True}}}
    migrate.migrate_prompt(face, dynamic=False)
    assert face[face["7"]["inputs"]["options"][0]]["inputs"]["face_only"] is True
    # an options node saved before its storage input: the default (H.264 segments, as it ran then)
    saved = {k: v for k, v in options["inputs"].items() if k != "storage"}
    older = {"3": {"class_type": "InfiniteTalkSamplerOptions", "inputs": saved}}
    assert migrate.migrate_prompt(older, dynamic=False) == [
        "node 3: new inputs ['storage'] set to their defaults"
    ]
    assert older["3"]["inputs"]["storage"] == "h264"
    # a prompt from a newer ComfyUI (revealed inputs named size.width) runs on the flat schema
    newer = {
        "5": {
            "class_type": "InfiniteTalkSampler",
            "inputs": {"size": "custom", "size.width": 64, "size.height": 80},
        }
    }
    migrate.migrate_prompt(newer, dynamic=False)
    got = newer["5"]["inputs"]
    assert {k: got[k] for k in ("size", "width", "height")} == {"size": "custom", "width": 64, "height": 80}
    assert "size.width" not in got and got["steps"] == 40  # and the widgets it left out take their defaults


def test_migration_hook_is_installed_on_the_server(pack, monkeypatch):
    import sys
    import types

    migrate = _mod("_migrate")
    assert migrate.register() is False  # no server in this process: nothing happens

    class Server:
        def __init__(self):
            self.on_prompt_handlers = []

        def add_on_prompt_handler(self, handler):
            self.on_prompt_handlers.append(handler)

    server = types.SimpleNamespace(PromptServer=types.SimpleNamespace(instance=Server()))
    monkeypatch.setitem(sys.modules, "server", server)
    assert migrate.register() and migrate.register()
    assert server.PromptServer.instance.on_prompt_handlers == [migrate.on_prompt]  # once
    body = {"prompt": {"3": {"class_type": "InfiniteTalkSampler", "inputs": {"shift": 3.0}}}}
    out = migrate.on_prompt(body)
    assert out["prompt"]["3"]["inputs"]["options"][0] in out["prompt"]


# ------------------------------------------------------------------------------------------- edited VIDEO
def _colour_video(path: Path, seconds=4, fps=25, size=(64, 48), split=False) -> Path:
    """Frame i is filled with COLOURS[i // fps]; with ``split`` the right half is the next colour."""
    Mp4Writer = _lib("media").Mp4Writer
    w, h = size
    writer = Mp4Writer(path, fps, w, h, crf=0)
    for i in range(seconds * fps):
        frame = np.empty((1, h, w, 3), np.uint8)
        frame[:] = COLOURS[i // fps]
        if split:
            frame[:, :, w // 2 :] = COLOURS[(i // fps + 1) % len(COLOURS)]
        writer.write(frame)
    writer.close()
    return path


class EditedVideo:
    """A VIDEO with edits made in the editor, as the newest ComfyUI's ``VideoFromFile`` (start_time,
    duration, crop): ``get_stream_source()`` is the unedited file, the edits are reported by
    ``has_pending_frame_edits()`` / ``get_active_trim_window()`` / ``get_dimensions()``, and ``save_to()``
    renders them (re-encoding, one frame at a time)."""

    def __init__(self, path, start=0.0, duration=0.0, crop=None):
        self.path, self.start, self.duration, self.crop = Path(path), start, duration, crop
        self.saved = []

    def get_stream_source(self):
        return str(self.path)

    def has_pending_frame_edits(self):
        return bool(self.start or self.duration or self.crop)

    def get_active_trim_window(self):
        return float(self.start), float(self.duration)

    def get_dimensions(self):
        if self.crop:
            return self.crop[2], self.crop[3]
        with _lib("media").VideoReader(self.path) as reader:
            return reader.size

    def save_to(self, path, **_):
        media = _lib("media")
        self.saved.append(path)
        with media.VideoReader(self.path, start=self.start, duration=self.duration) as reader:
            x, y, w, h = self.crop or (0, 0, *reader.size)
            writer = media.Mp4Writer(path, 25, w, h, crf=0)
            for frame in reader:
                writer.write(frame[None, y : y + h, x : x + w])
            writer.close()


class UneditedVideo:
    """A VIDEO of ComfyUI 0.3.75: a stream source, no edit API."""

    def __init__(self, path):
        self.path = path

    def get_stream_source(self):
        return str(self.path)


def _mean_colour(frame) -> np.ndarray:
    return frame.reshape(-1, 3).mean(0)


def test_trimmed_and_cropped_video_sources(pack, tmp_path):
    bridge = _mod("_bridge")
    plain = _colour_video(tmp_path / "plain.mp4")
    split = _colour_video(tmp_path / "split.mp4", split=True)
    with bridge.reference_source(None, UneditedVideo(plain), 25) as src:  # 0.3.75: read as is
        assert src.num_frames == 100 and np.abs(_mean_colour(src.frame(0)) - COLOURS[0]).max() < TOL
    trimmed = EditedVideo(plain, start=2.0, duration=1.0)
    with bridge.reference_source(None, trimmed, 25) as src:
        assert src.num_frames == 25  # 1 s at 25 fps
        assert np.abs(_mean_colour(src.frame(0)) - COLOURS[2]).max() < TOL  # the frame at 2 s
        assert np.abs(_mean_colour(src.frame(24)) - COLOURS[2]).max() < TOL
    assert trimmed.saved == []  # a trim alone is read by seeking: nothing re-encoded
    cropped = EditedVideo(split, start=1.0, crop=(32, 0, 32, 48))
    with bridge.reference_source(None, cropped, 25) as src:
        assert src.size == (32, 48) and src.num_frames == 75
        assert np.abs(_mean_colour(src.frame(0)) - COLOURS[2]).max() < TOL  # right half of the 1 s frame
        rendered = Path(cropped.saved[0])
        assert rendered.is_file()
    assert not rendered.exists()  # the rendered edit is removed after the run
    with pytest.raises(ValueError, match="trim start 5.00 s is past its end"):
        with bridge.reference_source(None, EditedVideo(plain, start=5.0), 25):
            pass


@pytest.fixture(scope="module")
def loaded(nodes, tiny_models):
    """The tiny models through the pack's loader nodes (fp32, CPU)."""
    run = lambda node_id, *args: nodes[node_id].execute(*args).args[0]  # noqa: E731
    text = run("InfiniteTalkTextEncoderLoader", "umt5_xxl_fp16.safetensors", "fp32")
    return {
        "model": run("InfiniteTalkModelLoader", DIT, SINGLE, "fp32", "none"),
        "vae": run("InfiniteTalkVAELoader", "wan_2.1_vae.safetensors", "fp32"),
        "clip": run("InfiniteTalkClipVisionLoader", "clip_vision_h.safetensors", "fp32"),
        "text": run("InfiniteTalkTextEncode", text, "a person talking", ""),
        "wav2vec": run("InfiniteTalkAudioEncoderLoader", WAV2VEC, "fp32"),
    }


def _speech(seconds=1.5, sr=16000):
    t = np.arange(int(seconds * sr)) / sr
    wave = (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    return {"waveform": torch.from_numpy(wave)[None, None], "sample_rate": sr}


def _sample(nodes, loaded, audio_embeds, video=None, image=None, **options):
    """One denoising step per window, text scale 1 (two guidance passes): what the checks need, fast."""
    from comfy_api.latest import io

    opts = _mod("sampler").SamplerOptions(**{"frame_num": 17, "motion_frame": 5, "max_frames": 29, **options})
    sampler = nodes["InfiniteTalkSampler"].PREPARE_CLASS_CLONE(
        {io.Hidden.unique_id: "s", io.Hidden.prompt: {}}
    )
    out = sampler.execute(
        loaded["model"], loaded["vae"], loaded["clip"], loaded["text"], audio_embeds,
        "streaming", "custom", 1, 3, 1.0, 4.0, image=image, video=video, options=opts, width=64, height=64,
    )  # fmt: skip
    return out.args[0]


def test_dubbing_a_trimmed_clip_dubs_only_the_trim(nodes, loaded, tmp_path):
    """The source is red, green, blue, white for one second each; the editor trimmed it to [2 s, 3 s).
    Colour correction pulls every output frame to the colour of the first source frame, so the output's
    colour shows which frames conditioned the video: blue, the trim, not red, the file's start."""
    source = _colour_video(tmp_path / "source.mp4")
    embeds = nodes["InfiniteTalkAudioEmbed"].execute(loaded["wav2vec"], _speech(), True, "para").args[0]
    frames = _sample(nodes, loaded, embeds, video=EditedVideo(source, start=2.0, duration=1.0))
    assert frames.num_frames == 29
    colours = np.stack([_mean_colour(f) for f in frames.iter_frames()])
    assert np.abs(colours - COLOURS[2]).max() < 12, colours[:3]  # H.264 + Lab round trip: a few levels


# ------------------------------------------------------------------------------------------- core sockets
def _module_from_tensors(tensors: dict) -> torch.nn.Module:
    """An ``nn.Module`` whose state dict holds exactly ``tensors`` (nested submodules from the dotted names)."""
    root = torch.nn.Module()
    for key, value in tensors.items():
        *path, leaf = key.split(".")
        module = root
        for part in path:
            if not hasattr(module, part):
                module.add_module(part, torch.nn.Module())
            module = getattr(module, part)
        module.register_parameter(leaf, torch.nn.Parameter(value, requires_grad=False))
    return root


def test_model_patch_from_core_replaces_the_adapter_file(nodes, loaded, tiny_models):
    """Core's Load Model Patch holds ``MultiTalkModelPatch`` (audio_proj + blocks[i].audio_cross_attn/norm_x,
    the adapter file's key names) in a ModelPatcher: the loader takes its tensors, not the 'adapter' combo."""
    import comfy.model_patcher

    tensors = load_file(str(tiny_models / "models" / "model_patches" / SINGLE))
    patch = comfy.model_patcher.ModelPatcher(
        _module_from_tensors(tensors), torch.device("cpu"), torch.device("cpu")
    )
    model = nodes["InfiniteTalkModelLoader"].execute(DIT, MULTI, "fp32", "none", model_patch=patch).args[0]
    want = loaded["model"].patcher.model.state_dict()
    got = model.patcher.model.state_dict()
    assert set(got) == set(want)
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert model.adapter.startswith("model_patch:")
    not_talk = comfy.model_patcher.ModelPatcher(
        torch.nn.Linear(2, 2), torch.device("cpu"), torch.device("cpu")
    )
    with pytest.raises(
        ValueError, match="model_patch: the connected patch is a Linear, not an InfiniteTalk adapter"
    ):
        nodes["InfiniteTalkModelLoader"].execute(DIT, SINGLE, "fp32", "none", model_patch=not_talk)


@pytest.fixture()
def core_audio_encoders(comfy, monkeypatch):
    """``comfy.audio_encoders.audio_encoders`` of ComfyUI 0.3.75, the module behind core's Load Audio Encoder.

    It imports torchaudio at the top for one call, ``torchaudio.functional.resample`` in
    ``AudioEncoderModel.encode_audio``; its sibling whisper.py imports it for ``MelSpectrogram`` when a Whisper
    model is built, and wav2vec2.py does not import it at all. No torchaudio exists for torch 2.14, and these
    tests call none of that: an empty module stands in for the import only (any use would raise
    AttributeError). The classes under test, ``AudioEncoderModel`` and ``Wav2Vec2Model``, are core's own.
    """
    import types

    with monkeypatch.context() as patch:  # for the import only: others (transformers) must still see none
        if importlib.util.find_spec("torchaudio") is None:  # a real torchaudio wins
            patch.setitem(sys.modules, "torchaudio", types.ModuleType("torchaudio"))
        return importlib.import_module("comfy.audio_encoders.audio_encoders")


# chinese-wav2vec2-base's layout (core's "base" entry: no conv norm or bias, post-norm layers) at a tiny width;
# core fixes the CNN at 512 channels, the feed-forward at 4x and the positional conv at 128 taps / 16 groups.
CORE_W2V = dict(embed_dim=96, num_heads=6, num_layers=3, conv_norm=False, conv_bias=False,
                do_normalize=False, do_stable_layer_norm=False)  # fmt: skip


def _core_wav2vec2(core_audio_encoders, seed=0):
    """Core's ``AudioEncoderModel`` with ``Wav2Vec2Model`` inside, random weights through its own ``load_sd``
    (core builds its layers without initialising them, as it always loads a file next)."""
    encoder = core_audio_encoders.AudioEncoderModel({"model_type": "wav2vec2", **CORE_W2V})
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, t in encoder.get_sd().items():
        if key.endswith(("norm.weight", "original0")):  # norm scales and the weight-norm magnitude
            sd[key] = 1 + 0.1 * torch.randn(t.shape, generator=g)
        else:
            sd[key] = torch.randn(t.shape, generator=g) * (0.5 / max(t.shape[-1], 1) ** 0.5)
    missing, unexpected = encoder.load_sd(sd)
    assert missing == [] and unexpected == []
    return encoder


def test_audio_encoder_from_core_real_class_gives_its_hidden_states(nodes, core_audio_encoders):
    """Core's real wav2vec2 (0.3.75 ``comfy/audio_encoders/wav2vec2.py``) connected to the pack: the pack's
    encoder built from its tensors computes the same 50 Hz hidden states as core's own forward (every layer),
    and the Audio Embed node turns it into 25 Hz features of the reference's shape."""
    core = _core_wav2vec2(core_audio_encoders)
    wave = _speech()["waveform"]  # (1, 1, 24000)
    with torch.no_grad():
        _, core_layers = core.model(wave)  # input of each layer, then the last output: 50 Hz
    pack = _mod("_core").audio_encoder(core)
    with torch.no_grad():
        hidden = pack.obj.model(wave[0], output_hidden_states=True).hidden_states
    assert len(hidden) == len(core_layers) == CORE_W2V["num_layers"] + 1
    for ours, theirs in zip(hidden, core_layers, strict=True):
        torch.testing.assert_close(
            ours, theirs.float(), rtol=1e-4, atol=1e-5
        )  # float32, two attention kernels
    embeds = nodes["InfiniteTalkAudioEmbed"].execute(core, _speech(), True, "para").args[0]
    assert embeds.features.shape == (1, 37, CORE_W2V["num_layers"], CORE_W2V["embed_dim"])
    assert _mod("_core").audio_encoder(core) is pack  # converted once, kept on the core object


def test_audio_encoder_output_from_core(nodes, loaded):
    """Core's Audio Encoder Encode: hidden states at 50 Hz (input + every layer). The sampler accepts them,
    interpolated to the reference's frame count; they are not the reference's features, and the test says so."""
    wave = _speech()["waveform"][0, 0]
    hf = loaded["wav2vec"].obj.model  # the same transformers Wav2Vec2Model core's encoder computes
    with torch.no_grad():
        hidden = hf(wave[None], output_hidden_states=True).hidden_states  # layers + 1 x (1, T50, C)
    output = {"encoded_audio": hidden[-1], "encoded_audio_all_layers": hidden, "audio_samples": wave.numel()}
    embeds = _mod("_core").audio_embeds(output)
    cfg = loaded["wav2vec"].obj.config
    assert (
        embeds.features.shape == (1, 37, cfg.num_layers, cfg.hidden_size) and embeds.waveform_16k_mix is None
    )
    torch.testing.assert_close(embeds.features[0, 0], torch.stack([h[0, 0] for h in hidden[1:]]))
    torch.testing.assert_close(embeds.features[0, -1], torch.stack([h[0, -1] for h in hidden[1:]]))
    reference = nodes["InfiniteTalkAudioEmbed"].execute(loaded["wav2vec"], _speech(), False, "para").args[0]
    assert (embeds.features - reference.features).abs().max() > 1e-3  # 50 Hz transformer != reference
    frames = _sample(nodes, loaded, output, image=torch.rand(1, 64, 64, 3), max_frames=17)
    assert frames.num_frames == 17 and frames.soundtrack is None
