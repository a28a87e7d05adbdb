"""``--protocol paper``: image preparation, mapping back to COCO coordinates, end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from transtic.bitstream import AlignMode
from transtic.codec import ImageCodec
from transtic.evaluation import EvalSet, TaskScorer, eval_main, load_eval_set
from transtic.evaluation.metrics import rescale_detections
from transtic.evaluation.protocol import (
    classification_view,
    detection_size,
    detection_view,
    prepare,
)
from transtic.images import to_tensor
from transtic.models import load_checkpoint

from .conftest import COCO_BOXES, COCO_IMAGES, smooth_image


def test_classification_view_is_resize_256_then_centre_crop() -> None:
    pil = smooth_image(3, 300, 400)
    view = classification_view(to_tensor(pil))
    assert view.shape == (3, 256, 256)
    # Pillow's bilinear resize is antialiased too; torchvision's Resize(256) keeps the
    # aspect ratio by truncating the long side: 400 * 256 / 300 -> 341.
    resized = pil.resize((341, 256), Image.Resampling.BILINEAR)
    left = round((341 - 256) / 2)
    expected = to_tensor(resized.crop((left, 0, left + 256, 256)))
    assert float((view - expected).abs().mean()) < 1.5 / 255
    assert torch.equal(view, (view * 255).round() / 255)  # an 8-bit image


@pytest.mark.parametrize(
    ("size", "expected"),
    [((480, 640), (800, 1067)), ((150, 100), (1200, 800)), ((100, 1000), (133, 1333))],
)
def test_detection_size_short_800_long_at_most_1333(
    size: tuple[int, int], expected: tuple[int, int]
) -> None:
    assert detection_size(*size) == expected
    assert detection_view(torch.rand(3, *size)).shape[-2:] == expected


def test_rescale_detections_moves_boxes_and_masks() -> None:
    from pycocotools import mask as mask_utils

    from transtic.tasks import encode_masks

    mask = torch.zeros(1, 1, 80, 100)
    mask[..., 20:40, 50:100] = 1
    det = {"box": [50.0, 20.0, 100.0, 40.0], "score": 0.9, "category_id": 3}
    det["mask"] = encode_masks(mask)[0]
    moved = rescale_detections({"detections": [det]}, (80, 100), (40, 200))
    (out,) = moved["detections"]
    assert out["box"] == pytest.approx([100.0, 10.0, 200.0, 20.0])
    assert moved["image_size"] == [40, 200]
    decoded = mask_utils.decode({"size": out["mask"]["size"], "counts": out["mask"]["counts"]})
    assert decoded.shape == (40, 200)
    assert decoded[10:20, 100:200].all() and decoded.sum() == 10 * 100


class BoxOracle:
    """Detector stub that answers each tiny-COCO image's box in the coordinates of the
    image it is given, found by its aspect ratio; scores stay in the paper's range."""

    def predict(self, images: list[torch.Tensor]) -> list[dict[str, Any]]:
        out = []
        for img in images:
            h, w = img.shape[-2:]
            info = min(COCO_IMAGES, key=lambda im: abs(im["height"] / im["width"] - h / w))
            x, y, bw, bh = COCO_BOXES[info["id"]]
            sy, sx = h / info["height"], w / info["width"]
            box = [x * sx, y * sy, (x + bw) * sx, (y + bh) * sy]
            weak = [0.0, 0.0, 5.0, 5.0]  # below the 0.05 threshold: must not count
            out.append(
                {
                    "detections": [
                        {"box": box, "score": 0.9, "category_id": 1},
                        {"box": weak, "score": 0.01, "category_id": 1},
                    ]
                }
            )
        return out


def test_paper_detection_maps_predictions_to_original_coordinates(
    tiny_coco: tuple[Path, Path],
) -> None:
    root, ann = tiny_coco
    data = prepare(load_eval_set("coco", root, annotations=ann), "detection", "paper")
    assert [tuple(i.shape[-2:]) for i in data.images] == [(800, 1067), (1200, 800)]
    assert data.original_sizes == [(120, 160), (150, 100)]
    scorer = TaskScorer("detection", BoxOracle(), data, min_score=0.05)
    assert scorer.reference_scores()["mAP"] == pytest.approx(100.0)
    # Unmapped boxes (in 800-pixel coordinates) would miss every annotation.
    unmapped = TaskScorer("detection", BoxOracle(), EvalSet(data.names, data.images,
                          coco_gt=data.coco_gt, image_ids=data.image_ids))  # fmt: skip
    assert unmapped.reference_scores()["mAP"] < 1.0


@pytest.fixture(scope="module")
def imagenet_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two WordNet class folders (tench, goldfish), images of several sizes."""
    root = tmp_path_factory.mktemp("imagenet")
    sizes = {"n01440764": [(300, 400), (256, 320)], "n01443537": [(400, 300)]}
    for k, (wnid, shapes) in enumerate(sizes.items()):
        (root / wnid).mkdir()
        for i, (h, w) in enumerate(shapes):
            smooth_image(20 + 10 * k + i, h, w).save(root / wnid / f"{i}.JPEG", quality=95)
    return root


def test_paper_classification_end_to_end(
    imagenet_folder: Path, tiny_codecs: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "eval"
    argv = [
        "--task", "classification", "--data", str(imagenet_folder), "--data-kind", "imagenet",
        "--protocol", "paper", "--codec", f"tic={tiny_codecs[0]}", "--anchors", "jpeg", "webp",
        "--anchor-qualities", "50", "--out", str(out), "--no-progress",
        "--bootstrap-resamples", "20",
    ]  # fmt: skip
    assert eval_main(argv) == 0
    result = json.loads((out / "results.json").read_text())
    assert result["protocol"] == "paper" and result["primary_metric"] == "top1_accuracy"
    assert result["reference"]["top1_agreement"] == 100.0
    tic = next(p for p in result["points"] if p["method"] == "tic")
    # Rates are per pixel of the 256x256 coded image; the payload excludes the
    # container's header and checksum, and nothing else.
    codec = ImageCodec(load_checkpoint(tiny_codecs[0]))
    images = load_eval_set("imagenet", imagenet_folder).images
    streams = [codec.encode(classification_view(i)) for i in images]
    assert tic["bpp"] == pytest.approx(sum(len(s.data) * 8 for s in streams) / 3 / 256**2)
    header_bits = [8 * (len(s.data) - _payload_bytes(s.data)) for s in streams]
    assert tic["bpp"] - tic["bpp_payload"] == pytest.approx(sum(header_bits) / 3 / 256**2)
    assert all(hb > 0 for hb in header_bits)
    # JPEG's payload leaves its ~600 header bytes out; WebP's is its whole file.
    jpeg = next(p for p in result["points"] if p["method"] == "jpeg")
    assert 0.05 < jpeg["bpp"] - jpeg["bpp_payload"] < 0.1
    webp = next(p for p in result["points"] if p["method"] == "webp")
    assert webp["bpp_payload"] == webp["bpp"]
    for name in ("rate_accuracy.png", "rate_psnr.png", "results.md"):
        assert (out / name).stat().st_size > 0
    assert "bpp (payload)" in (out / "results.md").read_text()


def _payload_bytes(data: bytes) -> int:
    from transtic.bitstream import decode_container

    container = decode_container(data)
    return len(container.y_string) + len(container.z_string)


def test_paper_classification_on_an_unlabelled_folder(
    imagenet_folder: Path, tmp_path: Path
) -> None:
    """How the shipped defaults are evaluated: photos without labels, top-1 agreement."""
    argv = [
        "--task", "classification", "--data", str(imagenet_folder / "n01440764"),
        "--protocol", "paper", "--anchors", "jpeg", "--anchor-qualities", "10", "90",
        "--out", str(tmp_path), "--no-progress", "--bootstrap-resamples", "0",
        "--anchor-target-bpp",
    ]  # fmt: skip
    assert eval_main(argv) == 0
    result = json.loads((tmp_path / "results.json").read_text())
    assert result["primary_metric"] == "top1_agreement" and result["num_images"] == 2
    low, high = sorted(result["points"], key=lambda p: p["bpp"])
    assert low["point"] == "q10" and high["point"] == "q90"


def _biased_rcnn(builder: Any, path: Path) -> Path:
    """Random R-CNN weights whose box classifier always says class 1 with high score
    (and whose masks fill their boxes), so detections survive the 0.05 threshold and
    every stage of the pipeline runs."""
    torch.manual_seed(0)
    state = builder(weights=None, weights_backbone=None, num_classes=91).state_dict()
    state["roi_heads.box_predictor.cls_score.bias"][1] = 12.0
    if "roi_heads.mask_predictor.mask_fcn_logits.bias" in state:
        state["roi_heads.mask_predictor.mask_fcn_logits.bias"][1] = 12.0  # non-empty masks
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("task", ["detection", "segmentation"])
def test_paper_detection_and_segmentation_end_to_end(
    task: str, tiny_coco: tuple[Path, Path], tiny_codecs: list[Path], tmp_path: Path
) -> None:
    from torchvision.models.detection import fasterrcnn_resnet50_fpn, maskrcnn_resnet50_fpn

    builder = fasterrcnn_resnet50_fpn if task == "detection" else maskrcnn_resnet50_fpn
    weights = _biased_rcnn(builder, tmp_path / "rcnn.pth")
    root, ann = tiny_coco
    out = tmp_path / "eval"
    argv = [
        "--task", task, "--data", str(root), "--data-kind", "coco", "--annotations", str(ann),
        "--protocol", "paper", "--task-weights", str(weights), "--codec", f"tic={tiny_codecs[0]}",
        "--anchors", "jpeg", "--anchor-qualities", "60", "--out", str(out), "--no-progress",
    ]  # fmt: skip
    assert eval_main(argv) == 0
    result = json.loads((out / "results.json").read_text())
    assert result["primary_metric"] == "mAP" and result["num_images"] == 2
    assert result["reference"]["mAP_agreement"] == pytest.approx(100.0)
    for p in result["points"]:
        assert 0.0 <= p["scores"]["mAP"] <= 100.0
        assert p["bpp_payload"] <= p["bpp"]
    # bpp over the 800/1333-resized images: 800x1067 and 1200x800 pixels
    tic = next(p for p in result["points"] if p["method"] == "tic")
    codec = ImageCodec(load_checkpoint(tiny_codecs[0]), align_mode=AlignMode.RESIZE)
    data = prepare(load_eval_set("coco", root, annotations=ann), task, "paper")
    bits = [len(codec.encode(i).data) * 8 for i in data.images]
    assert tic["bpp"] == pytest.approx((bits[0] / (800 * 1067) + bits[1] / (1200 * 800)) / 2)
