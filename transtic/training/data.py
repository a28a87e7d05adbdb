"""Training datasets: any image folder, ImageNet-style class folders, COCO, shipped photos.

Augmentation is a pure function of ``(seed, epoch, index)``, so a run resumed at
step ``s`` sees exactly the crops the uninterrupted run would have seen, whatever
the number of loader workers or ranks.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from ..images import read_rgb_file

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm"}


def list_images(root: str | Path) -> list[Path]:
    """All image files below ``root``, sorted for a stable order."""
    root = Path(root)
    if root.is_file():
        return [root]
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no images found under {root}")
    return files


def imagenet_folder(root: str | Path) -> tuple[list[Path], list[int], list[str]]:
    """``root/<class>/*.jpg`` -> (files, labels, class names), classes in sorted order.

    Class folders named by WordNet id (``n01440764``) sort into the standard
    ImageNet-1k index order, so labels line up with timm's classifier outputs.
    """
    root = Path(root)
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    files: list[Path] = []
    labels: list[int] = []
    for index, name in enumerate(classes):
        for path in list_images(root / name):
            files.append(path)
            labels.append(index)
    if not files:
        raise FileNotFoundError(f"no class folders with images under {root}")
    return files, labels, classes


def coco_images(image_dir: str | Path, annotations: str | Path) -> list[Path]:
    """Files of the images an annotation file lists (pycocotools), in id order."""
    from pycocotools.coco import COCO

    coco = COCO(str(annotations))
    image_dir = Path(image_dir)
    files = [image_dir / coco.imgs[i]["file_name"] for i in sorted(coco.getImgIds())]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} COCO images missing, e.g. {missing[0]}")
    return files


def _generator(seed: int, epoch: int, index: int) -> torch.Generator:
    key = json.dumps([seed, epoch, index]).encode()
    return torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(key).digest()[:8], "big"))


def _uniform(gen: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=gen))


def _to_uint8(img: Image.Image) -> torch.Tensor:
    data = torch.frombuffer(bytearray(img.convert("RGB").tobytes()), dtype=torch.uint8)
    return data.view(img.height, img.width, 3).permute(2, 0, 1)


def _to_tensor(img: Image.Image) -> torch.Tensor:
    return _to_uint8(img).float().div_(255)


def read_bounded(path: Path, max_short_side: int | None) -> torch.Tensor:
    """(3, H, W) uint8 of an image file, downscaled so its shorter side is at most
    ``max_short_side`` (a high-resolution photo then costs milliseconds per crop,
    and its crops look like the downscaled whole scenes a classifier is shown)."""
    rgb = read_rgb_file(path)  # ImageError naming the file when it cannot be read
    short = min(rgb.size)
    if max_short_side and short > max_short_side:
        factor = max_short_side / short
        size = (max(1, round(rgb.width * factor)), max(1, round(rgb.height * factor)))
        rgb = rgb.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return _to_uint8(rgb)


def random_crop(
    image: torch.Tensor,
    size: int,
    gen: torch.Generator,
    *,
    scale: tuple[float, float] = (1.0, 1.0),
    hflip: bool = True,
    vflip: bool = False,
) -> torch.Tensor:
    """Scale jitter, a random ``size`` x ``size`` crop and flips of a (3, H, W) image.

    The scale factor is drawn log-uniformly, then raised if needed so the image
    still covers the crop (small photos are upscaled rather than dropped).
    """
    h, w = image.shape[-2:]
    low, high = scale
    factor = math.exp(_uniform(gen, math.log(low), math.log(high))) if low != high else low
    factor = max(factor, size / min(h, w))
    if abs(factor - 1.0) > 1e-6:
        new = (max(size, round(h * factor)), max(size, round(w * factor)))
        image = F.interpolate(
            image[None], size=new, mode="bicubic", align_corners=False, antialias=factor < 1
        )[0].clamp_(0, 1)
        h, w = new
    top = int(torch.randint(0, h - size + 1, (), generator=gen))
    left = int(torch.randint(0, w - size + 1, (), generator=gen))
    crop = image[:, top : top + size, left : left + size]
    if hflip and bool(torch.rand((), generator=gen) < 0.5):
        crop = crop.flip(-1)
    if vflip and bool(torch.rand((), generator=gen) < 0.5):
        crop = crop.flip(-2)
    return crop.contiguous()


def center_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """Resize the shorter side to ``size`` and take the centre square (validation view)."""
    h, w = image.shape[-2:]
    factor = size / min(h, w)
    new = (max(size, round(h * factor)), max(size, round(w * factor)))
    image = F.interpolate(
        image[None], size=new, mode="bicubic", align_corners=False, antialias=factor < 1
    )[0].clamp_(0, 1)
    top, left = (new[0] - size) // 2, (new[1] - size) // 2
    return image[:, top : top + size, left : left + size].contiguous()


class CropDataset(Dataset[tuple[torch.Tensor, int]]):
    """Random crops of a list of images, ``repeats`` crops per image per epoch.

    Returns ``(crop, label)``; the label is -1 for unlabelled data. Images are
    decoded once and cached when ``cache`` is set (for small sets such as the
    shipped photos), otherwise read on every access.
    """

    def __init__(
        self,
        files: Sequence[Path],
        *,
        patch_size: int = 256,
        labels: Sequence[int] | None = None,
        repeats: int = 1,
        scale: tuple[float, float] = (1.0, 1.0),
        hflip: bool = True,
        vflip: bool = False,
        seed: int = 0,
        cache: bool = False,
        train: bool = True,
        max_short_side: int | None = None,
    ) -> None:
        if labels is not None and len(labels) != len(files):
            raise ValueError("labels and files differ in length")
        if not files:
            raise ValueError("empty dataset")
        self.files = list(files)
        self.labels = list(labels) if labels is not None else None
        self.patch_size = patch_size
        self.repeats = max(1, repeats)
        self.scale = scale
        self.hflip, self.vflip = hflip, vflip
        self.seed = seed
        self.epoch = 0
        self.train = train
        self.max_short_side = max_short_side
        # uint8 so that a few hundred photos fit in memory
        self._cache: dict[int, torch.Tensor] | None = {} if cache else None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.files) * self.repeats

    def _image(self, i: int) -> torch.Tensor:
        if self._cache is not None and i in self._cache:
            return self._cache[i].float().div_(255)
        tensor = read_bounded(self.files[i], self.max_short_side)
        if self._cache is not None:
            self._cache[i] = tensor
        return tensor.float().div_(255)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        i = index % len(self.files)
        image = self._image(i)
        if self.train:
            gen = _generator(self.seed, self.epoch, index)
            crop = random_crop(
                image, self.patch_size, gen, scale=self.scale, hflip=self.hflip, vflip=self.vflip
            )
        else:
            crop = center_crop(image, self.patch_size)
        label = self.labels[i] if self.labels is not None else -1
        return crop, label


def build_dataset(
    kind: str,
    path: str | Path | None,
    *,
    annotations: str | Path | None = None,
    patch_size: int = 256,
    repeats: int = 1,
    scale: tuple[float, float] = (1.0, 1.0),
    vflip: bool = False,
    seed: int = 0,
    train: bool = True,
    max_short_side: int | None = None,
    cache: bool = False,
) -> CropDataset:
    """``kind``: ``folder`` (any images, unlabelled), ``imagenet`` (class folders),
    ``coco`` (``path`` = image dir, ``annotations`` = instances json) or ``photos``
    (the shipped natural photos' training split)."""
    labels: list[int] | None = None
    if kind == "photos":
        from .photos import photo_paths

        files = photo_paths("train")
        if not files:
            raise FileNotFoundError("no shipped photos found (install scikit-image/opencv-doc)")
        cache = True
    elif path is None:
        raise ValueError(f"dataset kind {kind!r} needs a path")
    elif kind == "folder":
        files = list_images(path)
    elif kind == "imagenet":
        files, labels, _ = imagenet_folder(path)
    elif kind == "coco":
        files = coco_images(path, annotations) if annotations else list_images(path)
    else:
        raise ValueError(f"unknown dataset kind {kind!r}")
    return CropDataset(
        files,
        patch_size=patch_size,
        labels=labels,
        repeats=repeats,
        scale=scale,
        vflip=vflip,
        seed=seed,
        cache=cache,
        train=train,
        max_short_side=max_short_side,
    )


def datasets_for(
    args: argparse.Namespace, vflip: bool, alignment: int
) -> tuple[CropDataset, CropDataset | None]:
    """The crops ``transtic train`` trains and validates on (its parsed arguments).

    Raises ValueError for a crop size the model cannot tile (its windows must tile every
    stage) and OSError / ValueError for data that is not there or cannot be read.
    """
    for name in ("patch_size", "val_patch_size"):
        size = getattr(args, name)
        if size is not None and (size <= 0 or size % alignment):
            flag = "--" + name.replace("_", "-")
            raise ValueError(
                f"{flag} {size}: the model codes sides that are multiples of "
                f"{alignment} (its windows must tile every stage)"
            )
    return _datasets_from_args(args, vflip)


def _datasets_from_args(
    args: argparse.Namespace, vflip: bool
) -> tuple[CropDataset, CropDataset | None]:
    train = build_dataset(
        args.data,
        args.data_path,
        annotations=args.annotations,
        patch_size=args.patch_size,
        repeats=args.repeats,
        scale=tuple(args.scale_jitter),
        vflip=vflip,
        seed=args.seed,
        max_short_side=args.max_short_side,
        cache=args.cache_images or args.data == "photos",
    )
    val: CropDataset | None = None
    if args.val_path is not None:
        val = build_dataset(
            "folder",
            args.val_path,
            patch_size=args.val_patch_size or args.patch_size,
            train=False,
            cache=True,
        )
    elif args.val_heldout:
        from .photos import photo_paths

        heldout = photo_paths("heldout")
        val = CropDataset(heldout, patch_size=args.patch_size, train=False, cache=True)
    return train, val
