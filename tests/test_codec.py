"""The high-level codec: any size, real container bytes, machine-independent decoding."""

from __future__ import annotations

import pytest
import torch

from transtic.bitstream import AlignMode, BitstreamError, EntropyParamMode, peek_header
from transtic.codec import ImageCodec, WeightsMismatchError
from transtic.images import ImageError
from transtic.models import create_model, load_checkpoint


@pytest.fixture(scope="module")
def codec(tiny_transtic) -> ImageCodec:
    return ImageCodec(tiny_transtic, quality=3, task="classification", precision="float32")


SIZES = [(1, 1), (17, 333), (256, 256)]


@pytest.mark.parametrize(
    ("size", "mode"),
    [(s, m) for s in SIZES for m in (AlignMode.PAD, AlignMode.RESIZE)]
    + [((1080, 1920), AlignMode.PAD)],
)
def test_any_size_round_trips(tiny_transtic, size, mode):
    codec = ImageCodec(tiny_transtic, align_mode=mode)
    image = (torch.rand(3, *size) * 255).byte()
    encoded = codec.encode(image)
    header = peek_header(encoded.data)
    assert header.original_size == size
    assert all(c % 256 == 0 and c >= o for c, o in zip(header.coded_size, size, strict=True))
    decoded = codec.decode(encoded.data)
    assert decoded.image.shape == (3, *size)
    assert decoded.bpp == pytest.approx(len(encoded.data) * 8 / (size[0] * size[1]))


def test_header_describes_the_stream(codec):
    encoded = codec.encode(torch.rand(3, 100, 300))
    header = encoded.header
    assert header.codec == "transtic" and header.task == "classification" and header.quality == 3
    assert header.entropy_mode == EntropyParamMode.FIXED_POINT
    assert header.coded_size == (256, 512)
    assert header.y_shape == (48, 16, 32) and header.z_shape == (32, 4, 8)
    assert header.weights_fingerprint == codec.fingerprint


def test_decoding_is_identical_across_thread_counts(reference_weights, reference_vectors):
    model = load_checkpoint(reference_weights)
    codec = ImageCodec(model, precision="float32")
    image = reference_vectors["inputs"]["256x512"]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        encoded = codec.encode(image)
        torch.set_num_threads(2)
        decoded = codec.decode(encoded.data, keep_latent=True)
    finally:
        torch.set_num_threads(threads)
    x = image.float().div(255)[None].contiguous(memory_format=torch.channels_last)
    y, z = codec._transforms.analyze(x)  # the encoder's own (channels-last) transforms
    _, _, y_hat_encoder = model.entropy_encode(y, z, "fixed")
    assert decoded.y_hat is not None and torch.equal(decoded.y_hat, y_hat_encoder)


def test_batch_decode_equals_single_decodes(codec):
    streams = [codec.encode(torch.rand(3, 64 + 40 * i, 200)).data for i in range(3)]
    streams.append(codec.encode(torch.rand(3, 300, 300)).data)
    batched = codec.decode_batch(streams)
    for data, result in zip(streams, batched, strict=True):
        single = codec.decode(data)
        assert torch.allclose(single.image, result.image, atol=1e-5)


def test_streams_from_other_weights_are_refused(codec):
    torch.manual_seed(123)
    other = create_model("transtic-tiny")
    other.update(force=True)
    foreign = ImageCodec(other.eval()).encode(torch.rand(3, 64, 64)).data
    with pytest.raises(WeightsMismatchError, match="weights"):
        codec.decode(foreign)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda d: d[: len(d) // 2],
        lambda d: d[:40] + bytes([d[40] ^ 1]) + d[41:],
        lambda d: b"",
        lambda d: d + b"x",
    ],
    ids=["truncated", "bitflip", "empty", "trailing"],
)
def test_corrupt_streams_raise_typed_errors(codec, mangle):
    data = codec.encode(torch.rand(3, 64, 64)).data
    with pytest.raises(BitstreamError):
        codec.decode(mangle(data))


def test_bad_images_raise_typed_errors(codec):
    with pytest.raises(ImageError):
        codec.encode(torch.rand(4, 10, 10))
    with pytest.raises(ImageError):
        codec.encode("not an image")
    small = ImageCodec(codec.model, max_pixels=100)
    with pytest.raises(ImageError, match="limit"):
        small.encode(torch.rand(3, 20, 20))


def test_bfloat16_fast_path_decodes(codec):
    fast = ImageCodec(codec.model, precision="bfloat16")
    image = torch.rand(3, 128, 128)
    decoded = fast.decode(fast.encode(image).data)
    assert decoded.image.shape == image.shape
    exact = codec.decode(codec.encode(image).data)
    assert (decoded.image - exact.image).abs().mean() < 0.05
