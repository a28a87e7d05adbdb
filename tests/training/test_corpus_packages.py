"""Package downloads for the corpus when Debian's archive no longer has the pinned revision."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from transtic.training import corpus_packages
from transtic.training.corpus_packages import Source

# apt-get download NAME=VERSION writes NAME_VERSION_all.deb, with ':' written as '%3a';
# only the versions listed in $AVAILABLE exist.
FAKE_APT_GET = """#!/bin/sh
spec=$3; name=${spec%%=*}; version=${spec#*=}
case " $AVAILABLE " in *" $version "*) ;; *) echo "E: no $version" >&2; exit 100;; esac
echo "$version" > "${name}_$(echo "$version" | sed 's/:/%3a/g')_all.deb"
"""
FAKE_APT_CACHE = """#!/bin/sh
for v in $AVAILABLE; do echo "   $2 | $v | http://deb.debian.org/debian bookworm/main"; done
"""


@pytest.fixture
def archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    tools = tmp_path / "bin"
    tools.mkdir()
    for name, text in (("apt-get", FAKE_APT_GET), ("apt-cache", FAKE_APT_CACHE)):
        (tools / name).write_text(text)
        (tools / name).chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    return downloads


def source(version: str) -> Source:
    return Source("deb", "some-doc", version, "GPL", ("*.jpg",))


def test_the_pinned_revision_is_used_while_the_archive_has_it(
    archive: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AVAILABLE", "1:2.0-1+deb12u16 1:2.0-1+deb12u15")
    got = corpus_packages._download_deb(source("1:2.0-1+deb12u15"), archive)
    assert got.name == "some-doc_1%3a2.0-1+deb12u15_all.deb"
    assert got.read_text().strip() == "1:2.0-1+deb12u15"


def test_a_vanished_revision_is_replaced_by_the_archives_current_one(
    archive: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AVAILABLE", "1:2.0-1+deb12u16 1:2.0-1")
    got = corpus_packages._download_deb(source("1:2.0-1+deb12u15"), archive)
    # filed under the pinned name, so the unpacked cache and later runs find it
    assert got.name == "some-doc_1%3a2.0-1+deb12u15_all.deb"
    assert got.read_text().strip() == "1:2.0-1+deb12u16"
    assert "is gone from the archive; using 1:2.0-1+deb12u16" in capsys.readouterr().err
    assert corpus_packages._download_deb(source("1:2.0-1+deb12u15"), archive) == got


def test_no_version_at_all_is_an_error_naming_the_package(
    archive: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AVAILABLE", "")
    with pytest.raises(FileNotFoundError, match="some-doc_1%3a2.0-1"):
        corpus_packages._download_deb(source("1:2.0-1"), archive)
