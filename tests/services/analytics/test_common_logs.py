"""services.common.logs (text and JSON lines with request fields) and
services.common.request_ids (what a client may send as a request id)."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from services.analytics.settings import Settings
from services.common import request_ids
from services.common.logs import JsonFormatter, TextFormatter, log_context, make_formatter
from services.common.settings import settings_from_args
from services.encoder.cli import build_parser
from services.encoder.cli import settings_from_args as encoder_settings_from_args
from services.encoder.settings import EncoderSettings


@pytest.fixture
def capture() -> Iterator[tuple[logging.Logger, io.StringIO, logging.StreamHandler[io.StringIO]]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("test.logs")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield logger, stream, handler
    finally:
        logger.removeHandler(handler)


def test_json_lines_carry_the_fields_and_the_request(capture: tuple) -> None:  # type: ignore[type-arg]
    logger, stream, handler = capture
    handler.setFormatter(JsonFormatter())
    logger.info("plain %s", "one")
    with log_context(request_id="req-1"):
        logger.warning("in a request\nsecond line")
        # extra= wins over the context (a frame logged from a shared worker thread)
        logger.info("frame", extra={"request_id": "req-2", "stream_id": "cam", "sequence": 0})
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("failed")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 4  # a newline in a message stays inside its JSON string
    records = [json.loads(line) for line in lines]
    for record in records:
        assert {"timestamp", "level", "logger", "message"} <= set(record)
        assert record["logger"] == "test.logs" and record["timestamp"].endswith("+00:00")
    assert records[0]["message"] == "plain one" and "request_id" not in records[0]
    assert records[1]["level"] == "WARNING" and records[1]["request_id"] == "req-1"
    assert records[1]["message"] == "in a request\nsecond line"
    assert {k: records[2][k] for k in ("request_id", "stream_id", "sequence")} == {
        "request_id": "req-2",
        "stream_id": "cam",
        "sequence": 0,
    }
    assert "request_id" not in records[3] and "ValueError: boom" in records[3]["exception"]


def test_text_lines_append_the_request_fields(capture: tuple) -> None:  # type: ignore[type-arg]
    logger, stream, handler = capture
    handler.setFormatter(make_formatter("text"))
    assert isinstance(handler.formatter, TextFormatter)
    logger.info("no request")
    with log_context(request_id="abc", stream_id="cam"):
        logger.info("with one")
    first, second = stream.getvalue().splitlines()
    assert first.endswith("test.logs: no request")
    assert second.endswith("test.logs: with one [request_id=abc stream_id=cam]")


def test_the_context_ends_with_its_block_and_stays_in_its_thread() -> None:
    seen: list[dict[str, object]] = []
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "m", None, None)
    from services.common.logs import context_fields

    with log_context(request_id="outer"):
        with log_context(sequence=3):
            seen.append(context_fields(record))
        seen.append(context_fields(record))
        worker = threading.Thread(target=lambda: seen.append(context_fields(record)))
        worker.start()
        worker.join()
    seen.append(context_fields(record))
    assert seen == [{"request_id": "outer", "sequence": 3}, {"request_id": "outer"}, {}, {}]


@pytest.mark.parametrize(
    "good", ["a", "0f3c9e2a-1b4d-4c8e-9f00-123456789abc", "cam-7:frame.12~x_y", "x" * 128]
)
def test_safe_request_ids_are_kept(good: str) -> None:
    assert request_ids.accept(good) == good
    assert request_ids.accept(good.encode()) == good


@pytest.mark.parametrize(
    "bad",
    ["", "x" * 129, "new\nline", "\x1b[31mred", "tab\there", "sp ace", "semi;colon", "é", b"\xff"],
)
def test_unsafe_request_ids_are_replaced_and_not_logged(
    bad: str | bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="services.common.request_ids"):
        replaced = request_ids.accept(bad)
    assert request_ids.is_valid(replaced) and len(replaced) == 32
    text = caplog.text
    raw = bad.decode("latin-1") if isinstance(bad, bytes) else bad
    if raw:
        assert raw not in text and "refused a client request id" in text and replaced in text


def test_frame_ids_fall_back_to_the_call_id_and_sequence() -> None:
    assert request_ids.for_frame("edge-1", "call", 5) == "edge-1"
    assert request_ids.for_frame("", "call", 5) == "call.5"
    assert request_ids.for_frame("bad id", "call", 5) == "call.5"
    derived = request_ids.for_frame("", "c" * 128, 2**63 - 1)
    assert request_ids.is_valid(derived) and derived.endswith(f".{2**63 - 1}")
    metadata = [("authorization", "Bearer k"), ("x-request-id", "m-1")]
    assert request_ids.from_metadata(metadata) == "m-1"
    assert len(request_ids.from_metadata([])) == 32


def test_both_services_take_log_format_as_setting_env_and_flag(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings().log_format == EncoderSettings().log_format == "text"
    assert settings_from_args(Settings, ["--log-format", "json"]).log_format == "json"
    monkeypatch.setenv("TRANSTIC_ENCODER_LOG_FORMAT", "json")
    assert EncoderSettings().log_format == "json"
    monkeypatch.delenv("TRANSTIC_ENCODER_LOG_FORMAT")
    for command in ("serve", "stream"):
        args = build_parser().parse_args([command, "--log-format", "json"])
        assert encoder_settings_from_args(args).log_format == "json"
    with pytest.raises(ValidationError):
        Settings(log_format="xml")  # type: ignore[arg-type]
