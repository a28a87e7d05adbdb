"""A few steps of each training command on tiny models (CPU), resume and freezing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from transtic.models import TransTIC, create_model, load_checkpoint
from transtic.training import export_weights, prompted_from_base, train_main
from transtic.training.data import CropDataset, build_dataset, list_images
from transtic.training.loop import CHECKPOINT_NAME
from transtic.training.photos import HELDOUT, TRAIN, available

CODEC_ARGS = [
    "--model", "tic-tiny", "--lambda", "0.0067", "--data", "folder", "--batch-size", "1",
    "--lr", "1e-3", "--log-every", "1", "--checkpoint-every", "1", "--no-progress",
    "--threads", "1",
    # no decay: milestones are fractions of --steps, which the resume test changes
    "--lr-milestones",
]  # fmt: skip


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def test_codec_training_resume_matches_uninterrupted(image_folder: Path, tmp_path: Path) -> None:
    common = [*CODEC_ARGS, "--data-path", str(image_folder)]
    # Interrupted run: 2 steps, then resumed to 3.
    assert train_main(["codec", *common, "--out", str(tmp_path / "a"), "--steps", "2"]) == 0
    assert (
        train_main(["codec", *common, "--out", str(tmp_path / "a"), "--steps", "3", "--resume"])
        == 0
    )
    # Uninterrupted run of 3 steps.
    assert train_main(["codec", *common, "--out", str(tmp_path / "b"), "--steps", "3"]) == 0
    a, b = _state(tmp_path / "a" / CHECKPOINT_NAME), _state(tmp_path / "b" / CHECKPOINT_NAME)
    assert torch.load(tmp_path / "a" / CHECKPOINT_NAME, weights_only=True)["step"] == 3
    for key in b:
        assert torch.equal(a[key], b[key]), key
    losses = [m["loss"] for m in _metrics(tmp_path / "b") if "loss" in m]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]
    # The exported weights load as a codec and carry their training metadata.
    final = tmp_path / "b" / "final.pth.tar"
    model = load_checkpoint(final)
    assert not isinstance(model, TransTIC)
    meta = torch.load(final, weights_only=True)["metadata"]
    assert meta["steps"] == 3 and meta["lambda"] == 0.0067 and meta["kind"] == "codec"
    # Float buffers stay float32 (a float16 1e-9 likelihood bound would be 0).
    assert model.gaussian_conditional.likelihood_lower_bound.bound.item() == pytest.approx(1e-9)
    # Re-exporting the checkpoint gives the same weights, with extra metadata.
    again = tmp_path / "again.pth.tar"
    assert train_main(["export", str(tmp_path / "b"), "--out", str(again), "--set", "q=3"]) == 0
    assert torch.load(again, weights_only=True)["metadata"]["q"] == 3
    assert load_checkpoint(again).fingerprint == model.fingerprint


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("base") / "base.pth.tar"
    return export_weights(create_model("tic-tiny"), path, {"kind": "codec"})


def test_prompted_from_base_misses_only_prompts(tiny_base: Path) -> None:
    model = prompted_from_base(tiny_base)
    base = load_checkpoint(tiny_base).state_dict()
    state = model.state_dict()
    extra = [k for k in state if k not in base]
    assert extra and all("prompt" in k for k in extra)
    for key, value in base.items():
        if value.numel() and key in state and state[key].numel():
            assert torch.equal(state[key], value), key


@pytest.mark.parametrize(("task", "weights"), [("classification", None), ("detection", "random")])
def test_prompt_training_changes_only_prompts(
    task: str, weights: str | None, tiny_base: Path, image_folder: Path, tmp_path: Path
) -> None:
    argv = [
        "prompts", "--task", task, "--base", str(tiny_base), "--quality", "1",
        "--data", "folder", "--data-path", str(image_folder), "--out", str(tmp_path),
        "--steps", "2", "--batch-size", "1", "--lr", "1e-2", "--log-every", "1",
        "--no-progress", "--threads", "1",
    ]  # fmt: skip
    if weights:
        argv += ["--task-weights", weights]
    assert train_main(argv) == 0
    before = _state(tiny_base)
    after = _state(tmp_path / "final.pth.tar")
    changed = {
        k
        for k, v in after.items()
        if k in before
        and v.is_floating_point()
        and v.numel()
        and before[k].numel()
        and not torch.equal(v.float(), before[k].float())
    }
    assert not changed, f"frozen tensors changed: {sorted(changed)[:5]}"
    prompt_keys = [k for k in after if "prompt" in k]
    assert prompt_keys and all(k not in before for k in prompt_keys)
    first = _state(tmp_path / CHECKPOINT_NAME)
    assert torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)["step"] == 2
    assert all(k in first for k in prompt_keys)
    assert all(torch.isfinite(torch.tensor(m["loss"])) for m in _metrics(tmp_path) if "loss" in m)
    assert isinstance(load_checkpoint(tmp_path / "final.pth.tar"), TransTIC)


def test_crops_are_a_function_of_seed_epoch_index(image_folder: Path) -> None:
    files = list_images(image_folder)
    ds = CropDataset(files, patch_size=128, scale=(0.5, 1.0), vflip=True, seed=1)
    first = ds[1][0]
    assert first.shape == (3, 128, 128)
    assert torch.equal(
        first, CropDataset(files, patch_size=128, scale=(0.5, 1.0), vflip=True, seed=1)[1][0]
    )
    ds.set_epoch(1)
    assert not torch.equal(first, ds[1][0])
    val = build_dataset("folder", image_folder, patch_size=128, train=False)
    assert torch.equal(val[0][0], val[0][0]) and val[0][1] == -1


def test_photo_splits_are_disjoint_and_present() -> None:
    train_files = {p.filename for p in TRAIN}
    assert not train_files & {p.filename for p in HELDOUT}
    if not available(TRAIN):
        pytest.skip("no packaged photos installed")
    assert len(available(HELDOUT)) >= 3


def test_bf16_autocast_step_is_finite(image_folder: Path, tmp_path: Path) -> None:
    argv = ["codec", *CODEC_ARGS, "--data-path", str(image_folder), "--out", str(tmp_path)]
    assert train_main([*argv, "--steps", "1", "--bf16"]) == 0
    assert all(torch.isfinite(torch.tensor(m["loss"])) for m in _metrics(tmp_path) if "loss" in m)
