"""Load TikTok login cookies from a Netscape cookies.txt or a JSON export, confined to one dir.

Cookie values are session credentials: no error message, log line or exception chain built
here quotes the file's content, only its path, line numbers and cookie names.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any

DEFAULT_MAX_BYTES = 64 * 1024
TIKTOK_DOMAIN = "tiktok.com"

# RFC 6265 cookie-name token. Values are looser than RFC 6265 because browsers store commas
# and spaces too; what must never pass is ';' (it would start another cookie), control
# characters (header injection) and non-ASCII (not encodable in a header).
_NAME_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VALUE_RE = re.compile(r"[\x20-\x3a\x3c-\x7e]*")
_HTTPONLY_PREFIX = "#HttpOnly_"


class CookiesError(ValueError):
    """The cookies file is missing, outside the allowed directory, too large or malformed."""


def load_cookies(
    name_or_path: str, allowed_dir: Path, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> dict[str, str]:
    """Cookies for tiktok.com from ``name_or_path``, a file that must resolve inside
    ``allowed_dir`` (a relative name is taken inside it; symlinks are followed, then checked).

    Formats: Netscape cookies.txt (``#HttpOnly_`` lines kept, other ``#`` lines are comments),
    JSON ``{"name": "value"}``, a JSON list of ``{"name", "value", "domain"?}`` objects
    (browser extension exports) or ``{"cookies": [...]}`` (Playwright storage state). Cookies
    of other domains are dropped. Raises CookiesError.
    """
    path = _confined(name_or_path, allowed_dir)
    text = _read_limited(path, name_or_path, max_bytes)
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        cookies = _parse_json(stripped, name_or_path)
    else:
        cookies = _parse_netscape(text, name_or_path)
    if not cookies:
        msg = f"cookies file {name_or_path!r} holds no cookie for {TIKTOK_DOMAIN}"
        raise CookiesError(msg)
    return cookies


def _confined(name_or_path: str, allowed_dir: Path) -> Path:
    if not name_or_path or "\x00" in name_or_path:
        msg = "cookies file name is empty or invalid"
        raise CookiesError(msg)
    try:
        root = allowed_dir.resolve(strict=True)
    except OSError:
        msg = f"cookies directory {str(allowed_dir)!r} does not exist"
        raise CookiesError(msg) from None
    candidate = Path(name_or_path)
    if not candidate.is_absolute():
        candidate = root / candidate
    try:
        # strict: the file must exist; symlinks (any component) are followed before the check.
        resolved = candidate.resolve(strict=True)
    except (OSError, RuntimeError):
        msg = f"cookies file {name_or_path!r} does not exist or cannot be resolved"
        raise CookiesError(msg) from None
    if not resolved.is_relative_to(root):
        msg = f"cookies file {name_or_path!r} is outside the cookies directory"
        raise CookiesError(msg)
    return resolved


def _read_limited(path: Path, shown: str, max_bytes: int) -> str:
    try:
        # Checked before opening so a FIFO or device never blocks or streams forever.
        if not stat.S_ISREG(path.stat().st_mode):
            msg = f"cookies file {shown!r} is not a regular file"
            raise CookiesError(msg)
        # O_NOFOLLOW: the resolved path must not have become a symlink since it was checked.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        msg = f"cookies file {shown!r} cannot be opened"
        raise CookiesError(msg) from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            msg = f"cookies file {shown!r} is not a regular file"
            raise CookiesError(msg)
        if info.st_size > max_bytes:
            msg = f"cookies file {shown!r} is larger than {max_bytes} bytes"
            raise CookiesError(msg)
        data = handle.read(max_bytes + 1)  # it may have grown since fstat
    if len(data) > max_bytes:
        msg = f"cookies file {shown!r} is larger than {max_bytes} bytes"
        raise CookiesError(msg)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        msg = f"cookies file {shown!r} is not UTF-8 text"
        raise CookiesError(msg) from None


def is_tiktok_domain(domain: str) -> bool:
    """tiktok.com or a subdomain; a leading dot (domain cookie) is allowed."""
    host = domain.strip().lstrip(".").lower()
    return host == TIKTOK_DOMAIN or host.endswith("." + TIKTOK_DOMAIN)


def _parse_netscape(text: str, shown: str) -> dict[str, str]:
    cookies: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip("\r\n")
        if line.startswith(_HTTPONLY_PREFIX):
            line = line[len(_HTTPONLY_PREFIX) :]
        elif not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) == 6:
            fields.append("")  # an empty value whose trailing tab an editor trimmed
        if len(fields) != 7:
            msg = f"cookies file {shown!r} line {number}: expected 7 tab-separated fields"
            raise CookiesError(msg)
        domain, name, value = fields[0], fields[5], fields[6]
        if is_tiktok_domain(domain):
            _add(cookies, name, value, shown)
    return cookies


def _parse_json(text: str, shown: str) -> dict[str, str]:
    try:
        doc: Any = json.loads(text)
    except ValueError:
        # from None: the decode error object holds the whole document.
        msg = f"cookies file {shown!r} is not valid JSON"
        raise CookiesError(msg) from None
    if isinstance(doc, dict) and isinstance(doc.get("cookies"), list):
        doc = doc["cookies"]
    cookies: dict[str, str] = {}
    if isinstance(doc, dict):
        for name, value in doc.items():
            if not isinstance(value, str):
                msg = f"cookies file {shown!r}: the value of {_safe_name(name)} is not a string"
                raise CookiesError(msg)
            _add(cookies, name, value, shown)
        return cookies
    if not isinstance(doc, list):
        msg = f"cookies file {shown!r}: expected a JSON object or list"
        raise CookiesError(msg)
    for index, item in enumerate(doc):
        if not (
            isinstance(item, dict)
            and isinstance(item.get("name"), str)
            and isinstance(item.get("value"), str)
        ):
            msg = f"cookies file {shown!r} item {index}: expected string name and value"
            raise CookiesError(msg)
        domain = item.get("domain")
        if domain is None or (isinstance(domain, str) and is_tiktok_domain(domain)):
            _add(cookies, item["name"], item["value"], shown)
    return cookies


def _add(cookies: dict[str, str], name: str, value: str, shown: str) -> None:
    if not _NAME_RE.fullmatch(name):
        msg = f"cookies file {shown!r}: invalid cookie name {_safe_name(name)}"
        raise CookiesError(msg)
    if not _VALUE_RE.fullmatch(value):
        # Never echo the value: it is the credential.
        msg = f"cookies file {shown!r}: cookie {name!r} has characters not allowed in a value"
        raise CookiesError(msg)
    cookies[name] = value


def _safe_name(name: object) -> str:
    """A cookie name fit for a message; a malformed one is not shown (it could be a value)."""
    if isinstance(name, str) and _NAME_RE.fullmatch(name) and len(name) <= 64:
        return repr(name)
    return "a cookie"
