"""A real headless Chromium for the report tests (Debian's ``chromium`` and ``chromium-driver``, through Selenium).

:func:`open_page` loads a file and returns what a person (and the DevTools protocol) would see: console messages,
every request the page made, the sections, the charts' sizes. No network: Selenium is given the driver's path, so
it never looks for (or downloads) one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1000",
)


def chromium_paths() -> tuple[str, str] | None:
    """``(browser, driver)`` if both are installed, else ``None``."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver") or (
        "/usr/bin/chromedriver" if os.path.exists("/usr/bin/chromedriver") else None
    )
    return (browser, driver) if browser and driver else None


_OUTSIDE = frozenset({"http", "https", "ws", "wss", "ftp", "file", "blob", "filesystem"})


@dataclass
class PageLoad:
    """What loading one page showed."""

    url: str
    console: list[dict[str, Any]] = field(default_factory=list)
    requests: list[str] = field(
        default_factory=list
    )  # every URL the page asked for (the page itself excluded)
    blocked: list[str] = field(default_factory=list)  # requests that failed, with the reason
    ready: str | None = None


@contextmanager
def chromium() -> Iterator[Any]:
    """A Selenium-driven headless Chromium with a fresh, empty profile; quit on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    paths = chromium_paths()
    if paths is None:
        raise RuntimeError(
            "chromium and chromedriver are not installed (apt-get install chromium chromium-driver)"
        )
    browser, driver_path = paths
    profile = tempfile.mkdtemp(prefix="onnxscope-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for flag in FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={profile}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
    try:
        driver.get("about:blank")
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def load(driver: Any, path: str | os.PathLike[str], timeout: float = 30.0) -> PageLoad:
    """Open ``path`` (a local file), wait until the page's script says it is ready, and collect the logs."""
    from selenium.webdriver.support.ui import WebDriverWait

    url = Path(path).resolve().as_uri()
    driver.get_log("browser")  # drop what earlier pages left
    driver.get_log("performance")
    driver.get(url)
    WebDriverWait(driver, timeout).until(
        lambda d: d.execute_script("return document.body.dataset.ready || null")
    )
    out = PageLoad(url, ready=driver.execute_script("return document.body.dataset.ready"))
    out.console = driver.get_log("browser")
    failed: dict[str, str] = {}
    urls: dict[str, str] = {}
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        params = msg.get("params", {})
        if msg["method"] == "Network.requestWillBeSent":
            req = params["request"]["url"]
            # this page's requests, and anything at all leaving for a network or another file
            if params.get("documentURL") == url or req.split(":", 1)[0] in _OUTSIDE:
                urls[params["requestId"]] = req
        elif msg["method"] == "Network.loadingFailed":
            failed[params["requestId"]] = params.get("blockedReason") or params.get("errorText", "")
    # data: URLs (the PNGs inside the charts) are read from the page itself, not requested from anywhere
    out.requests = [u for u in urls.values() if u != url and not u.startswith("data:")]
    out.blocked = [f"{urls.get(k, '?')}: {v}" for k, v in failed.items()]
    return out


def screenshot(
    driver: Any, path: str | os.PathLike[str], width: int = 1280, height: int | None = None
) -> str:
    """Write a PNG of the page (the whole page when ``height`` is None, up to 6000 px)."""
    if height is None:
        height = min(6000, int(driver.execute_script("return document.documentElement.scrollHeight")))
    driver.set_window_size(width, height)
    driver.save_screenshot(os.fspath(path))
    return os.fspath(path)
