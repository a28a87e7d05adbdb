"""Checkpoints: every torch.load is weights_only=True, and registry files are checksummed."""

from __future__ import annotations

import ast
import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from services.analytics.hub import ModelHub
from services.analytics.settings import Settings
from services.encoder.codecs import CodecBank
from services.encoder.settings import EncoderSettings
from transtic.weights import ChecksumError, WeightsEntry, WeightsRegistry

REPO = Path(__file__).resolve().parents[3]
SCANNED = ("transtic", "services", "scripts", "tests")


def unsafe_loads(source: str) -> list[int]:
    """Lines calling torch.load (or a bare `load` imported from torch) without
    weights_only=True (a literal True: a variable could be False)."""
    tree = ast.parse(source)
    bare = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "torch"
        for alias in node.names
        if alias.name == "load"
    }
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        is_load = (
            isinstance(func, ast.Attribute)
            and func.attr == "load"
            and isinstance(func.value, ast.Name)
            and func.value.id == "torch"
        ) or (isinstance(func, ast.Name) and func.id in bare)
        if not is_load:
            continue
        safe = any(
            k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
            for k in node.keywords
        )
        if not safe:
            found.append(node.lineno)
    return found


def test_the_scanner_catches_unsafe_calls() -> None:
    assert unsafe_loads("import torch\ntorch.load(p)\n") == [2]
    assert unsafe_loads("torch.load(p, weights_only=False)") == [1]
    assert unsafe_loads("torch.load(p, weights_only=flag)") == [1]
    assert unsafe_loads("from torch import load as l\nl(p)\n") == [2]
    assert unsafe_loads("torch.load(\n    p,\n    weights_only=True,\n)") == []


def test_every_torch_load_in_the_repository_is_weights_only() -> None:
    offenders = []
    files = [p for top in SCANNED for p in (REPO / top).rglob("*.py")]
    assert len(files) > 50
    for path in files:
        if "generated" in path.parts:
            continue
        text = path.read_text(encoding="utf-8")
        if "load" not in text:
            continue
        offenders += [f"{path.relative_to(REPO)}:{line}" for line in unsafe_loads(text)]
    assert not offenders, f"torch.load without weights_only=True: {offenders}"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def registry(
    codec_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, WeightsRegistry]:
    """Two catalog codecs in a cache dir: one with its true digest, one with a wrong one."""
    cache = tmp_path / "weights"
    cache.mkdir()
    shutil.copy(codec_checkpoint, cache / "good_1.pth")
    shutil.copy(codec_checkpoint, cache / "tampered_2.pth")

    def entry(name: str, quality: int, sha256: str) -> WeightsEntry:
        return WeightsEntry(
            name=name,
            kind="codec",
            task="detection",
            quality=quality,
            url=f"https://weights.invalid/{name}.pth",
            sha256=sha256,
            license="test",
            filename=f"{name}.pth",
        )

    table = WeightsRegistry(
        [entry("good_1", 1, _sha256(codec_checkpoint)), entry("tampered_2", 2, "0" * 64)]
    )
    monkeypatch.setattr("services.analytics.hub.default_registry", lambda: table)
    monkeypatch.setattr("services.encoder.codecs.default_registry", lambda: table)
    return cache, table


def test_analytics_checks_registry_weights_against_their_sha256(
    registry: tuple[Path, WeightsRegistry], analytics_settings: Callable[..., Settings]
) -> None:
    cache, _ = registry
    settings = analytics_settings(
        codec_checkpoint=None,
        weights_cache_dir=cache,
        codec_checkpoints={"detection:1": "good_1", "detection:2": "tampered_2"},
        task_backends=["classification"],
    )
    hub = ModelHub(settings, backends=[])
    hub.load()
    assert [slot.id for slot in hub.codecs] == ["good_1"]
    assert "sha256" in hub.codec_problems["detection:2"]


def test_encoder_checks_catalog_weights_against_their_sha256(
    registry: tuple[Path, WeightsRegistry], encoder_settings: Callable[..., EncoderSettings]
) -> None:
    cache, _ = registry
    good = encoder_settings(checkpoints={}, weights_cache_dir=cache)
    (cache / "tampered_2.pth").unlink()
    assert CodecBank.load(good).qualities("detection") == [1]
    shutil.copy(cache / "good_1.pth", cache / "tampered_2.pth")
    with pytest.raises(ChecksumError, match="sha256"):
        CodecBank.load(good)
