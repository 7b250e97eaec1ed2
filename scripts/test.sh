#!/usr/bin/env bash
# Run the whole test suite: `bash scripts/test.sh` (extra arguments go to pytest).
#
# Same setup as run.sh (idempotent), plus the test packages and, when possible, Chromium + chromedriver
# for the browser test (apt-get). Then `python -m pytest tests`: unit, nodes, integration and browser tests.
# With CI=true (.ci/run) nothing may be skipped for lack of a tool: no chromedriver fails here, and a missing
# network-namespace tool or optional import fails its tests (tests/needs.py, tests/conftest.py).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"

# Chromium + chromedriver for the browser tests. Locally, without them those tests are skipped; with CI=true
# (.ci/run) a missing browser fails the run here, before anything else, and says why.
ensure_browser() {
  command -v chromedriver >/dev/null 2>&1 && return 0
  local apt_log="$ROOT/.cache/apt-chromium.log" why tried_apt=""
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
    log "installing chromium + chromium-driver (apt-get)"
    mkdir -p "$ROOT/.cache"
    tried_apt=1
    if (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) \
      >"$apt_log" 2>&1 && command -v chromedriver >/dev/null 2>&1; then
      return 0
    fi
    why="apt-get could not install chromium + chromium-driver (the last lines of $apt_log are above)"
  else
    why="chromedriver is not installed and apt-get is unavailable or this is not root"
  fi
  if is_ci; then
    if [ -n "$tried_apt" ]; then tail -5 "$apt_log" >&2; fi
    echo "[infinitetalk] FAIL (CI=true): $why; the browser tests cannot run." >&2
    echo "[infinitetalk] Install Chromium and its driver (apt-get install -y chromium chromium-driver) and rerun." >&2
    exit 1
  fi
  log "$why: the browser tests will be skipped (under CI=true this fails)"
}

ensure_browser
ensure_setup
if ! "$PY" -c "import pytest, selenium, websocket, requests, psutil, skimage, hypothesis, torchvision" >/dev/null 2>&1; then
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

cd "$ROOT"
export INFINITETALK_TINY_DIR="$TINY"
exec "$PY" -m pytest tests "$@"
