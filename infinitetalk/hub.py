"""Download the weights from Hugging Face (for users with internet; nothing else in the library downloads).

Two layouts, the same ones the loaders read:

- ``official``: the reference repositories into a ``weights/`` folder
  (``Wan2.1-I2V-14B-480P/``, ``InfiniteTalk/{single,multi}/``, ``chinese-wav2vec2-base/``, ``Kokoro-82M/``);
- ``comfyui``: ComfyUI's repackaged single files into a ComfyUI ``models/`` folder
  (``diffusion_models/``, ``model_patches/``, ``text_encoders/``, ``clip_vision/``, ``vae/``,
  ``audio_encoders/``, ``kokoro/``).

Command line::

    python -m infinitetalk.hub --layout comfyui --dest /path/to/ComfyUI/models
    python -m infinitetalk.hub --layout official --dest weights --only dit adapter

Files already present are skipped; each download shows a progress bar (huggingface_hub's). Without a
connection every call fails at once with a one-line :class:`~infinitetalk.errors.CheckpointError` that names
the repository, the file and where to put it by hand.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from .errors import CheckpointError

log = logging.getLogger(__name__)

WAN = "Wan-AI/Wan2.1-I2V-14B-480P"
INFINITETALK = "MeiGen-AI/InfiniteTalk"
WAV2VEC2 = "TencentGameMate/chinese-wav2vec2-base"
KOKORO = "hexgrad/Kokoro-82M"
COMFY_WAN = "Comfy-Org/Wan_2.1_ComfyUI_repackaged"
KOKORO_VOICES = (
    "af_heart",
    "af_bella",
    "am_adam",
    "am_michael",
    "bf_emma",
    "bm_george",
    "zf_xiaobei",
    "zm_yunjian",
)


@dataclass(frozen=True)
class HubFile:
    """One file: ``filename`` in Hugging Face repository ``repo_id`` goes to ``dest`` (relative path)."""

    part: str  # dit, adapter, text, clip, vae, audio, tts
    repo_id: str
    filename: str
    dest: str
    revision: str | None = None


def _official() -> list[HubFile]:
    wan = "Wan2.1-I2V-14B-480P"
    files = [
        HubFile(
            "dit",
            WAN,
            f"diffusion_pytorch_model-0000{i}-of-00007.safetensors",
            f"{wan}/diffusion_pytorch_model-0000{i}-of-00007.safetensors",
        )
        for i in range(1, 8)
    ]
    files += [
        HubFile(
            "dit",
            WAN,
            "diffusion_pytorch_model.safetensors.index.json",
            f"{wan}/diffusion_pytorch_model.safetensors.index.json",
        ),
        HubFile("text", WAN, "models_t5_umt5-xxl-enc-bf16.pth", f"{wan}/models_t5_umt5-xxl-enc-bf16.pth"),
        *[
            HubFile("text", WAN, f"google/umt5-xxl/{n}", f"{wan}/google/umt5-xxl/{n}")
            for n in ("spiece.model", "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json")
        ],
        HubFile(
            "clip",
            WAN,
            "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth",
            f"{wan}/models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth",
        ),
        HubFile("vae", WAN, "Wan2.1_VAE.pth", f"{wan}/Wan2.1_VAE.pth"),
        HubFile(
            "adapter",
            INFINITETALK,
            "single/infinitetalk.safetensors",
            "InfiniteTalk/single/infinitetalk.safetensors",
        ),
        HubFile(
            "adapter",
            INFINITETALK,
            "multi/infinitetalk.safetensors",
            "InfiniteTalk/multi/infinitetalk.safetensors",
        ),
        HubFile("audio", WAV2VEC2, "config.json", "chinese-wav2vec2-base/config.json"),
        HubFile(
            "audio", WAV2VEC2, "preprocessor_config.json", "chinese-wav2vec2-base/preprocessor_config.json"
        ),
        # the safetensors conversion lives in a pull-request branch of the repository
        HubFile(
            "audio", WAV2VEC2, "model.safetensors", "chinese-wav2vec2-base/model.safetensors", "refs/pr/1"
        ),
    ]
    return files + _kokoro("Kokoro-82M")


def _comfyui() -> list[HubFile]:
    split = "split_files"
    return [
        HubFile(
            "dit",
            COMFY_WAN,
            f"{split}/diffusion_models/wan2.1_i2v_480p_14B_fp16.safetensors",
            "diffusion_models/wan2.1_i2v_480p_14B_fp16.safetensors",
        ),
        HubFile(
            "adapter",
            COMFY_WAN,
            f"{split}/model_patches/wan2.1_infiniteTalk_single_fp16.safetensors",
            "model_patches/wan2.1_infiniteTalk_single_fp16.safetensors",
        ),
        HubFile(
            "adapter",
            COMFY_WAN,
            f"{split}/model_patches/wan2.1_infiniteTalk_multi_fp16.safetensors",
            "model_patches/wan2.1_infiniteTalk_multi_fp16.safetensors",
        ),
        HubFile(
            "text",
            COMFY_WAN,
            f"{split}/text_encoders/umt5_xxl_fp16.safetensors",
            "text_encoders/umt5_xxl_fp16.safetensors",
        ),
        HubFile(
            "clip",
            COMFY_WAN,
            f"{split}/clip_vision/clip_vision_h.safetensors",
            "clip_vision/clip_vision_h.safetensors",
        ),
        HubFile("vae", COMFY_WAN, f"{split}/vae/wan_2.1_vae.safetensors", "vae/wan_2.1_vae.safetensors"),
        HubFile(
            "audio",
            COMFY_WAN,
            f"{split}/audio_encoders/wav2vec2-chinese-base_fp16.safetensors",
            "audio_encoders/wav2vec2-chinese-base_fp16.safetensors",
        ),
        *_kokoro("kokoro"),
    ]


def _kokoro(folder: str) -> list[HubFile]:
    files = [
        HubFile("tts", KOKORO, "config.json", f"{folder}/config.json"),
        HubFile("tts", KOKORO, "kokoro-v1_0.pth", f"{folder}/kokoro-v1_0.pth"),
    ]
    return files + [
        HubFile("tts", KOKORO, f"voices/{v}.pt", f"{folder}/voices/{v}.pt") for v in KOKORO_VOICES
    ]


LAYOUTS = {"official": _official, "comfyui": _comfyui}
PARTS = ("dit", "adapter", "text", "clip", "vae", "audio", "tts")


def plan(layout: str, only: Sequence[str] | None = None) -> list[HubFile]:
    """The files of ``layout`` ('official' or 'comfyui'), optionally only some ``PARTS``."""
    if layout not in LAYOUTS:
        raise CheckpointError(f"unknown download layout '{layout}': use one of {', '.join(LAYOUTS)}")
    unknown = set(only or ()) - set(PARTS)
    if unknown:
        raise CheckpointError(f"unknown weight parts {sorted(unknown)}: choose from {', '.join(PARTS)}")
    files = LAYOUTS[layout]()
    return [f for f in files if not only or f.part in only]


def check_connection(timeout: float = 5.0) -> None:
    """Fail fast (one line) when the Hugging Face endpoint cannot be reached, instead of retrying per file."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urlparse(endpoint)
    host = parsed.hostname or "huggingface.co"
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as err:
        raise CheckpointError(
            f"cannot reach {host}:{port} to download weights ({err.__class__.__name__}: {err}); connect to the "
            "internet, or download the files by hand into the folders listed in the README"
        ) from err


def download(layout: str, dest: str | os.PathLike, only: Sequence[str] | None = None) -> list[Path]:
    """Download the files of ``layout`` under ``dest`` (skipping those present); return their paths.

    Raises:
        CheckpointError: huggingface_hub missing, or a file could not be fetched (offline, gated, moved).
    """
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as err:
        raise CheckpointError("downloading needs huggingface_hub: pip install huggingface_hub") from err
    dest = Path(dest)
    staging = dest / ".hf_download"
    paths = []
    todo = [item for item in plan(layout, only) if not (dest / item.dest).is_file()]
    if todo:
        check_connection()
    for item in plan(layout, only):
        target = dest / item.dest
        if not target.is_file():
            log.info("downloading %s/%s -> %s", item.repo_id, item.filename, target)
            try:
                got = hf_hub_download(item.repo_id, item.filename, revision=item.revision, local_dir=staging)
            except Exception as err:  # network, 404, auth: one actionable line either way
                shutil.rmtree(staging, ignore_errors=True)
                reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
                raise CheckpointError(
                    f"cannot download '{item.filename}' from Hugging Face '{item.repo_id}' ({type(err).__name__}: "
                    f"{reason[:160]}); check the connection, or download it by hand from "
                    f"https://huggingface.co/{item.repo_id} into '{target}'"
                ) from err
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(got), str(target))
        paths.append(target)
    shutil.rmtree(staging, ignore_errors=True)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infinitetalk.hub", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--layout",
        choices=sorted(LAYOUTS),
        default="comfyui",
        help="comfyui: ComfyUI's models/ folders; official: the reference repositories' layout",
    )
    parser.add_argument(
        "--dest", required=True, help="ComfyUI's models folder (comfyui) or a weights folder (official)"
    )
    parser.add_argument("--only", nargs="*", choices=PARTS, help="download only these parts")
    parser.add_argument("--list", action="store_true", help="print what would be downloaded and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.list:
        for item in plan(args.layout, args.only):
            print(f"{item.repo_id}/{item.filename} -> {Path(args.dest) / item.dest}")
        return 0
    try:
        paths = download(args.layout, args.dest, args.only)
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{len(paths)} files in {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
