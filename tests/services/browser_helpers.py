"""Headless Debian Chromium driven by selenium, for the web page tests.

Importing this module skips the importing test module when selenium, chromium or
chromedriver is missing (scripts/setup_env.sh installs them).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
if CHROMIUM is None or CHROMEDRIVER is None:
    pytest.skip(
        "chromium and chromium-driver are not installed (apt-get install -y chromium "
        "chromium-driver)",
        allow_module_level=True,
    )


@contextmanager
def headless_chromium(profile_dir: Path) -> Iterator[Any]:
    """A fresh browser with its own profile, a fixed window and no network chatter."""
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-sync",
        "--window-size=1280,1400",
        "--force-device-scale-factor=1",
        f"--user-data-dir={profile_dir}",
    ):
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=str(CHROMEDRIVER))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
