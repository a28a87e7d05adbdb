"""The web page with API keys required: it asks for the key, keeps it, and then works."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from http_helpers import serve_in_thread
from security_helpers import GOOD_KEY
from service_fakes import TinyDetection

from services.analytics.rest import create_app
from services.analytics.settings import Settings

pytestmark = pytest.mark.integration

from browser_helpers import headless_chromium  # noqa: E402  (skips without a browser)
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.wait import WebDriverWait  # noqa: E402


@pytest.fixture
def base_url(
    analytics_settings: Callable[..., Settings], stored_result: dict[str, object]
) -> Iterator[str]:
    app = create_app(analytics_settings(api_keys=[GOOD_KEY]), backends=[TinyDetection()])
    with serve_in_thread(app) as port:
        app.state.runtime.store.put("keyed-cam", 7, "detection", stored_result)
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    with headless_chromium(tmp_path / "profile") as driver:
        yield driver


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
