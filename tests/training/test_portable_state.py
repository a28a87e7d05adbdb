"""A run's portable state (training/state.py): small, and a run resumes from it alone."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from transtic.models import create_model
from transtic.training import export_weights, train_main
from transtic.training.loop import CHECKPOINT_NAME


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(5)
    path = tmp_path_factory.mktemp("base") / "base.pth.tar"
    return export_weights(create_model("tic-tiny"), path, {"kind": "codec"})


def prompts_argv(base: Path, data: Path, out: Path, steps: int) -> list[str]:
    return [
        "prompts", "--task", "classification", "--base", str(base), "--quality", "1",
        "--data", "folder", "--data-path", str(data), "--out", str(out),
        "--steps", str(steps), "--batch-size", "1", "--lr", "1e-2", "--log-every", "1",
        "--checkpoint-every", "1", "--no-progress", "--threads", "1", "--lr-milestones",
    ]  # fmt: skip


def prompts_of(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(path, weights_only=True)["state_dict"]
    return {k: v.float() for k, v in state.items() if "prompt" in k}


def test_a_run_resumes_from_its_portable_state_alone(
    tiny_base: Path, image_folder: Path, tmp_path: Path
) -> None:
    state = tmp_path / "campaign" / "cls.state.pth"
    first = tmp_path / "session1"
    assert (
        train_main([*prompts_argv(tiny_base, image_folder, first, 2), "--state", str(state)]) == 0
    )
    saved = torch.load(state, weights_only=True)
    assert (saved["step"], saved["samples"]) == (2, 2) and saved["cpu_seconds"] > 0
    trained = sum(t.numel() for t in saved["params"])
    # float32 parameters, two bfloat16 moments: 8 bytes per trained number, and the archive's
    assert state.stat().st_size < 8 * trained + 256 * 1024
    assert all(
        m["exp_avg_sq"].dtype == torch.bfloat16 for m in saved["optimizer"]["state"].values()
    )

    # a later session: a new run directory (no checkpoint), the same command line
    second = tmp_path / "session2"
    argv = [*prompts_argv(tiny_base, image_folder, second, 3), "--state", str(state), "--resume"]
    assert train_main(argv) == 0
    assert f"resumed from {state} at step 2" in (second / "train.log").read_text()
    after = torch.load(second / CHECKPOINT_NAME, weights_only=True)
    assert after["step"] == 3 and after["cpu_seconds"] > saved["cpu_seconds"]

    # the same three steps without the break: the same prompts up to the moments' rounding
    straight = tmp_path / "straight"
    assert train_main(prompts_argv(tiny_base, image_folder, straight, 3)) == 0
    resumed, uninterrupted = (
        prompts_of(second / CHECKPOINT_NAME),
        prompts_of(straight / CHECKPOINT_NAME),
    )
    at_two = prompts_of(first / CHECKPOINT_NAME)
    moved = sum(float((uninterrupted[k] - at_two[k]).abs().sum()) for k in at_two)
    gap = sum(float((resumed[k] - uninterrupted[k]).abs().sum()) for k in at_two)
    assert moved > 0 and gap < 0.05 * moved


def test_a_state_from_another_run_is_refused(
    tiny_base: Path, image_folder: Path, tmp_path: Path
) -> None:
    state = tmp_path / "codec.state.pth"
    codec = [
        "codec", "--model", "tic-tiny", "--lambda", "0.0067", "--data", "folder",
        "--data-path", str(image_folder), "--out", str(tmp_path / "codec"), "--steps", "1",
        "--batch-size", "1", "--no-progress", "--threads", "1", "--state", str(state),
    ]  # fmt: skip
    assert train_main(codec) == 0
    argv = [*prompts_argv(tiny_base, image_folder, tmp_path / "p", 2), "--state", str(state)]
    with pytest.raises(ValueError, match="do not fit this run's"):
        train_main([*argv, "--resume"])


def test_sigterm_stops_a_run_after_its_step_with_everything_saved(
    tiny_base: Path, image_folder: Path, tmp_path: Path
) -> None:
    out, state = tmp_path / "run", tmp_path / "state.pth"
    argv = prompts_argv(tiny_base, image_folder, out, 10_000)
    argv[argv.index("--checkpoint-every") + 1] = "10000"  # only the stop itself saves
    job = subprocess.Popen(
        [sys.executable, "-m", "transtic.training", *argv, "--state", str(state)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        log = out / "train.log"
        while not (log.is_file() and "step 2/" in log.read_text()):
            assert job.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        job.send_signal(signal.SIGTERM)
        assert job.wait(timeout=120) == 0
    finally:
        job.kill()
    stopped_at = torch.load(out / CHECKPOINT_NAME, weights_only=True)["step"]
    assert stopped_at >= 2 and torch.load(state, weights_only=True)["step"] == stopped_at
    assert f"stopped by SIGTERM at step {stopped_at} (saved)" in log.read_text()
    assert not (out / "final.pth.tar").exists()  # a stopped run is not a finished one
