"""Versioned schema migrations: ``migrations/<backend>/NNNN_what.sql``, applied in order.

Each file moves the schema from version N-1 to N and is applied in one transaction
together with the record of the new version, so a crash mid-upgrade leaves the old
version intact. Files are never edited once released; a change is a new file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations(backend: str) -> list[Migration]:
    """The backend's migrations, versions 1..N without gaps."""
    found = []
    for path in sorted((MIGRATIONS_DIR / backend).glob("*.sql")):
        match = _NAME.match(path.name)
        if match is None:
            raise RuntimeError(f"{path}: migration files are named NNNN_what.sql")
        found.append(Migration(int(match.group(1)), path.stem, path.read_text()))
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"{backend} migrations must be numbered 1..N, found {versions}")
    return found


def pending(backend: str, current: int, target: int | None = None) -> list[Migration]:
    """Migrations to apply to a database at ``current`` to reach ``target`` (default: newest).

    Refuses a database newer than this code: an older replica must not write to a
    schema it does not know (roll the upgrade forward instead).
    """
    known = migrations(backend)
    newest = known[-1].version
    if current > newest:
        raise RuntimeError(
            f"the {backend} store is at schema version {current}, newer than this service "
            f"knows ({newest}); run a release that includes it"
        )
    goal = newest if target is None else target
    return [m for m in known if current < m.version <= goal]


def statements(sql: str) -> list[str]:
    """A migration file split into statements (our files hold no procedural bodies)."""
    without_comments = "\n".join(line.split("--", 1)[0] for line in sql.splitlines())
    return [s.strip() for s in without_comments.split(";") if s.strip()]
