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
  "$PY" -m pip install --quiet -r "$ROOT/scripts/requirements-test.txt"
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
