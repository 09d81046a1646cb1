"""Output file names from a template, safe against whatever a title or user name contains.

A template is a relative path ending in ``.mp4`` with ``{placeholder}`` fields, e.g. the
default ``{room_id}/{YYYY}/{MM}/{DD}/{timestamp}_{title}.mp4``. Templates come from operators
and API clients, values (titles, user names) from TikTok users, so:

- :func:`validate_template` rejects unknown fields, format specs, absolute paths, ``..``,
  backslashes and control characters;
- :func:`render` reduces every value to letters, digits, marks, space and ``-_.`` (NFKC first,
  so look-alike slashes are caught), caps it at 80 characters (120 UTF-8 bytes), then checks
  the resolved path is inside the root and picks ``-1``, ``-2``... if the name is taken.

Time fields are UTC: YYYY MM DD HH mm ss, and ``timestamp`` = ``YYYYmmdd_HHMMSS``.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

DEFAULT_TEMPLATE = "{room_id}/{YYYY}/{MM}/{DD}/{timestamp}_{title}.mp4"
VALUE_FIELDS = frozenset({"room_id", "user", "title", "job_id", "part"})
TIME_FIELDS = frozenset({"YYYY", "MM", "DD", "HH", "mm", "ss", "timestamp"})
PLACEHOLDERS = VALUE_FIELDS | TIME_FIELDS
MAX_VALUE_CHARS = 80
# Also capped in UTF-8 bytes, so several values fit in one 255-byte file name (80 CJK
# characters alone would take 240).
MAX_VALUE_BYTES = 120
MAX_TEMPLATE_CHARS = 512
MAX_COMPONENT_BYTES = 255  # NAME_MAX of common Linux file systems
EXTENSION = ".mp4"
# Sibling names a recording may use: the raw segment, the remux temp, and the final file in
# each output format (options.format replaces the template's .mp4 with .mkv or .ts).
_SIBLING_SUFFIXES = (".mp4", ".flv", ".mp4.tmp", ".mkv", ".ts")
_MAX_COLLISIONS = 10_000
_EMPTY = "untitled"

_FORMATTER = string.Formatter()
_DRIVE = re.compile(r"^[A-Za-z]:")
_DOTS = re.compile(r"\.{2,}")
_SPACES = re.compile(r" {2,}")
_KEEP_PUNCT = frozenset(" -_.")
_BAD_CATEGORIES = frozenset({"Cc", "Cs", "Co", "Cn", "Zl", "Zp"})


def validate_template(template: str) -> str:
    """Return ``template`` if it is a safe relative ``.mp4`` path template.

    Raises:
        ValueError: with the reason.
    """
    if not isinstance(template, str) or not template:
        msg = "output template must be a non-empty string"
        raise ValueError(msg)
    if len(template) > MAX_TEMPLATE_CHARS:
        msg = f"output template longer than {MAX_TEMPLATE_CHARS} characters"
        raise ValueError(msg)
    if any(unicodedata.category(c) in _BAD_CATEGORIES for c in template):
        msg = "output template contains control characters"
        raise ValueError(msg)
    if "\\" in template:
        msg = "output template must use / as separator, not backslashes"
        raise ValueError(msg)
    if template.startswith(("/", "~")) or _DRIVE.match(template):
        msg = "output template must be a relative path"
        raise ValueError(msg)
    try:
        fields = [
            (name, spec, conversion)
            for _, name, spec, conversion in _FORMATTER.parse(template)
            if name is not None
        ]
    except ValueError as exc:
        msg = f"output template has unbalanced braces: {exc}"
        raise ValueError(msg) from None
    for name, spec, conversion in fields:
        if name not in PLACEHOLDERS:
            known = ", ".join(sorted(PLACEHOLDERS))
            msg = f"unknown placeholder {{{name}}} in output template (known: {known})"
            raise ValueError(msg)
        if spec or conversion:
            msg = f"placeholder {{{name}}} may not have a format spec or conversion"
            raise ValueError(msg)
    parts = template.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            msg = f"output template has an empty, '.' or '..' path component: {template!r}"
            raise ValueError(msg)
    filename = parts[-1]
    if not filename.endswith(EXTENSION) or filename == EXTENSION:
        msg = f"output template must end in a file name with the {EXTENSION} extension"
        raise ValueError(msg)
    return template


def sanitize(value: object, *, max_chars: int = MAX_VALUE_CHARS) -> str:
    """One path-safe name component: letters, digits, marks, space, ``-``, ``_``, ``.``."""
    text = "" if value is None else unicodedata.normalize("NFKC", str(value))
    kept = "".join(
        c if c in _KEEP_PUNCT or unicodedata.category(c)[0] in "LNM" else " " for c in text
    )
    kept = _SPACES.sub(" ", _DOTS.sub(".", kept)).strip(" .-_")
    kept = kept[:max_chars]
    if len(kept.encode()) > MAX_VALUE_BYTES:
        kept = kept.encode()[:MAX_VALUE_BYTES].decode(errors="ignore")
    return kept.rstrip(" .-_") or _EMPTY


def time_values(when: datetime) -> dict[str, str]:
    """The time placeholders for ``when`` (naive means UTC)."""
    utc = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    return {
        "YYYY": f"{utc.year:04d}",
        "MM": f"{utc.month:02d}",
        "DD": f"{utc.day:02d}",
        "HH": f"{utc.hour:02d}",
        "mm": f"{utc.minute:02d}",
        "ss": f"{utc.second:02d}",
        "timestamp": utc.strftime("%Y%m%d_%H%M%S"),
    }


def render(
    template: str,
    values: Mapping[str, object],
    root: Path,
    *,
    when: datetime | None = None,
) -> Path:
    """The absolute output path for ``template`` under ``root``, not taken by another file.

    Args:
        values: room_id, user, title, job_id, part (missing or empty -> "untitled"); a time
            field given here overrides the one computed from ``when``.
        when: the time for the time fields; default now. Naive datetimes are taken as UTC.

    Raises:
        ValueError: the template is invalid, or the result would leave ``root``.
    """
    validate_template(template)
    mapping = time_values(when or datetime.now(UTC))
    for name in PLACEHOLDERS:
        if name in values or name not in mapping:
            mapping[name] = sanitize(values.get(name))
    rendered = template.format_map(mapping)
    parts = rendered.split("/")
    parts = [_fit(part) for part in parts[:-1]] + [_fit(parts[-1], keep_suffix=EXTENSION)]
    if any(part in ("", ".", "..") for part in parts):
        msg = f"rendered path has an unsafe component: {rendered!r}"
        raise ValueError(msg)
    base = root.resolve()
    path = base.joinpath(*parts).resolve()
    if not path.is_relative_to(base) or path == base:
        msg = f"rendered path {path} is outside the recordings root {base}"
        raise ValueError(msg)
    return _vacant(path, base)


def _fit(part: str, keep_suffix: str = "") -> str:
    """Shorten a path component to MAX_COMPONENT_BYTES of UTF-8 (room for a -N suffix and the
    sibling suffixes is kept), preserving ``keep_suffix``."""
    limit = MAX_COMPONENT_BYTES - 16
    if len(part.encode()) <= limit:
        return part
    stem = part.removesuffix(keep_suffix) if keep_suffix else part
    budget = limit - len(keep_suffix.encode())
    encoded = stem.encode()[:budget]
    return encoded.decode(errors="ignore").rstrip(" .-_") + keep_suffix


def _vacant(path: Path, base: Path) -> Path:
    stem = path.name.removesuffix(EXTENSION)
    candidate = path
    for n in range(1, _MAX_COLLISIONS):
        if not any(_sibling(candidate, sfx).exists() for sfx in _SIBLING_SUFFIXES):
            return candidate
        candidate = path.with_name(f"{stem}-{n}{EXTENSION}")
    msg = f"no free name for {path.relative_to(base)} after {_MAX_COLLISIONS} attempts"
    raise ValueError(msg)


def _sibling(path: Path, suffix: str) -> Path:
    return path.with_name(path.name.removesuffix(EXTENSION) + suffix)
