"""Photo corpus: heuristics, near-duplicate groups, split stability, the committed manifest."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from transtic.training.corpus import (
    NEAR_DUPLICATE_BITS,
    Candidate,
    ManifestRow,
    Measures,
    difference_hash,
    hamming,
    hash_hex,
    hash_split,
    is_forbidden,
    measure,
    near_duplicate_groups,
    photo_rejection,
    read_manifest,
    select,
    write_manifest,
)
from transtic.training.corpus_packages import SOURCES_FILE, load_same_photo, load_sources

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "transtic" / "training" / "corpus_manifest.csv"


def photo_like(seed: int, width: int = 320, height: int = 256) -> Image.Image:
    """Smooth colour structure plus sensor-like noise, as a camera image has."""
    rng = np.random.default_rng(seed)
    low = rng.random((height // 32 + 2, width // 32 + 2, 3)) * 255
    base = np.asarray(
        Image.fromarray(low.astype(np.uint8)).resize((width, height), Image.Resampling.BICUBIC)
    )
    noisy = base.astype(np.float64) + rng.normal(0, 6, base.shape)
    return Image.fromarray(noisy.clip(0, 255).astype(np.uint8))


def ui_like(width: int = 400, height: int = 300) -> Image.Image:
    image = Image.new("RGB", (width, height), (236, 236, 236))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, width, 30), fill=(40, 90, 200))
    for i in range(5):
        draw.rectangle((20, 50 + 45 * i, width - 20, 80 + 45 * i), outline=(120, 120, 120))
        draw.text((30, 58 + 45 * i), f"Menu item {i}", fill=(0, 0, 0))
    return image


def jpeg_roundtrip(image: Image.Image, scale: float = 1.0, quality: int = 80) -> Image.Image:
    if scale != 1.0:
        image = image.resize((round(image.width * scale), round(image.height * scale)))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue()))


def candidate(
    name: str, image: Image.Image, package: str = "pkg", sha: str | None = None
) -> Candidate:
    return Candidate(
        package=package,
        version="1.0",
        path=f"usr/share/{name}",
        licence="MIT",
        sha256=sha or (name.encode().hex() * 64)[:64],
        measures=measure(image),
        dhash=difference_hash(image),
        file=Path(name),
    )


def test_photo_heuristics_accept_photos_and_reject_ui_grey_and_small() -> None:
    assert photo_rejection(measure(photo_like(0))) is None
    assert photo_rejection(measure(ui_like())) in {"few colours", "flat", "grey"}
    assert photo_rejection(measure(photo_like(1).convert("L").convert("RGB"))) == "grey"
    assert photo_rejection(measure(photo_like(2, 300, 200))) == "small"


def test_studio_white_background_is_not_counted_as_flat() -> None:
    image = np.full((300, 400, 3), 255, np.uint8)
    image[75:225, 100:300] = np.asarray(photo_like(3, 200, 150))
    m = measure(Image.fromarray(image))
    assert m.flat_share < 0.35


def test_difference_hash_survives_resize_and_recompression_but_separates_photos() -> None:
    a, b = photo_like(10, 640, 480), photo_like(11, 640, 480)
    copy = jpeg_roundtrip(a, scale=0.5, quality=70)
    assert hamming(difference_hash(a), difference_hash(copy)) <= NEAR_DUPLICATE_BITS
    assert hamming(difference_hash(a), difference_hash(b)) > NEAR_DUPLICATE_BITS
    assert len(hash_hex(difference_hash(a))) == 64


def test_groups_chain_near_hashes_and_hand_links() -> None:
    near = 0b1111  # 4 bits from zero
    chain = [0, near, near | (0b1111 << 8), (1 << 200) - 1, ((1 << 64) - 1) << 180]
    groups = near_duplicate_groups(chain, max_bits=4, links=[(3, 4)])
    assert groups[0] == groups[1] == groups[2]  # 0-1 and 1-2 are near: one sequence
    assert groups[3] == groups[4] != groups[0]


def test_split_is_a_pure_function_of_the_sha() -> None:
    shas = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(400)]
    splits = [hash_split(s, 25) for s in shas]
    assert splits == [hash_split(s, 25) for s in shas]
    assert 0.15 < splits.count("val") / len(splits) < 0.35


def test_select_dedupes_keeps_largest_and_drops_forbidden_and_non_photos() -> None:
    base = photo_like(20, 640, 480)
    rows = select(
        [
            candidate("a.png", base),
            candidate("a_small.jpg", jpeg_roundtrip(base, scale=0.5)),
            candidate("a_copy.png", base, package="zz-other", sha=(b"a.png".hex() * 64)[:64]),
            candidate("b.png", photo_like(21)),
            candidate("ui.png", ui_like()),
            candidate("c.png", photo_like(22), package="palapeli-data"),
        ]
    )
    kept = sorted(r.path for r in rows)
    assert kept == ["usr/share/a.png", "usr/share/b.png"]
    assert all(r.dhash for r in rows)


def test_published_splits_are_kept_and_new_group_members_follow_them() -> None:
    base = photo_like(30, 640, 480)
    first = candidate("a.png", base)
    twin = candidate("a_big.png", base.resize((1280, 960)))
    other = candidate("b.png", photo_like(31))
    previous = {first.sha256: "val", other.sha256: "train"}
    rows = {r.path: r.split for r in select([first, twin, other], previous)}
    # The published member stays (even though its twin is larger), on its side.
    assert rows == {"usr/share/a.png": "val", "usr/share/b.png": "train"}
    rows = {r.path: r.split for r in select([twin, other], {first.sha256: "val"} | previous)}
    assert rows["usr/share/a_big.png"] == hash_split(twin.sha256)


def test_manifest_round_trip(tmp_path: Path) -> None:
    row = ManifestRow("val", "pkg", "1.0", "a/b.jpg", "MIT", "ab" * 32, 640, 480, "0f" * 32)
    write_manifest([row], tmp_path / "m.csv")
    assert read_manifest(tmp_path / "m.csv") == [row]
    assert row.file_name == "abababababababab.jpg"
    (tmp_path / "bad.csv").write_text("split,package\nval,pkg\n")
    with pytest.raises(ValueError):
        read_manifest(tmp_path / "bad.csv")


def test_sources_refuse_forbidden_packages(tmp_path: Path) -> None:
    assert is_forbidden("lomiri-wallpapers-20.04") and not is_forbidden("mate-backgrounds")
    entry = {
        "kind": "deb",
        "name": "gcompris-qt-data",
        "version": "1",
        "licence": "GPL",
        "include": ["*"],
    }
    (tmp_path / "s.json").write_text(json.dumps({"sources": [entry]}))
    with pytest.raises(ValueError, match="reserved"):
        load_sources(tmp_path / "s.json")


def test_committed_manifest_is_well_formed_and_split_by_photo() -> None:
    rows = read_manifest(MANIFEST)
    sources = {s.name: s for s in load_sources()}
    assert len(rows) >= 300
    assert sum(r.split == "val" for r in rows) >= 100
    assert len({r.sha256 for r in rows}) == len(rows)
    assert len({r.file_name for r in rows}) == len(rows)
    for r in rows:
        assert r.split in ("train", "val")
        assert not is_forbidden(r.package)
        assert sources[r.package].version == r.version and sources[r.package].wants(r.path)
        assert r.licence and min(r.width, r.height) >= 256
        assert photo_rejection(Measures(r.width, r.height, 99.0, 1.0, 0.0)) is None
        assert "lena" not in r.path.lower()
    train = [int(r.dhash, 16) for r in rows if r.split == "train"]
    val = [int(r.dhash, 16) for r in rows if r.split == "val"]
    closest = min(hamming(a, b) for a in train for b in val)
    assert closest > NEAR_DUPLICATE_BITS


def test_hand_listed_same_photo_groups_name_allowed_files() -> None:
    sources = {s.name: s for s in load_sources()}
    for group in load_same_photo(SOURCES_FILE):
        for key in group:
            package, path = key.split(":", 1)
            assert sources[package].wants(path)


def _load_script():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "build_corpus", ROOT / "scripts" / "build_corpus.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_script_selects_rebuilds_and_verifies_from_a_cached_package(tmp_path: Path) -> None:
    cache, out = tmp_path / "cache", tmp_path / "out"
    unpacked = cache / "unpacked" / "deb-fakephotos-1.0"
    (unpacked / "img").mkdir(parents=True)
    (unpacked / ".complete").write_text("fake\n")
    for i in range(6):
        photo_like(40 + i).save(unpacked / "img" / f"p{i}.png")
    ui_like().save(unpacked / "img" / "menu.png")
    photo_like(99).save(unpacked / "img" / "skipped.png")
    sources = tmp_path / "sources.json"
    entry = {
        "kind": "deb",
        "name": "fakephotos",
        "version": "1.0",
        "licence": "CC0-1.0",
        "include": ["img/*.png"],
        "exclude": ["img/skipped.png"],
    }
    sources.write_text(json.dumps({"sources": [entry]}))
    manifest = tmp_path / "manifest.csv"
    common = [
        "--cache",
        str(cache),
        "--out",
        str(out),
        "--sources",
        str(sources),
        "--manifest",
        str(manifest),
    ]
    script = _load_script()

    assert script.main([*common, "--select"]) == 0
    rows = read_manifest(manifest)
    assert sorted(Path(r.path).name for r in rows) == [f"p{i}.png" for i in range(6)]
    built = {p.relative_to(out): p.read_bytes() for p in out.rglob("*.png")}
    assert len(built) == 6

    # A fresh rebuild from the manifest gives the same bytes; --verify catches tampering.
    for p in out.rglob("*.png"):
        p.unlink()
    assert script.main(common) == 0
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*.png")} == built
    assert script.main([*common, "--verify"]) == 0
    victim = next(out.rglob("*.png"))
    victim.write_bytes(victim.read_bytes() + b"x")
    assert script.main([*common, "--verify"]) == 1


def test_every_published_member_of_a_group_stays_on_its_side() -> None:
    # Twins that weights were trained on must stay listed for the leakage check.
    base = photo_like(32, 640, 480)
    small, big = candidate("a.png", base), candidate("a_big.png", base.resize((1280, 960)))
    new_twin = candidate("a_jpeg.jpg", jpeg_roundtrip(base))
    rows = select([small, big, new_twin], {small.sha256: "train", big.sha256: "train"})
    assert {r.path: r.split for r in rows} == {
        "usr/share/a.png": "train",
        "usr/share/a_big.png": "train",
    }
