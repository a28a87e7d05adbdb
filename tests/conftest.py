"""Shared fixtures: tiny random-weight codecs and the official conformance data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from transtic.models import HyperpriorCodec, create_model

REPO = Path(__file__).resolve().parents[1]
CONFORMANCE_DIR = REPO.parent / "shared" / "conformance"


def _tiny(name: str, seed: int) -> HyperpriorCodec:
    torch.manual_seed(seed)
    model = create_model(name)
    model.update(force=True)
    return model.eval()


@pytest.fixture(scope="session")
def tiny_transtic() -> HyperpriorCodec:
    return _tiny("transtic-tiny", 0)


@pytest.fixture(scope="session")
def tiny_tic() -> HyperpriorCodec:
    return _tiny("tic-tiny", 1)


@pytest.fixture(scope="session")
def conformance_dir() -> Path:
    """The official implementation's vectors. Missing data fails loudly: CI must run these."""
    if not CONFORMANCE_DIR.is_dir():
        if os.environ.get("TRANSTIC_SKIP_CONFORMANCE") == "1":
            pytest.skip("conformance data absent and TRANSTIC_SKIP_CONFORMANCE=1")
        pytest.fail(f"conformance data not found at {CONFORMANCE_DIR} (see README: Testing)")
    return CONFORMANCE_DIR


@pytest.fixture(scope="session")
def reference_weights(conformance_dir: Path) -> dict[str, torch.Tensor]:
    checkpoint = torch.load(
        conformance_dir / "transtic_reference_weights_fp16.pth.tar", weights_only=True
    )
    return checkpoint["state_dict"]


@pytest.fixture(scope="session")
def reference_vectors(conformance_dir: Path) -> dict:
    return torch.load(conformance_dir / "transtic_reference_vectors.pt", weights_only=True)
