"""python -m infinitetalk.doctor: ready on both tiny trees; names every problem of broken trees; reads the
headers of full-size (sparse) 14B files in well under a second."""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from infinitetalk.config import DiTConfig
from infinitetalk.doctor import diagnose, fit_adapter, main
from infinitetalk.loading.discover import search_paths_for
from infinitetalk.loading.dit import adapter_key_shapes, base_key_shapes
from infinitetalk.loading.identify import identify
from infinitetalk.tiny.dit import DIT_FILES, TINY_DIT, file_tensors, mixed_fp32, random_source, tiny_path
from infinitetalk.weights import Component

REQUIRED = ("dit", "adapter_single", "text_encoder", "clip", "vae", "audio_encoder")


def _rows(text: str) -> dict[str, str]:
    return {
        line.split()[0]: line
        for line in text.splitlines()
        if line.split() and line.split()[0] in (*REQUIRED, "adapter_multi", "tts", "lora")
    }


@pytest.mark.parametrize("tree", ["models", "weights"])
def test_both_tiny_trees_are_ready(tiny_root, tree, capsys):
    assert main(["--weights", str(tiny_root / tree)]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert lines[-1] == "ready"
    rows = _rows(text)
    for name in REQUIRED:
        assert rows[name].split()[1] != "missing", rows[name]
    assert "dim 256, 2 layers, in 36" in rows["dit"]
    assert "288 audio features/frame, intermediate 56, 12 tokens x 72" in rows["adapter_single"]
    assert "hidden 96, 3 layers, pre-training heads" in rows["audio_encoder"]
    assert "adapter fits the DiT (dim 256, 2 layers); wav2vec2 gives 3 x 96 = 288 features" in text
    assert "missing:" not in text and "problems:" not in text
    assert "device: cpu" in text and "RAM" in text
    if tree == "weights":
        assert "recognised: official weights/ tree" in text
        assert "sharded (official)" in rows["dit"] and "weights/Wan2.1-I2V-14B-480P" in rows["dit"]
    else:
        assert "ComfyUI InfiniteTalk template files" in text
        assert "fp32" in rows["adapter_single"] and "fp16" in rows["adapter_single"]  # mixed, as published


# ------------------------------------------------------------------------------------------ broken trees
def _copy_models(tiny_root: Path, dest: Path, skip: tuple[str, ...] = ()) -> Path:
    """A ComfyUI models/ tree with one file per component (hard links), minus ``skip`` components."""
    picks = {
        "dit": (Component.DIT, "comfy_fp16"),
        "adapter_single": (Component.ADAPTER_SINGLE, "comfy"),
        "text_encoder": (Component.TEXT_ENCODER, "comfy_fp16"),
        "clip": (Component.CLIP, "comfy"),
        "vae": (Component.VAE, "comfy"),
        "audio_encoder": (Component.AUDIO_ENCODER, "kj_fp16"),
    }
    for name, (component, key) in picks.items():
        if name in skip:
            continue
        rel = tiny_path(component, key)
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(tiny_root / rel, target)
    return dest / "models"


def _report(models: Path) -> str:
    return diagnose(search_paths_for(models)).text()


def test_missing_file_is_named_with_folder_and_source(tiny_root, tmp_path):
    text = _report(_copy_models(tiny_root, tmp_path, skip=("vae",)))
    assert text.splitlines()[-1] == "not ready"
    assert (
        "vae (VAE (Wan 2.1)): expected 'models/vae/wan_2.1_vae.safetensors' (Hugging Face Comfy-Org/Wan_2.1_ComfyUI_repackaged)"
        in text
    )
    assert "'weights/Wan2.1-I2V-14B-480P/Wan2.1_VAE.pth' (Hugging Face Wan-AI/Wan2.1-I2V-14B-480P)" in text
    assert _rows(text)["vae"].split()[1] == "missing"


def test_truncated_file_is_named(tiny_root, tmp_path):
    models = _copy_models(tiny_root, tmp_path, skip=("dit",))
    dit = models / "diffusion_models" / "wan2.1_i2v_480p_14B_fp16.safetensors"
    dit.parent.mkdir(parents=True)
    data = (tiny_root / tiny_path(Component.DIT, "comfy_fp16")).read_bytes()
    dit.write_bytes(data[: len(data) // 2])  # an interrupted download
    text = _report(models)
    assert text.splitlines()[-1] == "not ready"
    assert "problems:" in text and "DiT (Wan2.1 I2V 14B): wan2.1_i2v_480p_14B_fp16.safetensors:" in text
    assert "truncated" in text and "download the file again" in text
    assert (
        "diffusion_models/wan2.1_i2v_480p_14B_fp16.safetensors: "
        in text.split("not used (could not place):")[1]
    )


def test_wrong_model_is_named_even_under_the_right_name(tiny_root, tmp_path):
    """A text-to-video DiT saved under the I2V name: the content decides, the report says why."""
    models = _copy_models(tiny_root, tmp_path, skip=("dit",))
    t2v = replace(TINY_DIT, in_dim=16)
    shapes = {k: s for k, s in base_key_shapes(t2v).items() if not k.startswith("img_emb.")}
    (models / "diffusion_models").mkdir(parents=True)
    save_file({k: torch.zeros(s, dtype=torch.float16) for k, s in shapes.items()},
              str(models / "diffusion_models" / "wan2.1_i2v_480p_14B_fp16.safetensors"))  # fmt: skip
    text = _report(models)
    assert text.splitlines()[-1] == "not ready"
    assert (
        "wrong model: a Wan text-to-video DiT (no image embedding); InfiniteTalk needs the Wan2.1 I2V 14B DiT"
        in text
    )
    assert _rows(text)["dit"].split()[1] == "missing"


def test_adapter_that_does_not_fit_the_dit_is_named(tiny_root, tmp_path):
    models = _copy_models(tiny_root, tmp_path, skip=("adapter_single",))
    wide = replace(TINY_DIT, dim=384, num_heads=3)  # an adapter made for another DiT width
    src = random_source(wide, seed=5)
    entry = next(f for f in DIT_FILES if f.component is Component.ADAPTER_SINGLE and f.key == "comfy")
    target = models / "model_patches" / "wan2.1_infiniteTalk_single_fp16.safetensors"
    target.parent.mkdir(parents=True, exist_ok=True)
    save_file(file_tensors(entry, src), str(target))
    text = _report(models)
    assert text.splitlines()[-1] == "not ready"
    assert "adapter does not fit:" in text
    assert "adapter is for a DiT of width 384 with 2 layers" in text and "has width 256 and 2 layers" in text


def test_wav2vec2_that_does_not_fit_the_adapter_is_named(tiny_root, tmp_path):
    models = _copy_models(tiny_root, tmp_path, skip=("audio_encoder",))
    _wav2vec2_of_width(models / "audio_encoders" / "wav2vec2-chinese-base_fp16.safetensors", hidden=40)
    text = _report(models)
    assert text.splitlines()[-1] == "not ready"
    assert "hidden 40, 3 layers" in _rows(text)["audio_encoder"]
    assert "adapter does not fit:" in text
    assert "adapter audio features 288 per frame are not a multiple of the audio encoder width 40" in text


def _wav2vec2_of_width(path: Path, hidden: int) -> Path:
    """The tiny Kijai wav2vec2 layout with another hidden width (zeros: only the header matters here)."""
    from infinitetalk.tiny import encoders as tiny

    old = tiny.TINY_WAV2VEC2["hidden"]
    state = {f"wav2vec2.{k}": torch.zeros([hidden if d == old else d for d in v.shape])
             for k, v in tiny.wav2vec2_source(0).items()}  # fmt: skip
    state["wav2vec2.encoder.pos_conv_embed.conv.weight_v"] = torch.zeros(hidden, hidden // 8, 128)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return path


# ------------------------------------------------------------------------------------------ speed
ST_DTYPES = {torch.float16: "F16", torch.float32: "F32", torch.bfloat16: "BF16"}


def _sparse_safetensors(path: Path, shapes: dict[str, tuple[int, ...]], dtype_of) -> int:
    """A safetensors file with the real header and no data written (a sparse file of the full size)."""
    header, offset = {}, 0
    for key, shape in shapes.items():
        dtype = dtype_of(key, shape)
        n = math.prod(shape) * dtype.itemsize
        header[key] = {"dtype": ST_DTYPES[dtype], "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(blob)))
        fh.write(blob)
        fh.truncate(8 + len(blob) + offset)
    return 8 + len(blob) + offset


def _bytes_read() -> int:
    """Bytes this process has read through read() calls (Linux /proc/self/io ``rchar``)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


def test_full_size_14b_files_are_read_from_their_headers_only(tmp_path, monkeypatch):
    """Only the headers of 37 GB of files are read (bytes counted, not seconds: python bench/doctor_headers.py
    prints the time, 0.05 s here). Reading whole tensors through safetensors or torch.load would also show."""
    dit, adapter = (
        tmp_path / "wan2.1_i2v_480p_14B_fp16.safetensors",
        tmp_path / "wan2.1_infiniteTalk_single_fp16.safetensors",
    )
    size = _sparse_safetensors(dit, base_key_shapes(DiTConfig()), lambda k, s: torch.float16)
    ad_size = _sparse_safetensors(adapter, adapter_key_shapes(DiTConfig()),
                                  lambda k, s: torch.float32 if mixed_fp32(k, s) else torch.float16)  # fmt: skip
    if os.stat(dit).st_blocks * 512 > 2**24:
        pytest.skip("this file system does not keep sparse files sparse")
    # the published file has 5,125,258,232 bytes; all-fp16 would be 3 % smaller, all-fp32 twice as large
    assert size > 32e9 and ad_size == pytest.approx(5_125_258_232, rel=1e-4)
    if not Path("/proc/self/io").exists():
        pytest.skip("bytes read are counted in Linux /proc/self/io")
    import safetensors.torch

    def no_tensor_loading(*args, **kwargs):
        raise AssertionError("the doctor loaded tensors instead of reading headers")

    for module, name in ((safetensors, "safe_open"), (safetensors.torch, "load_file"), (torch, "load")):
        monkeypatch.setattr(module, name, no_tensor_loading)
    before = _bytes_read()
    info, ad = identify(dit), identify(adapter)
    fits = fit_adapter(dit, adapter, None)
    read = _bytes_read() - before
    assert read < 16 * 2**20, read  # the two JSON headers are about 0.2 MB; the files 37 GB
    assert info.component is Component.DIT and "dim 5120, 40 layers, in 36, text 4096, clip 1280" in info.dims
    assert info.storage == "fp16"
    assert ad.component is Component.ADAPTER_SINGLE and ad.storage == "fp16 94% + fp32 6%"
    assert "dim 5120, 40 layers, 9216 audio features/frame, intermediate 512, 32 tokens x 768" in ad.dims
    assert fits == "adapter fits the DiT (dim 5120, 40 layers)"


def test_comfyui_folder_with_extra_model_paths_and_a_gguf_file(tiny_root, tmp_path, capsys):
    """--comfyui reads the folder's extra_model_paths.yaml (models kept on another drive); a GGUF file
    is named with the reason it is not used."""
    elsewhere = _copy_models(tiny_root, tmp_path / "drive")
    comfy = tmp_path / "ComfyUI"
    (comfy / "models" / "diffusion_models").mkdir(parents=True)
    (comfy / "models" / "diffusion_models" / "wan2.1-i2v-14b-480p-Q8_0.gguf").write_bytes(b"GGUF" + bytes(60))
    (comfy / "extra_model_paths.yaml").write_text(
        "drive:\n  base_path: " + str(elsewhere) + "\n"
        + "".join(f"  {f}: |\n    {f}\n" for f in ("diffusion_models", "model_patches", "text_encoders",
                                                  "clip_vision", "vae", "audio_encoders"))
    )  # fmt: skip
    assert main(["--comfyui", str(comfy)]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[-1] == "ready"
    assert str(elsewhere / "vae") in text.splitlines()[1]  # searched
    assert "wan2.1-i2v-14b-480p-Q8_0.gguf: GGUF files are not supported: use the .safetensors version" in text
