"""POST /v1/analyze with the options as multipart form fields beside the file, as
``curl -F file=@photo.jpg -F task=detection`` sends them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from services.analytics.rest import create_app
from services.analytics.settings import Settings
from transtic.tasks import TaskBackend

from .test_analytics_rest import error_of


@pytest.fixture(scope="module")
def client(module_settings: Settings, backends: list[TaskBackend]) -> Iterator[TestClient]:
    with TestClient(create_app(module_settings, backends=backends)) as c:
        yield c


def post_form(client: TestClient, png: bytes, fields: dict[str, str], query: str = "") -> object:
    return client.post(
        f"/v1/analyze{query}", data=fields, files={"file": ("photo.png", png, "image/png")}
    )


def test_task_and_return_image_as_form_fields(client: TestClient, sample_png: bytes) -> None:
    response = post_form(client, sample_png, {"task": "detection", "return_image": "true"})
    assert response.status_code == 200, response.text  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    assert body["task"] == "detection" and len(body["detections"]) == 1
    assert body["image_png_base64"]


def test_the_same_option_in_query_and_form_must_agree(
    client: TestClient, sample_png: bytes
) -> None:
    agreeing = post_form(client, sample_png, {"task": "detection"}, "?task=detection")
    assert agreeing.json()["task"] == "detection"  # type: ignore[attr-defined]
    clashing = post_form(client, sample_png, {"task": "detection"}, "?task=classification")
    message = error_of(clashing, 400, "INVALID_ARGUMENT")
    assert "'task'" in message and "query parameter" in message and "form field" in message
    clashing = post_form(client, sample_png, {"return_image": "no"}, "?return_image=true")
    assert "return_image" in error_of(clashing, 400, "INVALID_ARGUMENT")


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"tsak": "detection"}, "unexpected form field 'tsak'"),
        ({"task": "nonsense"}, "unknown task 'nonsense'"),
        ({"quality": "high"}, "'quality' must be 0-255"),
        ({"quality": "300"}, "'quality' must be 0-255"),
        ({"return_image": "maybe"}, "'return_image' must be true or false"),
    ],
)
def test_bad_form_fields_are_refused_with_a_clear_message(
    client: TestClient, sample_png: bytes, fields: dict[str, str], needle: str
) -> None:
    """Never silently ignored: before, any field but 'file' was dropped and the default
    task answered."""
    assert needle in error_of(post_form(client, sample_png, fields), 400, "INVALID_ARGUMENT")


def test_an_option_given_twice_in_the_form_is_refused(
    client: TestClient, sample_png: bytes
) -> None:
    response = client.post(
        "/v1/analyze",
        data={"task": ["detection", "classification"]},
        files={"file": ("photo.png", sample_png, "image/png")},
    )
    message = error_of(response, 400, "INVALID_ARGUMENT")
    # Said as what it is: the field is known, but given twice.
    assert "'task' is repeated" in message and "unexpected" not in message


def test_the_api_schema_lists_the_form_fields(client: TestClient) -> None:
    body = client.get("/openapi.json").json()["paths"]["/v1/analyze"]["post"]["requestBody"]
    form = body["content"]["multipart/form-data"]["schema"]["properties"]
    assert set(form) == {"file", "task", "quality", "return_image"}
