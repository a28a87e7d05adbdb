"""``transtic train`` on data it cannot use: one line naming the problem, no traceback."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from transtic.training import train_main

CODEC_ARGS = ["--model", "tic-tiny", "--lambda", "0.01", "--data", "folder", "--batch-size", "1"]
CODEC_ARGS += ["--no-progress", "--threads", "1"]


def test_a_patch_size_the_model_cannot_tile_is_refused(image_folder: Path, tmp_path: Path):
    argv = ["codec", *CODEC_ARGS, "--data-path", str(image_folder), "--out", str(tmp_path)]
    with pytest.raises(SystemExit, match="--patch-size 100: .* multiples of"):
        train_main([*argv, "--patch-size", "100", "--steps", "1"])


def test_a_missing_data_folder_is_named(tmp_path: Path):
    argv = ["codec", *CODEC_ARGS, "--data-path", str(tmp_path / "nowhere"), "--out", str(tmp_path)]
    with pytest.raises(SystemExit, match="no images found under .*nowhere"):
        train_main([*argv, "--steps", "1"])


def test_an_unreadable_image_stops_training_with_its_name(image_folder: Path, tmp_path: Path):
    """Read lazily, a bad file is met mid-run; the message names it instead of PIL's
    traceback."""
    folder = tmp_path / "photos"
    shutil.copytree(image_folder, folder)
    for image in folder.iterdir():  # every image truncated: the first step meets one
        image.write_bytes(image.read_bytes()[:64])
    argv = ["codec", *CODEC_ARGS, "--data-path", str(folder), "--out", str(tmp_path / "run")]
    with pytest.raises(SystemExit, match=r"photos/.*: not a readable image"):
        train_main([*argv, "--steps", "2"])
