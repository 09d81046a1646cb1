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
FILE_FORMAT = "name key [requests-per-minute] [role=admin|user]"
ROLE_FIELD = "role="
# user: its own jobs, watchers and files; admin: everyone's, and the fleet-wide operations.
ROLES = ("admin", "user")


def key_digest(key: str) -> bytes:
    """SHA-256 of a key: what the registry keeps, compares and counts by (never the key)."""
    return hashlib.sha256(key.encode()).digest()


def key_id(key: str) -> str:
    """A short, non-reversible name for a key, for logs and metrics."""
    return key_digest(key).hex()[:8]


@dataclass(frozen=True)
class ApiKey:
    """One accepted key, known by its name and digest only."""

    name: str  # also the owner of what the key creates: jobs, watchers, files
    digest: bytes
    # Requests per minute; None means the gateway's RATE_LIMIT_PER_MIN.
    rate_limit: int | None = None
    admin: bool = False

    def sees(self, owner: str | None) -> bool:
        """Whether an item of ``owner`` exists for this key. Items from before ownership was
        recorded (None) are an admin's only."""
        return self.admin or (owner is not None and owner == self.name)

    @property
    def owner_filter(self) -> str | None:
        """The one owner a listing of this key shows; None: every owner (an admin)."""
        return None if self.admin else self.name

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
    """The keys cannot be used: API_KEYS_FILE is malformed, or two keys share a name. The
    message names the line, never a key."""


def _fields(line: str) -> list[str]:
    fields = line.split()
    for i, field in enumerate(fields):
        if field.startswith("#"):
            return fields[:i]
    return fields


def _entry(fields: list[str]) -> ApiKey:
    """One non-blank line as an entry; a ValueError says what is wrong without quoting it."""
    if not 2 <= len(fields) <= 4:
        msg = f"expected `{FILE_FORMAT}`, found {len(fields)} field(s)"
        raise ValueError(msg)
    name, key = fields[0], fields[1]
    if not _NAME.match(name):
        msg = "the name must be 1-64 letters, digits, '.', '_' or '-'"
        raise ValueError(msg)
    if key.startswith(ROLE_FIELD):
        msg = f"the key is missing: the second field is a {ROLE_FIELD} (expected `{FILE_FORMAT}`)"
        raise ValueError(msg)
    rate_limit: int | None = None
    role: str | None = None
    for field in fields[2:]:
        if field.startswith(ROLE_FIELD):
            if role is not None:
                msg = f"{ROLE_FIELD} is given twice"
                raise ValueError(msg)
            role = _role(field.removeprefix(ROLE_FIELD))
        else:
            given = _rate_limit(field)
            if rate_limit is not None:
                msg = f"expected `{FILE_FORMAT}`: one requests-per-minute at most"
                raise ValueError(msg)
            rate_limit = given
    return ApiKey(name=name, digest=key_digest(key), rate_limit=rate_limit, admin=role == "admin")


def _role(value: str) -> str:
    # The value is compared, never quoted: a misplaced field may be a key.
    if value not in ROLES:
        msg = f"the role must be {ROLE_FIELD}admin or {ROLE_FIELD}user (lower case)"
        raise ValueError(msg)
    return value


def _rate_limit(field: str) -> int:
    if field in ROLES:
        msg = f"a role is written {ROLE_FIELD}{field}"
        raise ValueError(msg)
    if not (field.isascii() and field.isdigit()) or int(field) < 1:
        msg = "requests-per-minute must be a whole number >= 1"
        raise ValueError(msg)
    return int(field)


def parse_keys_file(text: str, source: str = "API_KEYS_FILE") -> list[ApiKey]:
    """Parse ``name key [requests-per-minute] [role=admin|user]`` lines; ``#`` starts a
    comment. The optional fields come in any order; without ``role=`` a key is a user's.

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
        """Keep ``keys``, each key once.

        Raises:
            ApiKeysFileError: two different keys have one name (a name owns jobs and files).
        """
        self._keys: list[ApiKey] = []
        digests: set[bytes] = set()
        names: set[str] = set()
        for key in keys:
            # A key both in API_KEYS and in the file: the first (the file's, named) wins.
            if key.digest in digests:
                continue
            if key.name in names:
                # A bare key is named by its hash prefix, which a file's name could also be.
                msg = (
                    f"two different API keys are named {key.name} (a bare API_KEYS key is "
                    "named by the first 8 hex digits of its SHA-256): each name owns its jobs, "
                    "watchers and files, so names must be unique"
                )
                raise ApiKeysFileError(msg)
            digests.add(key.digest)
            names.add(key.name)
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
