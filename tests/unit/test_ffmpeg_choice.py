"""The recorder runs an ffmpeg that can remux what TikTok serves: 6.1+, else the bundled one."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import imageio_ffmpeg
import pytest

from services.recorder.ffmpeg import (
    FfmpegMissingError,
    choose_ffmpeg,
    ffmpeg_version,
    is_capable,
)
from shared.errors import ErrorCode

BUNDLED = str(imageio_ffmpeg.get_ffmpeg_exe())


def fake_ffmpeg(folder: Path, version_word: str) -> Path:
    """An executable named ffmpeg that answers ``-version`` as a build of ``version_word``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "ffmpeg"
    path.write_text(
        f"#!/bin/sh\necho 'ffmpeg version {version_word} Copyright (c) 2000-2026'\n"
        "echo 'built with gcc 12'\n"
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.mark.parametrize(
    ("word", "capable"),
    [
        ("5.1.9-0+deb12u1", False),  # Debian 12
        ("6.0.1", False),
        ("6.1.1-3ubuntu5", True),  # Ubuntu 24.04
        ("7.1", True),
        ("n9.0.2-17-g2a571b6068-20260930", True),  # imageio-ffmpeg's static build
        ("N-117854-g1a2b3c4d5e", True),  # a master-branch build
        ("4.4.2", False),
        ("", False),
        ("custom-build", False),
    ],
)
def test_capability_follows_the_version(word: str, capable: bool) -> None:
    assert is_capable(word) is capable


def test_an_old_ffmpeg_on_path_gives_way_to_the_bundled_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = fake_ffmpeg(tmp_path / "bin", "5.1.9-0+deb12u1")
    monkeypatch.setenv("PATH", str(old.parent))
    choice = choose_ffmpeg()
    assert choice.path == BUNDLED
    assert choice.source == "bundled"
    assert choice.note is not None
    assert "5.1.9-0+deb12u1" in choice.note
    assert str(old) in choice.note


def test_a_recent_ffmpeg_on_path_is_preferred(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recent = fake_ffmpeg(tmp_path / "bin", "7.1-static")
    monkeypatch.setenv("PATH", str(recent.parent))
    choice = choose_ffmpeg()
    assert (choice.path, choice.version, choice.source, choice.note) == (
        str(recent),
        "7.1-static",
        "PATH",
        None,
    )


def test_ffmpeg_bin_wins_even_when_old_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "")
    old = fake_ffmpeg(tmp_path / "bin", "5.1.9")
    choice = choose_ffmpeg(str(old))
    assert (choice.path, choice.source) == (str(old), "FFMPEG_BIN")
    assert choice.note is not None
    assert "older than 6.1" in choice.note


def test_no_ffmpeg_on_path_means_the_bundled_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    choice = choose_ffmpeg()
    assert (choice.path, choice.source, choice.note) == (BUNDLED, "bundled", None)
    assert is_capable(choice.version)


def test_a_missing_ffmpeg_bin_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FfmpegMissingError) as caught:
        choose_ffmpeg(str(tmp_path / "nope"))
    assert caught.value.code == ErrorCode.FFMPEG_MISSING


def test_the_version_probe_is_redone_when_the_binary_changes(tmp_path: Path) -> None:
    path = fake_ffmpeg(tmp_path, "5.1.9")
    assert ffmpeg_version(str(path)) == "5.1.9"
    fake_ffmpeg(tmp_path, "7.0")
    # A package upgrade replaces the file: a new mtime, a new probe.
    later = path.stat().st_mtime_ns + 1_000_000_000
    os.utime(path, ns=(later, later))
    assert ffmpeg_version(str(path)) == "7.0"


def test_a_binary_that_does_not_answer_has_no_version(tmp_path: Path) -> None:
    broken = tmp_path / "ffmpeg"
    broken.write_text("#!/bin/sh\nexit 3\n")
    broken.chmod(0o755)
    assert ffmpeg_version(str(broken)) == ""
