"""Triton's own HTTP client (tritonclient[http] from PyPI) against the analytics service
running the shipped default models on 127.0.0.1: health, metadata and a classification
that must be right (scikit-image's coffee photo is an espresso)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from http_helpers import serve_in_thread
from PIL import Image

from services.analytics.rest import create_app
from services.analytics.settings import Settings

pytestmark = pytest.mark.integration
httpclient = pytest.importorskip("tritonclient.http")
skdata = pytest.importorskip("skimage.data")

DEFAULT_CODEC = "transtic_small_cls_q3"  # shipped in the package, as scripts/demo.py uses it


@pytest.fixture(scope="module")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    state = tmp_path_factory.mktemp("oip")
    settings = Settings(
        codec_checkpoint=DEFAULT_CODEC,
        host="127.0.0.1",
        device="cpu",
        db_path=state / "frames.db",
        weights_cache_dir=state / "weights",
        request_timeout_s=120.0,
    )
    with serve_in_thread(create_app(settings), start_timeout_s=180) as port:
        client = httpclient.InferenceServerClient(url=f"127.0.0.1:{port}", network_timeout=180)
        try:
            yield client
        finally:
            client.close()


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_health_and_metadata(triton: Any) -> None:
    assert triton.is_server_live() and triton.is_server_ready()
    assert "binary_tensor_data" in triton.get_server_metadata()["extensions"]
    assert triton.is_model_ready("classification")
    meta = triton.get_model_metadata("classification")
    assert [i["name"] for i in meta["inputs"]] == ["INPUT"]


def test_classification_of_a_real_photo(triton: Any) -> None:
    photo = httpclient.InferInput("INPUT", [1], "BYTES")
    photo.set_data_from_numpy(np.array([png(skdata.coffee())], dtype=np.object_))
    result = triton.infer(
        "classification",
        [photo],
        outputs=[httpclient.InferRequestedOutput(n) for n in ("LABELS", "SCORES", "BPP")],
    )
    labels, scores = result.as_numpy("LABELS"), result.as_numpy("SCORES")
    assert labels[0, 0] == b"espresso", labels
    assert scores[0, 0] == scores[0].max() and 0 < result.as_numpy("BPP")[0] < 2


def test_errors_reach_the_client_as_messages(triton: Any) -> None:
    bad = httpclient.InferInput("INPUT", [1], "BYTES")
    bad.set_data_from_numpy(np.array([b"not an image"], dtype=np.object_))
    with pytest.raises(Exception, match="image") as caught:
        triton.infer("classification", [bad])
    assert type(caught.value).__name__ == "InferenceServerException"
    assert not triton.is_model_ready("nothing")
