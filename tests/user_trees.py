"""The three folders users already have, built from the tiny files under the exact published names.

- ``template``: ComfyUI's InfiniteTalk template ("Model Links" note of Comfy-Org/workflow_templates
  ``templates/video_wan2_1_infinitetalk.json``): every file it names, in the folders it names, plus
  ``clip_vision/clip_vision_h.safetensors`` (the template runs without CLIP vision; the reference and this
  pack need it, and every Wan 2.1 I2V user has it);
- ``wrapper``: a ComfyUI-WanVideoWrapper user's folder: Kijai's files in subfolders
  (``diffusion_models/WanVideo/``, ``vae/wanvideo/``), Kijai's wav2vec2 in ``models/wav2vec2/`` and the
  HF folder the wrapper's downloader makes in ``models/transformers/TencentGameMate/``, Kijai's
  ``umt5-xxl-enc-bf16`` (no tokenizer inside) and the wrapper's ``configs/T5_tokenizer/``;
- ``official``: the reference repositories' ``weights/`` tree.

Names and folders come from :mod:`infinitetalk.weights`; the content from the tiny tree (hard links).
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from infinitetalk.tiny.dit import TINY_DIT, tiny_path
from infinitetalk.weights import EV_TEMPLATE, UMT5_TOKENIZER_DIR, Component, iter_published, spec

TREES = ("template", "wrapper", "official")


def _link(src: Path, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dest, copy_function=_link_file, dirs_exist_ok=True)
        return dest
    _link_file(src, dest)
    return dest


def _link_file(src, dest) -> None:
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)


def tiny_lora(path: Path, rank: int = 4, seed: int = 0) -> Path:
    """A small LoRA in the lightx2v key layout (``diffusion_model.blocks.N.<linear>.lora_down/up``)."""
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for i in range(TINY_DIT.num_layers):
        for name in ("self_attn.q", "cross_attn.o", "ffn.0"):
            out_f, in_f = (
                (TINY_DIT.ffn_dim, TINY_DIT.dim) if name == "ffn.0" else (TINY_DIT.dim, TINY_DIT.dim)
            )
            stem = f"diffusion_model.blocks.{i}.{name}"
            tensors[f"{stem}.lora_down.weight"] = torch.randn(rank, in_f, generator=gen).to(
                torch.bfloat16
            ) / math.sqrt(in_f)
            tensors[f"{stem}.lora_up.weight"] = (
                torch.randn(out_f, rank, generator=gen).to(torch.bfloat16) * 0.01
            )
            tensors[f"{stem}.alpha"] = torch.tensor(float(rank), dtype=torch.bfloat16)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return path


def template_files() -> list[tuple[Component, str]]:
    """(component, key) of every file the template's "Model Links" note names."""
    return [(s.component, f.key) for s, f in iter_published("comfyui") if EV_TEMPLATE in f.evidence]


def build(tree: str, tiny: Path, dest: Path) -> Path:
    """Build ``tree`` under ``dest``; returns the folder to pass as ``--weights`` (the ComfyUI root or the
    folder holding ``weights/``)."""
    return {"template": _template, "wrapper": _wrapper, "official": _official}[tree](Path(tiny), Path(dest))


def _models_file(component: Component, key: str) -> str:
    """Relative path of a published file inside a ComfyUI models/ folder."""
    return spec(component).published(key).relpath


def _template(tiny: Path, dest: Path) -> Path:
    models = dest / "ComfyUI" / "models"
    for component, key in template_files():
        rel = _models_file(component, key)
        if component is Component.LORA:
            tiny_lora(models / rel)
        else:
            _link(tiny / tiny_path(component, key), models / rel)
    _link(tiny / tiny_path(Component.CLIP, "comfy"), models / _models_file(Component.CLIP, "comfy"))
    return dest / "ComfyUI"


def _wrapper(tiny: Path, dest: Path) -> Path:
    root = dest / "ComfyUI"
    models = root / "models"
    dm = models / "diffusion_models"
    # Kijai's plain fp8 DiT (same storage as ComfyUI's fp8 file) and fp16 adapter, in the wrapper's subfolders
    _link(
        tiny / tiny_path(Component.DIT, "comfy_fp8"),
        dm / "WanVideo" / spec(Component.DIT).published("kj_fp8").name,
    )
    adapter = spec(Component.ADAPTER_SINGLE).published("kj_fp16")
    _link(
        tiny / tiny_path(Component.ADAPTER_SINGLE, "kj_fp16"), dm / "WanVideo" / "InfiniteTalk" / adapter.name
    )
    _link(
        tiny / tiny_path(Component.VAE, "kj_bf16"),
        models / "vae" / "wanvideo" / spec(Component.VAE).published("kj_bf16").name,
    )
    _link(
        tiny / tiny_path(Component.TEXT_ENCODER, "kj_bf16"),
        models / _models_file(Component.TEXT_ENCODER, "kj_bf16"),
    )
    _link(tiny / tiny_path(Component.CLIP, "comfy"), models / _models_file(Component.CLIP, "comfy"))
    w2v = spec(Component.AUDIO_ENCODER)
    _link(
        tiny / tiny_path(Component.AUDIO_ENCODER, "kj_fp16"),
        models / "wav2vec2" / w2v.published("kj_fp16").name,
    )
    _hf_download_folder(
        tiny / tiny_path(Component.AUDIO_ENCODER, "official"), models / w2v.published("wrapper_hf").relpath
    )
    tokenizer = root / "custom_nodes" / "ComfyUI-WanVideoWrapper" / "configs" / "T5_tokenizer"
    _link(tiny / "weights" / UMT5_TOKENIZER_DIR, tokenizer)
    return root


def _hf_download_folder(official: Path, dest: Path) -> None:
    """What the wrapper's downloader leaves (snapshot of the main branch, ``*.pt`` ignored): the configs
    and ``pytorch_model.bin`` (the safetensors file lives only in the ``refs/pr/1`` branch)."""
    from safetensors.torch import load_file

    dest.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "preprocessor_config.json"):
        _link_file(official / name, dest / name)
    torch.save(load_file(str(official / "model.safetensors")), dest / "pytorch_model.bin")


def _official(tiny: Path, dest: Path) -> Path:
    _link(tiny / "weights", dest / "weights")
    return dest
