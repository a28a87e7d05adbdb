"""Codec weights trained in this repository and shipped inside the package.

They are small CPU-trained models (``tic-small``/``transtic-small``), so the
package works offline out of the box; the paper's full-size release weights
remain in the catalog as downloads. Data, steps, wall time and measured results
are in ``transtic/weights/data/MODEL_CARD.md``.
"""

from __future__ import annotations

from typing import Any

from transtic.weights.registry import WeightsEntry

PACKAGE = "transtic.weights"
DATA_DIR = "data"
_LICENSE = "Apache-2.0 (trained in this repository; training photos: see the corpus manifest)"
_DATA = (
    "114 training photos of the package-built corpus (scripts/build_corpus.py, first version; "
    "docs/eval/training_photos.csv)"
)
_NOTES = "trained on the CPU in this repository; see transtic/weights/data/MODEL_CARD.md"

_ARCH: dict[str, Any] = {"N": 48, "M": 64, "depths": (2, 2, 2, 2, 2, 2), "num_heads": 4}
_CLASSIFIER = "tf_efficientnet_lite0 (efficientnet_lite0_imagenet), frozen"
_CODEC_LAMBDA = {1: 0.0018, 2: 0.0035, 3: 0.0067}
# What scripts/train_default_weights.sh ran for this release, per quality:
# (codec sha256, codec steps, codec seconds, prompts sha256, prompt steps, prompt seconds)
_RUNS: dict[int, tuple[str, int, float, str, int, float]] = {
@RUNS@
}
_PROMPT_LAMBDA = 7.5e-5


def _codec(quality: int) -> tuple[str, int, str | None, str, dict[str, Any]]:
    sha, steps, seconds = _RUNS[quality][:3]
    return (
        f"tic_small_base_q{quality}.pth.tar",
        quality,
        None,
        sha,
        {
            **_ARCH,
            "architecture": "tic-small",
            "lambda": _CODEC_LAMBDA[quality],
            "steps": steps,
            "batch_size": 2,
            "patch_size": 256,
            "optimizer": "Adam",
            "lr": 2e-4,
            "init": f"previous release tic_small_base_q{3 if quality == 2 else quality} (2726b14)",
            "train_seconds": seconds,
        },
    )


def _prompts(quality: int) -> tuple[str, int, str | None, str, dict[str, Any]]:
    sha, steps, seconds = _RUNS[quality][3:]
    return (
        f"transtic_small_cls_q{quality}.pth.tar",
        quality,
        "classification",
        sha,
        {
            **_ARCH,
            "architecture": "transtic-small",
            "lambda": _PROMPT_LAMBDA,
            "codec_lambda": _CODEC_LAMBDA[quality],
            "steps": steps,
            "batch_size": 4,
            "patch_size": 256,
            "optimizer": "Adam",
            "lr": 1e-3,
            "base": f"transtic_small_base_q{quality}",
            "downstream": _CLASSIFIER,
            "train_seconds": seconds,
        },
    )


# name -> (file, quality, task, sha256, metadata)
_SHIPPED: dict[str, tuple[str, int, str | None, str, dict[str, Any]]] = {
    **{f"transtic_small_base_q{q}": _codec(q) for q in _RUNS},
    **{f"transtic_small_cls_q{q}": _prompts(q) for q in _RUNS},
}


def shipped_entries() -> list[WeightsEntry]:
    return [
        WeightsEntry(
            name=name,
            kind="codec",
            task=task,
            quality=quality,
            url=None,
            sha256=sha256,
            license=_LICENSE,
            filename=filename,
            package_resource=(PACKAGE, f"{DATA_DIR}/{filename}"),
            notes=_NOTES,
            metadata={"data": _DATA, **metadata},
        )
        for name, (filename, quality, task, sha256, metadata) in _SHIPPED.items()
    ]
