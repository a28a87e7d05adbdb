"""Typed errors of the weights manager.

Services map these to HTTP/gRPC status codes, so each carries the fields a
caller needs to tell an operator what to do, not just a message.
"""

from __future__ import annotations

from pathlib import Path


class WeightsError(Exception):
    """Base class of every weights-manager error."""


class UnknownWeightsError(WeightsError, LookupError):
    """A name that no registry entry carries."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        shown = ", ".join(known[:12]) + (" ..." if len(known) > 12 else "")
        super().__init__(f"unknown weights {name!r}; known: {shown}")

    def __str__(self) -> str:
        # LookupError would otherwise render like KeyError (quoted repr); keep it readable.
        return str(self.args[0])


class DuplicateWeightsError(WeightsError, ValueError):
    """Two registry entries with the same name."""


class WeightsNotFoundError(WeightsError, FileNotFoundError):
    """The weights file is not present locally and must be fetched or placed by hand."""

    def __init__(
        self,
        name: str,
        filename: str,
        directory: Path | None,
        url: str | None,
        hint: str = "",
    ) -> None:
        self.name = name
        self.filename = filename
        self.directory = directory
        self.url = url
        self.hint = hint
        where = (
            f"put {filename!r} into {str(directory)!r}"
            if directory is not None
            else f"put {filename!r} into a weights cache directory and pass it as cache_dir"
        )
        parts = [f"weights {name!r} not found locally: {where}"]
        if url:
            parts.append(f"download it from {url} (or run `transtic weights pull {name}`)")
        if hint:
            parts.append(hint)
        super().__init__("; ".join(parts))

    def __str__(self) -> str:
        # OSError's own __str__ formats errno/filename, which would hide the hint.
        return str(self.args[0])


class ChecksumError(WeightsError, ValueError):
    """A downloaded or cached file does not have the registered SHA-256."""

    def __init__(self, name: str, expected: str, actual: str, source: str) -> None:
        self.name = name
        self.expected = expected
        self.actual = actual
        self.source = source
        super().__init__(
            f"checksum mismatch for weights {name!r} from {source}: "
            f"expected sha256 {expected}, got {actual}"
        )
