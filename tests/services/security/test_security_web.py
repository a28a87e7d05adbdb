"""The web page with API keys required: it asks for the key, keeps it, and then works."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from security_helpers import GOOD_KEY, TinyDetection

from services.analytics.rest import create_app
from services.analytics.settings import Settings

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
if CHROMIUM is None or CHROMEDRIVER is None:
    pytest.skip("chromium and chromium-driver are not installed", allow_module_level=True)

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.wait import WebDriverWait  # noqa: E402


@pytest.fixture
def base_url(
    analytics_settings: Callable[..., Settings], stored_result: dict[str, object]
) -> Iterator[str]:
    app = create_app(analytics_settings(api_keys=[GOOD_KEY]), backends=[TinyDetection()])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    app.state.runtime.store.put("keyed-cam", 7, "detection", stored_result)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(30)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-sync",
        "--disable-background-networking",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(
        options=options, service=webdriver.ChromeService(executable_path=str(CHROMEDRIVER))
    )
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def test_page_sends_the_key_entered_by_the_user(browser: Any, base_url: str) -> None:
    wait = WebDriverWait(browser, 30)
    browser.get(base_url)
    status = browser.find_element(By.ID, "service-status")
    wait.until(lambda d: "API key" in status.text)  # the 401 message, shown to the user
    key_input = browser.find_element(By.ID, "api-key")
    key_input.send_keys(GOOD_KEY, Keys.TAB)  # "change" fires on leaving the field
    wait.until(lambda d: status.text.startswith("ready on"))
    wait.until(lambda d: "keyed-cam" in d.find_element(By.ID, "streams-table").text)
    # Kept in this browser: a reload works without typing it again.
    browser.refresh()
    wait.until(lambda d: d.find_element(By.ID, "service-status").text.startswith("ready on"))
    assert browser.find_element(By.ID, "api-key").get_attribute("value") == GOOD_KEY
