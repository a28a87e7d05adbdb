from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

from transtic.weights import WeightsEntry, WeightsRegistry, weights_main


def _registry(url: str, payload: bytes) -> WeightsRegistry:
    return WeightsRegistry(
        [
            WeightsEntry(
                name="tiny",
                kind="codec",
                task=None,
                quality=1,
                url=url,
                sha256=hashlib.sha256(payload).hexdigest(),
                license="MIT",
                filename="tiny.pth",
            )
        ]
    )


def test_list_and_pull(http_root: tuple[Path, str], tmp_path: Path) -> None:
    served, base = http_root
    (served / "tiny.pth").write_bytes(b"weights!")
    registry = _registry(f"{base}/tiny.pth", b"weights!")
    cache = tmp_path / "cache"

    out = io.StringIO()
    assert weights_main(["list", "--cache-dir", str(cache)], registry=registry, stdout=out) == 0
    assert "tiny" in out.getvalue() and "missing" in out.getvalue()

    out = io.StringIO()
    code = weights_main(
        ["pull", "tiny", "--no-progress"], cache_dir=cache, registry=registry, stdout=out
    )
    assert code == 0
    assert out.getvalue().strip() == str(cache / "tiny.pth")

    out = io.StringIO()
    weights_main(["list", "--json", "--cache-dir", str(cache)], registry=registry, stdout=out)
    rows = json.loads(out.getvalue())
    assert rows[0]["local_path"] == str(cache / "tiny.pth")


def test_pull_failure_exit_code(tmp_path: Path) -> None:
    registry = _registry("http://127.0.0.1:9/tiny.pth", b"x")
    err = io.StringIO()
    code = weights_main(
        ["pull", "tiny", "--no-progress", "--cache-dir", str(tmp_path)],
        registry=registry,
        stderr=err,
    )
    assert code == 1
    assert err.getvalue().startswith("error:")
    assert list(tmp_path.iterdir()) == []
