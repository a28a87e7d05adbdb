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
_LICENSE = "Apache-2.0 (trained in this repository; training photos are package sample data)"
_DATA = "19 natural photos shipped in scikit-image, scikit-learn and Debian opencv-doc"
_NOTES = "trained on 1 CPU thread in this repository; see transtic/weights/data/MODEL_CARD.md"

_ARCH: dict[str, Any] = {"N": 48, "M": 64, "depths": (2, 2, 2, 2, 2, 2), "num_heads": 4}
_TRAIN: dict[str, Any] = {"batch_size": 2, "patch_size": 256, "optimizer": "Adam"}
_CLASSIFIER = "tf_efficientnet_lite0 (efficientnet_lite0_imagenet), frozen"

# name -> (file, quality, task, sha256, metadata), from scripts/train_default_weights.sh.
_SHIPPED: dict[str, tuple[str, int, str | None, str, dict[str, Any]]] = {
    "transtic_small_base_q1": (
        "tic_small_base_q1.pth.tar",
        1,
        None,
        "c7df7a5ed5bbccc41db4a319591c582d6cb85cc4876dd632a74d8cb608a64454",
        {
            **_ARCH,
            **_TRAIN,
            "architecture": "tic-small",
            "lambda": 0.0018,
            "steps": 400,
            "init": "transtic_small_base_q3",
            "lr": 2e-4,
            "train_seconds": 981.6,
        },
    ),
    "transtic_small_base_q3": (
        "tic_small_base_q3.pth.tar",
        3,
        None,
        "deb19e7fcfb4e6b71e3664d83ae9e7f94aa7db132ffbbd13f083188bffe768a1",
        {
            **_ARCH,
            **_TRAIN,
            "architecture": "tic-small",
            "lambda": 0.0067,
            "steps": 1000,
            "lr": 4e-4,
            "train_seconds": 2458.3,
        },
    ),
    "transtic_small_cls_q1": (
        "transtic_small_cls_q1.pth.tar",
        1,
        "classification",
        "20a38472639c5b880a0f457744899406aee947431c5203fa3fac26763d9b8bc0",
        {
            **_ARCH,
            **_TRAIN,
            "architecture": "transtic-small",
            "lambda": 0.0018,
            "steps": 120,
            "base": "transtic_small_base_q1",
            "init_prompts": "transtic_small_cls_q3",
            "downstream": _CLASSIFIER,
            "lr": 1e-3,
            "train_seconds": 377.8,
        },
    ),
    "transtic_small_cls_q3": (
        "transtic_small_cls_q3.pth.tar",
        3,
        "classification",
        "00179962bd5e6eb89885ba54b039d6ef3c9e3fe9aad75f0db9ab1df975663ac7",
        {
            **_ARCH,
            **_TRAIN,
            "architecture": "transtic-small",
            "lambda": 0.0067,
            "steps": 200,
            "base": "transtic_small_base_q3",
            "downstream": _CLASSIFIER,
            "lr": 1e-3,
            "train_seconds": 860.9,
        },
    ),
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
