# Shared helpers for run.sh and test.sh (sourced, not executed).
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
COMFY="${COMFYUI_DIR:-$ROOT/.comfyui}"
TINY="$ROOT/.cache/tiny"
export COMFYUI_DIR="$COMFY"

log() { echo "[infinitetalk] $*"; }

# CI=true (or 1/yes), as .ci/run and hosted CI set it: missing test tools fail instead of being skipped.
is_ci() { case "${CI:-}" in [Tt][Rr][Uu][Ee] | 1 | [Yy][Ee][Ss]) return 0 ;; *) return 1 ;; esac; }

ensure_setup() {
  bash "$ROOT/scripts/setup_venv.sh"
  bash "$ROOT/scripts/provision_comfyui.sh"
}

# Random tiny checkpoints with the real file names (python -m infinitetalk.tiny), made once.
ensure_tiny() {
  local stamp="$TINY/.complete"
  if [ ! -f "$stamp" ] || [ -n "$(find "$ROOT/infinitetalk/tiny" -name '*.py' -newer "$stamp" 2>/dev/null)" ]; then
    log "generating tiny random checkpoints in $TINY"
    rm -rf "$TINY"
    mkdir -p "$ROOT/.cache"
    (cd "$ROOT" && "$PY" -m infinitetalk.tiny --out "$TINY") > "$ROOT/.cache/tiny.log" 2>&1 \
      || { cat "$ROOT/.cache/tiny.log"; return 1; }
    tail -1 "$ROOT/.cache/tiny.log"
    touch "$stamp"
  fi
}

# True when the pack's weights/ folder holds real weights (anything besides README.md).
have_real_weights() {
  [ -n "$(find "$ROOT/weights" -mindepth 1 -maxdepth 1 ! -name README.md 2>/dev/null | head -1)" ]
}

# write_model_paths OUT.yaml MODELS_DIR WEIGHTS_DIR: an extra_model_paths file for ComfyUI.
# MODELS_DIR is a ComfyUI-layout tree (may be missing), WEIGHTS_DIR an official-layout tree.
write_model_paths() {
  local out="$1" models="$2" weights="$3"
  mkdir -p "$(dirname "$out")"
  {
    echo "# written by scripts/run.sh / test.sh: ComfyUI model folders for ComfyUI-InfiniteTalk"
    if [ -d "$models" ]; then
      echo "infinitetalk_models:"
      echo "  base_path: $models"
      for f in diffusion_models model_patches text_encoders clip_vision vae audio_encoders loras kokoro; do
        echo "  $f: $f"
      done
    fi
    echo "infinitetalk_official:"
    echo "  infinitetalk_weights: $weights"
  } > "$out"
}

has_cuda() {
  "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1
}

# Sample inputs (portrait, speech, short source video, two-person image) in ComfyUI's input folder.
ensure_example_inputs() {
  (cd "$ROOT" && "$PY" scripts/make_example_inputs.py "$COMFY/input")
}
