"""A rebuild's walk finds the files of every output format, and a raw FLV only once it is one."""

from __future__ import annotations

import os
from pathlib import Path

from services.indexer.scan import FLV_SETTLED, walk


def test_every_format_is_found_and_a_segment_being_remuxed_is_not(tmp_path: Path) -> None:
    room = tmp_path / "7503448765740976902"
    room.mkdir()
    for name in ["a.mp4", "b.mkv", "c.ts", "d.flv", "e.flv", "e.mkv", "f.flv", "g.mkv.1-0.tmp"]:
        (room / name).write_bytes(b"x")
    settled = (room / "d.flv").stat().st_mtime - FLV_SETTLED - 1
    for name in ["d.flv", "e.flv"]:
        os.utime(room / name, (settled, settled))

    found = walk(tmp_path, now=(room / "a.mp4").stat().st_mtime)

    # d.flv: the flv format (or a failed remux), settled; e.flv has its .mkv (being remuxed,
    # or left by a crash); f.flv is still being written; a temp file is never a recording.
    assert sorted(found.files) == [
        f"{room.name}/{name}" for name in ["a.mp4", "b.mkv", "c.ts", "d.flv", "e.mkv"]
    ]
