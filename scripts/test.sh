#!/usr/bin/env bash
# Run the whole test suite: `bash scripts/test.sh` (extra arguments go to pytest).
#
# Same setup as run.sh (idempotent), plus the test packages and, when possible, Chromium + chromedriver
# for the browser test (apt-get). Then `python -m pytest tests`: unit, nodes, integration and browser tests.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"

ensure_setup
if ! "$PY" -c "import pytest, selenium, websocket, requests, psutil, skimage, hypothesis" >/dev/null 2>&1; then
  log "installing test packages"
  # everything but the newest front end, which the browser tests unpack beside the pinned one
  mkdir -p "$ROOT/.cache"
  grep -v '^comfyui-frontend-package' "$ROOT/scripts/requirements-test.txt" > "$ROOT/.cache/requirements-test.txt"
  "$PY" -m pip install --quiet -r "$ROOT/.cache/requirements-test.txt"
fi
front_end="$(sed -n 's/^comfyui-frontend-package==\([0-9.]*\).*/\1/p' "$ROOT/scripts/requirements-test.txt")"
if [ -n "$front_end" ] && ! ls "$ROOT"/.cache/frontends/comfyui_frontend_package-"$front_end"-*.whl >/dev/null 2>&1; then
  log "downloading comfyui-frontend-package $front_end for the browser tests (not installed)"
  "$PY" -m pip download --quiet --no-deps "comfyui-frontend-package==$front_end" -d "$ROOT/.cache/frontends" \
    || log "could not download comfyui-frontend-package $front_end: the browser tests will try again"
fi
ensure_tiny

if ! command -v chromedriver >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
    log "installing chromium + chromium-driver (apt-get)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) \
      >/dev/null 2>&1 || log "could not install chromium: the browser test will be skipped"
  else
    log "chromedriver missing and apt-get unavailable (or not root): the browser test will be skipped"
  fi
fi

cd "$ROOT"
export INFINITETALK_TINY_DIR="$TINY"
exec "$PY" -m pytest tests "$@"
