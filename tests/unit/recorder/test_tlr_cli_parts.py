"""The tlr-cli engine's parts without a process: the FLV split, its end read from its log,
its command line and cookies file, the checkout's commit and pin."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from services.recorder.engines.checkout import (
    CheckoutError,
    mirror_src,
    open_checkout,
    pin_matches,
    read_commit,
)
from services.recorder.engines.cli_args import cli_argv, cli_env, write_cookies
from services.recorder.engines.cli_log import classify
from services.recorder.engines.flv_split import FlvSplitter
from services.recorder.flv import (
    TAG_AUDIO,
    TAG_VIDEO,
    FlvReader,
    encode_tag,
    file_header,
)
from services.recorder.segmenter import Segmenter
from shared.errors import ErrorCode

SHA = "5eea05a7a50e3d7a28fb0e6ca1985d2bbb9e9372"


def _connection(config: bytes, frames: int, start_ms: int) -> bytes:
    """One HTTP-FLV response as the CLI appends it: header, sequence headers, frames."""
    parts = [file_header(0x05), encode_tag(TAG_VIDEO, 0, b"\x17\x00\x00\x00\x00" + config)]
    parts.append(encode_tag(TAG_AUDIO, 0, b"\xaf\x00\x12\x10"))
    for i in range(frames):
        key = b"\x17" if i % 10 == 0 else b"\x27"
        ts = start_ms + i * 33
        parts.append(encode_tag(TAG_VIDEO, ts, key + b"\x01\x00\x00\x00" + bytes(200)))
        parts.append(encode_tag(TAG_AUDIO, ts, b"\xaf\x01" + bytes(50)))
    return b"".join(parts)


def _split(data: bytes, tmp_path: Path, chunk: int) -> tuple[list[Path], FlvSplitter]:
    paths: list[Path] = []

    def open_path(index: int, _started: object) -> Path:
        paths.append(tmp_path / f"seg-{index}.flv")
        return paths[-1]

    segmenter = Segmenter(open_path)  # no queue: written inline
    splitter = FlvSplitter(segmenter)
    for i in range(0, len(data), chunk):
        splitter.feed(data[i : i + chunk])
    splitter.finish()
    segmenter.close()
    return paths, splitter


@pytest.mark.parametrize("chunk", [1, 333, 1 << 20])
def test_joined_connections_and_a_cut_tag_split_into_clean_files(
    tmp_path: Path, chunk: int
) -> None:
    first = _connection(b"AVC-720", 30, 0)
    cut = encode_tag(TAG_VIDEO, 1000, b"\x27\x01\x00\x00\x00" + bytes(300))[:120]
    second = _connection(b"AVC-720", 30, 2000)  # after a reconnection: a second header
    third = _connection(b"AVC-540", 30, 4000)  # and a new resolution
    paths, splitter = _split(first + cut + second + third, tmp_path, chunk)
    assert splitter.headers == 3
    assert splitter.dropped_bytes >= len(cut)
    assert len(paths) == 3
    for path in paths:
        reader = FlvReader()
        tags = reader.feed(path.read_bytes())
        assert tags
        assert reader.buffered == 0  # no cut tag inside, one header at the start
        assert tags[0].is_video_sequence_header


def test_a_file_that_is_not_flv_makes_no_segment(tmp_path: Path) -> None:
    paths, splitter = _split(b"<html>404 Not Found</html>" * 100, tmp_path, 100)
    assert paths == []
    assert splitter.headers == 0


@pytest.mark.parametrize(
    ("returncode", "line", "media", "code"),
    [
        (
            0,
            "[!] 2026 - @bob: The user is not hosting a live stream at the moment.",
            False,
            ErrorCode.LIVE_OFFLINE,
        ),
        (0, "[*] 2026 - User is no longer live. Stopping recording.", True, None),
        (
            0,
            "[!] 2026 - Your IP is blocked by TikTok WAF. Please change your IP address.",
            False,
            ErrorCode.WAF_BLOCKED,
        ),
        (
            0,
            "[!] 2026 - Captcha required or country blocked. Use a VPN",
            False,
            ErrorCode.COUNTRY_BLOCKED,
        ),
        (
            0,
            "[!] 2026 - Username / RoomID not found or the user has never been in live.",
            False,
            ErrorCode.USER_NOT_FOUND,
        ),
        (
            0,
            "[*] 2026 - Network hiccup, retrying: Connection broken",
            False,
            ErrorCode.NETWORK_TIMEOUT,
        ),
        (0, "[!] 2026 - Generic Error: something new", False, ErrorCode.RECORDER_EXIT_NONZERO),
        (1, "[!] 2026 - FFmpeg binary is not installed", False, ErrorCode.FFMPEG_MISSING),
        (
            2,
            "main.py: error: unrecognized arguments: -no-update-check",
            False,
            ErrorCode.RECORDER_EXIT_NONZERO,
        ),
        (0, "[!] 2026 - ffmpeg conversion failed: Invalid data", True, None),
        (0, "[*] 2026 - Started recording...", False, ErrorCode.LIVE_OFFLINE),
    ],
)
def test_its_end_is_read_from_its_status_and_its_lines(
    returncode: int, line: str, media: bool, code: ErrorCode | None
) -> None:
    end = classify(returncode, ["  TikTok Live Recorder", line], media=media)
    assert end.code == code
    if code is not None:
        assert end.message
        assert line not in end.message  # our words, never its (they may hold secrets)


def test_the_live_ending_outranks_the_hiccups_before_it() -> None:
    lines = ["[*] x - Network hiccup, retrying: reset", "[*] x - User is no longer live."]
    assert classify(0, lines, media=True).code is None


def test_its_command_line_is_a_list_of_its_own_flags(tmp_path: Path) -> None:
    argv = cli_argv(
        Path("/venv/bin/python"),
        room_id="7503448765740976902",
        user="alice",
        output=tmp_path,
        duration=9.2,
        proxy="http://u:p@proxy:3128",
    )
    assert argv == [
        "/venv/bin/python", "-m", "main", "-room_id", "7503448765740976902",
        "-output", str(tmp_path), "-no-update-check", "-duration", "10",
        "-proxy", "http://u:p@proxy:3128",
    ]  # fmt: skip
    by_user = cli_argv(Path("py"), room_id=None, user="@bob", output=tmp_path, duration=None,
                       proxy=None)  # fmt: skip
    assert by_user[3:5] == ["-user", "bob"]
    assert "-telegram" not in argv + by_user


def test_its_environment_holds_nothing_of_ours(tmp_path: Path) -> None:
    environ = {"PATH": "/usr/bin", "SECRET_KEY": "k", "NATS_PASSWORD": "p", "PYTHONPATH": "/s"}
    env = cli_env(tmp_path, tmp_path / "bin", "PYTHONPATH", environ)
    assert env["PATH"] == f"{tmp_path / 'bin'}{os.pathsep}/usr/bin"
    assert env["PYTHONPATH"] == "/s"
    assert "SECRET_KEY" not in env
    assert "NATS_PASSWORD" not in env


def test_cookies_are_written_as_it_reads_them_for_the_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "cookies.json"
    write_cookies(path, {"sessionid_ss": "v"})
    assert path.read_text() == '{"sessionid_ss": "v"}'
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(FileExistsError):
        write_cookies(path, None)


def _checkout(tmp_path: Path, head: str, refs: dict[str, str] | None = None) -> Path:
    root = tmp_path / "checkout"
    (root / "src" / "utils").mkdir(parents=True)
    (root / "src" / "main.py").write_text("")
    (root / "src" / "utils" / "utils.py").write_text("")
    (root / "src" / "cookies.json").write_text('{"theirs": "x"}')
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text(head + "\n")
    for name, value in (refs or {}).items():
        (root / ".git" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / ".git" / name).write_text(value)
    return root


def test_the_commit_is_read_from_a_branch_packed_refs_or_a_detached_head(tmp_path: Path) -> None:
    assert read_commit(_checkout(tmp_path / "a", "ref: refs/heads/main",
                                 {"refs/heads/main": SHA + "\n"})) == SHA  # fmt: skip
    packed = {"packed-refs": f"# pack-refs\n{SHA} refs/heads/main\n"}
    assert read_commit(_checkout(tmp_path / "b", "ref: refs/heads/main", packed)) == SHA
    assert read_commit(_checkout(tmp_path / "c", SHA)) == SHA
    assert read_commit(tmp_path) is None


def test_the_pin_refuses_another_commit_unless_overridden(tmp_path: Path) -> None:
    root = _checkout(tmp_path, SHA)
    assert pin_matches(SHA, "5eea05a")
    assert not pin_matches(SHA, "5eea05b")
    assert not pin_matches(SHA, "5ee")  # too short to mean one commit
    assert open_checkout(root, None, "5eea05a", override=False).commit == SHA
    with pytest.raises(CheckoutError) as refused:
        open_checkout(root, None, "deadbeef", override=False)
    assert refused.value.code == ErrorCode.ENGINE_PIN_MISMATCH
    assert not open_checkout(root, None, "deadbeef", override=True).pinned
    with pytest.raises(CheckoutError) as missing:
        open_checkout(tmp_path / "nowhere", None, None, override=False)
    assert missing.value.code == ErrorCode.ENGINE_UNAVAILABLE


def test_the_private_copy_links_its_code_and_leaves_its_files_out(tmp_path: Path) -> None:
    root = _checkout(tmp_path, SHA)
    copy = tmp_path / "copy"
    mirror_src(root / "src", copy)
    assert (copy / "main.py").is_symlink()
    assert (copy / "utils").is_dir()
    assert not (copy / "utils").is_symlink()  # its ../cookies.json stays in the copy
    assert (copy / "utils" / "utils.py").resolve() == (root / "src" / "utils" / "utils.py")
    assert not (copy / "cookies.json").exists()
