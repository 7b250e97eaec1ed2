"""Hostile inputs through the command line: each one ends with exit code 2 and one line on stderr naming the
input and the fix, before any weight is read where the input allows it (no traceback, nothing written)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from infinitetalk.cli import main
from tests import hostile as H


@pytest.fixture()
def inputs(tmp_path):
    return {
        "face": H.png(tmp_path, "face.png"),  # 64x48
        "speech": H.wav(tmp_path, "speech.wav", 1.0),
        "dir": tmp_path,
    }


def run_cli(capsys, argv) -> str:
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2, err[-2000:]
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    return lines[0]


def base(tiny: Path, inputs: dict, *extra) -> list:
    return [
        "--weights", tiny, "--input_path", inputs["face"], "--audio_path", inputs["speech"],
        "--output_path", inputs["dir"] / "out.mp4", "--size", "32x32", "--sample_steps", "1", *extra,
    ]  # fmt: skip


def _replace(argv: list, flag: str, value) -> list:
    argv = list(argv)
    argv[argv.index(flag) + 1] = value
    return argv


# (case id, extra/changed arguments as a function of the input folder, expected message parts)
SETTINGS = [
    ("bbox-nonsense", lambda d: ["--audio_path2", d / "speech.wav", "--bbox", "nonsense"],
     ["--bbox: 'nonsense' is not 'x0,y0,x1,y1'"]),
    ("bbox-inverted", lambda d: ["--audio_path2", d / "speech.wav", "--bbox", "30,0,10,40;32,0,64,48"],
     ["--bbox: '30,0,10,40' is empty or inverted", "x1 must exceed x0"]),
    ("bbox-outside", lambda d: ["--audio_path2", d / "speech.wav", "--bbox", "0,0,32,48;32,0,90,48"],
     ["--bbox: box 2 '32,0,90,48' lies outside the 64x48 reference image"]),
    ("bbox-one-box", lambda d: ["--audio_path2", d / "speech.wav", "--bbox", "0,0,32,48"],
     ["--bbox: give exactly two boxes", "got 1"]),
    ("bbox-not-finite", lambda d: ["--audio_path2", d / "speech.wav", "--bbox", "0,0,nan,48;32,0,64,48"],
     ["not a finite number"]),
    ("two-people-one-audio", lambda d: ["--bbox", "0,0,32,48;32,0,64,48"],
     ["--bbox place two people but the audio has one speaker", "--audio_path2"]),
    ("frame-num", lambda d: ["--frame_num", "80"], ["frame_num 80 must be 4n+1"]),
    ("motion-not-4n1", lambda d: ["--motion_frame", "8"], ["motion_frame 8 must be 4n+1"]),
    ("motion-too-big", lambda d: ["--frame_num", "17", "--motion_frame", "17"],
     ["motion_frame 17 must be smaller than frame_num 17"]),
    ("size-unknown", lambda d: ["--size", "huge"], ["--size 'huge' is unknown", "infinitetalk-480"]),
    ("size-not-16", lambda d: ["--size", "100x100"], ["--size '100x100'", "multiples of 16"]),
    ("crf", lambda d: ["--crf", "60"], ["--crf 60 is outside 0..51"]),
    ("output-under-a-file", lambda d: ["--output_path", d / "face.png" / "out.mp4"],
     ["cannot create the folder", "face.png'", "pick another place"]),
    ("resume-random-seed", lambda d: ["--resume", "--seed", "-1"], ["--resume needs a fixed --seed"]),
]  # fmt: skip


@pytest.mark.parametrize(("extra", "needles"), [c[1:] for c in SETTINGS], ids=[c[0] for c in SETTINGS])
def test_bad_settings(tmp_path, inputs, capsys, tiny_root, extra, needles):
    argv = base(tiny_root, inputs)  # refused before any weight is read
    for flag_or_value in extra(inputs["dir"]):  # override flags given twice: the last one wins in argparse
        argv.append(flag_or_value)
    line = run_cli(capsys, argv)
    for needle in needles:
        assert needle in line


def _make(kind: str, d: Path) -> Path:
    return {
        "garbage-wav": lambda: H.garbage(d, "noise.wav"),
        "empty-wav": lambda: H.empty_wav(d),
        "silent-wav": lambda: H.silent_wav(d),
        "10ms-wav": lambda: H.wav(d, "click.wav", 0.01),
        "text-as-audio": lambda: (d / "notes.mp3").write_text("not audio") and d / "notes.mp3",
        "video-without-sound": lambda: H.video(d, "mute.mp4", frames=10),
    }[kind]()


AUDIO = [
    (
        "garbage-wav",
        ["--audio_path '", "noise.wav' is not a readable audio or video file", "convert it to wav"],
    ),
    ("empty-wav", ["holds no samples"]),
    ("silent-wav", ["--audio_path 'silence.wav' is silent (digital silence)", "the lips would not move"]),
    ("10ms-wav", ["lasts 10.0 ms: shorter than one video frame", "padded"]),
    ("text-as-audio", ["notes.mp3' is not a readable audio or video file"]),
    ("video-without-sound", ["mute.mp4' has no audio stream"]),
]


@pytest.mark.parametrize(("kind", "needles"), AUDIO, ids=[c[0] for c in AUDIO])
def test_bad_audio(tmp_path, inputs, capsys, tiny_root, kind, needles):
    path = _make(kind, inputs["dir"])
    line = run_cli(capsys, _replace(base(tiny_root, inputs), "--audio_path", path))
    for needle in needles:
        assert needle in line


def test_missing_audio_file(tmp_path, inputs, capsys, tiny_root):
    line = run_cli(capsys, _replace(base(tiny_root, inputs), "--audio_path", tmp_path / "gone.wav"))
    assert "--audio_path" in line and "gone.wav' does not exist" in line


REFERENCE = [
    ("garbage-png", lambda d: H.garbage(d, "face2.png"), ["face2.png' is not a readable image"]),
    ("8x8-png", lambda d: H.png(d, "dot.png", 8, 8), ["'dot.png' is 8x8 pixels: too small to hold a face"]),
    ("garbage-mp4", lambda d: H.garbage(d, "clip.mp4"), ["clip.mp4' is not a readable video"]),
    ("audio-only-mp4", lambda d: H.video(d, "radio.mp4", frames=0, audio_s=1.0), ["radio.mp4' has no video stream"]),
    ("missing", lambda d: d / "nobody.png", ["--input_path", "nobody.png' does not exist"]),
]  # fmt: skip


@pytest.mark.parametrize(("make", "needles"), [c[1:] for c in REFERENCE], ids=[c[0] for c in REFERENCE])
def test_bad_reference(tmp_path, inputs, capsys, tiny_root, make, needles):
    argv = _replace(base(tiny_root, inputs), "--input_path", make(inputs["dir"]))
    line = run_cli(capsys, argv)
    for needle in needles:
        assert needle in line


TTS = [
    ("empty-text", ["--text", ""], ["--text is empty: write what to say"]),
    ("only-markup", ["--text", "(s1) ... (s2) !!"], ["--text '(s1) ... (s2) !!' holds only markup and symbols"]),
    ("unknown-voice", ["--text", "Hello there.", "--voice", "zz_nobody"],
     ["--voice 'zz_nobody' is not a Kokoro voice", "use one of"]),
    ("unknown-voice-2", ["--text", "(s1) Hi. (s2) Hello.", "--voice2", "qq_ghost"], ["--voice2 'qq_ghost'"]),
    ("unknown-language", ["--text", "Hello.", "--lang", "xx"], ["--lang: unknown TTS language 'xx'"]),
]  # fmt: skip


@pytest.mark.parametrize(("extra", "needles"), [c[1:] for c in TTS], ids=[c[0] for c in TTS])
def test_bad_tts(tmp_path, inputs, capsys, tiny_root, extra, needles):
    argv = base(tiny_root, inputs)
    i = argv.index("--audio_path")
    del argv[i : i + 2]
    line = run_cli(capsys, [*argv, *extra])
    for needle in needles:
        assert needle in line


MINIMAL = (
    "diffusion_models/wan2.1_i2v_480p_14B_fp16.safetensors",
    "model_patches/wan2.1_infiniteTalk_single_fp16.safetensors",
    "text_encoders/umt5_xxl_fp16.safetensors",
    "clip_vision/clip_vision_h.safetensors",
    "vae/wan_2.1_vae.safetensors",
    "audio_encoders/wav2vec2-chinese-base_fp16.safetensors",
)


def _tree(tiny: Path, dest: Path) -> Path:
    """A ComfyUI models/ tree with one file per part, as symlinks to the tiny files (cheap to alter one)."""
    for rel in MINIMAL:
        link = dest / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to((tiny / "models" / rel).resolve())
    return dest


DIT = "diffusion_models/wan2.1_i2v_480p_14B_fp16.safetensors"
SINGLE = "model_patches/wan2.1_infiniteTalk_single_fp16.safetensors"


def test_missing_weights_list_files_and_folders(tmp_path, inputs, capsys, tiny_root):
    tree = _tree(tiny_root, tmp_path / "models")
    shutil.rmtree(tree / "vae")
    line = run_cli(capsys, _replace(base(tiny_root, inputs), "--weights", tmp_path))
    assert "VAE (Wan 2.1) not found under" in line  # names the part, the files, the folders, the source
    assert (
        "models/vae/wan_2.1_vae.safetensors" in line and "weights/Wan2.1-I2V-14B-480P/Wan2.1_VAE.pth" in line
    )
    assert "ComfyUI folders vae" in line and "Hugging Face" in line


WEIGHTS = [
    ("wrong-model", lambda t: t / "vae/wan_2.1_vae.safetensors", DIT,
     ["DiT (Wan2.1 I2V 14B) not found", "'wan2.1_i2v_480p_14B_fp16.safetensors' holds the VAE (Wan 2.1)"]),
    ("adapter-as-dit", lambda t: t / SINGLE, DIT, ["DiT (Wan2.1 I2V 14B) not found", "holds the InfiniteTalk"]),
    ("truncated", "truncate", DIT, ["found but not usable", "file truncated", "download the file again"]),
    ("dit-as-adapter", lambda t: t / DIT, SINGLE,
     ["adapter", "not found", "'wan2.1_infiniteTalk_single_fp16.safetensors' holds the DiT"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("source", "target", "needles"), [c[1:] for c in WEIGHTS], ids=[c[0] for c in WEIGHTS]
)
def test_bad_weights(tmp_path, inputs, capsys, tiny_root, source, target, needles):
    tree = _tree(tiny_root, tmp_path / "models")
    link = tree / target
    real = link.resolve()
    link.unlink()
    if source == "truncate":
        data = real.read_bytes()
        link.write_bytes(data[: len(data) * 2 // 3])
    else:
        shutil.copyfile(source(tree).resolve(), link)  # a copy: discovery sees one file once
    line = run_cli(capsys, _replace(base(tiny_root, inputs), "--weights", tmp_path))
    for needle in needles:
        assert needle in line


def test_adapter_that_does_not_fit(tmp_path, inputs, capsys, tiny_root):
    from dataclasses import replace

    from infinitetalk.tiny.dit import TINY_DIT
    from tests.unit.test_loading_dit import _adapter_file

    wide = _adapter_file(tmp_path / "wide.safetensors", replace(TINY_DIT, dim=384, num_heads=3))
    line = run_cli(capsys, [*base(tiny_root, inputs), "--infinitetalk_dir", wide])
    assert "wide.safetensors: adapter is for a DiT of width 384" in line
