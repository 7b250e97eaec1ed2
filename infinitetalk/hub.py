"""Download the weights from Hugging Face (for users with internet; nothing else in the library downloads).

Two layouts, the same ones the loaders read:

- ``official``: the reference repositories into a ``weights/`` folder
  (``Wan2.1-I2V-14B-480P/``, ``InfiniteTalk/{single,multi}/``, ``chinese-wav2vec2-base/``, ``Kokoro-82M/``);
- ``comfyui``: ComfyUI's repackaged single files into a ComfyUI ``models/`` folder
  (``diffusion_models/``, ``model_patches/``, ``text_encoders/``, ``clip_vision/``, ``vae/``,
  ``audio_encoders/``, ``kokoro/``).

Command line::

    python -m infinitetalk.hub --layout comfyui --dest /path/to/ComfyUI/models
    python -m infinitetalk.hub --layout official --dest weights --only dit adapter_single
    python -m infinitetalk.hub --dest ComfyUI/models --gguf Q4_K_M --only dit adapter_single text_encoder --list

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
from .weights import Component, component_names, iter_published

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HubFile:
    """One file: ``filename`` in Hugging Face repository ``repo_id`` goes to ``dest`` (relative path)."""

    part: str  # the component name (infinitetalk.weights.Component value)
    repo_id: str
    filename: str
    dest: str
    revision: str | None = None


LAYOUTS = ("official", "comfyui")
PARTS = component_names()
# what a plain ``download(layout)`` fetches: every part a video needs, plus TTS (LoRAs on request)
DEFAULT_PARTS = tuple(c.value for c in Component if c is not Component.LORA)


def plan(layout: str, only: Sequence[str] | None = None, gguf: str | None = None) -> list[HubFile]:
    """The files of ``layout`` ('official' or 'comfyui'), optionally only some components (``PARTS``).

    Read from :mod:`infinitetalk.weights`: for each component, its published files of that tree that are
    marked for download. ``gguf`` (``Q8_0``, ``Q5_K_M``, ``Q4_K_M`` ...): for the components published as
    GGUF (DiT, adapters, umT5), that GGUF file instead (the nearest published type when that one is not).
    """
    if layout not in LAYOUTS:
        raise CheckpointError(f"unknown download layout '{layout}': use one of {', '.join(LAYOUTS)}")
    unknown = sorted(set(only or ()) - set(PARTS))
    if unknown:
        raise CheckpointError(f"unknown components {unknown}: choose from {', '.join(PARTS)}")
    wanted = list(only) if only else list(DEFAULT_PARTS)
    files = []
    for s, f in iter_published(layout):
        pick = gguf_variant(s, gguf) if gguf else None
        if (f is pick if pick is not None else f.hub) and s.component.value in wanted:
            files += [HubFile(s.component.value, d.repo, d.filename, d.dest, d.revision) for d in f.downloads]
    return files


def gguf_variant(spec, qtype: str):
    """The component's published GGUF file of ``qtype`` (Kijai writes ``Q8`` for ``Q8_0``), else its first
    GGUF file of the nearest size, None when the component has no GGUF file."""
    files = [f for f in spec.files if f.name.lower().endswith(".gguf")]
    if not files:
        return None
    want = qtype.upper()
    exact = [f for f in files if f.storage.split()[1] in (want, want.replace("_0", ""))]
    if exact:
        return exact[0]
    bits = {"Q8_0": 8, "Q8": 8, "Q6_K": 6, "Q5_K_M": 5, "Q4_K_M": 4, "Q3_K_M": 3}
    return min(files, key=lambda f: abs(bits.get(f.storage.split()[1], 8) - bits.get(want, 8)))


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


def download(
    layout: str, dest: str | os.PathLike, only: Sequence[str] | None = None, gguf: str | None = None
) -> list[Path]:
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
    todo = [item for item in plan(layout, only, gguf) if not (dest / item.dest).is_file()]
    if todo:
        check_connection()
    for item in plan(layout, only, gguf):
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
        choices=LAYOUTS,
        default="comfyui",
        help="comfyui: ComfyUI's models/ folders; official: the reference repositories' layout",
    )
    parser.add_argument(
        "--dest", required=True, help="ComfyUI's models folder (comfyui) or a weights folder (official)"
    )
    parser.add_argument(
        "--only", nargs="*", choices=PARTS, help="download only these components (default: all but lora)"
    )
    parser.add_argument(
        "--gguf",
        metavar="TYPE",
        help="GGUF variants (Q8_0, Q5_K_M, Q4_K_M ...) of the DiT, adapters and umT5 "
        "(city96's and Kijai's files; for 8-16 GB GPUs)",
    )
    parser.add_argument("--list", action="store_true", help="print what would be downloaded and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.list:
        for item in plan(args.layout, args.only, args.gguf):
            print(f"{item.repo_id}/{item.filename} -> {Path(args.dest) / item.dest}")
        return 0
    try:
        paths = download(args.layout, args.dest, args.only, args.gguf)
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{len(paths)} files in {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
