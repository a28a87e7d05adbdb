"""The web page in headless Chromium: upload, analyse, see the drawn result and streams."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from http_helpers import serve_in_thread
from PIL import Image

from services.analytics.rest import create_app
from services.analytics.settings import Settings
from transtic.tasks import TaskBackend

pytestmark = pytest.mark.integration

BOX_GREEN = (0x00, 0xC8, 0x53)  # PALETTE[0] in app.js: category 0's box colour
BANNER = (0xFF, 0xC4, 0x00)  # the classification banner

from browser_helpers import headless_chromium  # noqa: E402  (skips without a browser)
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.select import Select  # noqa: E402
from selenium.webdriver.support.wait import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def base_url(
    module_settings: Settings, backends: list[TaskBackend], stored_result: dict[str, object]
) -> Iterator[str]:
    app = create_app(module_settings, backends=backends)
    with serve_in_thread(app) as port:
        app.state.runtime.store.put("gate-cam", 41, "detection", stored_result)
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with headless_chromium(tmp_path_factory.mktemp("chromium-profile")) as driver:
        yield driver


def count_colour(png: bytes, colour: tuple[int, int, int], tolerance: int = 12) -> int:
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return int((np.abs(pixels - np.array(colour)) <= tolerance).all(axis=-1).sum())


def analyse(d: Any, base_url: str, image: Path, task: str) -> Any:
    d.get(base_url)
    wait = WebDriverWait(d, 60)
    wait.until(lambda drv: len(drv.find_elements(By.CSS_SELECTOR, "#task option")) >= 2)
    Select(d.find_element(By.ID, "task")).select_by_value(task)
    d.find_element(By.ID, "file").send_keys(str(image))
    d.find_element(By.ID, "analyze-button").click()
    canvas = d.find_element(By.ID, "result-canvas")
    wait.until(lambda drv: canvas.get_attribute("data-drawn") == "1")
    return canvas


def test_detection_result_is_drawn(
    browser: Any, base_url: str, tmp_path: Path, make_png: Callable[..., bytes]
) -> None:
    image = tmp_path / "scene.png"
    image.write_bytes(make_png(120, 160, seed=4))
    canvas = analyse(browser, base_url, image, "detection")
    assert canvas.get_attribute("width") == "160"
    shot = canvas.screenshot_as_png
    # The box outline (3 px around an 80x60 box) is drawn in category 0's colour.
    assert count_colour(shot, BOX_GREEN) > 300
    stats = browser.find_element(By.ID, "stats").text
    assert "bits per pixel" in stats and "compression ratio (vs. upload)" in stats
    timings = browser.find_element(By.ID, "timings").text
    assert "synthesis" in timings and "entropy_decode" in timings
    original = browser.find_element(By.ID, "original-canvas")
    assert original.get_attribute("width") == "160"


def test_classification_label_is_drawn_and_streams_listed(
    browser: Any, base_url: str, tmp_path: Path, make_png: Callable[..., bytes]
) -> None:
    image = tmp_path / "photo.png"
    image.write_bytes(make_png(96, 128, seed=5))
    canvas = analyse(browser, base_url, image, "classification")
    assert count_colour(canvas.screenshot_as_png, BANNER) > 500
    labels = browser.find_elements(By.CSS_SELECTOR, "#labels li")
    assert len(labels) == 3 and "%" in labels[0].text
    WebDriverWait(browser, 30).until(
        lambda drv: "gate-cam" in drv.find_element(By.ID, "streams-table").text
    )
    assert browser.find_element(By.ID, "error").is_displayed() is False
