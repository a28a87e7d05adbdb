"""The web page in headless Chromium: upload, analyse, see the drawn result and streams;
what the page opens on, with and without streams."""

from __future__ import annotations

import base64
import io
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from http_helpers import serve_in_thread
from PIL import Image
from service_fakes import FakeDetection, serve_grpc

from services.analytics.rest import create_app
from services.analytics.settings import Settings
from services.generated.transtic.v1 import api_pb2, api_pb2_grpc
from transtic.codec import ImageCodec
from transtic.images import decode_image_bytes
from transtic.tasks import TaskBackend

pytestmark = pytest.mark.integration

BOX_GREEN = (0x00, 0xC8, 0x53)  # PALETTE[0] in app.js: category 0's box colour
BANNER = (0xFF, 0xC4, 0x00)  # the classification banner
BPP_LINE = (0x0B, 0x6B, 0xCB)  # the charts' line colours in app.js
LATENCY_LINE = (0xB3, 0x26, 0x1E)

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
def stream_stub(app: FastAPI, base_url: str) -> Iterator[api_pb2_grpc.AnalyticsStub]:
    """AnalyzeStream into the page's service (its runtime runs while base_url serves)."""
    with serve_grpc(app.state.runtime, serving=None, grace_s=1) as served:
        yield api_pb2_grpc.AnalyticsStub(served.channel)


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
        wait.until(lambda drv: loads() > seen)  # noqa: B023  (called before the loop moves on)
    wait.until(lambda drv: loads() >= 3)  # the list was rebuilt at least twice
    assert len(browser.find_elements(By.CSS_SELECTOR, "#quality option")) == before == 2
    key.clear()
    key.send_keys(Keys.TAB)
    browser.execute_script("localStorage.clear()")


def newest_row(browser: Any) -> str:
    # Read in one script: the page rebuilds the table every 2 s, which would leave a
    # row found by one WebDriver call stale by the next.
    return str(
        browser.execute_script(
            'const td = document.querySelector("#frames-table tbody tr td");'
            'return td ? td.textContent : "";'
        )
    )


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
        wait.until(lambda drv: int(canvas.get_attribute("data-points") or 0) >= 2)  # noqa: B023  (ditto)
    bpp_chart = browser.find_element(By.ID, "bpp-chart").screenshot_as_png
    assert count_colour(bpp_chart, (0x0B, 0x6B, 0xCB)) > 100  # the line is drawn
    thumbs = browser.find_elements(By.CSS_SELECTOR, "#frames-table img.thumb")
    assert thumbs and browser.execute_script("return arguments[0].naturalWidth", thumbs[0]) == 64
    assert browser.find_element(By.ID, "docs-link").get_attribute("href").endswith("/docs")
    page = tmp_path / "page.png"
    assert browser.save_screenshot(str(page)) and Image.open(page).size[0] >= 1000


# Visible <img> elements that did not load (a broken-image placeholder), and visible
# canvases still at their 1x1 initial size (an empty box where a picture should be).
# The page re-renders its thumbnails every 2 s and data: URLs decode asynchronously, so
# each image is awaited (decode() rejects for one that cannot be shown) before judging.
BROKEN_IMAGES = """const done = arguments[arguments.length - 1];
const shown = [...document.images].filter((img) => img.getClientRects().length > 0);
const name = (img) => img.alt || img.src.slice(0, 60) || "an image without src";
Promise.all(shown.map((img) => img.decode().then(
  () => (img.naturalWidth > 0 ? null : name(img)), () => name(img))))
  .then((broken) => done(broken.filter(Boolean)));"""
VISIBLE_IMAGES = "return [...document.images].filter((i) => i.getClientRects().length > 0).length;"
# Rows and lists the page rebuilds, read in one script each (see newest_row).
ROWS = """return [...document.querySelectorAll("#streams-table tbody tr")].map((tr) =>
  [tr.dataset.stream, tr.classList.contains("selected"), tr.getAttribute("aria-selected")]);"""
TEXTS = "return [...document.querySelectorAll(arguments[0])].map((e) => e.textContent);"
EMPTY_CANVASES = """return [...document.querySelectorAll("canvas")]
  .filter((c) => c.getClientRects().length > 0 && c.width <= 1).map((c) => c.id);"""


def visible_links(browser: Any) -> list[str]:
    links = browser.find_elements(By.CSS_SELECTOR, "a")
    return [str(a.get_attribute("href")) for a in links if a.is_displayed()]


def assert_only_working_links(browser: Any) -> None:
    """Every link the page shows answers 200; none guesses Grafana's compose port."""
    links = visible_links(browser)
    assert links, "the page shows no links at all"
    for href in links:
        assert ":3000" not in href
        with urllib.request.urlopen(href, timeout=30) as response:
            assert response.status == 200, href


def assert_no_placeholders(browser: Any) -> None:
    assert browser.execute_async_script(BROKEN_IMAGES) == []
    assert browser.execute_script(EMPTY_CANVASES) == []
    # The upload's result tables stay out of sight until there is a result.
    for element in ("images", "result", "timings", "stats"):
        assert not browser.find_element(By.ID, element).is_displayed(), element
    assert browser.find_element(By.ID, "analyze-hint").is_displayed()


def test_page_without_streams_says_how_to_start_one(
    make_analytics_settings: Callable[..., Settings], browser: Any
) -> None:
    # A fresh store: the service has never seen a stream.
    app = create_app(make_analytics_settings(), backends=[FakeDetection()])
    with serve_in_thread(app) as port:
        base = f"http://127.0.0.1:{port}"
        browser.get(base)
        wait = WebDriverWait(browser, 60)
        empty = browser.find_element(By.ID, "streams-empty")
        wait.until(lambda drv: empty.is_displayed())
        assert "No streams yet" in empty.text and "services.encoder stream" in empty.text
        for hidden in ("streams-list", "frames", "streams-error"):
            assert not browser.find_element(By.ID, hidden).is_displayed(), hidden
        wait.until(lambda drv: "ready" in drv.find_element(By.ID, "service-status").text)
        assert_no_placeholders(browser)
        assert_only_working_links(browser)


def coded_frames(codec_checkpoint: Path, make_png: Callable[..., bytes], count: int) -> list[bytes]:
    codec = ImageCodec.from_checkpoint(str(codec_checkpoint))
    return [
        codec.encode(decode_image_bytes(make_png(96, 128, seed=seed))).data for seed in range(count)
    ]


def stream(
    stub: api_pb2_grpc.AnalyticsStub, stream_id: str, session: str, bitstreams: list[bytes]
) -> None:
    """Send the frames with AnalyzeStream as a camera would; every one must be stored."""
    now_ms = int(time.time() * 1000)
    frames = [
        api_pb2.Frame(
            stream_id=stream_id,
            session=session,
            sequence=sequence,
            bitstream=data,
            # Captured a little before sending, as a camera's frames are.
            capture_time_unix_ms=now_ms - 40 * (len(bitstreams) - sequence),
        )
        for sequence, data in enumerate(bitstreams)
    ]
    acks = list(stub.AnalyzeStream(iter(frames), timeout=120))
    assert [(a.sequence, a.error_code) for a in acks] == [(f.sequence, 0) for f in frames]


def test_page_opens_on_the_latest_stream(
    browser: Any,
    base_url: str,
    stream_stub: api_pb2_grpc.AnalyticsStub,
    codec_checkpoint: Path,
    make_png: Callable[..., bytes],
    tmp_path: Path,
) -> None:
    bitstreams = coded_frames(codec_checkpoint, make_png, 6)
    stream(stream_stub, "yard-cam", "boot-1", bitstreams)  # the most recently active stream
    browser.get(base_url)
    wait = WebDriverWait(browser, 60)
    # No click: the page shows the latest stream's frames by itself.
    frames = browser.find_element(By.ID, "frames")
    wait.until(lambda drv: frames.get_attribute("data-stream") == "yard-cam")
    rows = browser.execute_script(ROWS)
    assert len(rows) >= 2 and rows[0] == ["yard-cam", True, "true"]
    assert [stream for stream, selected, _ in rows if selected] == ["yard-cam"]
    assert browser.find_element(By.ID, "frames-stream").text == "yard-cam"
    assert "session boot-1" in browser.find_element(By.ID, "frames-session").text
    hint = browser.find_element(By.ID, "streams-hint")
    assert hint.is_displayed() and "Click a row" in hint.text
    assert not browser.find_element(By.ID, "streams-empty").is_displayed()
    # The latest frame: its decoded picture and its labels (the classifier's top 3).
    wait.until(lambda drv: newest_row(drv) == "5")
    latest = browser.find_element(By.ID, "latest-thumb")
    assert latest.is_displayed()
    assert "frame 5" in browser.find_element(By.ID, "latest-caption").text
    labels = browser.execute_script(TEXTS, "#latest-labels li")
    assert len(labels) == 3 and all("%" in text for text in labels)
    # Both charts drawn over all six frames.
    for chart, colour in (("bpp-chart", BPP_LINE), ("latency-chart", LATENCY_LINE)):
        canvas = browser.find_element(By.ID, chart)
        assert canvas.get_attribute("data-points") == "6"
        assert count_colour(canvas.screenshot_as_png, colour) > 100, chart
    # Thumbnails of every listed frame, all loaded, and nothing broken anywhere.
    assert len(browser.execute_script(TEXTS, "#frames-table img.thumb")) == 6
    assert browser.execute_script(VISIBLE_IMAGES) == 7  # + the latest frame's picture
    assert_no_placeholders(browser)
    assert_only_working_links(browser)
    shot = tmp_path / "web-page.png"
    assert browser.save_screenshot(str(shot)) and Image.open(shot).size[0] >= 1000

    # The camera reboots: a new session starts again at sequence 0, and the page follows
    # it (was a bug: the old session's cursor, 5, hid sequences 0..5 of the new one).
    stream(stream_stub, "yard-cam", "boot-2", bitstreams[:2])
    wait.until(lambda drv: "boot-2" in drv.find_element(By.ID, "frames-session").text)
    wait.until(lambda drv: newest_row(drv) == "1")
    assert len(browser.execute_script(TEXTS, "#frames-table tbody tr")) == 2
    assert browser.find_element(By.ID, "bpp-chart").get_attribute("data-points") == "2"
