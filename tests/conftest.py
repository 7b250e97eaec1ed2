"""Shared pytest fixtures.

``tiny_root``: every tiny random checkpoint (``python -m infinitetalk.tiny``: DiT + adapters in all
layouts, encoders, Kokoro), written once per test session into a temporary folder. Returns the
root ``Path``; files are at their real relative paths, e.g.
``tiny_root / "weights/InfiniteTalk/single/infinitetalk.safetensors"`` or
``tiny_root / "models/diffusion_models/wan2.1_i2v_480p_14B_fp16.safetensors"``.
Treat it as read-only: it is shared by every test of the session.

``tiny_dit_root``: the DiT/adapter files only (about 40 MB, under a second), for tests that need
nothing else. Same layout and same tensors (seed 0) as in ``tiny_root``.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from infinitetalk.tiny import write_all

    return write_all(tmp_path_factory.mktemp("tiny"), seed=0)


@pytest.fixture(scope="session")
def tiny_dit_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from infinitetalk.tiny import write_all

    return write_all(tmp_path_factory.mktemp("tiny_dit"), seed=0, parts=("dit",))
