"""A cheap stand-in for the fake TikTok's CDN: N paced HTTP-FLV lives for the recorder benches.

The fake TikTok (tlr/fake_tiktok) sends its lives from a Python event loop: at 600 streams in
``segments`` delivery it used 0.78 core of this 2-core machine and at 1,000 it was OOM-killed,
so it measured itself more than the recorder. This module serves the same media (the fake's own
generated profile, H.264 + AAC, rendered by ffmpeg into ~/.cache, nothing in git) from one
shared buffer:

- ``flv_sender.c`` (next to this file), compiled at run time with ``gcc -O2`` into a temporary
  directory: one thread, epoll, one cursor per connection, timestamps rewritten as tags leave;
- or, without gcc (or with ``--sender fast-py``), the same loop in Python (``selectors``, raw
  non-blocking sockets): slower, see docs/benchmarks.md.

Both answer ``GET <any path holding .flv>`` (query and signature ignored) with a 200,
``Content-Type: video/x-flv``, no Content-Length and ``Connection: close``, then an endless live:
FLV header, onMetaData and decoder configs, then the media loop with monotonically increasing
timestamps. A tag is due when its media time (from the connection's start) has come; every
5 ms tick each connection sends one piece of what is due, more while it is over 8 KB behind (a
keyframe), each piece its own ``send()`` with TCP_NODELAY: ``segments`` one TCP segment's worth
(1,448 bytes on the wire by default), ``irregular`` 1 B-48 KB (log-uniform), ``chunks`` all that
is due every 40 ms (in pieces of at most 64 KB). A connection whose socket buffer is full is not
written until it drains: the sender never queues more than one partly sent piece per
connection, so a reader that does not read falls behind the wall clock instead of costing
memory.

Run standalone (``--media`` is written by ``write_media``; ``--c`` the C sender)::

    .venv/bin/python bench/fast_sender.py --profile h264_720p_2m --port 8091 --c

or measure it alone, N connections each read every 100 ms (as a recorder pausing its reads)::

    .venv/bin/python bench/fast_sender.py --profile h264_720p_2m --c --load 1000 --seconds 20

Each process prints ``listening http://host:port`` and then every few seconds a line
``stats ... conns=N sends_per_s=... mbit_per_s=... behind_max_ms=... behind_over_1s=...``:
``behind`` is how far a connection's send cursor is behind the wall clock (0 when it keeps up).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import random
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._proc import cpu_split, rss_mib  # noqa: E402
from tlr.fake_tiktok.flv import FLV_HEADER_SIZE, TAG_HEADER_SIZE, LoopSource  # noqa: E402
from tlr.fake_tiktok.media import MediaLibrary, default_media_dir  # noqa: E402

SOURCE = Path(__file__).with_name("flv_sender.c")
MAGIC = b"TLRFLV1\n"
MODES = ("segments", "irregular", "chunks")
FRAMINGS = ("chunked", "close")
SEGMENT = 1448  # bytes on the wire per piece: a 1,500-byte MTU's TCP payload with timestamps
SPREAD = 8 * 1024
MAX_PIECES_TICK = 64
IRREGULAR_MAX = 48 * 1024
CHUNKS_MAX = 64 * 1024
_U32 = struct.Struct("<I")


# --- the media file ------------------------------------------------------------------------


def media_bytes(src: LoopSource) -> bytes:
    """The sender's media file: MAGIC, 6 little-endian u32 (preamble bytes, loop bytes, loop
    tags, period ms, grid ms, preamble tags), the preamble (FLV header, onMetaData, configs at
    timestamp 0), the loop (tags with relative timestamps), the loop tags' offsets (and the end),
    their relative timestamps, the preamble tags' offsets."""
    pre = src.header + src.config_tags(0)
    pre_offs = []
    at = FLV_HEADER_SIZE + 4
    while at < len(pre):
        pre_offs.append(at)
        at += TAG_HEADER_SIZE + int.from_bytes(pre[at + 1 : at + 4], "big") + 4
    n = src.tag_count
    head = MAGIC + struct.pack(
        "<6I", len(pre), len(src.loop_bytes), n, src.period_ms, src.grid_ms, len(pre_offs)
    )
    return b"".join(
        (
            head,
            pre,
            src.loop_bytes,
            struct.pack(f"<{n + 1}I", *src.offsets),
            struct.pack(f"<{n}I", *src.rel_ts),
            struct.pack(f"<{len(pre_offs)}I", *pre_offs),
        )
    )


async def write_media(profile: str, path: Path, media_dir: Path | None = None) -> Path:
    """Render (or reuse the fake's cached render of) ``profile`` and write the media file."""
    media = await MediaLibrary(media_dir or default_media_dir()).load(profile)
    await asyncio.to_thread(path.write_bytes, media_bytes(media.av))
    return path


@dataclass
class Media:
    pre: bytes
    loop: bytes
    offsets: list[int]
    rel: list[int]
    period_ms: int
    grid_ms: int
    pre_offs: list[int]

    @classmethod
    def read(cls, path: Path) -> Media:
        data = path.read_bytes()
        if data[:8] != MAGIC:
            msg = f"{path}: not a media file for this sender"
            raise SystemExit(msg)
        pre_len, loop_len, n, period, grid, npre = struct.unpack_from("<6I", data, 8)
        at = 32
        pre = data[at : at + pre_len]
        at += pre_len
        loop = data[at : at + loop_len]
        at += loop_len
        offsets = list(struct.unpack_from(f"<{n + 1}I", data, at))
        at += 4 * (n + 1)
        rel = list(struct.unpack_from(f"<{n}I", data, at))
        at += 4 * n
        pre_offs = list(struct.unpack_from(f"<{npre}I", data, at))
        return cls(pre, loop, offsets, rel, period, grid, pre_offs)


# --- running one --------------------------------------------------------------------------


def build_c(workdir: Path) -> Path | None:
    """``flv_sender.c`` compiled with gcc -O2 into ``workdir``; None without gcc (or if the
    build fails: the reason goes to stderr)."""
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        sys.stderr.write("fast sender: no gcc on PATH, using the Python sender\n")
        return None
    binary = workdir / "flv_sender"
    argv = [gcc, "-O2", "-Wall", "-o", str(binary), str(SOURCE), "-lm"]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.stderr.write(f"fast sender: gcc failed, using the Python sender\n{done.stderr}")
        return None
    return binary


@dataclass
class Stats:
    """The last stats line of each sender process, by pid."""

    lines: dict[str, dict[str, str]] = field(default_factory=dict)

    def add(self, line: str) -> None:
        values = dict(part.split("=", 1) for part in line.split()[1:] if "=" in part)
        self.lines[values.get("pid", "?")] = values

    def total(self, key: str) -> float:
        return sum(float(v.get(key, 0)) for v in self.lines.values())

    def worst(self, key: str) -> float:
        return max((float(v.get(key, 0)) for v in self.lines.values()), default=0.0)


class SenderProcess:
    """A running sender (C or Python); ``url`` is its base URL, ``pids`` every process of it."""

    def __init__(self, proc: subprocess.Popen[str], kind: str, url: str) -> None:
        self.proc = proc
        self.kind = kind
        self.url = url
        self.stats = Stats()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("stats "):
                self.stats.add(line)

    @property
    def pids(self) -> list[int]:
        """The first process and its workers (``--procs``)."""
        pid = self.proc.pid
        try:
            kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            kids = []
        return [pid, *map(int, kids)]

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: it and its workers
            self.proc.wait()


def start_sender(
    media: Path,
    *,
    kind: str = "c",
    mode: str = "segments",
    framing: str = "chunked",
    segment: int = SEGMENT,
    procs: int = 1,
    stats_s: float = 5.0,
    workdir: Path,
    host: str = "127.0.0.1",
    nice: int = 0,
) -> SenderProcess:
    """Start a sender on a free port. ``kind`` "c" builds flv_sender.c (falling back to Python
    if it cannot), "python" runs this module's loop. ``nice`` > 0 lets the process measured
    have the CPU first (the sender then falls behind instead; its stats say by how much)."""
    opts = ["--media", str(media), "--host", host, "--port", "0", "--mode", mode]
    opts += ["--framing", framing, "--segment", str(segment), "--stats", str(stats_s)]
    opts += ["--procs", str(procs)]
    binary = build_c(workdir) if kind == "c" else None
    if binary is not None:
        argv, kind = [str(binary), *opts], "c"
    else:
        argv, kind = [sys.executable, str(Path(__file__).resolve()), *opts], "python"
    if nice:
        argv = ["nice", "-n", str(nice), *argv]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout is not None
    first = proc.stdout.readline().split()
    if len(first) != 2 or first[0] != "listening":
        proc.kill()
        msg = f"the {kind} sender did not start: {' '.join(first)!r}"
        raise SystemExit(msg)
    return SenderProcess(proc, kind, first[1])


# --- the Python sender (fallback) ----------------------------------------------------------


def _ts_field(ts: int) -> bytes:
    return bytes(((ts >> 16) & 0xFF, (ts >> 8) & 0xFF, ts & 0xFF, (ts >> 24) & 0xFF))


class _Conn:
    __slots__ = (
        "base_ts",
        "blocked",
        "cur_idx",
        "cur_loop",
        "due",
        "due_idx",
        "due_loop",
        "left",
        "req",
        "sent",
        "sock",
        "start",
    )

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.req = bytearray()
        self.left = b""
        self.blocked = False
        self.start = 0.0
        self.base_ts = 0
        self.sent = self.due = 0
        self.due_loop = self.due_idx = self.cur_loop = self.cur_idx = 0


class PySender:
    """The same algorithm as flv_sender.c, in Python."""

    def __init__(self, media: Media, args: argparse.Namespace) -> None:
        self.m = media
        self.mode, self.chunked = args.mode, args.framing == "chunked"
        self.segment: int = args.segment
        self.tick = (40 if args.mode == "chunks" else 5) / 1000
        self.rng = random.Random(args.seed)
        self.sel = selectors.DefaultSelector()
        self.active: dict[socket.socket, _Conn] = {}
        self.t0 = time.monotonic()
        self.sends = self.bytes = self.eagain = self.partial = self.accepted = self.closed = 0
        self.log_max = math.log(IRREGULAR_MAX)

    def _close(self, c: _Conn) -> None:
        self.active.pop(c.sock, None)
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(c.sock)
        c.sock.close()
        self.closed += 1

    def _update_due(self, c: _Conn, now: float) -> None:
        m = self.m
        media = (now - c.start) * 1000
        rel, period, n = m.rel, m.period_ms, len(m.rel)
        while c.due_loop * period + rel[c.due_idx] <= media:
            c.due_idx += 1
            if c.due_idx == n:
                c.due_idx = 0
                c.due_loop += 1
        c.due = len(m.pre) + c.due_loop * len(m.loop) + m.offsets[c.due_idx]

    def _piece_size(self, backlog: int) -> int:
        if self.mode == "segments":
            n = self.segment - 7 if self.chunked else self.segment
        elif self.mode == "irregular":
            n = max(1, int(math.exp(self.rng.random() * self.log_max)))
        else:
            n = CHUNKS_MAX
        return min(n, backlog)

    @staticmethod
    def _patch(body: bytearray, start: int, tag_at: int, ts: int) -> None:
        field_ = _ts_field(ts)
        for k in range(4):
            at = tag_at + 4 + k - start
            if 0 <= at < len(body):
                body[at] = field_[k]

    def _send_piece(self, c: _Conn) -> int:
        """1 sent, 0 blocked, -1 gone."""
        m = self.m
        n = self._piece_size(c.due - c.sent)
        s, pre_len, loop_len = c.sent, len(m.pre), len(m.loop)
        if s < pre_len:
            n = min(n, pre_len - s)
            body = bytearray(m.pre[s : s + n])
            for tag_at in m.pre_offs:
                self._patch(body, s, tag_at, c.base_ts)
        else:
            o = (s - pre_len) % loop_len
            n = min(n, loop_len - o)
            body = bytearray(m.loop[o : o + n])
            lts = c.base_ts + c.cur_loop * m.period_ms
            i = c.cur_idx
            while i < len(m.rel) and m.offsets[i] < o + n:
                self._patch(body, o, m.offsets[i], lts + m.rel[i])
                i += 1
        wire = b"%x\r\n%s\r\n" % (n, body) if self.chunked else bytes(body)
        try:
            sent = c.sock.send(wire)
        except BlockingIOError:
            self.eagain += 1
            return 0
        except OSError:
            return -1
        self.sends += 1
        self.bytes += sent
        c.sent += n
        if c.sent > pre_len:
            at = c.sent - pre_len
            loop_no, o = divmod(at, loop_len)
            if loop_no != c.cur_loop:
                c.cur_loop, c.cur_idx = loop_no, 0
            while c.cur_idx + 1 < len(m.rel) and m.offsets[c.cur_idx + 1] <= o:
                c.cur_idx += 1
        if sent < len(wire):
            self.partial += 1
            c.left = wire[sent:]
            return 0
        return 1

    def _block(self, c: _Conn) -> None:
        c.blocked = True
        self.sel.modify(c.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, c)

    def _serve(self, c: _Conn, now: float) -> None:
        if c.blocked:
            return
        if c.left:
            try:
                sent = c.sock.send(c.left)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._close(c)
                return
            c.left = c.left[sent:]
            if c.left:
                self._block(c)
                return
        self._update_due(c, now)
        for _ in range(MAX_PIECES_TICK):
            if c.due <= c.sent:
                break
            r = self._send_piece(c)
            if r < 0:
                self._close(c)
                return
            if r == 0:
                self._block(c)
                return
            if c.due - c.sent <= SPREAD:
                break

    def _on_request(self, c: _Conn, now: float) -> None:
        line = bytes(c.req).split(b"\r\n", 1)[0].split(b" ")
        ok = len(line) >= 2 and line[0] == b"GET" and b".flv" in line[1]
        if ok:
            te = b"Transfer-Encoding: chunked\r\n" if self.chunked else b""
            head = (
                b"HTTP/1.1 200 OK\r\nContent-Type: video/x-flv\r\n" + te + b"Connection: close\r\n"
                b"Cache-Control: no-cache\r\n\r\n"
            )
        else:
            head = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        try:
            c.sock.send(head)
        except OSError:
            ok = False
        if not ok:
            self._close(c)
            return
        c.req = bytearray()
        c.start = now
        grid = self.m.grid_ms
        c.base_ts = -(-int((now - self.t0) * 1000) // grid) * grid
        self.active[c.sock] = c
        self._serve(c, now)

    def _on_readable(self, c: _Conn, now: float) -> None:
        try:
            data = c.sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close(c)
            return
        if c.sock in self.active:
            return  # a streaming client says nothing more
        c.req += data
        if b"\r\n\r\n" in c.req:
            self._on_request(c, now)
        elif len(c.req) > 4096:
            self._close(c)

    def _stats(self, dt: float, sends: int, nbytes: int, now: float) -> None:
        worst, over = 0.0, 0
        m = self.m
        for c in self.active.values():
            self._update_due(c, now)
            behind = 0.0
            if c.due > c.sent and c.sent >= len(m.pre):
                behind = (now - c.start) * 1000 - (c.cur_loop * m.period_ms + m.rel[c.cur_idx])
            worst = max(worst, behind)
            over += behind > 1000
        print(
            f"stats t={now:.1f} pid={os.getpid()} conns={len(self.active)} "
            f"accepted={self.accepted} closed={self.closed} sends_per_s={sends / dt:.0f} "
            f"mbit_per_s={nbytes * 8 / dt / 1e6:.1f} eagain={self.eagain} partial={self.partial} "
            f"behind_max_ms={worst:.0f} behind_over_1s={over}",
            flush=True,
        )

    def run(self, listener: socket.socket, stats_s: float) -> None:
        self.sel.register(listener, selectors.EVENT_READ, None)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        next_tick = time.monotonic() + self.tick
        stats_from = time.monotonic()
        stats_at = stats_from + stats_s
        sends0 = bytes0 = 0
        while not stop.is_set():
            now = time.monotonic()
            for key, events in self.sel.select(max(0.0, next_tick - now)):
                c = key.data
                if c is None:
                    self._accept(listener)
                    continue
                if events & selectors.EVENT_WRITE and c.blocked:
                    c.blocked = False
                    self.sel.modify(c.sock, selectors.EVENT_READ, c)
                if events & selectors.EVENT_READ:
                    self._on_readable(c, time.monotonic())
            now = time.monotonic()
            if now >= next_tick:
                for c in list(self.active.values()):
                    if c.sock in self.active:
                        self._serve(c, now)
                next_tick += self.tick
                if next_tick <= now:
                    next_tick = now + self.tick
            if stats_s > 0 and now >= stats_at:
                self._stats(now - stats_from, self.sends - sends0, self.bytes - bytes0, now)
                sends0, bytes0, stats_from, stats_at = self.sends, self.bytes, now, now + stats_s

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except BlockingIOError:
                return
            except OSError:
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sel.register(sock, selectors.EVENT_READ, _Conn(sock))
            self.accepted += 1


def _load(args: argparse.Namespace) -> None:
    """The sender alone at ``args.load`` connections, read every 100 ms (a recorder that
    pauses its reads): its CPU (user, sys) and RSS over ``args.seconds``, and its own stats."""
    workdir = Path(tempfile.mkdtemp(prefix="tlr-sender-"))
    sender = None
    socks: list[socket.socket] = []
    try:
        media = args.media or asyncio.run(write_media(args.profile, workdir / "media.bin"))
        sender = start_sender(
            media,
            kind="c" if args.c else "python",
            mode=args.mode,
            framing=args.framing,
            segment=args.segment,
            procs=args.procs,
            workdir=workdir,
        )
        port = int(sender.url.rsplit(":", 1)[1])
        for i in range(args.load):
            sock = socket.create_connection((args.host, port))
            sock.sendall(f"GET /game/stream-{i}.flv HTTP/1.1\r\nHost: cdn\r\n\r\n".encode())
            sock.setblocking(False)
            socks.append(sock)
        time.sleep(3)  # past the connections' first bytes
        buf = memoryview(bytearray(1 << 20))
        for sock in socks:  # what piled up meanwhile is not counted
            with contextlib.suppress(BlockingIOError):
                while sock.recv_into(buf):
                    pass
        received = 0
        pids = sender.pids
        cpu0 = [cpu_split(pid) for pid in pids]
        t0 = time.monotonic()
        while (now := time.monotonic()) < t0 + args.seconds:
            for sock in socks:
                with contextlib.suppress(BlockingIOError):
                    while n := sock.recv_into(buf):
                        received += n
            time.sleep(max(0.0, 0.1 - (time.monotonic() - now)))
        elapsed = time.monotonic() - t0
        cpu1 = [cpu_split(pid) for pid in pids]
        user = sum(b[0] - a[0] for a, b in zip(cpu0, cpu1, strict=True)) / elapsed
        kernel = sum(b[1] - a[1] for a, b in zip(cpu0, cpu1, strict=True)) / elapsed
        rss = sum(rss_mib(pid) for pid in pids)
        st = sender.stats
        print(
            f"{sender.kind} sender, {args.load} streams, {args.mode}, {args.framing}: "
            f"{user + kernel:.3f} core (user {user:.3f}, sys {kernel:.3f}), RSS {rss:.1f} MiB; "
            f"{st.total('sends_per_s'):,.0f} writes/s, {st.total('mbit_per_s'):.1f} Mbit/s sent, "
            f"{received * 8 / elapsed / 1e6:.1f} Mbit/s read; send cursor behind: max "
            f"{st.worst('behind_max_ms'):.0f} ms, {st.total('behind_over_1s'):.0f} streams over 1 s"
        )
    finally:
        for sock in socks:
            sock.close()
        if sender is not None:
            sender.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--media", type=Path, help="a media file written by write_media")
    source.add_argument("--profile", help="a fake TikTok profile (rendered if not cached)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--mode", choices=MODES, default="segments")
    parser.add_argument("--framing", choices=FRAMINGS, default="chunked")
    parser.add_argument("--segment", type=int, default=SEGMENT, help="bytes on the wire")
    parser.add_argument("--stats", type=float, default=5.0, help="seconds between stats lines")
    parser.add_argument("--procs", type=int, default=1, help="processes (one listening socket)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--c", action="store_true", help="build and run flv_sender.c instead")
    parser.add_argument(
        "--load",
        type=int,
        metavar="N",
        help="measure the sender alone: N connections, each read every 100 ms, for --seconds",
    )
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args(argv)
    if args.load:
        _load(args)
        return
    if args.profile:
        workdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"tlr-sender-{os.getpid()}"
        workdir.mkdir(exist_ok=True)
        args.media = asyncio.run(write_media(args.profile, workdir / "media.bin"))
        if args.c:
            binary = build_c(workdir)
            if binary is not None:
                opts = sys.argv[1:]
                i = opts.index("--profile")
                opts[i : i + 2] = ["--media", str(args.media)]
                opts.remove("--c")
                os.execv(binary, [str(binary), *opts])
    listener = socket.create_server((args.host, args.port), backlog=4096)
    listener.setblocking(False)
    print(f"listening http://{args.host}:{listener.getsockname()[1]}", flush=True)
    for _ in range(args.procs - 1):
        if os.fork() == 0:
            break
    PySender(Media.read(args.media), args).run(listener, args.stats)


if __name__ == "__main__":
    _main()
