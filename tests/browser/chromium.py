"""Headless Chromium (Debian's chromium and chromedriver) for the browser tests.

A helper module, not a conftest.py: a second module named conftest would shadow the root
one for the `from conftest import ...` of the tests collected after this folder."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from conftest import missing_service

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


@contextmanager
def chromium(window: str = "820,1180") -> Iterator[Any]:
    """A headless driver, quit on exit; skips (or fails under RFIDD_REQUIRE_SERVICES=1)
    without chromium, chromedriver or selenium."""
    if CHROMIUM is None or DRIVER is None:
        missing_service("chromium and chromium-driver (Debian packages)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing_service("selenium (pip install -e '.[test]')")
    opts = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", f"--window-size={window}",
              "--disable-dev-shm-usage"):
        opts.add_argument(a)
    opts.binary_location = str(CHROMIUM)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # driver.get_log("browser")
    driver = webdriver.Chrome(service=Service(str(DRIVER)), options=opts)
    try:
        yield driver
    finally:
        driver.quit()
