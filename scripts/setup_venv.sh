#!/usr/bin/env bash
# Create .venv (if missing) with torch and this pack's requirements. Idempotent and fast when done.
#
# Usage: bash scripts/setup_venv.sh
#   PYTHON_BIN=python3.11   interpreter used to create the venv
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
TORCH_SPEC="torch==2.14.1 torchvision==0.29.1"
STAMP="$VENV/.requirements.sha1"

log() { echo "[setup] $*"; }

if [ ! -x "$PY" ]; then
  log "creating $VENV"
  "${PYTHON_BIN:-python3}" -m venv "$VENV"
  "$PY" -m pip install --quiet --upgrade pip
fi

if ! "$PY" -c "import torch, torchvision" >/dev/null 2>&1; then
  log "installing $TORCH_SPEC"
  # shellcheck disable=SC2086
  "$PY" -m pip install --quiet $TORCH_SPEC
fi

want="$(cat "$ROOT/requirements.txt" | sha1sum | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$want" ]; then
  log "installing requirements.txt"
  "$PY" -m pip install --quiet -r "$ROOT/requirements.txt"
  echo "$want" > "$STAMP"
else
  log "requirements already installed"
fi
