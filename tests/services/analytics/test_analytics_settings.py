"""One Settings class: defaults, environment, CLI flags, validation."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from services.analytics.settings import Settings
from services.common.settings import settings_from_args


def test_defaults_are_safe() -> None:
    s = Settings()
    assert s.host == "127.0.0.1"  # not exposed beyond the machine unless asked
    assert s.task_backends == ["classification", "detection", "segmentation"]
    assert s.default_task == "classification"
    assert s.codec_checkpoint is None and s.codec_checkpoints == {}
    assert s.db_synchronous == "FULL"


def test_environment_uses_the_service_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRANSTIC_ANALYTICS_MAX_BATCH_SIZE", "3")
    monkeypatch.setenv("TRANSTIC_ANALYTICS_CODEC_CHECKPOINTS", '{"detection:2": "/w/det_2.pth"}')
    monkeypatch.setenv("TRANSTIC_ANALYTICS_TASK_BACKENDS", '["classification"]')
    monkeypatch.setenv("TRANSTIC_ANALYTICS_WEIGHTS_CACHE_DIR", "/w")
    monkeypatch.setenv("TRANSTIC_MAX_BATCH_SIZE", "99")  # another service's prefix: ignored
    s = Settings()
    assert s.max_batch_size == 3
    assert s.codec_checkpoints == {"detection:2": "/w/det_2.pth"}
    assert s.task_backends == ["classification"]
    assert s.weights_cache_dir == Path("/w")


def test_cli_flags_override_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRANSTIC_ANALYTICS_HTTP_PORT", "9000")
    monkeypatch.setenv("TRANSTIC_ANALYTICS_GRPC_PORT", "9001")
    s = settings_from_args(
        Settings,
        [
            "--http-port", "9100",
            "--task-backends", "classification,detection",
            "--codec-checkpoints", '{"classification": "/c.pth"}',
            "--max-batch-delay-ms", "2.5",
        ],
    )  # fmt: skip
    assert s.http_port == 9100 and s.grpc_port == 9001
    assert s.task_backends == ["classification", "detection"]
    assert s.codec_checkpoints == {"classification": "/c.pth"}
    assert s.max_batch_delay_ms == 2.5


@pytest.mark.parametrize(
    "overrides",
    [
        {"default_task": "captioning"},
        {"codec_checkpoints": {"ocr": "/x.pth"}},
        {"codec_checkpoints": {"detection:high": "/x.pth"}},
        {"max_batch_size": 0},
        {"db_synchronous": "OFF"},
        {"no_such_setting": 1},
    ],
)
def test_invalid_values_are_refused(overrides: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Settings(**overrides)  # type: ignore[arg-type]


def test_cli_rejects_bad_values_with_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValidationError, match="max_queue"):
        settings_from_args(Settings, ["--max-queue", "zero"])
    with pytest.raises(SystemExit):
        settings_from_args(Settings, ["--unknown-flag", "1"])
    assert "unrecognized arguments" in capsys.readouterr().err


def test_start_up_keeps_freed_memory_before_any_server_thread_exists(monkeypatch):
    """Bitstreams are decoded in server threads: glibc must put them on the retained main
    heap, which only threads created after the setting get (transtic.allocator)."""
    import logging

    from services.analytics import server

    order: list[str] = []

    class Stop(Exception):
        pass

    def credentials(settings):  # the next start-up step: stop there
        order.append("credentials")
        raise Stop

    monkeypatch.setattr(server, "retain_freed_memory", lambda: order.append("retain"))
    monkeypatch.setattr(server, "server_credentials", credentials)
    handlers, level = logging.root.handlers[:], logging.root.level
    try:
        with pytest.raises(Stop):
            server.run(Settings())
    finally:
        logging.root.handlers[:] = handlers
        logging.root.setLevel(level)
    assert order == ["retain", "credentials"]
