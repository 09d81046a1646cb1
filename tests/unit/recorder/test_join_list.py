"""The concat list of a join: no recording's name in it, each segment on the frame grid."""

from __future__ import annotations

import os
from pathlib import Path

from services.recorder.ffmpeg import Probe
from services.recorder.join import _concat_list, _Piece, _vacant
from shared.jobs import SegmentEntry

PROBE = Probe(params=("Video h264",), duration=3.31, fps=30.0)


def test_the_list_names_portable_links_to_the_segments(tmp_path: Path) -> None:
    names = ["it's\nfile 'x'.mkv", "-safe 0 $(id).mkv", "ok.mkv"]
    segments = tmp_path / "segments"
    segments.mkdir()
    run = []
    for part, name in enumerate(names):
        (segments / name).write_bytes(b"x")
        run.append(_Piece(SegmentEntry(path=name, part=part), segments / name, PROBE))
    folder = tmp_path / "private"
    folder.mkdir()

    listing = _concat_list(folder, run, ".mkv")

    lines = listing.read_text().splitlines()
    assert lines == [
        "ffconcat version 1.0",
        "file '0000.mkv'",
        "duration 3.333333",  # 3.31 s (+ the banner's 10 ms) rounded up to a 30 fps frame
        "file '0001.mkv'",
        "duration 3.333333",
        "file '0002.mkv'",
    ]
    for n, name in enumerate(names):
        assert os.readlink(folder / f"{n:04d}.mkv") == str(segments / name)


def test_the_joined_name_never_takes_an_existing_file(tmp_path: Path) -> None:
    first = tmp_path / "20260309_070503_live.mp4"
    assert _vacant(first, ".mp4") == tmp_path / "20260309_070503_live-joined.mp4"
    (tmp_path / "20260309_070503_live-joined.mp4").write_bytes(b"x")
    assert _vacant(first, ".mp4") == tmp_path / "20260309_070503_live-joined-2.mp4"
