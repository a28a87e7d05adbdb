"""The loader reads the release files as they come and writes files the official code reads."""

from __future__ import annotations

import pytest
import torch

from transtic.models import (
    TIC,
    CheckpointError,
    TransTIC,
    create_model,
    infer_architecture,
    list_models,
    load_checkpoint,
    normalize_state_dict,
    register_model,
    save_checkpoint,
)


def _official_layout(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_saved_keys_use_official_entropy_bottleneck_names(tiny_transtic):
    keys = list(tiny_transtic.state_dict())
    assert "entropy_bottleneck._matrix0" in keys
    assert "entropy_bottleneck._factor3" in keys
    assert not any(".matrices." in k for k in keys)


@pytest.mark.parametrize(
    ("wrap", "half"),
    [
        (lambda sd: {"state_dict": sd}, False),
        (lambda sd: sd, False),
        (lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}}, False),
        (lambda sd: {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}, True),
        (
            lambda sd: {
                k.replace("._matrix", ".matrices.")
                .replace("._bias", ".biases.")
                .replace("._factor", ".factors."): v
                for k, v in sd.items()
            },
            False,
        ),
    ],
    ids=["wrapped", "bare", "dataparallel", "float16", "compressai-names"],
)
def test_loader_accepts_release_layouts(tiny_transtic, tmp_path, wrap, half):
    path = tmp_path / "ckpt.pth.tar"
    torch.save(wrap(_official_layout(tiny_transtic)), path)
    model = load_checkpoint(path)
    assert isinstance(model, TransTIC)
    assert not model.training
    for key, value in tiny_transtic.state_dict().items():
        expected = value.half().float() if half and value.is_floating_point() else value
        assert torch.equal(model.state_dict()[key], expected), key


def test_base_and_prompted_are_told_apart(tiny_tic, tiny_transtic):
    assert isinstance(load_checkpoint(_official_layout(tiny_tic)), TIC)
    config, prompts = infer_architecture(normalize_state_dict(_official_layout(tiny_transtic)))
    assert prompts is not None and prompts.num_tokens == 16
    assert (config.N, config.M) == (32, 48)


def test_high_rate_family_is_inferred():
    model = create_model("tic-hq", depths=(2, 2, 2, 2, 2, 2))
    config, prompts = infer_architecture(normalize_state_dict(model.state_dict()))
    assert (config.N, config.M, prompts) == (192, 320, None)


def test_missing_cdf_tables_are_rebuilt(tiny_tic):
    state = {k: v for k, v in _official_layout(tiny_tic).items() if "_quantized_cdf" not in k}
    model = load_checkpoint(state)
    assert model.gaussian_conditional._quantized_cdf.numel() > 0


def test_save_round_trip(tiny_transtic, tmp_path):
    path = save_checkpoint(tiny_transtic, tmp_path / "m.pth.tar", half=True)
    raw = torch.load(path, weights_only=True)
    assert list(raw["state_dict"]) == list(tiny_transtic.state_dict())
    assert "metadata" not in raw
    assert isinstance(load_checkpoint(path), TransTIC)


def test_release_layout_drops_tables_and_compacts_buffers(tiny_tic, tmp_path):
    path = save_checkpoint(
        tiny_tic, tmp_path / "r.pth.tar", half=True, cdf_tables=False, compact=True, metadata={}
    )
    raw = torch.load(path, weights_only=True)
    state = raw["state_dict"]
    assert raw["metadata"] == {} and list(state) == list(tiny_tic.state_dict())
    assert state["gaussian_conditional._quantized_cdf"].numel() == 0
    assert state["entropy_bottleneck._offset"].numel() == 0
    masks = [k for k in state if k.endswith("attn_mask")]
    assert masks and all(state[k].dtype == torch.int8 for k in masks)
    assert all(state[k].dtype == torch.int16 for k in state if k.endswith("position_index"))
    model = load_checkpoint(path)  # the tables come back, rebuilt from the rounded weights
    assert model.gaussian_conditional._quantized_cdf.numel() > 0
    assert not (tmp_path / "r.pth.tar.tmp").exists()


def test_loader_refuses_pickled_code_and_garbage(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": {"x": Evil()}}, evil)
    with pytest.raises(CheckpointError):
        load_checkpoint(evil)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        load_checkpoint(junk)
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint({"g_a0.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "absent.pth")


def test_registry_refuses_duplicates():
    assert {"tic", "transtic", "tic-tiny", "transtic-tiny", "tic-hq"} <= set(list_models())
    with pytest.raises(ValueError, match="already registered"):
        register_model("tic")(lambda: None)
    with pytest.raises(KeyError, match="unknown codec"):
        create_model("nope")


def test_compressai_contract(tiny_transtic):
    x = torch.rand(1, 3, 256, 256)
    out = tiny_transtic(x)
    assert set(out) >= {"x_hat", "likelihoods"} and set(out["likelihoods"]) == {"y", "z"}
    enc = tiny_transtic.compress(x)
    assert set(enc) >= {"strings", "shape"}
    dec = tiny_transtic.decompress(enc["strings"], enc["shape"])
    assert dec["x_hat"].shape == x.shape and 0 <= dec["x_hat"].min() <= dec["x_hat"].max() <= 1
    assert tiny_transtic.aux_loss().item() >= 0
    names = [n for n, _ in tiny_transtic.named_parameters() if "prompt" in n]
    assert len(tiny_transtic.prompt_parameters()) == len(names) > 0


def test_half_precision_saving_keeps_float_buffers(tiny_tic, tmp_path):
    path = save_checkpoint(tiny_tic, tmp_path / "half.pth.tar", half=True)
    state = torch.load(path, weights_only=True)["state_dict"]
    assert state["g_a0.weight"].dtype == torch.float16
    assert state["entropy_bottleneck._matrix0"].dtype == torch.float16
    bound = state["gaussian_conditional.likelihood_lower_bound.bound"]
    assert bound.dtype == torch.float32 and bound.item() > 0
