"""The classification-prompt training objective on the held-out photos, per checkpoint.

Centre 256x256 crops of ``transtic.training.photos.HELDOUT``, models in eval mode
(rounded latents), the loss of ``transtic train prompts --task classification``:
``1000 * lambda * feature MSE + bpp`` against the frozen EfficientNet-Lite0.
Shows whether prompts lower what they were trained to lower. Usage:

    python scripts/prompt_objective.py --lambda 0.0018 BASE.pth.tar PROMPTED.pth.tar
"""

from __future__ import annotations

import argparse

import torch

from transtic.tasks import create_backend
from transtic.training.data import CropDataset
from transtic.training.losses import ClassificationFeatureLoss, psnr
from transtic.training.photos import photo_paths
from transtic.weights import default_cache_dir, load_codec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lambda", dest="lmbda", type=float, required=True)
    parser.add_argument("checkpoints", nargs="+")
    args = parser.parse_args()
    torch.set_num_threads(1)
    backend = create_backend("classification", cache_dir=default_cache_dir())
    norm = backend.normalization
    criterion = ClassificationFeatureLoss(
        backend.timm_model(),  # type: ignore[attr-defined]
        args.lmbda,
        mean=norm.mean,
        std=norm.std,
    ).eval()
    crops = CropDataset(photo_paths("heldout"), patch_size=256, train=False)
    print("| checkpoint | objective | feature MSE | bpp (likelihoods) | PSNR dB |")
    print("|---|---|---|---|---|")
    for path in args.checkpoints:
        model = load_codec(path).model
        sums = {"loss": 0.0, "perceptual": 0.0, "bpp": 0.0, "psnr": 0.0}
        with torch.no_grad():
            for i in range(len(crops)):
                x = crops[i][0][None]
                out = model(x)
                terms = criterion(out, x)
                for key in ("loss", "perceptual", "bpp"):
                    sums[key] += float(terms[key]) / len(crops)
                sums["psnr"] += psnr(out["x_hat"], x) / len(crops)
        print(
            f"| {path.rsplit('/', 1)[-1]} | {sums['loss']:.2f} | {sums['perceptual']:.2f} "
            f"| {sums['bpp']:.4f} | {sums['psnr']:.2f} |"
        )


if __name__ == "__main__":
    main()
