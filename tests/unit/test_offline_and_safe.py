"""No network, no code execution: a whole tiny generation with TTS runs with every socket blocked (and in a
network namespace without a network), every weight reader refuses a pickle that would run code, and the
source holds no unsafe loader call (audited from the syntax tree)."""

from __future__ import annotations

import ast
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from infinitetalk.cli import main
from infinitetalk.errors import InfiniteTalkError
from tests import hostile as H
from tests.needs import need_network_namespace

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def no_network(monkeypatch):
    """Every way out through Python's socket module raises; attempts are recorded."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args[1:] if args and isinstance(args[0], socket.socket) else args)
        raise OSError(101, "network blocked by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket.socket, "sendto", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


def _tts_dialogue_argv(tiny: Path, folder: Path) -> list[str]:
    face = H.png(folder, "two.png", 48, 64)
    return [
        "--weights", str(tiny), "--input_path", str(face), "--text", "(s1) Hello there. (s2) Hi!",
        "--lang", "a", "--bbox", "0,0,32,48;32,0,64,48", "--subtitles", "--size", "32x32",
        "--sample_steps", "1", "--sample_text_guide_scale", "1", "--output_path", str(folder / "talk.mp4"),
    ]  # fmt: skip


def test_generation_with_tts_runs_with_sockets_blocked(no_network, tiny_root, tmp_path):
    import urllib.request

    with pytest.raises(OSError, match="network blocked"):  # the block is real
        urllib.request.urlopen("http://127.0.0.1:9/", timeout=1)
    no_network.clear()
    assert main(_tts_dialogue_argv(tiny_root, tmp_path)) == 0
    assert (tmp_path / "talk.mp4").stat().st_size > 0
    assert no_network == [], f"network used: {no_network}"


def test_download_helper_is_the_only_way_out(no_network, tmp_path):
    from infinitetalk.errors import CheckpointError
    from infinitetalk.hub import download

    with pytest.raises(CheckpointError) as err:  # it tries, and says what to do offline
        download("comfyui", tmp_path, only=["vae"])
    assert "\n" not in str(err.value)
    assert no_network, "the download helper should have tried to connect"


def test_generation_in_a_namespace_without_network(tiny_root, tmp_path):
    need_network_namespace()  # skips locally without root / unshare; fails under CI=true
    argv = _tts_dialogue_argv(tiny_root, tmp_path)
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="0")
    proc = subprocess.run(
        ["unshare", "-n", sys.executable, "-m", "infinitetalk", *argv],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "talk.mp4").is_file()


# ------------------------------------------------------------------------------------------- pickles
class RunsCode:
    """Unpickling this creates ``marker``: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _evil(path: Path, marker: Path, tensors: dict | None = None) -> Path:
    payload = dict(tensors or {"weight": torch.zeros(2)})
    payload["payload"] = RunsCode(marker)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)
    return path


def _readers(tmp: Path, tiny: Path, marker: Path):
    from infinitetalk.encoders import load_audio_encoder, load_clip_vision, load_text_encoder, load_vae
    from infinitetalk.loading.dit import load_dit
    from infinitetalk.lora import load_lora_file
    from infinitetalk.sinks import SegmentStore
    from infinitetalk.tts import KokoroTTS

    def kokoro_model():
        folder = tmp / "kokoro"
        shutil.copytree(tiny / "models" / "kokoro", folder)
        _evil(folder / "kokoro-v1_0.pth", marker)
        KokoroTTS(folder)

    def kokoro_voice():
        folder = tmp / "kokoro_v"
        shutil.copytree(tiny / "models" / "kokoro", folder)
        _evil(folder / "voices" / "af_heart.pt", marker)
        KokoroTTS(folder).speak("Hello.", "af_heart", lang="a")

    def wav2vec2_bin():
        folder = tmp / "w2v"
        shutil.copytree(tiny / "weights" / "chinese-wav2vec2-base", folder)
        (folder / "model.safetensors").unlink()
        _evil(folder / "pytorch_model.bin", marker)
        load_audio_encoder(folder)

    def resume_state():
        folder = tmp / "run"
        folder.mkdir()
        _evil(folder / "state_00000.pt", marker)
        manifest = {"fingerprint": "f", "segments": [], "state": "state_00000.pt", "complete": False}
        (folder / "manifest.json").write_text(json.dumps(manifest))
        SegmentStore(folder).begin("f", resume=True)

    return {
        "dit": lambda: load_dit(_evil(tmp / "dit.pth", marker), None),
        "adapter": lambda: load_dit(
            tiny / "models/diffusion_models/wan2.1_i2v_480p_14B_fp16.safetensors",
            _evil(tmp / "a.pth", marker),
        ),
        "vae": lambda: load_vae(_evil(tmp / "Wan2.1_VAE.pth", marker)),
        "clip": lambda: load_clip_vision(_evil(tmp / "clip.pth", marker)),
        "text": lambda: load_text_encoder(_evil(tmp / "models_t5_umt5-xxl-enc-bf16.pth", marker)),
        "wav2vec2 .bin": wav2vec2_bin,
        "lora": lambda: load_lora_file(_evil(tmp / "lora.pt", marker)),
        "kokoro model": kokoro_model,
        "kokoro voice": kokoro_voice,
        "resume state": resume_state,
    }


READERS = ["dit", "adapter", "vae", "clip", "text", "wav2vec2 .bin", "lora", "kokoro model", "kokoro voice",
           "resume state"]  # fmt: skip


@pytest.mark.parametrize("reader", READERS)
def test_no_reader_runs_pickled_code(tmp_path, tiny_root, reader):
    marker = tmp_path / "code-ran"
    with pytest.raises(InfiniteTalkError) as err:
        _readers(tmp_path, tiny_root, marker)[reader]()
    assert not marker.exists(), f"{reader}: unpickling ran code"
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------- audit
SOURCES = sorted([*(REPO / "infinitetalk").rglob("*.py"), *(REPO / "nodes").rglob("*.py")])


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
            kwargs = {k.arg: k.value for k in node.keywords}
            yield node, owner, name, kwargs


def _true(value) -> bool:
    return isinstance(value, ast.Constant) and value.value is True


def test_source_audit_no_unsafe_loading_and_no_network():
    problems = []
    for path in SOURCES:
        rel = path.relative_to(REPO).as_posix()
        tree = ast.parse(path.read_text(), rel)
        for node, owner, name, kw in _calls(tree):
            where = f"{rel}:{node.lineno}"
            if owner == "torch" and name == "load" and not _true(kw.get("weights_only")):
                problems.append(f"{where}: torch.load without weights_only=True")
            if owner in ("pickle", "cPickle", "dill", "joblib") and name in ("load", "loads"):
                problems.append(f"{where}: {owner}.{name}")
            if owner == "np" and name == "load" and _true(kw.get("allow_pickle")):
                problems.append(f"{where}: np.load(allow_pickle=True)")
            if isinstance(node.func, ast.Name) and name in ("eval", "exec"):
                problems.append(f"{where}: {name}()")
            if _true(kw.get("trust_remote_code")):
                problems.append(f"{where}: trust_remote_code=True")
            if name == "from_pretrained" and not _true(kw.get("local_files_only")):
                problems.append(f"{where}: from_pretrained without local_files_only=True")
            if name in ("hf_hub_download", "snapshot_download", "urlopen") and rel != "infinitetalk/hub.py":
                problems.append(f"{where}: {name} outside the download helper")
    assert problems == []
