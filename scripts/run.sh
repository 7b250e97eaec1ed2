#!/usr/bin/env bash
# Start ComfyUI with this pack: `bash scripts/run.sh` (extra arguments go to ComfyUI's main.py).
#
# First run: creates .venv, provisions ComfyUI 0.3.75 into .comfyui/ and links this pack into it.
# Real weights in weights/ (official layout, and/or a ComfyUI-layout weights/models/ tree) are used when
# present; otherwise the tiny RANDOM checkpoints are generated and used (a smoke run: the videos are noise).
# Environment: PORT (default 8188), COMFYUI_DIR (default .comfyui).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"

ensure_setup
yaml="$ROOT/.cache/extra_model_paths.yaml"
if have_real_weights; then
  log "using the weights in $ROOT/weights"
  write_model_paths "$yaml" "$ROOT/weights/models" "$ROOT/weights"
else
  ensure_tiny
  echo "=================================================================================="
  echo "  SMOKE RUN WITH RANDOM WEIGHTS: no real weights in $ROOT/weights."
  echo "  The tiny random checkpoints in .cache/tiny make every node run, but the videos are"
  echo "  noise. Put the real weights in place (README, 'Weights') for real results."
  echo "=================================================================================="
  write_model_paths "$yaml" "$TINY/models" "$TINY/weights"
fi
ensure_example_inputs

args=(--listen 127.0.0.1 --port "${PORT:-8188}" --extra-model-paths-config "$yaml" --disable-auto-launch)
if ! has_cuda; then
  log "no CUDA device: starting ComfyUI with --cpu"
  args+=(--cpu)
fi
cd "$COMFY"
log "ComfyUI at http://127.0.0.1:${PORT:-8188}  (example workflows: Workflow > Browse Templates > ComfyUI-InfiniteTalk)"
exec "$PY" main.py "${args[@]}" "$@"
