"""The web page in headless Chromium: upload, analyse, see the drawn result and streams."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
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
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.select import Select  # noqa: E402
from selenium.webdriver.support.wait import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def app(module_settings: Settings, backends: list[TaskBackend]) -> FastAPI:
    return create_app(module_settings, backends=backends)


@pytest.fixture(scope="module")
def base_url(app: FastAPI, stored_result: dict[str, object]) -> Iterator[str]:
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


def test_quality_list_does_not_grow_when_the_key_changes(browser: Any, base_url: str) -> None:
    # Was a bug: every key change appended the qualities again.
    browser.get(base_url)
    wait = WebDriverWait(browser, 60)
    status = browser.find_element(By.ID, "service-status")
    wait.until(lambda drv: status.get_attribute("data-loads") == "1")
    before = len(browser.find_elements(By.CSS_SELECTOR, "#quality option"))
    key = browser.find_element(By.ID, "api-key")

    def loads() -> int:
        return int(status.get_attribute("data-loads") or 0)

    for text in ("first-key", "second-key"):
        seen = loads()
        # "change" fires on leaving the field, and clearing a filled field fires one
        # too: a count can be skipped between two polls, so wait for it to grow
        key.clear()
        key.send_keys(text, Keys.TAB)
        wait.until(lambda drv, n=seen: loads() > n)
    wait.until(lambda drv: loads() >= 3)  # the list was rebuilt at least twice
    assert len(browser.find_elements(By.CSS_SELECTOR, "#quality option")) == before == 2
    key.clear()
    key.send_keys(Keys.TAB)
    browser.execute_script("localStorage.clear()")


def newest_row(browser: Any) -> str:
    rows = browser.find_elements(By.CSS_SELECTOR, "#frames-table tbody tr")
    return str(rows[0].find_elements(By.TAG_NAME, "td")[0].text) if rows else ""


def test_frames_keep_up_with_a_long_stream(
    browser: Any,
    base_url: str,
    app: FastAPI,
    stored_result: dict[str, Any],
    make_png: Callable[..., bytes],
    tmp_path: Path,
) -> None:
    # Was a bug: past 1,000 stored frames the page kept showing frames 980..999.
    jpeg = io.BytesIO()
    Image.open(io.BytesIO(make_png(48, 64, seed=3))).save(jpeg, format="JPEG")
    thumb = base64.b64encode(jpeg.getvalue()).decode()
    store = app.state.runtime.store

    def put(sequence: int) -> None:
        result = {**stored_result, "bits_per_pixel": 0.1 + (sequence % 7) / 10}
        result["timings_ms"] = {"synthesis": 5.0 + sequence % 5}
        if sequence % 2:
            result["thumbnail_jpeg_base64"] = thumb
        store.put("long-cam", sequence, "detection", result)

    for sequence in range(1100):
        put(sequence)
    browser.get(base_url)
    wait = WebDriverWait(browser, 60)
    wait.until(lambda drv: "long-cam" in drv.find_element(By.ID, "streams-table").text)
    browser.find_element(By.CSS_SELECTOR, "#streams-table tr[data-stream='long-cam']").click()
    wait.until(lambda drv: newest_row(drv) == "1099")
    put(1100)
    wait.until(lambda drv: newest_row(drv) == "1100")  # the page polls every 2 s
    # Charts of the frames seen, and thumbnails of the decoded frames.
    for chart in ("bpp-chart", "latency-chart"):
        canvas = browser.find_element(By.ID, chart)
        wait.until(lambda drv, c=canvas: int(c.get_attribute("data-points") or 0) >= 2)
    bpp_chart = browser.find_element(By.ID, "bpp-chart").screenshot_as_png
    assert count_colour(bpp_chart, (0x0B, 0x6B, 0xCB)) > 100  # the line is drawn
    thumbs = browser.find_elements(By.CSS_SELECTOR, "#frames-table img.thumb")
    assert thumbs and browser.execute_script("return arguments[0].naturalWidth", thumbs[0]) == 64
    assert browser.find_element(By.ID, "docs-link").get_attribute("href").endswith("/docs")
    assert ":3000/" in browser.find_element(By.ID, "grafana-link").get_attribute("href")
    page = tmp_path / "page.png"
    assert browser.save_screenshot(str(page)) and Image.open(page).size[0] >= 1000
