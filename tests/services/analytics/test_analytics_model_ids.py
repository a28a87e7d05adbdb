"""One codec id scheme in both services (services/common/model_ids.py): the encoder and the
analytics service give the same weights file the same id in GetInfo (and so in /v1/models,
codec_id and the metrics), and the analytics list holds each loaded codec once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from service_fakes import FakeDetection

from services.analytics.grpc_service import service_info as analytics_info
from services.analytics.runtime import Runtime
from services.analytics.settings import Settings
from services.common.model_ids import codec_model_id
from services.encoder.codecs import CodecBank
from services.encoder.server import service_info as encoder_info
from services.encoder.settings import EncoderSettings
from transtic.weights import resolve

SHIPPED = ["transtic_small_cls_q1", "transtic_small_cls_q2", "transtic_small_cls_q3"]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/weights/cls_1.pth.tar", "transtic_cls_q1"),  # a release file: its catalog name
        ("/anywhere/base_codec_4.pth.tar", "transtic_base_codec_q4"),
        ("/x/transtic_small_cls_q3.pth.tar", "transtic_small_cls_q3"),
        ("/models/site_a.pth.tar", "site_a"),  # any other file: its name, no suffixes
        ("tiny.pth", "tiny"),
        ("v1.2.ckpt", "v1.2"),
    ],
)
def test_codec_model_id(path: str, expected: str) -> None:
    assert codec_model_id(path) == expected


def codec_ids(info: Any) -> dict[str, str]:
    """fingerprint -> id of every codec GetInfo lists (and no fingerprint twice)."""
    codecs = [m for m in info.models if m.kind == "codec" and m.ready]
    fingerprints = Counter(m.fingerprint for m in codecs)
    assert all(n == 1 for n in fingerprints.values()), fingerprints
    return {m.fingerprint: m.id for m in codecs}


@pytest.fixture(scope="module")
def encoder_ids() -> dict[str, str]:
    """The encoder as deployed: the shipped catalog codecs, found by itself."""
    settings = EncoderSettings(device="cpu", tasks=["classification"], use_shipped_weights=True)
    return codec_ids(encoder_info(CodecBank.load(settings), settings))


def test_both_services_name_the_same_weights_alike(
    make_settings: Callable[..., Settings], encoder_ids: dict[str, str]
) -> None:
    assert sorted(encoder_ids.values()) == SHIPPED
    # Analytics as compose and k8s configure it: the default codec by catalog name, named
    # again per quality (q3 twice), and here one by its file path instead of its name.
    q1_file = resolve("transtic_small_cls_q1", cache_dir=None)
    settings = make_settings(
        codec_checkpoint="transtic_small_cls_q3",
        codec_checkpoints={
            "classification:1": str(q1_file),
            "classification:2": "transtic_small_cls_q2",
            "classification:3": "transtic_small_cls_q3",
        },
    )
    runtime = Runtime(settings, backends=[FakeDetection()])
    runtime.start()
    try:
        info = analytics_info(runtime)
    finally:
        runtime.close()
    listed = [m.id for m in info.models if m.kind == "codec"]
    assert sorted(listed) == SHIPPED  # each weights file once, no "#1" twin
    assert codec_ids(info) == encoder_ids  # same fingerprint, same id


def test_a_file_by_path_gets_the_same_id_in_both(
    make_settings: Callable[..., Settings], codec_checkpoint: Path
) -> None:
    """Weights outside the catalog: the file's name in both lists, and in codec_id."""
    encoder_settings = EncoderSettings(
        device="cpu", use_shipped_weights=False, checkpoints={"detection": {1: codec_checkpoint}}
    )
    encoder = codec_ids(encoder_info(CodecBank.load(encoder_settings), encoder_settings))
    runtime = Runtime(make_settings(), backends=[FakeDetection()])
    runtime.start()
    try:
        analytics = codec_ids(analytics_info(runtime))
    finally:
        runtime.close()
    assert encoder == analytics == {next(iter(encoder)): codec_checkpoint.name.split(".")[0]}
