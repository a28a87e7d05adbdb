"""The paper's classifier (torchvision ResNet-50 V1) as a catalog entry, and its download path."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest

from transtic.weights import ChecksumError, WeightsRegistry, default_registry, pull, resolve

FAKE = b"not really resnet50 weights\n" * 100


def test_entry_is_torchvision_resnet50_v1() -> None:
    from torchvision.models import ResNet50_Weights

    entry = default_registry().get("resnet50_imagenet1k_v1")
    assert entry.url == ResNet50_Weights.IMAGENET1K_V1.url
    assert entry.url == "https://download.pytorch.org/models/resnet50-0676ba61.pth"
    assert entry.filename == "resnet50-0676ba61.pth"
    assert entry.sha256 is None and entry.sha256_prefix == "0676ba61"
    meta = entry.metadata
    assert meta["architecture"] == "resnet50" and meta["num_classes"] == 1000
    assert meta["mean"] == (0.485, 0.456, 0.406) and meta["std"] == (0.229, 0.224, 0.225)
    assert entry.task == "classification" and entry.kind == "task"


def test_download_checks_the_published_hash_prefix(
    http_root: tuple[Path, str], tmp_path: Path
) -> None:
    served, base = http_root
    entry = default_registry().get("resnet50_imagenet1k_v1")
    (served / entry.filename).write_bytes(FAKE)
    local = dataclasses.replace(entry, url=f"{base}/{entry.filename}")
    # The catalog's own prefix rejects a file that is not torchvision's.
    with pytest.raises(ChecksumError):
        pull(
            entry.name, cache_dir=tmp_path / "a", registry=WeightsRegistry([local]), progress=False
        )
    assert not (tmp_path / "a" / entry.filename).exists()
    # The same entry with the fake file's digest prefix downloads and then resolves offline.
    prefix = hashlib.sha256(FAKE).hexdigest()[:8]
    fake = WeightsRegistry([dataclasses.replace(local, sha256_prefix=prefix)])
    path = pull(entry.name, cache_dir=tmp_path / "b", registry=fake, progress=False)
    assert path == tmp_path / "b" / entry.filename and path.read_bytes() == FAKE
    assert resolve(entry.name, cache_dir=tmp_path / "b", registry=fake) == path
