"""API keys: loading, checking (REST headers and gRPC metadata), and client identities.

Keys are kept only as SHA-256 digests and compared with ``hmac.compare_digest``, so
neither a timing difference nor a memory dump of this object reveals a key. A client's
identity for rate limiting is a short digest prefix, never the key, so it may be logged.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from pydantic import SecretStr

from services.common.settings import ServiceSettings, check_api_key

log = logging.getLogger(__name__)

BEARER = "bearer"
API_KEY_HEADER = "x-api-key"


def read_key_file(path: Path) -> list[str]:
    """One key per line; blank lines and ``#`` comments are skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise OSError(f"cannot read API keys file {path}: {exc.strerror or exc}") from None
    keys = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            keys.append(check_api_key(line))
        except ValueError as exc:
            raise ValueError(f"{path}, line {number}: {exc}") from None
    return keys


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class ApiKeys:
    """The accepted keys; ``enabled`` is False when there are none (authentication off)."""

    def __init__(self, keys: Iterable[str] = ()) -> None:
        self._digests = [_digest(k) for k in dict.fromkeys(keys)]

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> ApiKeys:
        keys = [k.get_secret_value() for k in settings.api_keys]
        if settings.api_keys_file is not None:
            keys += read_key_file(settings.api_keys_file)
        if settings.api_keys_file is not None and not keys:
            # An empty file would silently turn authentication off: refuse to start.
            raise ValueError(f"API keys file {settings.api_keys_file} holds no keys")
        return cls(keys)

    def including(self, other: ApiKeys) -> ApiKeys:
        """These keys and ``other``'s (e.g. the ordinary keys and the admin keys)."""
        merged = ApiKeys()
        merged._digests = list(dict.fromkeys([*self._digests, *other._digests]))
        return merged

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def __len__(self) -> int:
        return len(self._digests)

    def identify(self, key: str | None) -> str | None:
        """The client identity (``key:<digest prefix>``) of a valid key, else None."""
        if not key:
            return None
        digest = _digest(key)
        # Compare against every key (no early exit): the time taken says nothing about
        # which key, if any, matched.
        matched = False
        for known in self._digests:
            matched |= hmac.compare_digest(digest, known)
        return f"key:{digest.hex()[:12]}" if matched else None

    def identify_headers(self, headers: Mapping[str, str]) -> str | None:
        """``Authorization: Bearer KEY`` or ``X-API-Key: KEY`` (lower-case header names)."""
        token = bearer_token(headers.get("authorization"))
        return self.identify(token or headers.get(API_KEY_HEADER))

    def identify_metadata(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
        """gRPC metadata ``authorization: Bearer KEY`` (``x-api-key`` accepted too)."""
        values: dict[str, str] = {}
        for name, value in metadata or ():
            if isinstance(value, str):
                values.setdefault(name.lower(), value)
        return self.identify_headers(values)


def bearer_token(value: str | None) -> str | None:
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != BEARER:
        return None
    return token.strip() or None


def client_key(settings_key: SecretStr | None, key_file: Path | None) -> str | None:
    """The one key a client sends: from its setting, else the first key in its file."""
    if settings_key is not None:
        return check_api_key(settings_key.get_secret_value())
    if key_file is not None:
        keys = read_key_file(key_file)
        if not keys:
            raise ValueError(f"API key file {key_file} holds no key")
        return keys[0]
    return None


def auth_metadata(key: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),) if key else ()
