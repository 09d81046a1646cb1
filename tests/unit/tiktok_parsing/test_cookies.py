"""Cookie files (Netscape cookies.txt, JSON) load from their folder only and never echo a value."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from shared.tiktok import CookiesError, load_cookies

# --- cookies ----------------------------------------------------------------------------------

SECRET = "s3cr3t-session-value"
NETSCAPE = f"""# Netscape HTTP Cookie File
# This is a generated file! Do not edit.

.tiktok.com\tTRUE\t/\tTRUE\t1790000000\ttt-target-idc\tuseast2a
#HttpOnly_.tiktok.com\tTRUE\t/\tTRUE\t1790000000\tsessionid\t{SECRET}
#HttpOnly_www.tiktok.com\tFALSE\t/\tTRUE\t0\tsid_tt\tabc
.example.com\tTRUE\t/\tFALSE\t0\tsessionid\tnot-tiktok
.tiktok.com\tTRUE\t/\tFALSE\t0\tempty
"""


@pytest.fixture
def cookie_dir(tmp_path: Path) -> Path:
    path = tmp_path / "cookies"
    path.mkdir()
    return path


def test_netscape_cookies_txt(cookie_dir: Path) -> None:
    (cookie_dir / "c.txt").write_text(NETSCAPE)
    assert load_cookies("c.txt", cookie_dir) == {
        "tt-target-idc": "useast2a",
        "sessionid": SECRET,
        "sid_tt": "abc",
        "empty": "",
    }


def test_json_forms(cookie_dir: Path) -> None:
    (cookie_dir / "flat.json").write_text(json.dumps({"sessionid": SECRET, "tt-target-idc": "x"}))
    assert load_cookies("flat.json", cookie_dir) == {"sessionid": SECRET, "tt-target-idc": "x"}
    exported = [
        {"name": "sessionid", "value": SECRET, "domain": ".tiktok.com", "httpOnly": True},
        {"name": "msToken", "value": "a+b/c==", "domain": "www.tiktok.com"},
        {"name": "other", "value": "x", "domain": ".google.com"},
        {"name": "nodomain", "value": "y"},
    ]
    (cookie_dir / "list.json").write_text(json.dumps(exported))
    expected = {"sessionid": SECRET, "msToken": "a+b/c==", "nodomain": "y"}
    assert load_cookies("list.json", cookie_dir) == expected
    (cookie_dir / "state.json").write_text(json.dumps({"cookies": exported, "origins": []}))
    assert load_cookies(str(cookie_dir / "state.json"), cookie_dir) == expected


def _refused(name: str, allowed: Path, match: str, **kw: Any) -> None:
    with pytest.raises(CookiesError, match=match) as caught:
        load_cookies(name, allowed, **kw)
    assert SECRET not in str(caught.value)
    assert caught.value.__cause__ is None


def test_paths_outside_the_directory_are_refused(tmp_path: Path, cookie_dir: Path) -> None:
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps({"sessionid": SECRET}))
    _refused("../outside.json", cookie_dir, "outside")
    _refused(str(outside), cookie_dir, "outside")
    (cookie_dir / "link.json").symlink_to(outside)
    _refused("link.json", cookie_dir, "outside")
    (cookie_dir / "sub").mkdir()
    (cookie_dir / "sub" / "up").symlink_to(tmp_path)
    _refused("sub/up/outside.json", cookie_dir, "outside")
    _refused("missing.json", cookie_dir, "does not exist")
    _refused("sub", cookie_dir, "not a regular file")


def test_symlink_inside_the_directory_is_fine(cookie_dir: Path) -> None:
    (cookie_dir / "real.json").write_text(json.dumps({"sessionid": SECRET}))
    (cookie_dir / "current.json").symlink_to(cookie_dir / "real.json")
    assert load_cookies("current.json", cookie_dir) == {"sessionid": SECRET}


def test_oversize_and_malformed_files_never_echo_content(cookie_dir: Path) -> None:
    (cookie_dir / "big.json").write_text(json.dumps({"sessionid": SECRET + "x" * 2000}))
    _refused("big.json", cookie_dir, "larger than 1024 bytes", max_bytes=1024)
    (cookie_dir / "broken.json").write_text('{"sessionid": "' + SECRET)
    _refused("broken.json", cookie_dir, "not valid JSON")
    (cookie_dir / "broken.txt").write_text(f".tiktok.com TRUE / TRUE 0 sessionid {SECRET}\n")
    _refused("broken.txt", cookie_dir, "line 1")
    (cookie_dir / "semi.json").write_text(json.dumps({"sessionid": SECRET + ";evil=1"}))
    _refused("semi.json", cookie_dir, "not allowed")
    (cookie_dir / "crlf.json").write_text(json.dumps({"sessionid": SECRET + "\r\nX-Evil: 1"}))
    _refused("crlf.json", cookie_dir, "not allowed")
    (cookie_dir / "badname.json").write_text(json.dumps({SECRET + " x": "v"}))
    _refused("badname.json", cookie_dir, "invalid cookie name")
    (cookie_dir / "number.json").write_text(json.dumps({"sessionid": 12}))
    _refused("number.json", cookie_dir, "not a string")
    (cookie_dir / "none.json").write_text(
        json.dumps([{"name": "a", "value": SECRET, "domain": "x.com"}])
    )
    _refused("none.json", cookie_dir, "no cookie for tiktok.com")
    (cookie_dir / "bin.txt").write_bytes(b"\xff\xfe" + SECRET.encode())
    _refused("bin.txt", cookie_dir, "not UTF-8")


def test_cookie_dir_must_exist(tmp_path: Path) -> None:
    _refused("c.json", tmp_path / "nope", "does not exist")
