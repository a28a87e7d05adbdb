"""The per-request size budget: refused before any pixel is decoded, coded or resized."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from transtic.bitstream import (
    AlignMode,
    BitstreamError,
    EntropyParamMode,
    StreamHeader,
    encode_container,
)
from transtic.codec import ImageCodec
from transtic.images import (
    ImageError,
    ImageTooLargeError,
    check_size_budget,
    decode_image_bytes,
)
from transtic.tasks import preprocess


def png(height: int, width: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((height, width, 3), np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def codec(tiny_transtic) -> ImageCodec:
    return ImageCodec(tiny_transtic, max_pixels=2**24, max_aspect_ratio=16)


def test_the_coded_size_is_what_counts():
    # 4000x300 is 1.2 MP but coded as 4096x512 = 2.1 MP.
    check_size_budget(300, 4000, max_pixels=4096 * 512)
    with pytest.raises(ImageTooLargeError, match="coded as 4096x512"):
        check_size_budget(300, 4000, max_pixels=4096 * 512 - 1)


@pytest.mark.parametrize(("height", "width"), [(1, 8192), (32768, 1), (1, 4096), (17, 300)])
def test_slivers_are_refused(height, width):
    with pytest.raises(ImageError, match="aspect ratio"):
        check_size_budget(height, width, max_pixels=2**30, max_aspect_ratio=16)


def test_an_8192x1_png_is_refused_from_its_header(monkeypatch):
    data = png(1, 8192)
    assert len(data) < 200

    def no_decoding(self):  # the pixels must never be decoded
        raise AssertionError("decoded an image over the budget")

    monkeypatch.setattr(Image.Image, "load", no_decoding)
    with pytest.raises(ImageError, match="aspect ratio"):
        decode_image_bytes(data, max_aspect_ratio=16)


def test_the_encoder_refuses_before_coding(codec):
    with pytest.raises(ImageError, match="aspect ratio"):
        codec.encode(torch.zeros(3, 1, 4096))
    with pytest.raises(ImageTooLargeError):
        ImageCodec(codec.model, max_pixels=256 * 512).encode(torch.zeros(3, 300, 300))


def lying_stream(codec: ImageCodec, height: int, width: int) -> bytes:
    """A header that claims ``height`` x ``width`` with (almost) no payload."""
    coded = (-(-height // 256) * 256, -(-width // 256) * 256)
    header = StreamHeader(
        codec=codec.codec_name,
        weights_fingerprint=codec.fingerprint,
        quality=0,
        task=codec.task,
        original_size=(height, width),
        coded_size=coded,
        align_mode=AlignMode.PAD,
        entropy_mode=EntropyParamMode.FIXED_POINT,
        y_shape=(codec.model.config.M, coded[0] // 16, coded[1] // 16),
        z_shape=(codec.model.config.N, coded[0] // 64, coded[1] // 64),
    )
    return encode_container(header, b"\0", b"\0", max_pixels=2**30)


@pytest.mark.parametrize(
    ("height", "width", "reason"), [(4096, 8192, "max_pixels"), (256, 8192, "aspect ratio")]
)
def test_lying_headers_are_refused_before_decoding(codec, monkeypatch, height, width, reason):
    data = lying_stream(codec, height, width)
    assert len(data) < 120

    def no_decoding(*args, **kwargs):
        raise AssertionError("entropy decoding ran for a stream over the budget")

    monkeypatch.setattr(codec.model, "entropy_decode", no_decoding)
    with pytest.raises(BitstreamError, match=reason):
        codec.decode(data)


def test_the_classifier_resize_stays_bounded(monkeypatch):
    sizes: list[tuple[int, int]] = []
    interpolate = torch.nn.functional.interpolate

    def recording(x, size=None, **kwargs):
        sizes.append(tuple(size))
        return interpolate(x, size=size, **kwargs)

    monkeypatch.setattr(preprocess.F, "interpolate", recording)
    out = preprocess.resize_center_crop(torch.rand(3, 1, 32768), (224, 224), 0.875, "bicubic")
    assert out.shape == (3, 224, 224)
    # The full resize would have been 256 x 8388608 (25 GB of floats).
    assert sizes[0][0] * sizes[0][1] <= preprocess.MAX_RESIZE_AREA_FACTOR * 256 * 256


def test_cropping_first_keeps_the_centre_of_smooth_images():
    ramp = torch.linspace(0, 1, 6000).repeat(3, 100, 1)
    ramp = ramp * torch.linspace(0.5, 1, 100)[None, :, None]
    bounded = preprocess.resize_center_crop(ramp, (224, 224), 0.875, "bicubic")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(preprocess, "MAX_RESIZE_AREA_FACTOR", 10**9)
        exact = preprocess.resize_center_crop(ramp, (224, 224), 0.875, "bicubic")
    assert (bounded - exact).abs().max() < 0.01
