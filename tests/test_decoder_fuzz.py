"""Valid containers carrying hostile range-coder payloads decode to something or fail cleanly."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transtic.bitstream import BitstreamError, encode_container
from transtic.codec import ImageCodec


@pytest.fixture(scope="module")
def codec(tiny_transtic) -> ImageCodec:
    return ImageCodec(tiny_transtic)


@pytest.fixture(scope="module")
def template(codec):
    return codec.encode(torch.rand(3, 40, 300))


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(y=st.binary(max_size=400), z=st.binary(max_size=200))
def test_random_payloads_never_crash(codec, template, y, z):
    data = encode_container(template.header, y, z)
    try:
        result = codec.decode(data)
    except BitstreamError:
        return
    assert result.image.shape == (3, 40, 300)
    assert torch.isfinite(result.image).all()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data())
def test_payload_bit_flips_never_crash(codec, template, data):
    from transtic.bitstream import decode_container

    container = decode_container(template.data)
    y = bytearray(container.y_string)
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(y) - 1))
        y[pos] ^= 1 << data.draw(st.integers(0, 7))
    stream = encode_container(container.header, bytes(y), container.z_string)
    result = codec.decode(stream)
    assert result.image.shape == (3, 40, 300)
