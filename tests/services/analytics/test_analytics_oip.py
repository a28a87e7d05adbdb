"""The Open Inference Protocol (V2) routes, with request and response bodies made and read
by Triton's own client library (tritonclient.http), in process."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from services.analytics.rest import create_app
from services.analytics.settings import Settings
from transtic.tasks import TaskBackend

httpclient = pytest.importorskip("tritonclient.http")
HEADER = "Inference-Header-Content-Length"


@pytest.fixture(scope="module")
def client(module_settings: Settings, backends: list[TaskBackend]) -> Iterator[TestClient]:
    with TestClient(create_app(module_settings, backends=backends)) as c:
        yield c


def infer(
    client: TestClient, model: str, items: list[bytes], outputs: list[Any] | None = None, **kw: Any
) -> Any:
    """POST a request built by tritonclient; the parsed InferResult (or the raw answer)."""
    tensor = httpclient.InferInput("INPUT", [len(items)], "BYTES")
    tensor.set_data_from_numpy(np.array(items, dtype=np.object_), binary_data=True)
    body, json_size = httpclient.InferenceServerClient.generate_request_body(
        [tensor], outputs=outputs, **kw
    )
    headers = {HEADER: str(json_size)} if json_size is not None else {}
    response = client.post(f"/v2/models/{model}/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text
    length = response.headers.get(HEADER)
    return httpclient.InferResult.from_response_body(
        response.content, header_length=int(length) if length else None
    )


def test_health_and_server_metadata(client: TestClient) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    meta = client.get("/v2").json()
    assert meta["name"] == "transtic-analytics" and "binary_tensor_data" in meta["extensions"]


def test_model_metadata_and_readiness(client: TestClient) -> None:
    meta = client.get("/v2/models/detection").json()
    assert meta["versions"] == ["1"] and meta["inputs"][0]["datatype"] == "BYTES"
    assert {o["name"] for o in meta["outputs"]} == {"LABELS", "SCORES", "BPP", "BOXES"}
    assert client.get("/v2/models/classification/versions/1/ready").status_code == 200
    # The segmenter's weights are absent in this fixture: listed, but not ready.
    unready = client.get("/v2/models/segmentation/ready")
    assert unready.status_code == 503 and "not ready" in unready.json()["error"]
    missing = client.get("/v2/models/nothing")
    assert missing.status_code == 404 and missing.json() == {"error": "no model 'nothing'"}
    assert client.get("/v2/models/detection/versions/7").status_code == 404


def test_detection_outputs_binary(client: TestClient, sample_png: bytes, bitstream: bytes) -> None:
    # An image and a bitstream in one batch; outputs requested as binary tensors.
    outputs = [httpclient.InferRequestedOutput(n, binary_data=True) for n in ("BOXES", "LABELS")]
    result = infer(client, "detection", [sample_png, bitstream], outputs)
    boxes, labels = result.as_numpy("BOXES"), result.as_numpy("LABELS")
    assert boxes.shape == (2, 1, 4) and labels.shape == (2, 1)
    # FakeDetection: one box over the middle half of the 64x64 picture.
    assert boxes[0, 0].tolist() == [16.0, 16.0, 48.0, 48.0] == boxes[1, 0].tolist()
    assert labels[0, 0] == b"thing"
    assert result.get_output("BOXES")["parameters"]["binary_data_size"] == 2 * 4 * 4
    assert result.as_numpy("SCORES") is None  # only what was asked for


def test_classification_outputs_json(client: TestClient, sample_png: bytes) -> None:
    outputs = [
        httpclient.InferRequestedOutput(n, binary_data=False)
        for n in ("LABELS", "SCORES", "CLASS_INDEX", "BPP")
    ]
    result = infer(client, "classification", [sample_png], outputs, request_id="req-7")
    labels, scores = result.as_numpy("LABELS"), result.as_numpy("SCORES")
    assert labels.shape == scores.shape == (1, 3)  # the fixture's classifier gives top 3
    assert np.all(np.diff(scores[0]) <= 0) and 0 < scores[0, 0] <= 1
    assert result.as_numpy("CLASS_INDEX").dtype == np.int64
    assert result.as_numpy("BPP")[0] > 0
    assert result.get_response()["id"] == "req-7"


def test_json_request_with_base64_bytes(client: TestClient, bitstream: bytes) -> None:
    body = {
        "inputs": [
            {
                "name": "INPUT",
                "shape": [1],
                "datatype": "BYTES",
                "data": [base64.b64encode(bitstream).decode()],
            }
        ]
    }
    answer = client.post("/v2/models/detection/infer", json=body)
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    outputs = {o["name"]: o for o in answer.json()["outputs"]}
    assert outputs["LABELS"]["data"] == ["thing"] and outputs["BOXES"]["shape"] == [1, 1, 4]


@pytest.mark.parametrize(
    ("body", "headers", "message"),
    [
        (b"{", {}, "not JSON"),
        (
            json.dumps(
                {"inputs": [{"name": "INPUT", "shape": [1], "datatype": "FP32", "data": [1.0]}]}
            ).encode(),
            {},
            "BYTES",
        ),
        (
            json.dumps(
                {"inputs": [{"name": "INPUT", "shape": [2], "datatype": "BYTES", "data": ["AAAA"]}]}
            ).encode(),
            {},
            "shape",
        ),
        (
            json.dumps(
                {"inputs": [{"name": "IMG", "shape": [1], "datatype": "BYTES", "data": ["AAAA"]}]}
            ).encode(),
            {},
            "one input",
        ),
        (
            json.dumps(
                {
                    "inputs": [
                        {
                            "name": "INPUT",
                            "shape": [1],
                            "datatype": "BYTES",
                            "data": ["not base64!"],
                        }
                    ]
                }
            ).encode(),
            {},
            "base64",
        ),
        (
            json.dumps(
                {"inputs": [{"name": "INPUT", "shape": [1], "datatype": "BYTES", "data": ["AAAA"]}]}
            ).encode(),
            {},
            "image",
        ),
        (b"{}", {HEADER: "99"}, HEADER),
    ],
    ids=["json", "datatype", "shape", "name", "base64", "not-an-image", "header-length"],
)
def test_bad_requests_are_400_with_a_message(
    client: TestClient, body: bytes, headers: dict[str, str], message: str
) -> None:
    answer = client.post("/v2/models/classification/infer", content=body, headers=headers)
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["error"] and "Traceback" not in answer.text
