"""Several codecs: chosen by task/quality for images, by weights fingerprint for streams."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient
from service_fakes import FakeDetection

from services.analytics.rest import BITSTREAM_TYPE, create_app
from services.analytics.settings import Settings
from transtic.tasks import TaskBackend


def test_codecs_per_task_and_quality(
    make_settings: Callable[..., Settings],
    other_codec_checkpoint: Path,
    sample_png: bytes,
    foreign_bitstream: bytes,
    bitstream: bytes,
) -> None:
    settings = make_settings(codec_checkpoints={"detection:2": str(other_codec_checkpoint)})
    with TestClient(create_app(settings, backends=[FakeDetection()])) as c:
        info = c.get("/v1/models").json()
        assert info["qualities"] == [0, 2]
        codecs = {m["id"]: m for m in info["models"] if m["kind"] == "codec"}
        assert codecs["other"]["task"] == "detection" and codecs["other"]["quality"] == 2
        headers = {"content-type": "image/png"}
        q2 = c.post("/v1/analyze?task=detection&quality=2", content=sample_png, headers=headers)
        assert q2.json()["codec_id"] == "other" and q2.json()["quality"] == 2
        # Without a quality, the task's own codec is preferred over the general one.
        assert (
            c.post("/v1/analyze?task=detection", content=sample_png, headers=headers).json()[
                "codec_id"
            ]
            == "other"
        )
        q0 = c.post("/v1/analyze?task=detection&quality=0", content=sample_png, headers=headers)
        assert q0.json()["codec_id"] == "tiny"
        # Streams find their decoder by the weights fingerprint in their header.
        for data, codec_id in ((foreign_bitstream, "other"), (bitstream, "tiny")):
            response = c.post(
                "/v1/analyze?task=detection", content=data, headers={"content-type": BITSTREAM_TYPE}
            )
            assert response.status_code == 200 and response.json()["codec_id"] == codec_id


def test_missing_codec_weights_are_reported(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(
        codec_checkpoint="transtic_cls_q1", codec_checkpoints={"detection": "/nowhere/det.pth"}
    )
    with TestClient(create_app(settings, backends=[FakeDetection()])) as c:
        ready = c.get("/readyz")
        assert ready.status_code == 503
        message = ready.json()["error"]["message"]
        # File names, not the server's paths (those are logged).
        assert "cls_1.pth.tar" in message and "det.pth" in message and "/nowhere" not in message
        problems = [m for m in c.get("/v1/models").json()["models"] if not m["ready"]]
        assert {m["id"] for m in problems} == {"default", "detection"}


def test_with_no_codec_configured_the_shipped_codecs_serve_at_quality_3(
    make_settings: Callable[..., Settings], backends: list[TaskBackend], sample_png: bytes
) -> None:
    """A plain start is ready: every quality the package ships, uploads coded at q3 (the
    default of every entry point) unless they ask for another."""
    settings = make_settings(codec_checkpoint=None)
    with TestClient(create_app(settings, backends=backends)) as c:
        assert c.get("/readyz").status_code == 200
        info = c.get("/v1/models").json()
        codecs = {m["id"]: m["quality"] for m in info["models"] if m["kind"] == "codec"}
        assert codecs == {f"transtic_small_cls_q{q}": q for q in (1, 2, 3)}
        headers = {"content-type": "image/png"}
        plain = c.post("/v1/analyze?task=classification", content=sample_png, headers=headers)
        assert (plain.json()["codec_id"], plain.json()["quality"]) == ("transtic_small_cls_q3", 3)
        low = c.post("/v1/analyze?quality=1", content=sample_png, headers=headers)
        assert low.json()["quality"] == 1
