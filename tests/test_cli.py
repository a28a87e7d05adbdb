"""The command line tool end to end on a tiny checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from transtic.cli import main
from transtic.models import save_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tiny_transtic, tmp_path_factory):
    return save_checkpoint(tiny_transtic, tmp_path_factory.mktemp("ckpt") / "tiny.pth.tar")


def _photo(path, size=(40, 70)):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)
    return path


def test_encode_decode_info_folder(tmp_path, checkpoint, capsys):
    src = tmp_path / "frames"
    src.mkdir()
    for i in range(2):
        _photo(src / f"f{i}.png")
    out = tmp_path / "streams"
    assert main(["encode", str(src), "-o", str(out), "--checkpoint", str(checkpoint)]) == 0
    streams = sorted(out.glob("*.ttic"))
    assert len(streams) == 2
    assert (
        main(["decode", str(out), "-o", str(tmp_path / "png"), "--checkpoint", str(checkpoint)])
        == 0
    )
    with Image.open(tmp_path / "png" / "f0.png") as img:
        assert img.size == (70, 40)
    capsys.readouterr()
    args = ["info", str(streams[0]), "--json", "--original", str(src / "f0.png")]
    assert main([*args, "--checkpoint", str(checkpoint)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["original_size"] == [40, 70]
    assert info["bits_per_pixel"] == pytest.approx(streams[0].stat().st_size * 8 / (40 * 70))
    assert 0 < info["psnr_db"] < 100


def test_info_on_a_corrupt_stream_fails_cleanly(tmp_path, capsys):
    bad = tmp_path / "bad.ttic"
    bad.write_bytes(b"TTIC" + b"\0" * 10)
    assert main(["info", str(bad)]) == 2
    assert "bitstream" in capsys.readouterr().err


def test_weights_subcommand_lists(capsys):
    assert main(["weights", "list", "--json"]) == 0
    names = {row["name"] for row in json.loads(capsys.readouterr().out)}
    assert any("efficientnet" in n for n in names)
