"""A tiny end-to-end evaluation: real bitstreams, anchors, task scores, reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from transtic.evaluation import EvalSet, TaskScorer, eval_main, evaluate, load_eval_set, metrics
from transtic.evaluation.anchors import AnchorCodec
from transtic.evaluation.metrics import detections_agreement
from transtic.models import load_checkpoint


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Photo-like images (upsampled noise) of a few sizes, not multiples of 256."""
    root = tmp_path_factory.mktemp("images")
    for i, (h, w) in enumerate([(256, 256), (288, 320), (256, 300)]):
        gen = torch.Generator().manual_seed(i)
        low = torch.rand(1, 3, h // 16, w // 16, generator=gen)
        img = F.interpolate(low, size=(h, w), mode="bicubic", align_corners=False)[0]
        array = (img.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
        Image.fromarray(array).save(root / f"img{i}.png")
    return root


class ConstantDetector:
    """Detection stub: one box per image, shifted by the image mean (so decoding matters)."""

    def predict(self, images: list[torch.Tensor]) -> list[dict[str, Any]]:
        out = []
        for img in images:
            shift = float(img.mean()) * 40
            det = {"box": [10 + shift, 10, 100 + shift, 120], "score": 0.9, "category_id": 1}
            out.append({"detections": [det]})
        return out


def test_anchor_matching_lands_near_target(image_folder: Path) -> None:
    data = load_eval_set("folder", image_folder)
    anchor = AnchorCodec("jpeg", data.images)
    target = anchor.at(50).bpp(data.pixels)
    assert anchor.match(target).quality == 50
    low, high = anchor.at(10).bpp(data.pixels), anchor.at(90).bpp(data.pixels)
    assert low < high


def test_detection_agreement_of_identical_outputs_is_perfect() -> None:
    images = [torch.rand(3, 200, 200) for _ in range(2)]
    preds = ConstantDetector().predict(images)
    assert detections_agreement([(200, 200)] * 2, preds, preds) == pytest.approx(100.0)
    scorer = TaskScorer("detection", ConstantDetector(), EvalSet(["a", "b"], images))
    assert scorer.reference_scores()["mAP_agreement"] == pytest.approx(100.0)


def test_end_to_end_classification_eval(
    image_folder: Path, tiny_codecs: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "eval"
    argv = [
        "--task", "classification", "--data", str(image_folder), "--out", str(out),
        "--codec", "tic=" + ",".join(str(p) for p in tiny_codecs),
        "--anchor-qualities", "20", "80", "--no-progress", "--bootstrap-resamples", "40",
    ]  # fmt: skip
    assert eval_main(argv) == 0
    result = json.loads((out / "results.json").read_text())
    methods = {p["method"] for p in result["points"]}
    assert methods == {"tic", "jpeg", "webp"}
    assert result["primary_metric"] == "top1_agreement"
    assert result["reference"]["top1_agreement"] == 100.0
    for p in result["points"]:
        assert p["bpp"] > 0 and 0 <= p["scores"]["top1_agreement"] <= 100
    tic = [p for p in result["points"] if p["method"] == "tic"]
    assert len(tic) == 2 and all(p["bpp_likelihood"] > 0 for p in tic)
    # the smooth scores beside top-1, photo by photo, with bootstrap intervals
    assert result["reference"]["kl_divergence"] == 0.0
    assert result["reference"]["feature_cosine"] == pytest.approx(1.0)
    for p in result["points"]:
        assert len(p["per_image"]["kl_divergence"]) == 3
        assert p["scores"]["kl_divergence"] == pytest.approx(
            sum(p["per_image"]["kl_divergence"]) / 3
        )
    assert len(result["reference_per_image"]["top1_probability"]) == 3
    assert result["bootstrap"]["resamples"] == 40
    assert "tic vs jpeg" in result["bootstrap"]["bd_rate"]["all"]["bpp"]["kl_divergence"]
    assert "Paired bootstrap" in (out / "results.md").read_text()
    assert (out / "rate_smooth_scores.png").stat().st_size > 0
    assert "jpeg" in result["bd_rate"]["psnr"]
    for name in ("results.md", "results.csv", "curves.png"):
        assert (out / name).stat().st_size > 0
    assert "BD-rate" in (out / "results.md").read_text()
    for p in result["points"]:
        assert len(p["extra"]["colour_shift_rgb"]) == 3
    assert "colour shift R/G/B" in (out / "results.md").read_text()


def test_colour_shift_is_the_signed_mean_difference_in_levels() -> None:
    original = torch.full((3, 4, 4), 100 / 255)
    decoded = original.clone()
    decoded[0] += 8 / 255
    decoded[2, :2] -= 4 / 255  # half the pixels 4 levels darker: the mean 2 darker
    assert metrics.colour_shift(decoded, original) == pytest.approx([8.0, 0.0, -2.0])


def test_anchor_targets_span_the_rate_range_and_jpeg_payload_drops_the_header(
    image_folder: Path,
) -> None:
    from transtic.evaluation.anchors import DEFAULT_TARGET_BPP, payload_bytes
    from transtic.evaluation.runner import evaluate_anchors

    data = load_eval_set("folder", image_folder)
    scorer = TaskScorer("classification", _FixedClassifier(), data)
    points = evaluate_anchors(["jpeg"], data, scorer, targets=DEFAULT_TARGET_BPP)
    rates = sorted(p.bpp for p in points)
    assert rates[0] < 0.3 and rates[-1] > 0.5
    anchor = AnchorCodec("jpeg", data.images)
    q = points[0].extra["quality"]
    header = [
        (b - pb) / 8 for b, pb in zip(anchor.at(q).bits, anchor.at(q).payload_bits, strict=True)
    ]
    assert all(500 < h < 700 for h in header)  # tables and frame header at 4:2:0
    assert payload_bytes(b"RIFF....WEBP", "WEBP") == 12
    with pytest.raises(ValueError):
        payload_bytes(b"\xff\xd8\xff\xd9", "JPEG")


def test_real_bytes_rate_matches_stream_length(image_folder: Path, tiny_codecs: list[Path]) -> None:
    from transtic.codec import ImageCodec

    data = load_eval_set("folder", image_folder, max_images=1)
    model = load_checkpoint(tiny_codecs[0])
    result = evaluate(
        "classification",
        data,
        _FixedClassifier(),
        {"tic": [str(tiny_codecs[0])]},
        load=load_checkpoint,
        anchors=(),
        progress=False,
    )
    stream = ImageCodec(model).encode(data.images[0])
    assert result["points"][0]["bpp"] == pytest.approx(stream.bpp)


class _FixedClassifier:
    def predict(self, images: list[torch.Tensor]) -> list[dict[str, Any]]:
        return [{"predictions": [{"index": 0}]} for _ in images]


def test_pareto_front_drops_dominated_points() -> None:
    from transtic.evaluation.report import pareto

    rates, values = pareto([0.4, 0.1, 0.2, 0.3, 0.3], [50.0, 20.0, 20.0, 40.0, 45.0])
    assert rates == [0.1, 0.3, 0.4] and values == [20.0, 45.0, 50.0]


def test_imagenet_folders_map_wordnet_ids_to_classifier_indices(tmp_path: Path) -> None:
    for wnid in ("n01443537", "n01440764"):  # goldfish (1), tench (0)
        (tmp_path / wnid).mkdir()
        Image.new("RGB", (32, 32)).save(tmp_path / wnid / "a.png")
    data = load_eval_set("imagenet", tmp_path)
    assert data.labels == [0, 1]
    scorer = TaskScorer("classification", _FixedClassifier(), data)
    assert scorer.primary == "top1_accuracy"
    assert scorer.score(data.images) == {"top1_agreement": 100.0, "top1_accuracy": 50.0}


def _two_image_coco(tmp_path: Path) -> Path:
    """Two black 200x200 images whose one box each is where ConstantDetector puts it."""
    images: list[dict[str, Any]] = [
        {"id": 7, "file_name": "a.png", "height": 200, "width": 200},
        {"id": 9, "file_name": "b.png", "height": 200, "width": 200},
    ]
    anns = [
        {"id": i + 1, "image_id": im["id"], "category_id": 1, "bbox": [10, 10, 90, 110],
         "area": 9900, "iscrowd": 0}
        for i, im in enumerate(images)
    ]  # fmt: skip
    for im in images:
        Image.new("RGB", (200, 200)).save(tmp_path / im["file_name"])
    ann_file = tmp_path / "instances.json"
    ann_file.write_text(
        json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "p"}]})
    )
    return ann_file


def test_coco_map_with_annotation_file(tmp_path: Path) -> None:
    ann_file = _two_image_coco(tmp_path)
    data = load_eval_set("coco", tmp_path, annotations=ann_file)
    assert data.image_ids == [7, 9]
    scorer = TaskScorer("detection", ConstantDetector(), data)
    # Black images: the stub's box is exactly the annotation.
    assert scorer.primary == "mAP"
    assert scorer.reference_scores()["mAP"] == pytest.approx(100.0)


def test_heldout_photos_with_anchors_only(tmp_path: Path) -> None:
    from transtic.training.photos import HELDOUT, available

    if not available(HELDOUT):
        pytest.skip("no packaged photos installed")
    argv = ["--task", "classification", "--heldout-photos", "--max-images", "1"]
    argv += ["--anchors", "jpeg", "--anchor-qualities", "30", "--out", str(tmp_path)]
    argv += ["--anchor-target-bpp", "--bootstrap-resamples", "0"]  # the given quality only
    assert eval_main([*argv, "--no-progress"]) == 0
    result = json.loads((tmp_path / "results.json").read_text())
    assert len(result["images"]) == 1
    assert result["images"][0] in {f"{p.name}.png" for p in available(HELDOUT)}
    assert [p["point"] for p in result["points"]] == ["q30"]
    assert not (tmp_path / "heldout_photos").exists()


def test_coco_map_counts_only_the_evaluated_images(tmp_path: Path) -> None:
    """1 of 2 images evaluated, perfectly: 100, not 50.5 (the other image's box is no miss)."""
    ann_file = _two_image_coco(tmp_path)
    data = load_eval_set("coco", tmp_path, annotations=ann_file, max_images=1)
    assert data.image_ids == [7]
    scorer = TaskScorer("detection", ConstantDetector(), data)
    assert scorer.reference_scores()["mAP"] == pytest.approx(100.0)


def test_coco_results_drop_detections_below_the_score_threshold() -> None:
    from transtic.evaluation.metrics import coco_map, coco_results

    dets = [{"box": [0, 0, 5, 5], "score": s, "category_id": 1} for s in (0.9, 0.05, 0.049)]
    kept = coco_results([3], [{"detections": dets}], min_score=0.05)
    assert [r["score"] for r in kept] == [0.9, 0.05]
    with pytest.raises(ValueError, match="outside the evaluated set"):
        coco_map(_FakeGT(), kept, image_ids=[4])


class _FakeGT:
    def getImgIds(self) -> list[int]:  # noqa: N802 (pycocotools' name)
        return [3, 4]


def test_unreadable_eval_data_stops_with_a_message(tmp_path):
    """A missing folder or one bad image stops the run before any model loads, naming
    the file: skipping it would silently change the evaluation set."""
    argv = ["--task", "classification", "--anchors", "jpeg", "--no-progress"]
    with pytest.raises(SystemExit, match="no images found"):
        eval_main([*argv, "--data", str(tmp_path / "missing")])
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"junk" * 50)
    with pytest.raises(SystemExit, match=r"bad\.png: not a readable image"):
        eval_main([*argv, "--data", str(folder)])
