"""Headless Chromium + selenium helpers for the browser test (and scripts/make_workflows.py)."""

from __future__ import annotations

import shutil
import time

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
)


def chromedriver_path() -> str | None:
    return shutil.which("chromedriver")


def open_editor(url: str, timeout: float = 60.0):
    """A Chrome session on the ComfyUI editor, ``window.app`` ready and the Templates dialog closed."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
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
    time.sleep(2)  # let the first-visit dialogs open, then close them
    close_dialogs(driver)
    return driver


def close_dialogs(driver) -> None:
    """Close the Templates dialog (and any other modal) so screenshots show the canvas."""
    from selenium.webdriver.common.keys import Keys

    driver.execute_script(
        "document.querySelectorAll('.p-dialog-mask').forEach(m => m.querySelectorAll("
        "'button[aria-label=Close], .p-dialog-close-button, .p-dialog-header-close').forEach(b => b.click()))"
    )
    driver.find_element("tag name", "body").send_keys(Keys.ESCAPE)
    time.sleep(0.5)


def body_text(driver) -> str:
    return driver.execute_script("return document.body.innerText") or ""
