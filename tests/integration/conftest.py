"""Session fixtures: the provisioned ComfyUI (reused from .comfyui/), the tiny checkpoints, one live server.

The server runs ``main.py --cpu`` on 127.0.0.1 with an extra_model_paths file pointing at the tiny models and
its own input/output/temp folders; it is stopped at the end of the session whatever happens.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .harness import ComfyServer, ensure_comfyui


@pytest.fixture(scope="session")
def tiny_models(request) -> Path:
    """INFINITETALK_TINY_DIR (set by scripts/test.sh to .cache/tiny) when complete, else a fresh tiny set."""
    env = os.environ.get("INFINITETALK_TINY_DIR")
    if env and (Path(env) / "models" / "vae").is_dir():
        return Path(env).resolve()
    return request.getfixturevalue("tiny_root")


@pytest.fixture(scope="session")
def comfy_server(tiny_models, tmp_path_factory):
    ensure_comfyui()
    server = ComfyServer(tmp_path_factory.mktemp("comfy_server"), tiny_models)
    server.start()
    try:
        yield server
    finally:
        server.stop()
