"""Paper defaults of the training CLI, global batch under torchrun, best-checkpoint export,
and stochastic depth that leaves the state dict alone."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import torch

from transtic.layers.swin import SwinBlock, set_drop_path
from transtic.models import create_model, load_checkpoint
from transtic.training import train_main
from transtic.training.cli import DEFAULT_LR_MILESTONES, _fill_defaults, build_parser
from transtic.training.distributed import EpochSampler, split_batch
from transtic.training.loop import BEST_NAME, CHECKPOINT_NAME


def _parsed(argv: list[str]) -> dict:
    args = build_parser().parse_args(argv)
    _fill_defaults(args)
    return vars(args)


def test_readme_commands_parse_with_the_paper_defaults() -> None:
    codec = _parsed(
        shlex.split("codec --model tic --quality 1 --data imagenet --data-path X --out Y")
    )
    assert codec["batch_size"] == 12 and codec["steps"] > 0
    assert tuple(codec["lr_milestones"]) == DEFAULT_LR_MILESTONES and codec["lr"] == 1e-4
    prompts = shlex.split(
        "prompts --quality 1 --base B --data imagenet --data-path X --out Y --task"
    )
    assert _parsed([*prompts, "classification"])["batch_size"] == 16
    assert _parsed([*prompts, "detection"])["batch_size"] == 8
    assert _parsed([*prompts, "segmentation"])["batch_size"] == 8
    assert _parsed([*prompts, "detection", "--batch-size", "4", "--steps", "7"])["steps"] == 7


def test_global_batch_is_split_over_ranks() -> None:
    assert split_batch(12, 1) == 12 and split_batch(12, 4) == 3
    with pytest.raises(ValueError, match="multiple of 5"):
        split_batch(12, 5)
    # Two ranks' batches of 6 together are one global batch of 12 distinct samples.
    samplers = [EpochSampler(24, rank=r, world=2, seed=0) for r in (0, 1)]
    firsts = [list(s)[: split_batch(12, 2)] for s in samplers]
    assert len(set(firsts[0]) | set(firsts[1])) == 12


def test_exports_the_best_validation_step(image_folder: Path, tmp_path: Path) -> None:
    argv = [
        "codec", "--model", "tic-tiny", "--lambda", "0.0067", "--data", "folder",
        "--data-path", str(image_folder), "--val-path", str(image_folder), "--val-every", "1",
        "--batch-size", "1", "--steps", "3", "--lr", "3e-3",
        "--log-every", "1", "--checkpoint-every", "1", "--no-progress", "--threads", "1",
        "--out", str(tmp_path),
    ]  # fmt: skip
    assert train_main(argv) == 0
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    val = {m["step"]: m["val_loss"] for m in lines if "val_loss" in m and m["step"] > 0}
    best_step = min(val, key=lambda s: val[s])
    meta = torch.load(tmp_path / "final.pth.tar", weights_only=True)["metadata"]
    assert meta["steps"] == 3 and meta["exported_step"] == best_step
    assert meta["val_loss"] == pytest.approx(val[best_step], abs=1e-5)
    assert torch.load(tmp_path / BEST_NAME, weights_only=True)["step"] == best_step
    # The last step stays for resuming; `export --last` reads it, plain `export` the best.
    assert torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)["step"] == 3
    prints = {}
    for flag, step in (([], best_step), (["--last"], 3)):
        out = tmp_path / f"export{len(flag)}.pth.tar"
        assert train_main(["export", str(tmp_path), "--out", str(out), *flag]) == 0
        assert torch.load(out, weights_only=True)["metadata"]["exported_step"] == step
        prints[step] = load_checkpoint(out).fingerprint
    assert load_checkpoint(tmp_path / "final.pth.tar").fingerprint == prints[best_step]
    assert (prints[best_step] == prints[3]) == (best_step == 3)


def test_best_checkpoint_keeps_only_improvements(image_folder: Path, tmp_path: Path) -> None:
    from transtic.training.data import build_dataset
    from transtic.training.loop import LoopConfig, Trainer
    from transtic.training.losses import RateDistortionLoss

    model = create_model("tic-tiny")
    data = build_dataset("folder", image_folder, patch_size=128)
    cfg = LoopConfig(out_dir=tmp_path, steps=5, batch_size=1, progress=False)
    trainer = Trainer(model, RateDistortionLoss(0.01), data, cfg, params=list(model.parameters()))
    trainer.step = 0
    assert not trainer.consider_best({"val_loss": 0.1})  # untrained step 0 never counts
    for step, loss, kept in [(1, 2.0, True), (2, 3.0, False), (3, 1.5, True), (4, 1.5, False)]:
        trainer.step = step
        assert trainer.consider_best({"val_loss": loss}) is kept
    assert torch.load(tmp_path / BEST_NAME, weights_only=True)["step"] == 3
    assert trainer.load_best() == {"step": 3, "val_loss": 1.5}


def test_drop_path_keeps_keys_and_eval_output_and_changes_training_output() -> None:
    torch.manual_seed(0)
    model = create_model("tic-tiny")
    keys = list(model.state_dict())
    x = torch.rand(1, 3, 256, 256)
    model.eval()
    with torch.no_grad():
        before = model(x)["x_hat"]
    blocks = set_drop_path(model, 0.1)
    assert blocks > 1 and list(model.state_dict()) == keys
    rates = [m.drop_path_rate for m in model.modules() if isinstance(m, SwinBlock)]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.1) and rates == sorted(rates)
    with torch.no_grad():
        assert torch.equal(model(x)["x_hat"], before)  # inference is untouched
    set_drop_path(model, 0.9)
    model.train()
    torch.manual_seed(1)
    with torch.no_grad():
        a = model(x)["x_hat"]
        b = model(x)["x_hat"]
    assert not torch.equal(a, b)  # blocks are dropped at random while training
    with pytest.raises(ValueError):
        set_drop_path(model, 1.0)
