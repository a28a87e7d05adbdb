"""A small natural-photo training set assembled from files that ship inside packages.

No learned-codec training data can be downloaded offline, but scikit-image,
scikit-learn, matplotlib and Debian's ``opencv-doc`` carry about thirty real
photographs. Only natural photos are used (no drawings, renderings, charts,
microscopy or grayscale calibration shots), and near-duplicate pairs (stereo
pairs, before/after edits) are represented once so a held-out photo never has a
twin in the training split.

A fixed set of photos is held out for evaluation (``HELDOUT``); they are chosen to
show ImageNet-like objects (a cat, a cup, a squirrel...) so classification
agreement on them means something.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

OPENCV_DOC_DIR = Path("/usr/share/doc/opencv-doc/examples/data")


@dataclass(frozen=True)
class Photo:
    name: str
    source: str  # "skimage" | "sklearn" | "matplotlib" | "opencv-doc"
    filename: str

    def path(self) -> Path | None:
        """Where the file is on this machine, or None when its package is absent."""
        if self.source == "opencv-doc":
            base: Path | None = OPENCV_DOC_DIR
        else:
            module = {
                "skimage": "skimage.data",
                "sklearn": "sklearn.datasets.images",
                "matplotlib": "matplotlib",
            }[self.source]
            base = _package_dir(module)
            if base is not None and self.source == "matplotlib":
                base = base / "mpl-data" / "sample_data"
        if base is None:
            return None
        path = base / self.filename
        return path if path.is_file() else None


def _package_dir(module: str) -> Path | None:
    # find_spec locates files without importing the (slow) packages themselves.
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _cv(*names: str) -> list[Photo]:
    return [Photo(f"opencv-{n.rsplit('.', 1)[0]}", "opencv-doc", n) for n in names]


TRAIN: tuple[Photo, ...] = (
    Photo("skimage-astronaut", "skimage", "astronaut.png"),
    Photo("skimage-rocket", "skimage", "rocket.jpg"),
    Photo("skimage-hubble_deep_field", "skimage", "hubble_deep_field.jpg"),
    Photo("sklearn-flower", "sklearn", "flower.jpg"),
    *_cv(
        "aero1.jpg",
        "aloeL.jpg",
        "apple.jpg",
        "board.jpg",
        "building.jpg",
        "ela_original.jpg",
        "fruits.jpg",
        "graf1.png",
        "home.jpg",
        "left.jpg",
        "leuvenA.jpg",
        "licenseplate_motion.jpg",
        "rubberwhale1.png",
        "smarties.png",
        "stuff.jpg",
    ),
)

# Held out from training; the evaluation set of the shipped weights.
HELDOUT: tuple[Photo, ...] = (
    Photo("skimage-chelsea", "skimage", "chelsea.png"),
    Photo("skimage-coffee", "skimage", "coffee.png"),
    Photo("skimage-motorcycle_left", "skimage", "motorcycle_left.png"),
    Photo("sklearn-china", "sklearn", "china.jpg"),
    Photo("matplotlib-grace_hopper", "matplotlib", "grace_hopper.jpg"),
    *_cv("squirrel_cls.jpg", "butterfly.jpg", "baboon.jpg", "orange.jpg", "messi5.jpg"),
)


def available(photos: tuple[Photo, ...]) -> list[Photo]:
    return [p for p in photos if p.path() is not None]


def load_photo(photo: Photo) -> Image.Image:
    path = photo.path()
    if path is None:
        raise FileNotFoundError(f"photo {photo.name} ({photo.source}: {photo.filename}) not found")
    with Image.open(path) as img:
        return img.convert("RGB")


def photo_paths(split: str = "train") -> list[Path]:
    """Files of the ``train`` or ``heldout`` split that exist here."""
    photos = {"train": TRAIN, "heldout": HELDOUT}[split]
    return [p for p in (ph.path() for ph in photos) if p is not None]


def export(split: str, directory: str | Path) -> list[Path]:
    """Write a split as PNGs named after the photos (an eval folder for ``transtic eval``)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    photos = {"train": TRAIN, "heldout": HELDOUT}[split]
    written = []
    for photo in available(photos):
        target = out / f"{photo.name}.png"
        if not target.exists():
            load_photo(photo).save(target)
        written.append(target)
    return written
