"""Headless Chromium + selenium helpers for the browser test (and scripts/make_workflows.py).

Front-end configurations (``FRONT_ENDS``): the front end ComfyUI 0.3.75 pins (``comfyui-frontend-package``
1.32.9, installed with ComfyUI), and the newest one on PyPI (pinned in scripts/requirements-test.txt), in the
classic canvas and in the Vue node mode ("Nodes 2.0", setting ``Comfy.VueNodes.Enabled``). The newer package
is never installed into the environment (it would replace the pinned one): its wheel is downloaded and its
``static`` folder unpacked under ``.cache/frontends/<version>/``; the server gets ``--front-end-root``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FRONTENDS = REPO / ".cache" / "frontends"
PACKAGE = "comfyui-frontend-package"
VUE_SETTING = "Comfy.VueNodes.Enabled"
# a returning user: no Templates dialog over the canvas on the first visit
FIRST_VISIT_SETTINGS = {"Comfy.TutorialCompleted": True}
# the pack's script files, its extensions' names (InfiniteTalk.DoctorReport) and its log prefix (InfiniteTalk:);
# not the front end's registry look-ups of node names (api.comfy.org/comfy-nodes/InfiniteTalkSampler/node)
OUR_SCRIPTS = re.compile(r"extensions/ComfyUI-InfiniteTalk/|InfiniteTalk[.:]")

CHROME_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--window-size=1600,1000",
    "--disable-dev-shm-usage",
    "--autoplay-policy=no-user-gesture-required",
)


@dataclass(frozen=True)
class FrontEnd:
    """One browser-test configuration: a front-end version (None: the one ComfyUI pins) and a node mode."""

    name: str
    version: str | None
    vue_nodes: bool

    def static_root(self) -> str | None:
        return None if self.version is None else str(unpacked_front_end(self.version))


def newest_pinned_version() -> str:
    """The ``comfyui-frontend-package==X`` pin of scripts/requirements-test.txt."""
    text = (REPO / "scripts" / "requirements-test.txt").read_text()
    match = re.search(rf"^{PACKAGE}==([\w.]+)", text, re.M)
    if match is None:
        raise RuntimeError(f"scripts/requirements-test.txt pins no {PACKAGE}==<version>")
    return match.group(1)


FRONT_ENDS = (
    FrontEnd("pinned-classic", None, False),
    FrontEnd(f"{newest_pinned_version()}-classic", newest_pinned_version(), False),
    FrontEnd(f"{newest_pinned_version()}-vue", newest_pinned_version(), True),
)


def unpacked_front_end(version: str) -> Path:
    """``.cache/frontends/<version>/static``: the package's static folder, downloaded once (pip download)."""
    root = FRONTENDS / version
    static = root / "comfyui_frontend_package" / "static"
    if (static / "index.html").is_file():
        return static
    FRONTENDS.mkdir(parents=True, exist_ok=True)
    wheel = next(FRONTENDS.glob(f"comfyui_frontend_package-{version}-*.whl"), None)
    if wheel is None:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", f"{PACKAGE}=={version}",
             "-d", str(FRONTENDS)],
            check=True,
        )  # fmt: skip
        wheel = next(FRONTENDS.glob(f"comfyui_frontend_package-{version}-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(root, [n for n in zf.namelist() if n.startswith("comfyui_frontend_package/static/")])
    return static


def chromedriver_path() -> str | None:
    return shutil.which("chromedriver")


def open_editor(url: str, timeout: float = 60.0):
    """A Chrome session on the ComfyUI editor, ``window.app`` ready and no dialog over the canvas.

    The browser's console is recorded (``console_errors``). The server's settings decide the node mode and
    that no Templates dialog opens (see :func:`prepare_settings`).
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    for binary in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(binary)
        if path:
            options.binary_location = path
            break
    driver = webdriver.Chrome(service=Service(chromedriver_path()), options=options)
    driver.get(url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if driver.execute_script("return !!(window.app && window.app.graph && window.LiteGraph)"):
            break
        time.sleep(0.5)
    else:
        driver.quit()
        raise TimeoutError(f"the ComfyUI editor at {url} did not load within {timeout:.0f} s")
    time.sleep(2)  # let the extensions settle, then close anything left open
    close_dialogs(driver)
    return driver


def prepare_settings(server, front_end: FrontEnd) -> None:
    """Server-side user settings before the page loads: a returning user, the node mode."""
    server.post("/settings", {**FIRST_VISIT_SETTINGS, VUE_SETTING: front_end.vue_nodes})


def vue_nodes_active(driver) -> bool:
    """True when the page renders nodes in Vue (the setting is on and Vue node elements exist)."""
    return bool(
        driver.execute_script(
            "const s = window.app.extensionManager?.setting?.get?.(arguments[0]);"
            "return s === true && document.querySelectorAll('[data-node-id]').length > 0;",
            VUE_SETTING,
        )
    )


def close_dialogs(driver) -> None:
    """Close any modal dialog (and the Templates dialog) so screenshots show the canvas."""
    from selenium.webdriver.common.keys import Keys

    driver.execute_script(
        "document.querySelectorAll('.p-dialog-mask').forEach(m => m.querySelectorAll("
        "'button[aria-label=Close], .p-dialog-close-button, .p-dialog-header-close').forEach(b => b.click()))"
    )
    driver.find_element("tag name", "body").send_keys(Keys.ESCAPE)
    time.sleep(0.5)


def dialogs_open(driver) -> int:
    return int(
        driver.execute_script("return document.querySelectorAll('.p-dialog-mask, [role=dialog]').length")
    )


def console_entries(driver) -> list[dict]:
    """Browser console entries since the last call (selenium drains the log)."""
    return list(driver.get_log("browser"))


def errors_from_our_scripts(entries: list[dict]) -> list[str]:
    """SEVERE console entries that name the pack's scripts or extensions."""
    return [e["message"] for e in entries if e.get("level") == "SEVERE" and OUR_SCRIPTS.search(e["message"])]


def body_text(driver) -> str:
    return driver.execute_script("return document.body.innerText") or ""
