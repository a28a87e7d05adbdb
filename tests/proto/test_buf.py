"""The gRPC contract under buf: STANDARD lint and no breaking change against the committed
v1 baseline (proto/baseline/transtic-v1.json), plus proof that both checks can fail.

buf is the npm package @bufbuild/buf, installed into .tools/ by scripts/setup_env.sh
(which CI runs), so a missing binary is a failure here, not a skip.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO = ROOT / "proto"
BASELINE = PROTO / "baseline" / "transtic-v1.json"
BUF = ROOT / ".tools" / "node_modules" / ".bin" / "buf"


def buf(*args: str, cwd: Path = PROTO) -> subprocess.CompletedProcess[str]:
    assert BUF.exists(), "buf missing: run bash scripts/setup_env.sh (installs @bufbuild/buf)"
    return subprocess.run([str(BUF), *args], cwd=cwd, capture_output=True, text=True, timeout=180)


def proto_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "proto"
    shutil.copytree(PROTO, copy, ignore=shutil.ignore_patterns("baseline"))
    return copy


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_lint_passes() -> None:
    done = buf("lint")
    assert done.returncode == 0, done.stdout + done.stderr


def test_no_breaking_change_against_the_v1_baseline() -> None:
    done = buf("breaking", "--against", str(BASELINE))
    assert done.returncode == 0, (
        done.stdout + done.stderr + "\nA breaking change belongs in transtic.v2 (proto/buf.yaml)."
    )


def test_breaking_changes_are_refused(tmp_path: Path) -> None:
    copy = proto_copy(tmp_path)
    api = copy / "transtic" / "v1" / "api.proto"
    edit(api, "  uint64 sequence = 2;", "  uint32 sequence = 2;")  # retyped field
    edit(api, "  string session = 8;", "")  # deleted field
    done = buf("breaking", "--against", str(BASELINE), cwd=copy)
    assert done.returncode != 0
    assert "sequence" in done.stdout and "session" in done.stdout, done.stdout


def test_lint_holds_new_code_to_standard(tmp_path: Path) -> None:
    copy = proto_copy(tmp_path)
    # The v1 naming waivers in buf.yaml cover transtic/v1/api.proto only: a new file
    # repeating the same names must fail, as must a bad name added to v1 itself.
    v2 = copy / "transtic" / "v2"
    v2.mkdir()
    (v2 / "api.proto").write_text(
        'syntax = "proto3";\npackage transtic.v2;\n'
        "message GetInfoRequest {}\nmessage ServiceInfo {}\n"
        "service Encoder {\n  rpc GetInfo(GetInfoRequest) returns (ServiceInfo);\n}\n"
    )
    edit(
        copy / "transtic" / "v1" / "api.proto",
        "message Label {",
        "message label_entry {}\n\nmessage Label {",
    )
    done = buf("lint", cwd=copy)
    assert done.returncode != 0
    assert "transtic/v2/api.proto" in done.stdout and "Service" in done.stdout, done.stdout
    assert "label_entry" in done.stdout, done.stdout
