"""Our codec computes the same function as the paper's code (vectors from ../shared)."""

from __future__ import annotations

import json

import pytest
import torch

from transtic.models import HyperpriorCodec, TransTIC, load_checkpoint

CASES = ["256x256", "256x512"]
KINDS = ["prompt", "base"]
RTOL = 1e-4


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).abs().max() / expected.abs().max())


@pytest.fixture(scope="module")
def reference_models(reference_weights) -> dict[str, HyperpriorCodec]:
    base = {k: v for k, v in reference_weights.items() if "prompt" not in k}
    return {"prompt": load_checkpoint(reference_weights), "base": load_checkpoint(base)}


@pytest.fixture(params=KINDS)
def kind_model(request, reference_models):
    return request.param, reference_models[request.param]


def test_state_dict_keys_match_official(conformance_dir, reference_models):
    expected = json.loads((conformance_dir / "transtic_state_dict_keys.json").read_text())
    for kind, name in [("prompt", "tic_promptmodel_first2"), ("base", "tic_hp")]:
        model = reference_models[kind]
        ours = [
            [k, list(v.shape), str(v.dtype).removeprefix("torch.")]
            for k, v in model.state_dict().items()
        ]
        assert ours == expected[name], f"{name}: keys, order, shapes or dtypes differ"
    assert isinstance(reference_models["prompt"], TransTIC)


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
@pytest.mark.parametrize("case", CASES)
def test_forward_matches_reference(kind_model, reference_vectors, case, impl):
    kind, model = kind_model
    model.set_attention_impl(impl)
    x = reference_vectors["inputs"][case].float().div(255)[None]
    ref = reference_vectors[kind][case]
    with torch.no_grad():
        out = model(x)
    assert relative_error(out["x_hat"][0], ref["forward_x_hat"]) < RTOL
    assert relative_error(out["likelihoods"]["y"][0], ref["forward_y_likelihoods"]) < RTOL
    assert relative_error(out["likelihoods"]["z"][0], ref["forward_z_likelihoods"]) < RTOL
    model.set_attention_impl("sdpa")


@pytest.mark.parametrize("case", CASES)
def test_decoding_reference_strings(kind_model, reference_vectors, case):
    kind, model = kind_model
    ref = reference_vectors[kind][case]
    out = model.decompress([[ref["y_string"]], [ref["z_string"]]], ref["z_shape"])
    assert relative_error(out["x_hat"][0], ref["decompress_x_hat"]) < RTOL


@pytest.mark.parametrize("case", CASES)
def test_encoding_reference_input(kind_model, reference_vectors, case):
    kind, model = kind_model
    ref = reference_vectors[kind][case]
    x = reference_vectors["inputs"][case].float().div(255)[None]
    enc = model.compress(x)
    ours = len(enc["strings"][0][0]) + len(enc["strings"][1][0])
    theirs = len(ref["y_string"]) + len(ref["z_string"])
    assert abs(ours - theirs) <= 0.01 * theirs
    dec = model.decompress(enc["strings"], enc["shape"])
    assert relative_error(dec["x_hat"][0], ref["decompress_x_hat"]) < RTOL
    h, w = x.shape[-2:]
    assert ours * 8 / (h * w) == pytest.approx(ref["bpp_stream"], rel=0.01)


@pytest.mark.parametrize("case", CASES)
def test_fixed_point_entropy_parameters_cost_at_most_one_percent(
    kind_model, reference_vectors, case
):
    kind, model = kind_model
    ref = reference_vectors[kind][case]
    x = reference_vectors["inputs"][case].float().div(255)[None]
    enc = model.compress(x, entropy_mode="fixed")
    size = len(enc["strings"][0][0]) + len(enc["strings"][1][0])
    assert size <= 1.01 * (len(ref["y_string"]) + len(ref["z_string"]))
    dec = model.decompress(enc["strings"], enc["shape"], entropy_mode="fixed")
    assert torch.equal(dec["y_hat"], enc["y_hat"])
    assert relative_error(dec["x_hat"][0], ref["decompress_x_hat"]) < RTOL


@pytest.mark.parametrize("case", CASES)
def test_fast_float32_codec_matches_reference(kind_model, reference_vectors, case):
    """The codec's own float32 transforms (channels-last, folded BNs, native attention and
    Winograd prompt-generator convs where they build) against the official code's output:
    the stream within 1 % of its size, the decoded image within RTOL."""
    from transtic.codec import ImageCodec

    kind, model = kind_model
    ref = reference_vectors[kind][case]
    image = reference_vectors["inputs"][case]
    codec = ImageCodec(model, precision="float32")
    encoded = codec.encode(image)
    _, y_string, z_string = codec.parse(encoded.data)  # the container's header aside
    size = len(y_string) + len(z_string)
    assert size == pytest.approx(len(ref["y_string"]) + len(ref["z_string"]), rel=0.01)
    decoded = codec.decode(encoded.data)
    error = relative_error(decoded.image, ref["decompress_x_hat"].clamp(0, 1))
    assert error < RTOL
