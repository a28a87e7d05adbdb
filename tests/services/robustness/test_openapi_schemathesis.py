"""Property tests of the REST API against its own OpenAPI document (schemathesis, in-process).

Schemathesis reads ``/openapi.json`` from the ASGI app and generates valid (positive) and
invalid (negative) requests for every operation, a bounded number each. Every answer must
be no server error, carry the content type the spec declares for its status, and match
the declared response schema where one is declared; invalid input must get a 4xx.

Schemathesis' own pytest plugin (``schema.parametrize``) does not run under the pytest
this project pins, so each operation's strategy is driven by hypothesis directly.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from services.analytics.rest import create_app
from services.analytics.runtime import Runtime
from services.analytics.streaming import FrameProcessor

from .conftest import watchdog

SEEDED_STREAM = "cam-schema"
MAX_EXAMPLES = 20  # per operation and mode: about 20 x 20 x 2 requests (plus shrinking)
OPERATION_BUDGET_S = 240.0  # watchdog per operation and mode (a hang aborts the run)
POSITIVE, NEGATIVE = GenerationMode.POSITIVE, GenerationMode.NEGATIVE
# Operations with inputs get valid and invalid requests; those without, valid ones only
# (there is nothing to make invalid: hypothesis would report the negative case unsatisfiable).
WITH_INPUTS = [
    ("POST", "/v1/analyze"),
    ("GET", "/v1/streams"),
    ("GET", "/v1/streams/{stream_id}/frames"),
    ("GET", "/v1/streams/{stream_id}/sessions"),
    ("DELETE", "/v1/streams/{stream_id}"),
    ("GET", "/v1/repository/models"),
    ("POST", "/v1/repository/models/{name}/load"),
    ("POST", "/v1/repository/models/{name}/unload"),
    # The Open Inference Protocol (V2) and Triton's model control.
    ("GET", "/v2/models/{name}"),
    ("GET", "/v2/models/{name}/versions/{version}"),
    ("GET", "/v2/models/{name}/ready"),
    ("GET", "/v2/models/{name}/versions/{version}/ready"),
    ("POST", "/v2/models/{name}/infer"),
    ("POST", "/v2/models/{name}/versions/{version}/infer"),
    ("POST", "/v2/repository/index"),
    ("POST", "/v2/repository/models/{name}/load"),
    ("POST", "/v2/repository/models/{name}/unload"),
]
WITHOUT_INPUTS = [
    ("GET", "/v1/models"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/v2"),
    ("GET", "/v2/health/live"),
    ("GET", "/v2/health/ready"),
]
OPERATIONS = WITH_INPUTS + WITHOUT_INPUTS
CASES = [
    pytest.param(method, path, mode, id=f"{method} {path} {mode.value}")
    for method, path in OPERATIONS
    for mode in ([POSITIVE, NEGATIVE] if (method, path) in WITH_INPUTS else [POSITIVE])
]
CHECKS: list[Callable[..., Any]] = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


@pytest.fixture(scope="module")
def app(runtime: Runtime, bitstream: bytes) -> FastAPI:
    # A stored stream, so that the listing and frame pages have something to show.
    frames = FrameProcessor(runtime)
    try:
        for sequence in range(3):
            outcome = frames.submit(SEEDED_STREAM, sequence, bitstream, None).result(60)
            assert outcome.error is None, outcome.error
    finally:
        frames.close()
    # The runtime is already started, so the app's lifespan owns (and closes) nothing.
    return create_app(runtime.settings, runtime)


@pytest.fixture(scope="module")
def api_schema(app: FastAPI) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def run_operation(
    api_schema: Any,
    method: str,
    path: str,
    mode: GenerationMode,
    checks: list[Any],
    n: int,
    **fixed: Any,
) -> None:
    """Up to ``n`` generated requests; ``fixed`` pins parts (e.g. ``path_parameters``)."""
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode, **fixed))
    @settings(
        max_examples=n,
        deadline=None,  # the watchdog bounds the time instead: answers are slow on a busy box
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def check(case: Any) -> None:
        case.call_and_validate(checks=checks)

    with watchdog(OPERATION_BUDGET_S):
        check()


def test_spec_lists_exactly_the_tested_operations(api_schema: Any) -> None:
    found = {
        (result.ok().method.upper(), result.ok().path) for result in api_schema.get_all_operations()
    }
    assert found == set(OPERATIONS)


@pytest.mark.parametrize(("method", "path", "mode"), CASES)
def test_rest_api_conforms_to_its_openapi(
    api_schema: Any, runtime: Runtime, method: str, path: str, mode: GenerationMode
) -> None:
    run_operation(api_schema, method, path, mode, CHECKS, MAX_EXAMPLES)
    assert runtime.ready


@pytest.mark.parametrize("mode", [POSITIVE, NEGATIVE], ids=lambda m: m.value)
def test_frames_of_a_stored_stream(api_schema: Any, mode: GenerationMode) -> None:
    # Generated stream ids never hit a stored stream: pin one, generate the rest.
    path = "/v1/streams/{stream_id}/frames"
    pinned = {"path_parameters": {"stream_id": SEEDED_STREAM}}
    seen: Counter[int] = Counter()

    def record(ctx: Any, response: Any, case: Any) -> None:
        seen[response.status_code] += 1

    run_operation(api_schema, "GET", path, mode, [*CHECKS, record], MAX_EXAMPLES, **pinned)
    assert (200 if mode == POSITIVE else 400) in seen, seen


def test_frames_since_beyond_sqlite_integers_is_a_client_error(app: FastAPI) -> None:
    # Found by this file with more examples: was a 500 (OverflowError binding to SQLite).
    client = TestClient(app)
    url = f"/v1/streams/{SEEDED_STREAM}/frames"
    assert client.get(url, params={"since": 2**63 - 1}).json()["frames"] == []
    reply = client.get(url, params={"since": 2**63})
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["code"] == "INVALID_ARGUMENT"


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/v1/analyze"), ("GET", "/v1/streams/{stream_id}/frames")],
    ids=["analyze", "frames"],
)
def test_error_statuses_are_declared(api_schema: Any, method: str, path: str) -> None:
    # Was a strict xfail: the document declared only 200 and FastAPI's 422 (never sent).
    run_operation(api_schema, method, path, POSITIVE, [status_code_conformance], 5)
