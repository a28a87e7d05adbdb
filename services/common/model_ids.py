"""One id scheme for codec weights, shared by both services' model lists, GetInfo,
``EncodeResponse.codec_id``/``AnalyzeResult.codec_id`` and the metrics' codec label.

The id names the weights file, not the role it plays: a file of the weights catalog is
called by its catalog name (``transtic_small_cls_q3``, ``transtic_cls_q1`` for the
release's ``cls_1.pth.tar``) however it was configured (by name, found in the cache
directory, or by path); any other file by its name without the checkpoint suffixes
(``/models/site_a.pth.tar`` -> ``site_a``); a model-repository entry of the analytics
service keeps its manifest name. So the encoder and the analytics service name the same
file alike. The weights fingerprint, listed beside the id, is what proves two
files hold the same weights.
"""

from __future__ import annotations

from pathlib import Path

from transtic.weights import default_registry

_CHECKPOINT_SUFFIXES = (".tar", ".pth", ".pt", ".ckpt")


def codec_model_id(path: str | Path) -> str:
    name = Path(path).name
    for entry in default_registry():  # read each time: entries may be registered later
        if entry.kind == "codec" and entry.filename == name:
            return entry.name
    stem = name
    while Path(stem).suffix in _CHECKPOINT_SUFFIXES and Path(stem).stem:
        stem = Path(stem).stem
    return stem
