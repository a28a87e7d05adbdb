"""``transtic weights list|pull`` as a plain function the main CLI can delegate to."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from transtic.weights.errors import WeightsError
from transtic.weights.manager import PathLike, local_weights, pull
from transtic.weights.registry import WeightsRegistry


def default_cache_dir() -> Path:
    """Fallback cache dir when the caller configured none (no environment lookups here)."""
    return Path.home() / ".cache" / "transtic" / "weights"


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Manage model weights.")
    sub = parser.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="list registered weights and whether they are present")
    ls.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="weights cache directory (default ~/.cache/transtic/weights)",
    )
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    pl = sub.add_parser("pull", help="download weights into the cache dir")
    pl.add_argument("name", help="registered weights name (see transtic weights list)")
    pl.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="weights cache directory (default ~/.cache/transtic/weights)",
    )
    pl.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def weights_main(
    argv: Sequence[str] | None = None,
    *,
    cache_dir: PathLike | None = None,
    registry: WeightsRegistry | None = None,
    prog: str = "transtic weights",
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run the weights CLI; returns a process exit code.

    ``cache_dir`` is the caller's configured default; ``--cache-dir`` overrides it.
    """
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    args = _parser(prog).parse_args(list(argv) if argv is not None else None)
    directory = Path(args.cache_dir or cache_dir or default_cache_dir())

    if args.command == "list":
        rows = [
            {**entry.to_dict(), "local_path": None if local is None else str(local)}
            for entry, local in local_weights(cache_dir=directory, registry=registry)
        ]
        if args.json:
            json.dump(rows, out, indent=2)
            out.write("\n")
        else:
            for row in rows:
                state = "present" if row["local_path"] else "missing"
                quality = "" if row["quality"] is None else f"q{row['quality']}"
                task = row["task"] or "-"
                out.write(f"{row['name']:40s} {row['kind']:5s} {task:14s} {quality:3s} {state}\n")
        return 0

    try:
        path = pull(
            args.name, cache_dir=directory, progress=not args.no_progress, registry=registry
        )
    except (WeightsError, OSError) as exc:
        err.write(f"error: {exc}\n")
        return 1
    out.write(f"{path}\n")
    return 0
