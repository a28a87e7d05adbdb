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
    assert info["original_size"] == "70x40"  # width x height, as image tools say it
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


def _bomb_png(path):
    """A valid PNG header claiming 100000 x 100000 pixels over a few bytes of data."""
    import struct
    import zlib

    def chunk(kind, data):
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"junk" * 50) and p, "corrupt image"),
        (_bomb_png, "decompression bomb"),
    ],
    ids=["truncated", "bomb"],
)
def test_encode_refuses_bad_images_with_a_message(tmp_path, checkpoint, capsys, make, needle):
    """No traceback: the file's header is checked before pixels are decoded."""
    bad = tmp_path / "bad.png"
    make(bad)
    assert main(["encode", str(bad), "--checkpoint", str(checkpoint)]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    assert not (tmp_path / "bad.ttic").exists()


def test_info_on_a_missing_file_says_so(tmp_path):
    with pytest.raises(SystemExit, match="cannot read .*missing.ttic"):
        main(["info", str(tmp_path / "missing.ttic")])


def test_a_catalog_codec_records_its_own_task_and_quality(tmp_path, capsys):
    """Without --task / --quality the stream's header carries the catalog entry's."""
    photo = _photo(tmp_path / "p.png", size=(64, 64))
    assert main(["encode", str(photo), "--checkpoint", "transtic_small_cls_q1"]) == 0
    capsys.readouterr()
    assert main(["info", str(tmp_path / "p.ttic"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["task"], info["quality"]) == ("classification", 1)


def test_without_checkpoint_encode_uses_the_shipped_default_and_decode_finds_it(tmp_path, capsys):
    """Offline: the default codec ships in the package; decoding picks, among the codecs
    on this machine, the one whose weights the stream's header names."""
    from transtic.cli import DEFAULT_CHECKPOINT

    photo = _photo(tmp_path / "p.png", size=(64, 64))
    assert main(["encode", str(photo)]) == 0
    other = tmp_path / "q.ttic"
    assert (
        main(["encode", str(photo), "-o", str(other), "--checkpoint", "transtic_small_base_q1"])
        == 0
    )
    capsys.readouterr()
    assert main(["info", str(tmp_path / "p.ttic"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["task"], info["quality"]) == ("classification", int(DEFAULT_CHECKPOINT[-1]))
    out = tmp_path / "decoded"
    assert main(["decode", str(tmp_path / "p.ttic"), str(other), "-o", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["p.png", "q.png"]


def test_decode_without_checkpoint_names_weights_it_cannot_find(tmp_path, checkpoint):
    """A stream from a checkpoint outside the catalog needs --checkpoint, and says so."""
    photo = _photo(tmp_path / "p.png")
    assert main(["encode", str(photo), "--checkpoint", str(checkpoint)]) == 0
    with pytest.raises(SystemExit, match="no codec on this machine holds the weights"):
        main(["decode", str(tmp_path / "p.ttic")])


def test_the_command_prints_no_dependency_deprecation_warnings(tmp_path):
    """A fresh process that loads a codec, so the import-time warnings are not spent."""
    import subprocess
    import sys

    bad = tmp_path / "x.ttic"
    bad.write_bytes(b"TTIC" + b"\0" * 10)
    done = subprocess.run(
        [sys.executable, "-m", "transtic", "decode", str(bad),
         "--checkpoint", "transtic_small_cls_q1"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and "bitstream" in done.stderr
    assert "FutureWarning" not in done.stderr


def test_decode_to_a_name_without_extension_writes_png(tmp_path, checkpoint):
    photo = _photo(tmp_path / "p.png")
    assert main(["encode", str(photo), "--checkpoint", str(checkpoint)]) == 0
    stream, out = tmp_path / "p.ttic", tmp_path / "out"
    assert main(["decode", str(stream), "-o", str(out), "--checkpoint", str(checkpoint)]) == 0
    with Image.open(out) as img:
        assert (img.format, img.size) == ("PNG", (70, 40))
    with pytest.raises(SystemExit, match=r"cannot write images as '\.xyz'"):
        main(
            ["decode", str(stream), "-o", str(tmp_path / "o.xyz"), "--checkpoint", str(checkpoint)]
        )


def test_info_gives_sizes_as_width_x_height(tmp_path, checkpoint, capsys):
    photo = _photo(tmp_path / "p.png", size=(40, 70))  # 70 wide, 40 high
    assert main(["encode", str(photo), "--checkpoint", str(checkpoint)]) == 0
    capsys.readouterr()
    assert main(["info", str(tmp_path / "p.ttic")]) == 0
    lines = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines())
    assert lines["       original_size"] == "70x40"
    assert lines["          coded_size"] == "256x256"


def test_a_folder_of_one_image_gives_a_folder(tmp_path, checkpoint):
    """The output layout follows the input (a folder), not how many images it holds."""
    src = tmp_path / "frames"
    src.mkdir()
    _photo(src / "only.png")
    out = tmp_path / "streams"
    assert main(["encode", str(src), "-o", str(out), "--checkpoint", str(checkpoint)]) == 0
    assert [p.name for p in out.iterdir()] == ["only.ttic"]
    decoded = tmp_path / "decoded"
    assert main(["decode", str(out), "-o", str(decoded), "--checkpoint", str(checkpoint)]) == 0
    assert [p.name for p in decoded.iterdir()] == ["only.png"]


def test_per_file_lines_do_not_land_inside_the_progress_bar(tmp_path, checkpoint, monkeypatch):
    """On a terminal stdout and stderr are one screen: each per-file line must start on a
    cleared line, not after the bar's text."""
    import io
    import sys

    src = tmp_path / "frames"
    src.mkdir()
    for i in range(3):
        _photo(src / f"f{i}.png")
    screen = io.StringIO()
    monkeypatch.setattr(sys, "stdout", screen)
    monkeypatch.setattr(sys, "stderr", screen)
    args = ["encode", str(src), "-o", str(tmp_path / "s"), "--checkpoint", str(checkpoint)]
    assert main(args) == 0
    shown = [line.rsplit("\r", 1)[-1] for line in screen.getvalue().split("\n")]
    per_file = [line for line in shown if " -> " in line]
    assert len(per_file) == 3 and all(line.startswith(str(src)) for line in per_file)
