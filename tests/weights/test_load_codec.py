"""``load_codec``: one way to load a codec by catalog name or file, with the same checks."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import torch

from transtic.codec import ImageCodec
from transtic.models import HyperpriorCodec, TransTIC, save_checkpoint, weights_fingerprint
from transtic.weights import (
    ChecksumError,
    CodecFileNotFoundError,
    UnknownCodecError,
    WeightsEntry,
    WeightsNotFoundError,
    WeightsRegistry,
    default_registry,
    load_codec,
    locate_codec,
)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _codec_entry(name: str, filename: str, sha256: str | None, **extra: object) -> WeightsEntry:
    return WeightsEntry(
        name=name,
        kind="codec",
        task="classification",
        quality=2,
        url=f"https://weights.invalid/{filename}",
        sha256=sha256,
        license="test",
        filename=filename,
        notes="" if sha256 else "digest unknown in this test",
        metadata={"lambda": 0.0035, "source": "catalog"},
        **extra,  # type: ignore[arg-type]
    )


@pytest.fixture
def tiny_file(tiny_transtic: HyperpriorCodec, tmp_path: Path) -> Path:
    return save_checkpoint(
        tiny_transtic, tmp_path / "mine.pth.tar", metadata={"steps": 7, "source": "file"}
    )


@pytest.fixture
def cache(tiny_file: Path, tmp_path: Path) -> tuple[Path, WeightsRegistry]:
    """A cache dir holding one good catalog file and one whose digest is wrong."""
    directory = tmp_path / "cache"
    directory.mkdir()
    shutil.copy(tiny_file, directory / "good.pth")
    shutil.copy(tiny_file, directory / "tampered.pth")
    shutil.copy(tiny_file, directory / "unpinned.pth")
    registry = WeightsRegistry(
        [
            _codec_entry("good_q2", "good.pth", _sha256(tiny_file)),
            _codec_entry("tampered_q2", "tampered.pth", "0" * 64),
            _codec_entry("unpinned_q2", "unpinned.pth", None),
            WeightsEntry(
                name="a_classifier",
                kind="task",
                task="classification",
                quality=None,
                url="https://weights.invalid/cls.pth",
                sha256="1" * 64,
                license="test",
                filename="cls.pth",
            ),
        ]
    )
    return directory, registry


def test_a_catalog_name_loads_checked_with_its_metadata(
    cache: tuple[Path, WeightsRegistry], tiny_transtic: HyperpriorCodec
) -> None:
    directory, registry = cache
    loaded = load_codec("good_q2", cache_dir=directory, registry=registry)
    assert isinstance(loaded.model, TransTIC) and not loaded.model.training
    assert loaded.model.fingerprint == weights_fingerprint(  # type: ignore[attr-defined]
        tiny_transtic.state_dict()
    )
    assert loaded.name == "good_q2" and loaded.path == directory / "good.pth"
    assert loaded.file.sha256 == _sha256(directory / "good.pth")
    assert (loaded.task, loaded.quality) == ("classification", 2)
    # The catalog's description wins over what the file recorded; the rest is kept.
    assert loaded.metadata == {"steps": 7, "source": "catalog", "lambda": 0.0035}


def test_a_path_loads_and_is_checked_only_against_a_given_digest(tiny_file: Path) -> None:
    loaded = load_codec(tiny_file)
    assert loaded.name == "mine.pth" and loaded.path == tiny_file
    assert loaded.file.entry is None and loaded.file.sha256 is None
    assert (loaded.task, loaded.quality) == (None, None)
    assert loaded.metadata == {"steps": 7, "source": "file"}
    assert load_codec(str(tiny_file), sha256=_sha256(tiny_file).upper()).file.sha256
    with pytest.raises(ChecksumError, match="expected sha256 0000"):
        load_codec(tiny_file, sha256="0" * 64)
    assert load_codec(tiny_file, sha256="0" * 64, verify=False).file.sha256 is None


def test_a_bad_checksum_is_refused_by_name_and_by_path(
    cache: tuple[Path, WeightsRegistry],
) -> None:
    directory, registry = cache
    with pytest.raises(ChecksumError, match="'tampered_q2'") as info:
        load_codec("tampered_q2", cache_dir=directory, registry=registry)
    assert info.value.actual == _sha256(directory / "tampered.pth")
    # The same file addressed by its path in the cache dir is still a catalog file.
    with pytest.raises(ChecksumError):
        load_codec(directory / "tampered.pth", cache_dir=directory, registry=registry)
    # Refused before the file is parsed, so a corrupt file is reported as a checksum error.
    (directory / "good.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ChecksumError):
        load_codec("good_q2", cache_dir=directory, registry=registry)
    skipped = load_codec("tampered_q2", cache_dir=directory, registry=registry, verify=False)
    assert skipped.file.sha256 is None


def test_published_prefix_is_checked_and_unpinned_files_load(
    cache: tuple[Path, WeightsRegistry], tiny_file: Path
) -> None:
    directory, registry = cache
    assert load_codec("unpinned_q2", cache_dir=directory, registry=registry).file.sha256 is None
    digest = _sha256(tiny_file)
    for prefix, ok in ((digest[:8], True), ("deadbeef", False)):
        shutil.copy(tiny_file, directory / f"tv-{prefix}.pth")
        prefixed = WeightsRegistry(
            [_codec_entry("tv", f"tv-{prefix}.pth", None, sha256_prefix=prefix)]
        )
        if ok:
            assert locate_codec("tv", cache_dir=directory, registry=prefixed).sha256 == digest
        else:
            with pytest.raises(ChecksumError, match=r"deadbeef\.\.\."):
                locate_codec("tv", cache_dir=directory, registry=prefixed)


def test_unknown_names_and_missing_files_say_what_is_known(
    cache: tuple[Path, WeightsRegistry], tmp_path: Path
) -> None:
    directory, registry = cache
    with pytest.raises(UnknownCodecError) as info:
        load_codec("nope", cache_dir=directory, registry=registry)
    assert str(info.value) == (
        "'nope' is neither a checkpoint file nor the name of codec weights; "
        "known codec weights: good_q2, tampered_q2, unpinned_q2"
    )
    assert isinstance(info.value, LookupError)
    with pytest.raises(UnknownCodecError, match="'a_classifier' names classification weights"):
        load_codec("a_classifier", cache_dir=directory, registry=registry)
    with pytest.raises(CodecFileNotFoundError, match="checkpoint file not found: .*absent.pth"):
        load_codec(tmp_path / "absent.pth", registry=registry)
    # A known name whose file is neither in the cache nor shipped: where to put it.
    with pytest.raises(WeightsNotFoundError, match="put 'good.pth' into"):
        load_codec("good_q2", cache_dir=tmp_path / "empty", registry=registry)


def test_shipped_default_loads_by_name_and_by_its_package_path() -> None:
    name = "transtic_small_cls_q1"
    loaded = load_codec(name)
    entry = default_registry().get(name)
    assert loaded.file.sha256 == entry.sha256 and loaded.task == "classification"
    assert loaded.metadata["architecture"] == "transtic-small"
    again = load_codec(loaded.path)
    assert again.name == name and again.file.sha256 == entry.sha256
    assert torch.equal(
        again.model.state_dict()["g_a0.weight"], loaded.model.state_dict()["g_a0.weight"]
    )


def test_image_codec_from_checkpoint_goes_through_load_codec(
    cache: tuple[Path, WeightsRegistry], tiny_file: Path
) -> None:
    codec = ImageCodec.from_checkpoint(str(tiny_file), quality=3)
    assert codec.quality == 3
    with pytest.raises(ChecksumError):
        ImageCodec.from_checkpoint(tiny_file, sha256="0" * 64)
    assert ImageCodec.from_checkpoint("transtic_small_base_q1").codec_name == "tic"
