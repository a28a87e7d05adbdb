"""Small task backends for tests: deterministic outputs, chosen failures."""

from __future__ import annotations

import threading
from typing import Any, ClassVar

import torch

from services.analytics.rest import BITSTREAM_TYPE
from transtic.tasks import Normalization, TaskBackend, TaskName, encode_masks

FAIL_WIDTH = 24  # images this wide make FakeDetection fail (to test per-item isolation)


class FakeDetection(TaskBackend):
    """One box over the middle half of each image, with a mask, category 0."""

    name: ClassVar[str] = "fake_detection"
    task: ClassVar[TaskName] = "detection"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.batches: list[int] = []

    @property
    def required_weights(self) -> list[str]:
        return ["fake_detection_weights"]

    @property
    def normalization(self) -> Normalization:
        return Normalization(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), resize="internal")

    def _load(self) -> None:
        pass

    def _predict(self, images: list[torch.Tensor]) -> list[dict[str, Any]]:
        self.batches.append(len(images))
        out = []
        for image in images:
            h, w = image.shape[-2:]
            if w == FAIL_WIDTH:
                raise ValueError("fake detector cannot handle this width")
            x1, y1, x2, y2 = w // 4, h // 4, 3 * w // 4, 3 * h // 4
            mask = torch.zeros(1, 1, h, w)
            mask[..., y1:y2, x1:x2] = 1.0
            (rle,) = encode_masks(mask)
            out.append(
                {
                    "image_size": [h, w],
                    "detections": [
                        {
                            "box": [float(x1), float(y1), float(x2), float(y2)],
                            "score": 0.9,
                            "category_id": 0,
                            "label": "thing",
                            "mask": rle,
                        }
                    ],
                }
            )
        return out


class GatedDetection(FakeDetection):
    """Holds the batch worker inside predict until ``gate`` is set."""

    name: ClassVar[str] = "gated_detection"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.entered = threading.Event()
        self.gate = threading.Event()

    def _predict(self, images: list[torch.Tensor]) -> list[dict[str, Any]]:
        self.entered.set()
        self.gate.wait(30)
        return super()._predict(images)


# A raw ASGI request to the analyze endpoint, for tests that drive the app below HTTP.
ANALYZE_SCOPE = {
    "type": "http",
    "asgi": {"version": "3.0"},
    "http_version": "1.1",
    "method": "POST",
    "scheme": "http",
    "path": "/v1/analyze",
    "raw_path": b"/v1/analyze",
    "query_string": b"task=detection",
    "headers": [(b"content-type", BITSTREAM_TYPE.encode())],
    "client": ("127.0.0.1", 5000),
    "server": ("127.0.0.1", 80),
    "root_path": "",
}
