"""Codec weights trained in this repository and shipped inside the package.

They are small CPU-trained models (``tic-small``/``transtic-small``), so the
package works offline out of the box; the paper's full-size release weights
remain in the catalog as downloads. Data, steps, wall time and measured results
are in ``transtic/weights/data/MODEL_CARD.md``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from transtic.presets import ARCHITECTURES, QUALITY_LAMBDA
from transtic.weights.registry import WeightsEntry

PACKAGE = "transtic.weights"
DATA_DIR = "data"
_LICENSE = "Apache-2.0 (trained in this repository; training photos: see the corpus manifest)"
_DATA = (
    "114 training photos of the package-built corpus (scripts/build_corpus.py, first version; "
    "docs/eval/training_photos.csv)"
)
_NOTES = "trained on the CPU in this repository; see transtic/weights/data/MODEL_CARD.md"

_CLASSIFIER = "tf_efficientnet_lite0 (efficientnet_lite0_imagenet), frozen"
# What scripts/train_default_weights.sh ran for this release, per quality:
# (codec sha256, codec steps, codec seconds, prompts sha256, prompt steps, prompt seconds)
_RUNS: dict[int, tuple[str, int, float, str, int, float]] = {
    1: (
        "13221948b69a131f4724a482d9a2a17783413fab38a5b2839b30251b107e272f",
        600,
        2954.9,
        "957ed15ea71b357c10106090ef9349c884f9e7bcef17b0f96ba1fd34dc6a8f41",
        110,
        1883.2,
    ),
    2: (
        "e2df2bea7ba191bf00d1c77b40ab569916334e907f982eb7d85312e20c6f8e2d",
        600,
        2901.5,
        "52411e8a3696f8382ea5d873ccb16e99e5ecc0f2dba2a7302f005dba284c0e6c",
        110,
        1910.2,
    ),
    3: (
        "1b7b99fa6a2b3f3b020e6a572aadac7661f12d4cd52b4f6100cf9b66d6474471",
        600,
        2860.1,
        "1e947993b761ce228a07ba49412a2b7fb10f5d5b6fc5c949406889fd000f79fd",
        110,
        1913.6,
    ),
}
_PROMPT_LAMBDA = 7.5e-5
# The quality every entry point codes at when none is asked for (the CLI, REST and V2
# uploads, the encoder's Encode call and its stream client): the highest shipped one, as
# the lower ones lose too much for the classifier (coffee is an espresso at q3, a jug at q1).
DEFAULT_QUALITY = 3


def _codec(quality: int) -> tuple[str, int, str | None, str, dict[str, Any]]:
    sha, steps, seconds = _RUNS[quality][:3]
    return (
        f"tic_small_base_q{quality}.pth.tar",
        quality,
        None,
        sha,
        {
            **ARCHITECTURES["tic-small"].config,
            "architecture": "tic-small",
            "lambda": QUALITY_LAMBDA[quality],
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
            **ARCHITECTURES["transtic-small"].config,
            "architecture": "transtic-small",
            "lambda": _PROMPT_LAMBDA,
            "codec_lambda": QUALITY_LAMBDA[quality],
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


def preferred_quality(qualities: Iterable[int]) -> int:
    """The quality to use when none is asked for: DEFAULT_QUALITY where it is offered,
    else the lowest offered (codecs configured by hand need not follow the shipped ladder)."""
    offered = sorted(set(qualities))
    if not offered:
        raise ValueError("no qualities to choose from")
    return DEFAULT_QUALITY if DEFAULT_QUALITY in offered else offered[0]


def shipped_codec_names(task: str) -> list[str]:
    """The shipped codecs with ``task``'s prompts, the DEFAULT_QUALITY one first (a service
    that lists them in this order codes uploads at that quality when none is asked for)."""
    names = [name for name, (_, _, entry_task, _, _) in _SHIPPED.items() if entry_task == task]
    return sorted(names, key=lambda name: _SHIPPED[name][1] != DEFAULT_QUALITY)
