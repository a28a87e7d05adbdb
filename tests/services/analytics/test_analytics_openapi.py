"""The API document says what the service does: typed answers, problem details for every
status an operation can send, security schemes, stable operation ids."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from services.analytics.rest import create_app
from services.analytics.runtime import Runtime
from services.analytics.settings import Settings

OPERATION_IDS = {
    ("post", "/v1/analyze"): "analyze",
    ("get", "/v1/streams"): "list_streams",
    ("get", "/v1/streams/{stream_id}/frames"): "list_stream_frames",
    ("get", "/v1/streams/{stream_id}/sessions"): "list_stream_sessions",
    ("delete", "/v1/streams/{stream_id}"): "delete_stream",
    ("get", "/v1/models"): "list_models",
    ("get", "/v1/repository/models"): "list_repository_models",
    ("post", "/v1/repository/models/{name}/load"): "load_model",
    ("post", "/v1/repository/models/{name}/unload"): "unload_model",
    ("get", "/healthz"): "get_liveness",
    ("get", "/readyz"): "get_readiness",
    ("get", "/metrics"): "get_metrics",
    # The Open Inference Protocol (V2) and Triton's model control, fuzzed like /v1.
    ("get", "/v2"): "v2_server_metadata",
    ("get", "/v2/health/live"): "v2_live",
    ("get", "/v2/health/ready"): "v2_ready",
    ("get", "/v2/models/{name}"): "v2_model_metadata",
    ("get", "/v2/models/{name}/versions/{version}"): "v2_model_version_metadata",
    ("get", "/v2/models/{name}/ready"): "v2_model_ready",
    ("get", "/v2/models/{name}/versions/{version}/ready"): "v2_model_version_ready",
    ("post", "/v2/models/{name}/infer"): "v2_infer",
    ("post", "/v2/models/{name}/versions/{version}/infer"): "v2_version_infer",
    ("post", "/v2/repository/index"): "v2_repository_index",
    ("post", "/v2/repository/models/{name}/load"): "v2_load_model",
    ("post", "/v2/repository/models/{name}/unload"): "v2_unload_model",
}


def document(settings: Settings) -> dict[str, Any]:
    # Building the document needs routes only, never a started runtime.
    runtime = Runtime(settings, backends=[])
    try:
        return create_app(settings, runtime).openapi()
    finally:
        runtime.close()


def operations(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(m, p): op for p, ops in doc["paths"].items() for m, op in ops.items()}


def test_operation_ids_are_stable_names(make_settings: Callable[..., Settings]) -> None:
    ops = operations(document(make_settings()))
    assert {key: op["operationId"] for key, op in ops.items()} == OPERATION_IDS


def test_errors_are_problem_details_never_422(make_settings: Callable[..., Settings]) -> None:
    doc = document(make_settings())
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    problem = doc["components"]["schemas"]["Problem"]
    assert set(problem["required"]) >= {"type", "title", "status", "detail", "code"}
    for key, op in operations(doc).items():
        errors = {int(s): r for s, r in op["responses"].items() if int(s) >= 400}
        assert 422 not in errors and 500 in errors, key
        # V2 routes answer the protocol's {"error": ...}; the guard before them, problems.
        v2 = ["application/problem+json", "application/json"]
        for response in errors.values():
            expected = v2 if key[1].startswith("/v2") else v2[:1]
            assert list(response["content"]) == expected, key
    infer = operations(doc)[("post", "/v2/models/{name}/infer")]["responses"]
    assert {"400", "401", "404", "413", "429", "503", "504"} <= set(infer)
    analyze = operations(doc)[("post", "/v1/analyze")]["responses"]
    assert {"400", "401", "409", "413", "415", "429", "503", "504"} <= set(analyze)
    assert "Retry-After" in analyze["429"]["headers"]
    frames = operations(doc)[("get", "/v1/streams/{stream_id}/frames")]["responses"]
    assert {"400", "401", "404", "429"} <= set(frames)
    assert "503" in operations(doc)[("get", "/readyz")]["responses"]
    load = operations(doc)[("post", "/v1/repository/models/{name}/load")]["responses"]
    assert {"400", "401", "404", "409", "503"} <= set(load)
    unload = operations(doc)[("post", "/v1/repository/models/{name}/unload")]["responses"]
    assert {"400", "401", "404", "409"} <= set(unload)


def test_answers_are_typed(make_settings: Callable[..., Settings]) -> None:
    doc = document(make_settings())
    ops = operations(doc)
    ok = ops[("post", "/v1/analyze")]["responses"]["200"]["content"]["application/json"]
    assert ok["schema"] == {"$ref": "#/components/schemas/AnalyzeResponse"}
    result = doc["components"]["schemas"]["AnalyzeResponse"]
    assert {"labels", "detections", "bits_per_pixel", "codec_id", "input"} <= set(
        result["properties"]
    )
    page = ops[("get", "/v1/streams/{stream_id}/frames")]["responses"]["200"]
    assert page["content"]["application/json"]["schema"]["$ref"].endswith("/FramePage")


def test_security_schemes_follow_the_guard(make_settings: Callable[..., Settings]) -> None:
    open_doc = document(make_settings())
    keyed_doc = document(make_settings(api_keys=["k" * 32]))
    for doc in (open_doc, keyed_doc):
        schemes = doc["components"]["securitySchemes"]
        assert schemes["bearerAuth"] == {
            "type": "http",
            "scheme": "bearer",
            "description": "the API key",
        }
        assert schemes["apiKeyHeader"]["in"] == "header"
        ops = operations(doc)
        assert ops[("get", "/healthz")]["security"] == []  # probes never need a key
    keyed = operations(keyed_doc)[("post", "/v1/analyze")]["security"]
    assert keyed == [{"bearerAuth": []}, {"apiKeyHeader": []}]
    # Without keys configured, anonymous calls are accepted too: the empty requirement.
    assert {} in operations(open_doc)[("post", "/v1/analyze")]["security"]
