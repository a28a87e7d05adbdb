"""Architecture presets and λ are data that the model registry, the catalog and training share."""

from __future__ import annotations

import pytest

from transtic.models import CodecConfig, TransTIC, create_model, list_models
from transtic.presets import ARCHITECTURES, DETECTION_LAMBDA, PAPER, QUALITY_LAMBDA
from transtic.training.cli import build_parser
from transtic.weights import default_registry


@pytest.mark.parametrize("name", ["tic-tiny", "transtic-tiny", "tic-small", "transtic-small"])
def test_registered_architectures_are_the_presets(name: str) -> None:
    preset = ARCHITECTURES[name]
    model = create_model(name)
    assert model.config == CodecConfig(**preset.config)
    assert isinstance(model, TransTIC) == preset.prompted
    # Overrides still win over the preset.
    assert create_model(name, N=16).config.N == 16


def test_every_preset_is_registered_and_the_paper_sizes_match() -> None:
    assert set(ARCHITECTURES) <= set(list_models())
    assert CodecConfig(**PAPER) == CodecConfig()  # the config defaults are the paper's q1-4
    assert ARCHITECTURES["tic-hq"].config == {"N": 192, "M": 320}
    with pytest.raises(TypeError):
        ARCHITECTURES["tic"].config["N"] = 1  # type: ignore[index]


def test_catalog_and_shipped_metadata_come_from_the_tables() -> None:
    for entry in default_registry():
        if entry.kind != "codec":
            continue
        meta = entry.metadata
        if entry.package_resource is not None:  # shipped: registered presets by name
            preset = ARCHITECTURES[meta["architecture"]]
            assert {k: meta[k] for k in preset.config} == dict(preset.config)
            codec_lambda = meta.get("codec_lambda", meta["lambda"])
            assert codec_lambda == QUALITY_LAMBDA[entry.quality or 0]
        else:  # the paper's release files
            assert (meta["N"], meta["M"]) == (PAPER["N"], PAPER["M"])
            assert meta["lambda"] == QUALITY_LAMBDA[entry.quality or 0]


def test_training_reads_the_same_lambda_table() -> None:
    parser = build_parser()
    args = parser.parse_args(["codec", "--out", "x", "--quality", "3"])
    from transtic.training.cli import _lambda

    assert _lambda(args, QUALITY_LAMBDA) == 0.0067
    assert set(DETECTION_LAMBDA) == set(QUALITY_LAMBDA)
    with pytest.raises(SystemExit):
        parser.parse_args(["codec", "--out", "x", "--quality", "5"])
