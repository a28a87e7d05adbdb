"""The CPU-trained weights that ship inside the package: present, verified, loadable."""

from __future__ import annotations

import pytest
import torch

from transtic.models import TransTIC, load_checkpoint
from transtic.weights import default_registry, resolve, sha256_file
from transtic.weights.shipped import shipped_entries

ENTRIES = shipped_entries()


def test_shipped_entries_are_registered() -> None:
    names = {e.name for e in ENTRIES}
    assert {"transtic_small_base_q1", "transtic_small_base_q3", "transtic_small_cls_q1"} <= names
    registry = default_registry()
    for entry in ENTRIES:
        assert registry.get(entry.name) == entry
        assert entry.url is None and entry.sha256 is not None
        for key in ("architecture", "lambda", "steps", "data", "train_seconds"):
            assert key in entry.metadata, (entry.name, key)


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_shipped_file_matches_catalog(entry) -> None:  # type: ignore[no-untyped-def]
    path = resolve(entry.name, cache_dir=None, verify=True)
    assert sha256_file(path) == entry.sha256
    assert path.stat().st_size < 8 * 2**20
    model = load_checkpoint(path)
    assert isinstance(model, TransTIC) == (entry.task is not None)
    assert (entry.metadata["N"], entry.metadata["M"]) == (model.config.N, model.config.M)
    # Loader-rebuilt tables and float32 buffers: rate estimates must be finite.
    x = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        out = model(x)
    assert all(torch.isfinite(v.log()).all() for v in out["likelihoods"].values())


def test_prompted_weights_keep_their_base_frozen() -> None:
    for entry in ENTRIES:
        if entry.task is None:
            continue
        base_name = entry.metadata["base"]
        base = load_checkpoint(resolve(base_name, cache_dir=None)).state_dict()
        prompted = load_checkpoint(resolve(entry.name, cache_dir=None)).state_dict()
        for key, value in base.items():
            assert torch.equal(prompted[key], value), (entry.name, key)
