"""What a test needs from the machine: a browser, a network namespace, an import.

On a developer's machine a missing need skips the test and says how to get it. With ``CI=true`` (what
``.ci/run`` sets) it fails the test instead: a CI run whose browser or optional imports silently vanished
would pass while proving nothing. ``tests/conftest.py`` applies the same rule to any ``importorskip``.
"""

from __future__ import annotations

import importlib
import os
import shutil
from types import ModuleType

import pytest

BROWSER_INSTALL = "apt-get install -y chromium chromium-driver (scripts/test.sh does this as root)"
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def in_ci() -> bool:
    """``CI`` set to a true value (GitHub Actions, GitLab and ``.ci/run`` set ``CI=true``)."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def missing(what: str, install: str) -> None:
    """Skip (locally) or fail (CI) because ``what`` is missing; ``install`` says how to get it."""
    if in_ci():
        pytest.fail(f"CI=true and {what}: install it with {install}", pytrace=False)
    pytest.skip(f"{what} (install it with {install}; under CI=true this fails)", allow_module_level=True)


def need_module(name: str, install: str) -> ModuleType:
    """``import name``, or skip / fail naming the package to install."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        missing(f"'{name}' cannot be imported ({exc})", install)
        raise  # not reached: missing() raises


def need_browser() -> str:
    """The chromedriver path, when it and a Chromium binary are installed."""
    driver = shutil.which("chromedriver")
    if driver is None:
        missing("chromedriver is not installed, so the browser tests cannot run", BROWSER_INSTALL)
    if not any(shutil.which(b) for b in BROWSERS):
        missing(f"no Chromium binary ({', '.join(BROWSERS)}) is installed", BROWSER_INSTALL)
    return driver


def need_network_namespace() -> None:
    """``unshare -n`` as root: a process without any network (the proof that nothing downloads)."""
    if shutil.which("unshare") is None:
        missing("'unshare' (util-linux) is not installed", "apt-get install -y util-linux")
    if os.geteuid() != 0:
        missing(
            "'unshare -n' needs root, and the tests run as a normal user", "run the tests as root (CI does)"
        )
