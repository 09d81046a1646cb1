"""The incremental FLV reader and the segmenter, on synthetic FLV bytes built here."""

from __future__ import annotations

import random
from datetime import datetime
from pathlib import Path

import pytest

from services.recorder.flv import FlvFormatError, FlvReader, FlvTag, trim_partial_tail
from services.recorder.segmenter import Segmenter, SegmentInfo

# --- building FLV bytes (independent of the code under test) --------------------------------

AVC_CONFIG_360 = bytes([0x17, 0x00, 0, 0, 0]) + b"avcC-640x360"
AVC_CONFIG_720 = bytes([0x17, 0x00, 0, 0, 0]) + b"avcC-1280x720"
AAC_CONFIG = bytes([0xAF, 0x00, 0x12, 0x10])
METADATA = b"\x02\x00\x0aonMetaData" + b"\x08\x00\x00\x00\x00\x00\x00\x09"


def flv_header(flags: int = 0x05) -> bytes:
    return b"FLV\x01" + bytes([flags]) + (9).to_bytes(4, "big") + bytes(4)


def tag(kind: int, ts: int, data: bytes) -> bytes:
    head = bytes([kind]) + len(data).to_bytes(3, "big")
    head += (ts & 0xFFFFFF).to_bytes(3, "big") + bytes([(ts >> 24) & 0xFF]) + bytes(3)
    return head + data + (11 + len(data)).to_bytes(4, "big")


def keyframe(ts: int, n: int = 200) -> bytes:
    return tag(9, ts, bytes([0x17, 0x01, 0, 0, 0]) + bytes([ts & 0xFF]) * n)


def interframe(ts: int, n: int = 60) -> bytes:
    return tag(9, ts, bytes([0x27, 0x01, 0, 0, 0]) + bytes([ts & 0xFF]) * n)


def audio(ts: int, n: int = 20) -> bytes:
    return tag(8, ts, bytes([0xAF, 0x01]) + bytes([ts & 0xFF]) * n)


def stream_start(video_config: bytes = AVC_CONFIG_360, ts: int = 0) -> bytes:
    return flv_header() + tag(18, ts, METADATA) + tag(9, ts, video_config) + tag(8, ts, AAC_CONFIG)


def gop(start: int, frames: int = 30, frame_ms: int = 33) -> bytes:
    """A keyframe, then interframes, each followed by one audio frame."""
    out = b""
    for i in range(frames):
        ts = start + i * frame_ms
        out += (keyframe(ts) if i == 0 else interframe(ts)) + audio(ts + 1)
    return out


Parsed = tuple[int, int, bytes]


def walk(buf: bytes) -> tuple[int, list[Parsed]]:
    """An independent reader for whole files: (header flags, [(type, ts, payload)])."""
    assert buf[:3] == b"FLV"
    pos = int.from_bytes(buf[5:9], "big") + 4
    tags: list[Parsed] = []
    while pos < len(buf):
        size = int.from_bytes(buf[pos + 1 : pos + 4], "big")
        ts = int.from_bytes(buf[pos + 4 : pos + 7], "big") | (buf[pos + 7] << 24)
        end = pos + 11 + size
        assert int.from_bytes(buf[end : end + 4], "big") == size + 11
        tags.append((buf[pos], ts, buf[pos + 11 : end]))
        pos = end + 4
    assert pos == len(buf)
    return buf[4], tags


def feed_in_chunks(data: bytes, sizes: list[int] | None, seed: int = 0) -> list[FlvTag]:
    reader = FlvReader()
    rng = random.Random(seed)
    out: list[FlvTag] = []
    pos = 0
    i = 0
    while pos < len(data):
        n = sizes[i % len(sizes)] if sizes else rng.randint(1, 700)
        out += reader.feed(data[pos : pos + n])
        pos += n
        i += 1
    assert reader.buffered == 0
    return out


# --- reader ----------------------------------------------------------------------------------


@pytest.mark.parametrize("sizes", [[1], [7], [13, 1, 4096], [1_000_000], None])
def test_reader_yields_the_same_tags_whatever_the_chunking(sizes: list[int] | None) -> None:
    data = stream_start() + gop(0) + gop(990)
    tags = feed_in_chunks(data, sizes)
    _, expected = walk(data)
    assert [(t.type, t.timestamp, bytes(t.payload)) for t in tags] == expected
    # raw is the whole tag, PreviousTagSize included, exactly as received
    assert b"".join(bytes(t.raw) for t in tags) == data[13:]


def test_reader_keeps_tags_valid_after_more_data_arrives() -> None:
    reader = FlvReader()
    data = stream_start() + gop(0, frames=3)
    first = reader.feed(data[:200])
    snapshot = [bytes(t.raw) for t in first]
    reader.feed(data[200:])
    assert [bytes(t.raw) for t in first] == snapshot


@pytest.mark.parametrize("ts", [0, 0xFFFFFF, 0x1000000, 0x12345678, 2**32 - 1])
def test_extended_timestamps(ts: int) -> None:
    tags = feed_in_chunks(flv_header() + keyframe(ts) + audio(ts), [5])
    assert [t.timestamp for t in tags] == [ts, ts]


def test_flags_legacy_avc_hevc_and_aac() -> None:
    hevc_config = bytes([0x1C, 0x00, 0, 0, 0]) + b"hvcC"
    hevc_key = bytes([0x1C, 0x01, 0, 0, 0, 1])
    data = (
        stream_start()
        + keyframe(10)
        + interframe(43)
        + audio(44)
        + tag(9, 50, hevc_config)
        + tag(9, 60, hevc_key)
        + tag(9, 70, bytes([0x17, 0x02, 0, 0, 0]))  # AVC end of sequence
        + tag(18, 80, b"\x02\x00\x0aonTextData\x05")
    )
    tags = feed_in_chunks(data, [3])
    kinds = [
        (
            t.is_metadata,
            t.is_video_sequence_header,
            t.is_audio_sequence_header,
            t.is_keyframe,
            t.is_sequence_end,
        )
        for t in tags
    ]
    assert kinds == [
        (True, False, False, False, False),  # onMetaData
        (False, True, False, False, False),  # AVC config
        (False, False, True, False, False),  # AAC config
        (False, False, False, True, False),  # AVC keyframe
        (False, False, False, False, False),  # AVC interframe
        (False, False, False, False, False),  # AAC frame
        (False, True, False, False, False),  # HEVC (codec id 12) config
        (False, False, False, True, False),  # HEVC keyframe
        (False, False, False, False, True),  # end of sequence
        (False, False, False, False, False),  # other script data
    ]


def test_flags_enhanced_flv() -> None:
    fourcc = b"hvc1"
    seq_start = bytes([0x80 | 0x10 | 0]) + fourcc + b"hvcC-record"  # key, SequenceStart
    coded_key = bytes([0x80 | 0x10 | 1]) + fourcc + bytes(3) + b"frame"  # key, CodedFrames
    coded_inter = bytes([0x80 | 0x20 | 3]) + fourcc + b"frame"  # inter, CodedFramesX
    seq_end = bytes([0x80 | 0x10 | 2]) + fourcc
    audio_ex_start = bytes([0x90 | 0]) + b"Opus" + b"config"
    data = flv_header() + b"".join(
        tag(kind, 0, payload)
        for kind, payload in [
            (9, seq_start),
            (9, coded_key),
            (9, coded_inter),
            (9, seq_end),
            (8, audio_ex_start),
        ]
    )
    tags = feed_in_chunks(data, [11])
    assert [t.is_video_sequence_header for t in tags] == [True, False, False, False, False]
    assert [t.is_keyframe for t in tags] == [False, True, False, False, False]
    assert [t.is_sequence_end for t in tags] == [False, False, False, True, False]
    assert [t.is_audio_sequence_header for t in tags] == [False, False, False, False, True]


def test_aac_raw_frame_and_non_aac_audio_are_not_configs() -> None:
    mp3 = bytes([0x2F, 0x00, 0xFF])  # MP3 whose 2nd byte happens to be 0
    tags = feed_in_chunks(flv_header() + tag(8, 0, mp3) + audio(0), [4])
    assert [t.is_audio_sequence_header for t in tags] == [False, False]


def test_header_is_parsed_across_chunks() -> None:
    reader = FlvReader()
    data = flv_header(0x04) + audio(0)
    assert reader.feed(data[:4]) == []
    assert reader.feed(data[4:12]) == []
    assert reader.header is None
    tags = reader.feed(data[12:])
    assert reader.header is not None
    assert reader.header.has_audio
    assert not reader.header.has_video
    assert len(tags) == 1


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"<html><body>Please wait...</body></html>", "not an FLV stream"),
        (b"FLV\x01\x05\x00\x00\xff\xff" + bytes(4), "data offset"),
        (flv_header() + bytes([9]) + (0xFFFFFF).to_bytes(3, "big") + bytes(11), "absurd"),
        (flv_header() + bytes([0x47]) + bytes(20), "unknown FLV tag type"),
    ],
)
def test_garbage_raises(data: bytes, match: str) -> None:
    with pytest.raises(FlvFormatError, match=match):
        feed_in_chunks(data, [3])


def test_garbage_after_good_tags_raises_with_position() -> None:
    reader = FlvReader()
    good = stream_start() + gop(0, frames=2)
    with pytest.raises(FlvFormatError, match=f"stream byte {len(good)}"):
        reader.feed(good + b"\x55" * 64)


# --- segmenter --------------------------------------------------------------------------------


class Recorder:
    """open_path and on_close for a Segmenter writing into tmp_path."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.closed: list[SegmentInfo] = []
        self.opened: list[tuple[int, datetime]] = []

    def open_path(self, index: int, started_at: datetime) -> Path:
        self.opened.append((index, started_at))
        return self.root / "rec" / f"part{index}.flv"

    def on_close(self, info: SegmentInfo) -> None:
        self.closed.append(info)

    def segmenter(self, **kw: int) -> Segmenter:
        return Segmenter(self.open_path, on_close=self.on_close, **kw)


def run_stream(
    seg: Segmenter, data: bytes, chunk: int = 97, reader: FlvReader | None = None
) -> None:
    """Feed ``data`` as one connection (or the continuation of ``reader``'s)."""
    reader = reader or FlvReader()
    for i in range(0, len(data), chunk):
        for t in reader.feed(data[i : i + chunk]):
            if reader.header is not None:
                seg.set_stream(reader.header)
            seg.write(t)


def media_tags(tags: list[Parsed]) -> list[Parsed]:
    """Tags after the preamble (onMetaData and the sequence headers stamped 0)."""
    return tags[3:]


def test_segment_is_a_complete_flv_starting_at_zero(tmp_path: Path) -> None:
    rec = Recorder(tmp_path)
    seg = rec.segmenter()
    # Start mid-GOP, as a reconnection does: interframes first, timestamps far from 0.
    start = 5_000_000
    run_stream(seg, stream_start(ts=start) + interframe(start) + audio(start) + gop(start + 33))
    info = seg.close()
    assert info is not None
    flags, tags = walk(info.path.read_bytes())
    assert flags == 0x05
    assert [(k, ts, bytes(p)) for k, ts, p in tags[:3]] == [
        (18, 0, METADATA),
        (9, 0, AVC_CONFIG_360),
        (8, 0, AAC_CONFIG),
    ]
    media = media_tags(tags)
    assert media[0][0] == 9
    assert media[0][2][0] >> 4 == 1  # starts with a keyframe: the leading interframe is gone
    assert media[0][1] == 0  # rebased
    assert [ts for _, ts, _ in media][:4] == [0, 1, 33, 34]
    assert info.first_ts == start + 33
    assert info.tags == len(media) == 60
    assert info.duration_ms == 29 * 33 + 1 + 33
    assert info.bytes == info.path.stat().st_size
    assert rec.closed == [info]
    assert seg.dropped == 2


def test_a_new_segment_is_on_disk_from_its_first_keyframe(tmp_path: Path) -> None:
    # First byte on disk without waiting for a full write buffer (256 KB: ~1 s of live).
    rec = Recorder(tmp_path)
    seg = rec.segmenter()
    run_stream(seg, stream_start() + keyframe(0) + interframe(33))
    current = seg.current
    assert current is not None
    flags, tags = walk(current.path.read_bytes())
    assert flags == 0x05
    assert [(k, ts) for k, ts, _ in media_tags(tags)] == [(9, 0)]  # the keyframe, written
    seg.close()


def test_rebased_timestamps_use_the_extended_byte(tmp_path: Path) -> None:
    rec = Recorder(tmp_path)
    seg = rec.segmenter()
    base = 100
    far = base + 0x1000000 + 5  # more than 2**24 ms into the segment
    run_stream(seg, stream_start() + keyframe(base) + interframe(far) + audio(far + 1))
    info = seg.close()
    assert info is not None
    _, tags = walk(info.path.read_bytes())
    assert [ts for _, ts, _ in media_tags(tags)] == [0, 0x1000005, 0x1000006]


def test_differing_sequence_header_cuts_identical_does_not(tmp_path: Path) -> None:
    rec = Recorder(tmp_path)
    seg = rec.segmenter()
    data = (
        stream_start()
        + gop(0)
        # a repeated, identical config pair (some CDNs resend it): no cut
        + tag(9, 990, AVC_CONFIG_360)
        + tag(8, 990, AAC_CONFIG)
        + gop(990)
        # a guest joins: new metadata and a new AVC config (AAC unchanged)
        + tag(18, 1980, METADATA.replace(b"\x09", b"\x0a"))
        + tag(9, 1980, AVC_CONFIG_720)
        + tag(8, 1980, AAC_CONFIG)
        + audio(1981)  # before the new keyframe: dropped
        + gop(1990)
    )
    run_stream(seg, data)
    seg.close()
    assert [i.cut_reason for i in rec.closed] == ["video_config", "end"]
    first, second = (walk(i.path.read_bytes())[1] for i in rec.closed)
    assert bytes(first[1][2]) == AVC_CONFIG_360
    assert len(media_tags(first)) == 120  # both GOPs, no config tag in the middle
    assert all(k != 18 for k, _, _ in media_tags(first))
    assert bytes(second[0][2]) == METADATA.replace(b"\x09", b"\x0a")
    assert bytes(second[1][2]) == AVC_CONFIG_720
    assert bytes(second[2][2]) == AAC_CONFIG
    assert media_tags(second)[0][1] == 0
    assert len(media_tags(second)) == 60
    assert [i.index for i in rec.closed] == [0, 1]
    assert [i for i, _ in rec.opened] == [0, 1]


def test_audio_config_change_cuts(tmp_path: Path) -> None:
    rec = Recorder(tmp_path)
    seg = rec.segmenter()
    run_stream(seg, stream_start() + gop(0) + tag(8, 990, bytes([0xAF, 0, 0x11, 0x90])) + gop(990))
    seg.close()
    assert [i.cut_reason for i in rec.closed] == ["audio_config", "end"]


def test_new_segment_on_reconnect_and_empty_segment_discarded(tmp_path: Path) -> None:
    rec = Recorder(tmp_path)
    seg = rec.segmenter()
    run_stream(seg, stream_start() + gop(0))
    seg.new_segment()
    # a connection that dies right after the header and configs: no media, no file
    run_stream(seg, stream_start())
    seg.new_segment()
    # a connection that only delivered interframes and audio: nothing decodable, no file
    run_stream(seg, stream_start() + interframe(40) + audio(41))
    seg.new_segment()
    run_stream(seg, stream_start(ts=3000) + gop(3000))
    seg.close()
    assert [i.cut_reason for i in rec.closed] == ["reconnect", "end"]
    files = sorted(p.name for p in (tmp_path / "rec").iterdir())
    assert files == ["part0.flv", "part1.flv"]
    for info in rec.closed:
        data = info.path.read_bytes()
        assert data.count(b"FLV\x01") == 1
        assert media_tags(walk(data)[1])[0][1] == 0


def test_backward_timestamp_jump_cuts(tmp_path: Path) -> None:
    rec = Recorder(tmp_path)
    seg = rec.segmenter()
    run_stream(seg, stream_start(ts=60_000) + gop(60_000) + gop(0))
    seg.close()
    assert [i.cut_reason for i in rec.closed] == ["discontinuity", "end"]
    assert [i.tags for i in rec.closed] == [60, 60]


def test_budget_stops_at_the_requested_media_time(tmp_path: Path) -> None:
    rec = Recorder(tmp_path)
    seg = rec.segmenter(budget_ms=1500)
    run_stream(seg, stream_start() + gop(0))
    seg.new_segment()
    run_stream(seg, stream_start(ts=5000) + gop(5000) + gop(5990))
    assert seg.limit_reached
    seg.close()
    # 958 ms of media plus a frame, then the rest of the budget: tags stamped below 509 ms
    assert [i.duration_ms for i in rec.closed] == [991, 496 + 33]
    assert sum(i.duration_ms for i in rec.closed) < 1500 + 33


def test_max_segment_splits_at_a_keyframe(tmp_path: Path) -> None:
    rec = Recorder(tmp_path)
    seg = rec.segmenter(max_segment_ms=900)
    run_stream(seg, stream_start() + gop(0) + gop(990) + gop(1980))
    seg.close()
    assert [i.cut_reason for i in rec.closed] == ["split", "split", "end"]
    assert all(i.tags == 60 for i in rec.closed)


def test_audio_only_stream(tmp_path: Path) -> None:
    rec = Recorder(tmp_path)
    seg = rec.segmenter()
    data = flv_header(0x04) + tag(8, 0, AAC_CONFIG) + audio(0) + audio(23)
    run_stream(seg, data)
    info = seg.close()
    assert info is not None
    flags, tags = walk(info.path.read_bytes())
    assert flags == 0x04
    assert [k for k, _, _ in tags] == [8, 8, 8]


def test_writes_are_buffered_and_files_closed(tmp_path: Path) -> None:
    rec = Recorder(tmp_path)
    seg = rec.segmenter(flush_bytes=16 * 1024)
    reader = FlvReader()
    run_stream(seg, stream_start() + gop(0, frames=3), reader=reader)
    current = seg.current
    assert current is not None
    # On disk: the preamble and the first keyframe (written at once); the rest buffered.
    assert 0 < current.path.stat().st_size < current.bytes
    run_stream(seg, gop(100, frames=400), reader=reader)
    assert current.path.stat().st_size >= 16 * 1024  # flushed on the way
    seg.close()
    assert current.path.stat().st_size == current.bytes
    assert seg.close() is None  # idempotent


def test_existing_file_is_never_overwritten(tmp_path: Path) -> None:
    rec = Recorder(tmp_path)
    (tmp_path / "rec").mkdir()
    (tmp_path / "rec" / "part0.flv").write_bytes(b"precious")
    seg = rec.segmenter()
    run_stream(seg, stream_start() + gop(0))
    info = seg.close()
    assert info is not None
    assert info.path.name == "part0-1.flv"
    assert (tmp_path / "rec" / "part0.flv").read_bytes() == b"precious"


@pytest.mark.parametrize("cut", [1, 7, 40])
def test_a_file_cut_mid_tag_by_a_full_disk_is_trimmed_to_its_last_whole_tag(
    tmp_path: Path, cut: int
) -> None:
    whole = stream_start() + gop(0, frames=10)
    path = tmp_path / "cut.flv"
    path.write_bytes(whole + keyframe(400)[:cut])  # the write that hit ENOSPC
    assert trim_partial_tail(path) == cut
    assert path.read_bytes() == whole
    assert trim_partial_tail(path) == 0  # whole already: untouched


def test_a_file_that_is_not_flv_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "other.flv"
    path.write_bytes(b"not an flv at all, just bytes")
    assert trim_partial_tail(path) == 0
    assert path.read_bytes() == b"not an flv at all, just bytes"
