"""Output names: template validation, value sanitising, staying inside the root, collisions."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from shared.naming import (
    DEFAULT_TEMPLATE,
    MAX_VALUE_BYTES,
    MAX_VALUE_CHARS,
    render,
    sanitize,
    validate_template,
)

WHEN = datetime(2026, 3, 9, 7, 5, 3, tzinfo=UTC)
VALUES = {
    "room_id": "7503448765740976902",
    "user": "alice",
    "title": "Hello world",
    "job_id": "job-1",
    "part": 0,
}

INJECTIONS = [
    "; rm -rf /",
    "$(id)",
    "`id`",
    "../../etc/passwd",
    "..",
    ".",
    "a/../../b",
    "line1\nline2\r",
    "nul\x00byte",
    "C:\\Windows\\system32",
    "\\\\server\\share",
    "/absolute/path",
    "~root",
    "-rf",
    "\uff26\uff35\uff2c\uff2c\uff0f\uff37",  # fullwidth "FULL/W": NFKC gives ASCII, / goes
    "a\u2215b\u2044c",  # division slash, fraction slash
    "\u202egnp.exe",  # right-to-left override
    "x" * 500,
    "🔥🔥🔥",
    "",
]


def test_default_template_is_valid() -> None:
    assert validate_template(DEFAULT_TEMPLATE) == DEFAULT_TEMPLATE


@pytest.mark.parametrize(
    "template",
    [
        "{user}/{YYYY}-{MM}-{DD}_{HH}{mm}{ss}_{part}.mp4",
        "{job_id}.mp4",
        "flat_{timestamp}.mp4",
        "{{literal braces}}_{title}.mp4",
        "dir.with.dots/{title}.mp4",
    ],
)
def test_valid_templates(template: str) -> None:
    assert validate_template(template) == template


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("{room_id}/{nope}.mp4", "unknown placeholder"),
        ("{title.__class__}.mp4", "unknown placeholder"),
        ("{0}.mp4", "unknown placeholder"),
        ("{}.mp4", "unknown placeholder"),
        ("{title!r}.mp4", "format spec or conversion"),
        ("{title:>300}.mp4", "format spec or conversion"),
        ("{title.mp4", "unbalanced"),
        ("title}.mp4", "unbalanced"),
        ("/recordings/{title}.mp4", "relative"),
        ("~/{title}.mp4", "relative"),
        ("C:/x/{title}.mp4", "relative"),
        ("../{title}.mp4", "'..'"),
        ("{room_id}/../../{title}.mp4", "'..'"),
        ("{room_id}/./{title}.mp4", "'.'"),
        ("{room_id}//{title}.mp4", "empty"),
        ("{room_id}\\{title}.mp4", "backslash"),
        ("{title}\x00.mp4", "control"),
        ("{title}\n.mp4", "control"),
        ("{title}\x1b[31m.mp4", "control"),
        ("{title}.flv", ".mp4"),
        ("{title}.mp4/", "empty"),
        ("{room_id}/.mp4", ".mp4"),
        ("", "non-empty"),
        ("a" * 600 + ".mp4", "longer"),
    ],
)
def test_invalid_templates(template: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        validate_template(template)


def test_render_default(tmp_path: Path) -> None:
    path = render(DEFAULT_TEMPLATE, VALUES, tmp_path, when=WHEN)
    expected = "7503448765740976902/2026/03/09/20260309_070503_Hello world.mp4"
    assert path == tmp_path.resolve() / expected


def test_render_time_fields_are_utc(tmp_path: Path) -> None:
    local = WHEN.astimezone(timezone(timedelta(hours=-5)))
    path = render("{YYYY}{MM}{DD}{HH}{mm}{ss}-{timestamp}.mp4", VALUES, tmp_path, when=local)
    assert path.name == "20260309070503-20260309_070503.mp4"
    naive = render("{HH}.mp4", VALUES, tmp_path, when=WHEN.replace(tzinfo=None))
    assert naive.name == "07.mp4"


@pytest.mark.parametrize("evil", INJECTIONS)
@pytest.mark.parametrize("field", ["title", "user", "room_id", "job_id", "part"])
def test_injected_values_stay_one_safe_component(tmp_path: Path, evil: str, field: str) -> None:
    root = tmp_path / "recordings"
    template = "{room_id}/{user}/{job_id}_{part}_{title}.mp4"
    path = render(template, {**VALUES, field: evil}, root, when=WHEN)
    rel = path.relative_to(root.resolve())
    assert len(rel.parts) == 3  # nothing added or removed a directory level
    assert path.suffix == ".mp4"
    for part in rel.parts:
        assert part not in ("", ".", "..")
        assert not part.startswith((".", "-"))
        assert not set(part) & set("/\\\x00\n\r`$;|&<>*?\"'")
        assert all(c.isprintable() for c in part)
        assert len(part.encode()) <= 255


@pytest.mark.parametrize("evil", INJECTIONS)
def test_sanitize(evil: str) -> None:
    clean = sanitize(evil)
    assert clean
    assert len(clean) <= MAX_VALUE_CHARS
    assert len(clean.encode()) <= MAX_VALUE_BYTES
    assert ".." not in clean
    assert not set(clean) & set("/\\\x00\n\r`$;()")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Hello world", "Hello world"),
        ("Живой эфир 🎉 #1", "Живой эфир 1"),
        ("直播中 \u2013 テスト", "直播中 テスト"),  # en dash
        ("नमस्ते दुनिया", "नमस्ते दुनिया"),  # combining marks are kept
        ("a...b", "a.b"),
        ("  ..hidden.. ", "hidden"),
        ("rm -rf /", "rm -rf"),
        ("$(id)", "id"),
        ("", "untitled"),
        (None, "untitled"),
        ("///", "untitled"),
        (42, "42"),
    ],
)
def test_sanitize_keeps_readable_text(value: object, expected: str) -> None:
    assert sanitize(value) == expected


def test_missing_values_become_untitled(tmp_path: Path) -> None:
    path = render("{user}_{title}.mp4", {}, tmp_path, when=WHEN)
    assert path.name == "untitled_untitled.mp4"


def test_long_unicode_title_fits_the_file_name_limit(tmp_path: Path) -> None:
    title = "🎉" + "語" * 300
    path = render("{timestamp}_{title}_{user}_{job_id}.mp4", {**VALUES, "title": title}, tmp_path)
    assert path.name.endswith(".mp4")
    assert len(path.name.encode()) <= 255
    assert "語" * 40 in path.name
    assert path.name.endswith("_alice_job-1.mp4")  # later fields survive a long title


def test_collisions_get_a_numbered_suffix(tmp_path: Path) -> None:
    first = render(DEFAULT_TEMPLATE, VALUES, tmp_path, when=WHEN)
    first.parent.mkdir(parents=True)
    first.write_bytes(b"x")
    second = render(DEFAULT_TEMPLATE, VALUES, tmp_path, when=WHEN)
    assert second.name == first.name.replace(".mp4", "-1.mp4")
    # a raw segment still being recorded or remuxed also holds the name
    second.with_suffix(".flv").write_bytes(b"x")
    third = render(DEFAULT_TEMPLATE, VALUES, tmp_path, when=WHEN)
    assert third.name == first.name.replace(".mp4", "-2.mp4")


@pytest.mark.parametrize("suffix", [".mkv", ".ts"])
def test_a_final_file_of_another_format_holds_the_name(tmp_path: Path, suffix: str) -> None:
    # options.format puts the file at the template's name with its own extension: a segment
    # that starts in the same second must not take that name (its remux would find it taken).
    first = render(DEFAULT_TEMPLATE, VALUES, tmp_path, when=WHEN)
    first.parent.mkdir(parents=True)
    first.with_suffix(suffix).write_bytes(b"x")
    second = render(DEFAULT_TEMPLATE, VALUES, tmp_path, when=WHEN)
    assert second.name == first.name.replace(".mp4", "-1.mp4")


def test_symlink_escaping_the_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    os.symlink(outside, root / "7503448765740976902")
    with pytest.raises(ValueError, match="outside the recordings root"):
        render(DEFAULT_TEMPLATE, VALUES, root, when=WHEN)


def test_render_validates_the_template(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=re.escape("'..'")):
        render("../{title}.mp4", VALUES, tmp_path)
