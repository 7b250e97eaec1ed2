"""Shared pytest fixtures.

``tiny_root``: every tiny random checkpoint (``python -m infinitetalk.tiny``: DiT + adapters in all
layouts, encoders, Kokoro), written once per test session into a temporary folder. Returns the
root ``Path``; files are at their real relative paths, e.g.
``tiny_root / "weights/InfiniteTalk/single/infinitetalk.safetensors"`` or
``tiny_root / "models/diffusion_models/wan2.1_i2v_480p_14B_fp16.safetensors"``.
Treat it as read-only: it is shared by every test of the session.

``tiny_dit_root``: the DiT/adapter files only (about 40 MB, under a second), for tests that need
nothing else. Same layout and same tensors (seed 0) as in ``tiny_root``.

Under ``CI=true`` a test skipped because an import failed (``pytest.importorskip``) fails instead, like the
needs of ``tests/needs.py`` (browser, network namespace, optional imports): in CI nothing may vanish silently.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.needs import in_ci

IMPORT_SKIP = "could not import"  # the reason pytest.importorskip gives


def _fail_import_skip(report) -> None:
    """Under CI=true, turn a skip caused by a failed import into a failure saying so."""
    if in_ci() and report.skipped and IMPORT_SKIP in str(report.longrepr):
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"CI=true and an import failed, so the test would be skipped: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_import_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _fail_import_skip(outcome.get_result())


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from infinitetalk.tiny import write_all

    return write_all(tmp_path_factory.mktemp("tiny"), seed=0)


@pytest.fixture(scope="session")
def tiny_dit_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from infinitetalk.tiny import write_all

    return write_all(tmp_path_factory.mktemp("tiny_dit"), seed=0, parts=("dit",))
