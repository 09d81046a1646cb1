"""EGRESS_FILE: the operator's list of egresses, read when a scheduler starts leading.

One egress a line, ``name direct|proxy-url [requests-per-minute]``; ``#`` starts a comment.
A proxy URL is ``scheme://[user:password@]host:port`` (http, https, socks5, socks5h) and is
sealed with SECRET_KEY as soon as it is read, as the gateway seals a proxy it is given. The
file is the truth for the egresses it made: one taken out of it leaves the pool at the next
start; those added through ``POST /egresses`` stay. Errors name the line, never its URL.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from shared.egresses import check_name
from shared.secrets import SecretBox

FILE_FORMAT = "name direct|proxy-url [requests-per-minute]"
SCHEMES = ("http", "https", "socks5", "socks5h")
DIRECT = "direct"


class EgressFileError(ValueError):
    """The file cannot be used as it is (its message names the line and why)."""


@dataclass(frozen=True)
class EgressEntry:
    name: str
    proxy: str | None  # sealed
    per_min: float | None


def read_egress_file(path: Path, secrets: SecretBox | None) -> list[EgressEntry]:
    """The egresses ``path`` lists, proxies sealed. Raises EgressFileError (or OSError)."""
    entries: list[EgressEntry] = []
    seen: set[str] = set()
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        entry = _entry(line, number, path, secrets)
        if entry.name in seen:
            msg = f"{path}:{number}: egress {entry.name!r} is listed twice"
            raise EgressFileError(msg)
        seen.add(entry.name)
        entries.append(entry)
    return entries


def _entry(line: str, number: int, path: Path, secrets: SecretBox | None) -> EgressEntry:
    where = f"{path}:{number}"
    fields = line.split()
    if len(fields) not in (2, 3):
        msg = f"{where}: expected {FILE_FORMAT}"
        raise EgressFileError(msg)
    try:
        name = check_name(fields[0])
    except ValueError as exc:
        msg = f"{where}: {exc}"
        raise EgressFileError(msg) from None
    per_min = None
    if len(fields) == 3:
        try:
            per_min = float(fields[2])
        except ValueError:
            per_min = 0.0
        if not 0 < per_min <= 100_000:
            msg = f"{where}: requests-per-minute must be a number in (0, 100000]"
            raise EgressFileError(msg)
    if fields[1] == DIRECT:
        return EgressEntry(name, None, per_min)
    if not _proxy_shaped(fields[1]):
        msg = f"{where}: the proxy must be {'|'.join(SCHEMES)}://[user:password@]host:port"
        raise EgressFileError(msg)
    if secrets is None:
        msg = f"{where}: a proxy needs SECRET_KEY (proxies are kept sealed)"
        raise EgressFileError(msg)
    return EgressEntry(name, secrets.seal(fields[1]), per_min)


def _proxy_shaped(value: str) -> bool:
    parts = urlsplit(value)
    try:
        port = parts.port
    except ValueError:
        return False
    return parts.scheme in SCHEMES and bool(parts.hostname) and port is not None
