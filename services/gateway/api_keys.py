"""The API key registry: keys from API_KEYS and API_KEYS_FILE, looked up in constant time."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from services.gateway.settings import GatewaySettings

# A name goes into logs and metric labels, so it must be short and inert.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
FILE_FORMAT = "name key [requests-per-minute]"


def key_digest(key: str) -> bytes:
    """SHA-256 of a key: what the registry keeps, compares and counts by (never the key)."""
    return hashlib.sha256(key.encode()).digest()


def key_id(key: str) -> str:
    """A short, non-reversible name for a key, for logs and metrics."""
    return key_digest(key).hex()[:8]


@dataclass(frozen=True)
class ApiKey:
    """One accepted key, known by its name and digest only."""

    name: str
    digest: bytes
    # Requests per minute; None means the gateway's RATE_LIMIT_PER_MIN.
    rate_limit: int | None = None

    @property
    def counter_id(self) -> str:
        """Identifies the key's rate-limit counters in NATS: a hash, never the key."""
        return self.digest.hex()

    @classmethod
    def bare(cls, key: str) -> ApiKey:
        """A key from API_KEYS: no name, so it is named by its hash prefix."""
        digest = key_digest(key)
        return cls(name=digest.hex()[:8], digest=digest)


class ApiKeysFileError(ValueError):
    """API_KEYS_FILE cannot be used. The message names the line, never a key."""


def _fields(line: str) -> list[str]:
    fields = line.split()
    for i, field in enumerate(fields):
        if field.startswith("#"):
            return fields[:i]
    return fields


def _entry(fields: list[str]) -> ApiKey:
    """One non-blank line as an entry; a ValueError says what is wrong without quoting it."""
    if len(fields) not in (2, 3):
        msg = f"expected `{FILE_FORMAT}`, found {len(fields)} field(s)"
        raise ValueError(msg)
    name, key = fields[0], fields[1]
    if not _NAME.match(name):
        msg = "the name must be 1-64 letters, digits, '.', '_' or '-'"
        raise ValueError(msg)
    rate_limit = None
    if len(fields) == 3:
        if not fields[2].isdigit() or int(fields[2]) < 1:
            msg = "requests-per-minute must be a whole number >= 1"
            raise ValueError(msg)
        rate_limit = int(fields[2])
    return ApiKey(name=name, digest=key_digest(key), rate_limit=rate_limit)


def parse_keys_file(text: str, source: str = "API_KEYS_FILE") -> list[ApiKey]:
    """Parse ``name key [requests-per-minute]`` lines; ``#`` starts a comment.

    Error messages name the line but never quote it: a misplaced field may well be a key.

    Raises:
        ApiKeysFileError: a malformed line, a duplicate name or key.
    """
    keys: list[ApiKey] = []
    name_lines: dict[str, int] = {}
    digest_lines: dict[bytes, int] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        fields = _fields(line)
        if not fields:
            continue
        try:
            entry = _entry(fields)
            if entry.name in name_lines:
                msg = f"the name is already used on line {name_lines[entry.name]}"
                raise ValueError(msg)
            if entry.digest in digest_lines:
                msg = f"the key is already listed on line {digest_lines[entry.digest]}"
                raise ValueError(msg)
        except ValueError as exc:
            msg = f"{source} line {lineno}: {exc}"
            raise ApiKeysFileError(msg) from None
        name_lines[entry.name] = lineno
        digest_lines[entry.digest] = lineno
        keys.append(entry)
    return keys


def load_keys_file(path: Path) -> list[ApiKey]:
    """Read and parse API_KEYS_FILE.

    Raises:
        ApiKeysFileError: unreadable or malformed.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"API_KEYS_FILE {path} cannot be read: {exc.__class__.__name__}"
        raise ApiKeysFileError(msg) from exc
    return parse_keys_file(text, source=f"API_KEYS_FILE {path}")


class ApiKeyRegistry:
    """Every accepted key. Lookups compare digests in constant time, over all keys."""

    def __init__(self, keys: Iterable[ApiKey]) -> None:
        self._keys: list[ApiKey] = []
        digests: set[bytes] = set()
        for key in keys:
            # A key both in API_KEYS and in the file: the first (the file's, named) wins.
            if key.digest not in digests:
                digests.add(key.digest)
                self._keys.append(key)

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> ApiKeyRegistry:
        """API_KEYS_FILE entries, then API_KEYS bare keys.

        Raises:
            ApiKeysFileError: the file is unreadable or malformed.
        """
        named = load_keys_file(settings.api_keys_file) if settings.api_keys_file else []
        return cls([*named, *(ApiKey.bare(k) for k in settings.api_keys)])

    def __len__(self) -> int:
        return len(self._keys)

    def lookup(self, given: str) -> ApiKey | None:
        """The entry of ``given``, or None. Time does not depend on which key matched."""
        digest = key_digest(given)
        found: ApiKey | None = None
        for key in self._keys:
            # Equal-length digests: compare_digest then leaks nothing, not even a length.
            if hmac.compare_digest(digest, key.digest):
                found = key
        return found
