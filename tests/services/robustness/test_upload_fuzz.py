"""Fuzzing the image upload path: the decoder itself, then ``POST /v1/analyze`` in-process.

Random bytes, truncations, bit flips (with and without repaired PNG checksums), splices
and repetitions of valid PNG/JPEG/WebP/GIF/BMP/TIFF files, headers declaring absurd
dimensions, real decompression bombs and wrong content types. Every case must end in a
valid image or the typed error (``ImageError``; over REST a 4xx JSON error with a message),
never a 500 and never a hang; the service answers normally afterwards.

Example counts are fixed and derandomized (about 200 in all); each example has a deadline
and each test a watchdog that aborts the run (with every thread's stack) if it hangs.
"""

from __future__ import annotations

import resource
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.analytics.rest import BITSTREAM_TYPE, create_app
from services.analytics.runtime import Runtime
from transtic.images import DEFAULT_MAX_PIXELS, ImageError, decode_image_bytes

from .conftest import watchdog
from .image_inputs import (
    absurd_headers,
    mutated_files,
    png_absurd,
    png_bomb,
    png_metadata_bomb,
    seed_files,
)

# Pillow's TIFF reader warns about the corrupt tags it skips: expected here.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:PIL.TiffImagePlugin")
SEEDS = seed_files()
FUZZ_MAX_PIXELS = 2**22  # direct decoding: a valid fuzzed image is at most 48 MB as floats
TEST_BUDGET_S = 300.0  # watchdog per test: far above the expected time, far below "forever"
MAGICS = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"RIFF\x00\x00\x00\x00WEBP", b"GIF89a", b"BM"]
MAGICS += [b"II*\x00", b"MM\x00*", b"\x00\x00\x01\x00", b"8BPS", b"P6\n"]  # TIFF, ICO, PSD, PPM
ERROR_CODES = {400: "INVALID_ARGUMENT", 409: "FAILED_PRECONDITION"}
ERROR_CODES |= {413: "PAYLOAD_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE"}


def fuzz_settings(examples: int, deadline_s: float) -> Any:
    return settings(
        max_examples=examples,
        deadline=timedelta(seconds=deadline_s),
        derandomize=True,  # the same examples on every run: CI stays reproducible
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def decoded_or_refused(data: bytes, max_pixels: int = FUZZ_MAX_PIXELS) -> torch.Tensor | None:
    """The decoded image (checked) or None for an ImageError; anything else fails."""
    try:
        image = decode_image_bytes(data, max_pixels=max_pixels)
    except ImageError as exc:
        assert str(exc), "an ImageError needs a message"
        return None
    assert image.dtype == torch.float32 and image.dim() == 3 and image.shape[0] == 3
    height, width = image.shape[1:]
    assert 1 <= height * width <= max_pixels
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    return image


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


# -- the decoder ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(SEEDS))
def test_seed_files_decode(name: str) -> None:
    image = decoded_or_refused(SEEDS[name])
    assert image is not None and tuple(image.shape) == (3, 32, 48)


@fuzz_settings(examples=40, deadline_s=5)
@given(prefix=st.sampled_from([b"", *MAGICS]), tail=st.binary(max_size=2048))
def test_random_bytes(prefix: bytes, tail: bytes) -> None:
    with watchdog(TEST_BUDGET_S):
        decoded_or_refused(prefix + tail)


@fuzz_settings(examples=70, deadline_s=5)
@given(data=mutated_files(SEEDS))
def test_mutated_files(data: bytes) -> None:
    with watchdog(TEST_BUDGET_S):
        decoded_or_refused(data)


@fuzz_settings(examples=40, deadline_s=5)
@given(case=absurd_headers(SEEDS["jpeg"]))
def test_absurd_dimensions(case: tuple[str, int, int, bytes]) -> None:
    fmt, width, height, data = case
    with watchdog(TEST_BUDGET_S):
        image = decoded_or_refused(data)
    if abs(width * height) > FUZZ_MAX_PIXELS:
        assert image is None, f"{fmt} declaring {width}x{height} was decoded"


BOMBS = {
    # declared pixels far above Pillow's own bomb limit (2 x 89 MP)
    "png 40000x40000 1-bit (1.6 GP)": lambda: png_bomb(40000, 40000),
    # above the caller's limit (64 MP by default) but below Pillow's warning (89 MP)
    "png 8200x8200 1-bit (67 MP)": lambda: png_bomb(8200, 8200),
    "png header 100000x100000, tiny IDAT": lambda: png_absurd(100_000, 100_000),
    "png zTXt inflating to 64 MB": lambda: png_metadata_bomb(b"zTXt"),
    "png iCCP inflating to 64 MB": lambda: png_metadata_bomb(b"iCCP"),
}


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_decompression_bombs_are_refused_cheaply(name: str) -> None:
    data = BOMBS[name]()
    assert len(data) < 300_000, "the bomb is small on disk and on the wire"
    before = peak_rss_mb()
    start = time.perf_counter()
    with watchdog(60), pytest.raises(ImageError) as refused:
        decode_image_bytes(data, max_pixels=DEFAULT_MAX_PIXELS)
    assert time.perf_counter() - start < 5.0
    assert peak_rss_mb() - before < 200, "the bomb was (partly) inflated"
    assert str(refused.value)


# -- the REST upload -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def client(runtime: Runtime, bitstream: bytes) -> Iterator[TestClient]:
    with TestClient(create_app(runtime.settings, runtime)) as c:
        # Warm up the codec and classifier, so the first example's deadline is fair.
        reply = c.post("/v1/analyze", content=SEEDS["png"], headers={"content-type": "image/png"})
        assert reply.status_code == 200, reply.text
        yield c


@pytest.fixture(scope="module")
def rest_seeds(bitstream: bytes) -> dict[str, bytes]:
    # A few mutated bitstreams too: the body is sniffed for the TransTIC magic.
    return {**SEEDS, "transtic": bitstream}


def check_answer(response: Any, sent: bytes) -> dict[str, Any]:
    """A result (200) or a typed 4xx error with a message; never a 5xx."""
    assert response.status_code < 500, response.text
    body: dict[str, Any] = response.json()
    if response.status_code == 200:
        assert body["task"] == "classification" and body["labels"], body
        assert body["input"]["bytes"] == len(sent) and body["bitstream_bytes"] > 0
        return body
    # RFC 9457 problem details with the service's stable error code
    assert response.headers["content-type"].startswith("application/problem+json"), body
    assert {"type", "title", "status", "detail", "code"} <= set(body), body
    assert body["status"] == response.status_code, body
    assert body["code"] == ERROR_CODES.get(response.status_code), (response.status_code, body)
    assert body["detail"] and "Traceback" not in body["detail"]
    return body


def post(client: TestClient, data: bytes, content_type: str, multipart: bool) -> Any:
    if multipart:
        return client.post("/v1/analyze", files={"file": ("upload", data, content_type)})
    return client.post("/v1/analyze", content=data, headers={"content-type": content_type})


def test_rest_mutated_uploads(client: TestClient, rest_seeds: dict[str, bytes]) -> None:
    @fuzz_settings(examples=40, deadline_s=30)
    @given(
        data=mutated_files(rest_seeds),
        content_type=st.sampled_from(["image/png", "image/jpeg", "application/octet-stream"]),
        multipart=st.booleans(),
    )
    def run(data: bytes, content_type: str, multipart: bool) -> None:
        if not data:
            return
        response = post(client, data, content_type, multipart)
        check_answer(response, data)
        seen[response.status_code] += 1

    seen: Counter[int] = Counter()
    with watchdog(TEST_BUDGET_S):
        run()
    print("mutated uploads, statuses:", dict(seen))
    assert {200, 400} <= set(seen), "the fuzzing should reach both results and refusals"


CONTENT_TYPES = [
    "",
    "text/plain",
    "application/json",
    "application/x-www-form-urlencoded",
    "image/",
    "IMAGE/PNG",
    "image/png; charset=utf-8",
    "image/svg+xml",
    "image/png, image/jpeg",
    "multipart/form-data",
    "multipart/form-data; boundary=",
    "multipart/form-data; boundary=zzz",
    BITSTREAM_TYPE,
    "*/*",
    ";;;",
]


def test_rest_content_types(client: TestClient, rest_seeds: dict[str, bytes]) -> None:
    header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)

    @fuzz_settings(examples=30, deadline_s=30)
    @given(
        content_type=st.one_of(st.sampled_from(CONTENT_TYPES), header_text),
        name=st.sampled_from(["png", "jpeg", "webp-lossy", "transtic"]),
        junk=st.booleans(),
    )
    def run(content_type: str, name: str, junk: bool) -> None:
        data = rest_seeds[name][:40] if junk else rest_seeds[name]
        response = client.post("/v1/analyze", content=data, headers={"content-type": content_type})
        check_answer(response, data)
        seen[response.status_code] += 1

    seen: Counter[int] = Counter()
    with watchdog(TEST_BUDGET_S):
        run()
    print("content types, statuses:", dict(seen))
    assert {200, 400, 415} <= set(seen)


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_rest_refuses_bombs(client: TestClient, name: str) -> None:
    data = BOMBS[name]()
    start = time.perf_counter()
    with watchdog(60):
        response = post(client, data, "image/png", multipart=name.endswith("bit (67 MP)"))
    assert time.perf_counter() - start < 10.0
    body = check_answer(response, data)
    assert response.status_code == 400, body


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'--zzz\r\nContent-Disposition: form-data; name="file"\r\n\x00\r\n', 400),
        (b"\r\n".join([b"--zzz", b"Content-Disposition: form-data; name=file"] * 3), 400),
        (b"", 400),
    ],
    ids=["bad header", "unterminated parts", "empty"],
)
def test_rest_malformed_multipart(client: TestClient, body: bytes, code: int) -> None:
    response = client.post(
        "/v1/analyze", content=body, headers={"content-type": "multipart/form-data; boundary=zzz"}
    )
    check_answer(response, body)
    assert response.status_code == code


def test_rest_two_files_is_a_client_error(client: TestClient) -> None:
    files = [
        ("file", ("a.png", SEEDS["png"], "image/png")),
        ("file", ("b.png", SEEDS["png"], "image/png")),
    ]
    response = client.post("/v1/analyze", files=files)
    check_answer(response, b"")
    assert response.status_code == 400


def test_service_still_answers_after_the_fuzzing(client: TestClient, runtime: Runtime) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    reply = post(client, SEEDS["jpeg"], "image/jpeg", multipart=True)
    assert reply.status_code == 200 and reply.json()["labels"], reply.text
    internal = runtime.metrics.total(runtime.metrics.errors, code="INTERNAL")
    assert internal == 0, "some upload ended in an internal error (see the log)"
    assert runtime.batcher.depth == 0
