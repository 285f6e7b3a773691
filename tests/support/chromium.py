"""Debian's headless Chromium driven by Selenium, as the browser tests and
`scripts/dashboard_screenshots.py` both start it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

CHROMIUM = os.environ.get("MODELCERT_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("MODELCERT_CHROMEDRIVER", "/usr/bin/chromedriver")
# Flags that work in a container without a display, a GPU or network access (without the
# background-networking ones, Chromium keeps trying hosts this closed network refuses).
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1000",
)


def start_chromium(
    profile: Path, chromium: str = CHROMIUM, chromedriver: str = CHROMEDRIVER
) -> Any:
    """A fresh headless Chromium with its own profile directory, through chromedriver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    # Both paths are given: Selenium Manager must never try to download a browser or driver.
    os.environ.setdefault("SE_OFFLINE", "true")
    options = Options()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
