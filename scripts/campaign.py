"""The training campaign: one niced, single-thread training job that runs whenever the
project is worked on, and continues across sessions from the state committed here.

    python scripts/campaign.py start     # start the job in the background (resumes)
    python scripts/campaign.py pause     # SIGSTOP it, for a timing that needs a quiet machine
    python scripts/campaign.py resume    # SIGCONT it
    python scripts/campaign.py stop      # SIGTERM: it saves after its current step and exits
    python scripts/campaign.py record    # score the state on the validation photos, append a
                                         # row to campaign/log.csv (samples, CPU-hours, scores)
    python scripts/campaign.py record --shipped   # the shipped default, as step 0
    python scripts/campaign.py status

The job's portable state (``campaign/<job>.state.pth``, training/state.py: the trained
tensors and Adam's moments, about 5 MB for the small prompts) is what gets committed; the
run directory under ``var/campaign/`` (full checkpoints, logs) is rebuilt from it. Size
budget: at most 8 MB per job file, replaced at each commit. Each start takes the
corpus's current training split (``scripts/build_corpus.py``), whose size is logged.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = ROOT / ".venv" / "bin" / "python"
CAMPAIGN = ROOT / "campaign"
RUNS = ROOT / "var" / "campaign"
CORPUS = ROOT / "var" / "corpus"
WEIGHTS = ROOT / "transtic" / "weights" / "data"
STATE_BUDGET = 8 * 1024 * 1024
LOG_FIELDS = (
    "date_utc", "commit", "job", "step", "samples", "cpu_hours", "train_photos", "val_photos",
    "bpp", "kl_divergence", "top1_agreement", "top5_agreement", "feature_cosine", "psnr",
    "colour_shift_r", "colour_shift_g", "colour_shift_b",
)  # fmt: skip
# The job of this campaign: classification prompts on the frozen shipped q3 base (the
# default codec), from the shipped prompts, with the shipped recipe's loss and crops plus
# the colour term (from step 170 of 2026-12-08: the shipped prompts decode ~8 levels dark).
JOB = "cls_q3"
JOB_ARGS = [
    "prompts", "--task", "classification", "--quality", "3", "--lambda", "0.000075",
    "--base", str(WEIGHTS / "tic_small_base_q3.pth.tar"),
    "--init-prompts", str(WEIGHTS / "transtic_small_cls_q3.pth.tar"),
    "--data", "folder", "--data-path", str(CORPUS / "train"), "--max-short-side", "512",
    "--cache-images", "--steps", "20000", "--batch-size", "4", "--patch-size", "256",
    "--scale-jitter", "0.5", "0.625", "--lr", "5e-4", "--lr-milestones", "0.9",
    "--log-every", "10", "--checkpoint-every", "20", "--seed", "63", "--threads", "1",
    "--colour-weight", "0.001", "--no-progress", "--resume",
]  # fmt: skip


def run_dir() -> Path:
    return RUNS / JOB


def state_file() -> Path:
    return CAMPAIGN / f"{JOB}.state.pth"


def running_pid() -> int | None:
    pid_file = run_dir() / "job.pid"
    if not pid_file.is_file():
        return None
    pid = int(pid_file.read_text())
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return pid


def start() -> int:
    if (pid := running_pid()) is not None:
        print(f"{JOB} already runs (pid {pid})")
        return 0
    if not (CORPUS / "train").is_dir():
        raise SystemExit(f"no corpus at {CORPUS}: run python scripts/build_corpus.py first")
    run_dir().mkdir(parents=True, exist_ok=True)
    command = [str(PY), "-m", "transtic.training", *JOB_ARGS, "--out", str(run_dir())]
    command += ["--state", str(state_file())]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # A session of its own is also a scheduling group of its own (Linux autogroups): on a
    # busy machine the job keeps one core's share, while nice orders it within its group.
    with (run_dir() / "job.log").open("a") as log:
        job = subprocess.Popen(
            ["nice", "-n", "15", *command], cwd=ROOT, env=env, stdout=log, stderr=log,
            start_new_session=True,
        )  # fmt: skip
    (run_dir() / "job.pid").write_text(f"{job.pid}\n")
    print(f"{JOB} started (pid {job.pid}), log {run_dir() / 'job.log'}")
    return 0


def send(sig: signal.Signals) -> int:
    pid = running_pid()
    if pid is None:
        print(f"{JOB} is not running")
        return 1
    os.kill(pid, sig)
    if sig == signal.SIGTERM:
        os.kill(pid, signal.SIGCONT)  # a paused job must run to save and exit
        while running_pid() is not None:
            time.sleep(1)
        size = state_file().stat().st_size if state_file().is_file() else 0
        print(f"{JOB} stopped; {state_file().relative_to(ROOT)}: {size / 2**20:.1f} MB")
        if size > STATE_BUDGET:
            print(f"warning: over the {STATE_BUDGET / 2**20:.0f} MB budget", file=sys.stderr)
    return 0


def record(shipped: bool) -> int:
    """Score the run's last checkpoint (or, with ``shipped``, the shipped default it started
    from, as step 0) as the default codec is scored: paper protocol, validation photos.
    Appends the row to campaign/log.csv."""
    import torch

    quiet = {"env": {**os.environ, "OMP_NUM_THREADS": "1"}, "cwd": ROOT, "check": True}
    if shipped:
        state: dict[str, float] = {"step": 0, "cpu_seconds": 0.0}
        codec = WEIGHTS / "transtic_small_cls_q3.pth.tar"
    else:
        checkpoint = run_dir() / "checkpoint.pth.tar"
        if not checkpoint.is_file():
            raise SystemExit(f"no checkpoint in {run_dir()}: start the job first")
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        codec = run_dir() / f"step{state['step']}.pth.tar"
        export = [str(PY), "-m", "transtic.training", "export", str(run_dir()), "--last"]
        subprocess.run([*export, "--out", str(codec)], **quiet)  # type: ignore[call-overload]
    out = run_dir() / f"eval-step{state['step']}"
    evaluate = [
        "nice", "-n", "10", str(PY), "-m", "transtic.evaluation", "--task", "classification",
        "--protocol", "paper", "--data", str(CORPUS / "val"), "--codec", f"transtic={codec}",
        "--anchors", "--bootstrap-resamples", "0", "--threads", "1", "--no-progress",
        "--out", str(out),
    ]  # fmt: skip
    # its own scheduling group, like the job, so a busy machine does not starve it
    subprocess.run(evaluate, **quiet, start_new_session=True)  # type: ignore[call-overload]
    (point,) = [p for p in json.loads((out / "results.json").read_text())["points"]]
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    row = {
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
        "commit": commit,
        "job": JOB,
        "step": state["step"],
        "samples": int(state["step"]) * 4,
        "cpu_hours": round(float(state.get("cpu_seconds", 0.0)) / 3600, 3),
        "train_photos": len(list((CORPUS / "train").iterdir())),
        "val_photos": len(list((CORPUS / "val").iterdir())),
        "bpp": round(point["bpp"], 4),
        "psnr": round(point["psnr"], 3),
        **{k: round(point["scores"][k], 4) for k in LOG_FIELDS if k in point["scores"]},
        **{
            f"colour_shift_{c}": round(v, 2)
            for c, v in zip("rgb", point["extra"].get("colour_shift_rgb", []), strict=False)
        },
    }
    log = CAMPAIGN / "log.csv"
    new = not log.is_file()
    with log.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, LOG_FIELDS, lineterminator="\n")
        if new:
            writer.writeheader()
        writer.writerow(row)
    print(json.dumps(row))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["start", "pause", "resume", "stop", "record", "status"])
    parser.add_argument("--shipped", action="store_true", help="record: the shipped default")
    args = parser.parse_args()
    action = args.action
    if action == "start":
        return start()
    if action == "record":
        return record(args.shipped)
    if action == "status":
        pid = running_pid()
        print(f"{JOB}: {'running, pid ' + str(pid) if pid else 'not running'}")
        return 0
    return send({"pause": signal.SIGSTOP, "resume": signal.SIGCONT, "stop": signal.SIGTERM}[action])


if __name__ == "__main__":
    raise SystemExit(main())
