"""The service's result format (JSON, stored and returned) and its protobuf form."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from typing import Any

from PIL import Image
from torch import Tensor

from services.generated.transtic_api.v1 import api_pb2
from transtic.images import to_uint8


def task_output(task: str, output: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Backend output -> the service's ``labels`` / ``detections`` lists."""
    labels = [
        {"name": str(p["label"]), "index": int(p["index"]), "score": float(p["score"])}
        for p in output.get("predictions", [])
    ]
    detections = []
    for det in output.get("detections", []):
        item: dict[str, Any] = {
            "label": str(det.get("label", det.get("category_id", ""))),
            "category_id": int(det.get("category_id", 0)),
            "score": float(det.get("score", 0.0)),
            "box": [float(v) for v in det.get("box", [])],
        }
        mask = det.get("mask")
        if mask:
            item["mask"] = {"size": [int(v) for v in mask["size"]], "counts": str(mask["counts"])}
        detections.append(item)
    return {"labels": labels, "detections": detections}


def to_proto(result: Mapping[str, Any]) -> api_pb2.AnalyzeResult:
    message = api_pb2.AnalyzeResult(
        task=result["task"],
        bits_per_pixel=result["bits_per_pixel"],
        width=result["width"],
        height=result["height"],
        codec_id=result["codec_id"],
        task_model_id=result["task_model_id"],
    )
    message.timings_ms.update(result.get("timings_ms", {}))
    for label in result.get("labels", []):
        message.labels.add(name=label["name"], index=label["index"], score=label["score"])
    for det in result.get("detections", []):
        entry = message.detections.add(
            label=det["label"], category_id=det["category_id"], score=det["score"], box=det["box"]
        )
        if "mask" in det:
            entry.mask_rle = det["mask"]["counts"]
            entry.mask_size.extend(det["mask"]["size"])
    return message


def png_base64(image: Tensor) -> str:
    buffer = io.BytesIO()
    # Speed over size: the page shows it once and it never leaves the client.
    Image.fromarray(to_uint8(image)).save(buffer, format="PNG", compress_level=1)
    return base64.b64encode(buffer.getvalue()).decode("ascii")
