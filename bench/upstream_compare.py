"""Our recorder beside the upstream CLI, recording the same lives in one run (issue 16).

The upstream is Michele0303's ``tiktok-live-recorder`` (GitHub Michele0303/tiktok-live-recorder),
run from a checkout (``--upstream PATH``, default ``$TLR_ROOT``: the folder holding
``src/main.py``); the commit it ran is printed (``git rev-parse HEAD`` of the checkout, else
"unknown"). Nothing of it is copied into this project and none of its files is changed.

    flock /tmp/bench.lock .venv/bin/python bench/upstream_compare.py --upstream /tmp/tlr-upstream \\
        --streams 20 --window 60 --runs 2

Get a checkout with ``git clone https://github.com/Michele0303/tiktok-live-recorder
/tmp/tlr-upstream`` (or from a local mirror of it).

One run: nats-server (``tlr.nats_server.NatsServer``) and the fake TikTok (its own process,
``--streams`` users live, profile ``--profile``, ``--delivery segments`` by default: one
~1.4 KB write at a time, as a CDN delivers 2 Mbit/s); then both sides, in ``--first`` order
(runs alternate it):

- upstream: one process per live, as its users run it (``python src/main.py -room_id <id>
  -output <dir> -no-update-check -duration <s>``: manual mode, no update check, no Telegram
  (its ``-telegram`` is off unless given), its own working folder for its ``tiktok-recorder.log``);
- ours: ONE recorder process (``python -m services.recorder``, ``MAX_RECORDINGS`` = streams), the
  jobs stored in the JobStore and published as ``recording.requested`` as
  bench/recorder_concurrency.py does, by room id, with ``STREAM_HOST_SUFFIXES=127.0.0.1`` and
  ``ALLOW_PRIVATE_STREAM_HOSTS=true`` (the stream URLs are on loopback).

Both are given the same duration (``--settle`` + ``--window`` + ``--margin``) and both ask the
fake for the same room ids. Once every stream of both sides is writing and ``--settle`` seconds
have passed, a ``--window`` is measured: CPU (utime + stime, children's included: each side's
processes and every descendant, a reaped child's time through its parent's cutime/cstime), RSS
and PSS summed at the end of the window, bytes written per stream (file sizes; the upstream
writes in 512 KB blocks, so a stream's figure is +-512 KB), and the fake's open connections per
live (2: one per side). After both have stopped on their own (the upstream converts its FLV to
MP4 with ffmpeg, our recorder remuxes each segment), every file of both sides is decoded
(``ffmpeg -v error -i F -f null -``): its exit status, its error lines and its duration; a file
with errors is decoded again up to 0.5 s before its end, which tells errors in its last packets
(a stop that cut the last FLV tag) from damage inside.

How the upstream reaches the fake (network redirection only; its recording loop is untouched):
it calls ``https://www.tiktok.com`` and ``https://webcast.tiktok.com``. Each upstream process
gets ``PYTHONPATH`` = tests/cli_standin/site, whose ``sitecustomize.py`` (the tlr-cli engine's
tests use it too) wraps ``requests.Session.request`` and ``curl_cffi.requests.Session.request``
(each patched when, and only if, the upstream imports it) to replace the scheme and host of any
URL on ``tiktok.com`` or a subdomain by the fake's base URL; path and query are kept, every
other host is left alone. The fake builds the stream URLs it answers from the request's Host, so
the media then comes from the fake directly. (On Debian ``distro.like()`` is empty, so the
upstream takes its Termux path: plain ``requests`` for the API too; curl_cffi is not imported.)
Its ``check_and_install_dependencies`` runs ``ffmpeg`` at start and its conversion runs ffmpeg
at the end: a temporary ``bin/ffmpeg`` symlink to the ffmpeg our recorder chooses
(``FFMPEG_BIN``, else a 6.1+ ffmpeg on PATH, else imageio-ffmpeg's) is put first on its PATH.

Which of the fake's defences are off, and why: only ``dead_top_rung`` (the best quality's main
URL is dead, 404). The upstream records the highest-level quality's ``main`` FLV URL and has no
fallback: against a dead top rung it writes the 404 body and retries in a loop, recording
nothing. Everything else stays as the fake's defaults (today's TikTok): the WAF proof of work,
the browser-header screening and canonical redirects only guard the www HTML pages, which the
upstream given a room id touches once (its ``/live`` country check, which reads anything but a
302 as "not blocked"); the signed ``api-live`` is for resolving users, which neither side does
here (both are given room ids); backup URLs stay listed (unused). Our recorder gets the same fake.

The upstream's dependencies are NOT this project's: they go into a separate venv
(``--upstream-venv``, default ``/tmp/tlr-upstream-venv``), made by this script on first use with
``python -m venv`` and ``pip install`` of the ``[project].dependencies`` of the checkout's
pyproject.toml (from PyPI; remade when that list changes). Nothing goes into uv.lock.

Printed per run and side: CPU (core, user / sys), its share of the upstream's (the A/B ratio),
RSS and PSS, written Mbit/s (total, per stream min / median / max), the files and how they
decode; then a summary of the runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._proc import free_port, wait_for  # noqa: E402
from services.recorder.ffmpeg import choose_ffmpeg  # noqa: E402
from shared.bus import Bus  # noqa: E402
from shared.documents import KvDocuments  # noqa: E402
from shared.events import RecordingRequested  # noqa: E402
from shared.job_store import JobStore  # noqa: E402
from shared.jobs import TERMINAL, JobRequest  # noqa: E402
from shared.subjects import JOBS_BUCKET  # noqa: E402
from tlr.fake_tiktok.delivery import DELIVERIES  # noqa: E402
from tlr.nats_server import NatsServer  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
FAKE_BASE_ENV = "TLR_FAKE_TIKTOK_BASE"
# The sitecustomize.py the tlr-cli engine's tests give the CLI (the stand-in or the real one).
SITE = ROOT / "tests" / "cli_standin" / "site"
NULL_OUT = ["-f", "null", "-"]
# The fake's defences the upstream cannot pass (see the docstring): turned off for both sides.
SCENARIO_OFF = {"dead_top_rung": False}


# --- processes: CPU, memory --------------------------------------------------------------


def _stat(pid: int) -> tuple[int, float, float] | None:
    """(ppid, user s, sys s) of ``pid``, its reaped children's time included; None if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    return int(fields[1]), (utime + cutime) / TICK, (stime + cstime) / TICK


def _tree(roots: list[int]) -> list[int]:
    """``roots`` (those still there) and all their descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (st := _stat(int(entry.name))) is not None:
            children.setdefault(st[0], []).append(int(entry.name))
    out, todo = [], [p for p in roots if Path(f"/proc/{p}").exists()]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def tree_cpu(roots: list[int]) -> tuple[float, float]:
    """(user s, sys s) so far of ``roots`` and every descendant (reaped ones through cutime)."""
    user = sys_ = 0.0
    for pid in _tree(roots):
        if (st := _stat(pid)) is not None:
            user, sys_ = user + st[1], sys_ + st[2]
    return user, sys_


def _status_kib(pid: int, path: str, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/{path}").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_memory(roots: list[int]) -> tuple[float, float, int]:
    """(RSS MiB, PSS MiB, processes) summed over ``roots`` and their descendants."""
    pids = _tree(roots)
    rss = sum(_status_kib(p, "status", "VmRSS:") for p in pids) / 1024
    pss = sum(_status_kib(p, "smaps_rollup", "Pss:") for p in pids) / 1024
    return rss, pss, len(pids)


def busy_cores() -> float:
    """CPU seconds the whole machine has been busy so far (idle and iowait not counted)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / TICK


# --- the upstream: checkout, venv, processes -------------------------------------------


def upstream_commit(root: Path) -> str:
    git = shutil.which("git")
    if git is None:
        return "unknown (no git)"
    run = subprocess.run(
        [git, "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    )
    return run.stdout.strip() if run.returncode == 0 else "unknown (not a git checkout)"


def upstream_venv(root: Path, venv: Path) -> tuple[Path, str]:
    """The venv's python with the checkout's dependencies installed, and their versions."""
    deps = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    digest = hashlib.sha256("\n".join(deps).encode()).hexdigest()[:16]
    python, marker = venv / "bin" / "python", venv / ".tlr-bench-deps"
    if not python.exists() or not marker.exists() or marker.read_text() != digest:
        print(f"upstream venv:    making {venv}: pip install {' '.join(deps)}", flush=True)
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", *deps],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        marker.write_text(digest)
    freeze = subprocess.run(
        [str(python), "-m", "pip", "freeze"], capture_output=True, text=True, check=True
    ).stdout.split()
    wanted = {re.split(r"[<>=!~ ;\[]", d, maxsplit=1)[0].lower().replace("_", "-") for d in deps}
    versions = [line for line in freeze if line.split("==")[0].lower().replace("_", "-") in wanted]
    return python, ", ".join(versions)


@dataclass
class Upstream:
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    outdirs: list[Path] = field(default_factory=list)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def recording_files(self) -> list[Path]:
        """Each stream's FLV being written (``TK_<user>_<time>_flv.mp4`` until converted)."""
        out = []
        for d in self.outdirs:
            found = sorted(d.glob("*_flv.mp4"))
            if found:
                out.append(found[-1])
        return out


def start_upstream(
    python: Path,
    root: Path,
    tmp: Path,
    base: str,
    rooms: list[str],
    duration: int,
    ffmpeg: str,
) -> Upstream:
    bindir = tmp / "upstream-bin"
    bindir.mkdir()
    (bindir / "ffmpeg").symlink_to(ffmpeg)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(
        {
            "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(SITE),
            FAKE_BASE_ENV: base,
        }
    )
    up = Upstream()
    for i, room_id in enumerate(rooms):
        work, out = tmp / f"upstream-{i:02d}", tmp / f"upstream-{i:02d}" / "out"
        out.mkdir(parents=True)
        argv = [
            str(python),
            str(root / "src" / "main.py"),
            "-room_id",
            room_id,
            "-output",
            str(out),
            "-no-update-check",
            "-duration",
            str(duration),
        ]
        with (work / "console.log").open("wb") as console:
            up.procs.append(
                subprocess.Popen(
                    argv,
                    cwd=work,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=console,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: killed whole at the end
                )
            )
        up.outdirs.append(out)
    return up


# --- ours: one recorder process --------------------------------------------------------


@dataclass
class Ours:
    proc: subprocess.Popen[bytes]
    bus: Bus
    store: JobStore
    job_ids: list[str]
    root: Path

    async def recording_files(self) -> list[Path]:
        out = []
        for job_id in self.job_ids:
            doc = await self.store.recording(job_id)
            if doc is not None and doc.segments:
                out.append(self.root / doc.segments[-1].path)
        return out

    async def states(self) -> list[str]:
        docs = [await self.store.recording(j) for j in self.job_ids]
        return [d.state if d is not None else "none" for d in docs]


async def start_ours(
    tmp: Path, nats: NatsServer, base: str, rooms: list[str], duration: int, tag: str
) -> Ours:
    root = tmp / "recordings"
    env = {
        **os.environ,
        "NATS_URL": nats.client_url,
        "RECORDINGS_DIR": str(root),
        "TIKTOK_WEB_BASE": base,
        "TIKTOK_WEBCAST_BASE": base,
        "MAX_RECORDINGS": str(len(rooms)),
        "LOG_LEVEL": "INFO",
        "LOG_JSON": "true",
        "INSTANCE_ID": "bench-recorder",
        # The stream URLs are on loopback: allowed explicitly since the egress guards.
        "STREAM_HOST_SUFFIXES": "127.0.0.1",
        "ALLOW_PRIVATE_STREAM_HOSTS": "true",
    }
    with (tmp / "recorder.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.recorder"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    bus = await Bus.connect([nats.client_url], service="bench")
    assert bus is not None
    await bus.provision()
    store = JobStore(KvDocuments(await bus.kv(JOBS_BUCKET)))
    job_ids = []
    for i, room_id in enumerate(rooms):
        job_id = f"bench-{tag}-{i:02d}"
        # As the gateway does: the job first (a recorder skips a job it cannot find).
        await store.submit(JobRequest(job_id=job_id, room_id=room_id, duration=duration))
        await bus.publish(RecordingRequested(job_id=job_id, room_id=room_id, duration=duration))
        job_ids.append(job_id)
    return Ours(proc, bus, store, job_ids, root)


# --- files ---------------------------------------------------------------------------------


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


@dataclass
class Decoded:
    path: Path
    size: int
    ok: bool
    errors: list[str]
    duration: str
    clean_but_tail: bool | None = None  # errors, but none before the last TAIL_S seconds


TAIL_S = 0.5


async def _ffmpeg(ffmpeg: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run, [ffmpeg, "-nostdin", *argv], capture_output=True, text=True, check=False
    )


async def decode(ffmpeg: str, path: Path, sem: asyncio.Semaphore) -> Decoded:
    """Decode all of ``path``; with errors, decode it again up to TAIL_S before its end."""
    async with sem:
        full = await _ffmpeg(ffmpeg, "-v", "error", "-threads", "1", "-i", str(path), *NULL_OUT)
        probe = await _ffmpeg(ffmpeg, "-hide_banner", "-i", str(path))
        found = re.search(r"Duration: (\d+):(\d+):([\d.]+),", probe.stderr)
        errors = [line for line in full.stderr.splitlines() if line.strip()]
        result = Decoded(
            path,
            _size(path),
            full.returncode == 0,
            errors,
            ":".join(found.groups()) if found else "?",
        )
        if errors and found:
            h, m, sec = found.groups()
            head = int(h) * 3600 + int(m) * 60 + float(sec) - TAIL_S
            cut = await _ffmpeg(
                ffmpeg,
                *("-v", "error", "-threads", "1", "-t", f"{head:.3f}", "-i", str(path)),
                *NULL_OUT,
            )
            result.clean_but_tail = cut.returncode == 0 and not cut.stderr.strip()
    return result


def describe(side: str, results: list[Decoded]) -> str:
    ok = sum(r.ok for r in results)
    clean = sum(r.ok and not r.errors for r in results)
    kinds = sorted({r.path.suffix for r in results})
    durations = sorted({r.duration for r in results})
    mb = sum(r.size for r in results) / 1e6
    line = (
        f"{side:<9} {len(results)} files ({', '.join(kinds)}; {mb:.1f} MB), {ok} decode "
        f"(ffmpeg exit 0), {clean} without an error line; durations "
        f"{durations[0] if durations else '-'} .. {durations[-1] if durations else '-'}"
    )
    bad = [r for r in results if r.errors or not r.ok]
    if bad:
        first = bad[0]
        tail = sum(bool(r.clean_but_tail) for r in bad)
        line += (
            f"\n          with errors: {len(bad)} files, of which {tail} decode without an error"
            f" up to {TAIL_S} s before their end (the errors are in the last packets); e.g. "
            f"{first.path.name}: exit ok {first.ok}, {len(first.errors)} error lines, last: "
            f"{(first.errors or [''])[-1][:110]!r}"
        )
    return line


# --- one run -------------------------------------------------------------------------------


@dataclass
class Side:
    cpu_user: float = 0.0
    cpu_sys: float = 0.0
    rss: float = 0.0
    pss: float = 0.0
    procs: int = 0
    per_stream_mbit: list[float] = field(default_factory=list)

    @property
    def cores(self) -> float:
        return self.cpu_user + self.cpu_sys


def _rooms(fake_log: str) -> tuple[list[str], list[str]]:
    """Room ids and stream ids of the live users, from the lines the fake writes."""
    rooms, sids = [], []
    for line in fake_log.splitlines():
        found = re.match(r"@\S+ live: room_id=(\d+) stream_id=(\d+)", line)
        if found:
            rooms.append(found.group(1))
            sids.append(found.group(2))
    return rooms, sids


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


async def run_once(args: argparse.Namespace, n: int, first: str) -> tuple[Side, Side]:
    streams = args.streams
    duration = int(args.settle + args.window + args.margin)
    tmp = Path(tempfile.mkdtemp(prefix="tlr-upcmp-"))
    nats = NatsServer(tmp / "nats")
    fake: subprocess.Popen[bytes] | None = None
    up: Upstream | None = None
    ours: Ours | None = None
    ffmpeg = choose_ffmpeg(os.environ.get("FFMPEG_BIN")).path
    print(f"\n=== run {n}: {first} started first; load average {os.getloadavg()[0]:.2f} ===")
    try:
        await nats.start()
        port = free_port()
        argv = [sys.executable, "-m", "tlr.fake_tiktok", "--port", str(port)]
        argv += ["--profile", args.profile, "--delivery", args.delivery]
        for i in range(streams):
            argv += ["--live", f"u{i:04d}"]
        with (tmp / "fake.log").open("wb") as fake_err:
            fake = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=fake_err)
        assert fake.stdout is not None
        await asyncio.to_thread(fake.stdout.readline)  # its base URL: it is up
        base = f"http://127.0.0.1:{port}"
        rooms, sids = _rooms((tmp / "fake.log").read_text(errors="replace"))
        assert len(rooms) == streams, f"{len(rooms)} rooms live of {streams}"
        async with httpx.AsyncClient(base_url=base) as http:
            put = await http.put("/__fake/scenario", json=SCENARIO_OFF)
            put.raise_for_status()
            scenario = put.json()
            off = sorted(k for k, v in scenario.items() if v is False and k in SCENARIO_OFF)
            on = sorted(k for k, v in scenario.items() if v is True)
            print(f"fake:             {base}, {streams} lives {args.profile}, {args.delivery}")
            print(f"fake defences:    off {', '.join(off)}; on {', '.join(on)}")

            async def launch(side: str) -> None:
                nonlocal up, ours
                if side == "upstream":
                    up = start_upstream(
                        args.python, args.upstream, tmp, base, rooms, duration, ffmpeg
                    )
                else:
                    ours = await start_ours(tmp, nats, base, rooms, duration, f"r{n}")

            for side in (first, "ours" if first == "upstream" else "upstream"):
                await launch(side)
            assert up is not None
            assert ours is not None
            u, o = up, ours

            async def all_writing() -> bool:
                if any(p.poll() is not None for p in u.procs):
                    dead = next(p for p in u.procs if p.poll() is not None)
                    msg = f"an upstream process exited ({dead.returncode}); see {tmp}"
                    raise SystemExit(msg)
                up_files = u.recording_files()
                our_files = await o.recording_files()
                return (
                    len(up_files) == streams
                    and all(_size(f) > 0 for f in up_files)
                    and len(our_files) == streams
                    and all(_size(f) > 0 for f in our_files)
                )

            started = time.monotonic()
            await wait_for(all_writing, args.ramp_timeout, "every stream writing", every=1)
            print(f"writing:          all {2 * streams} after {time.monotonic() - started:.1f} s")
            await asyncio.sleep(args.settle)

            up_files, our_files = u.recording_files(), await o.recording_files()
            size0 = [_size(f) for f in up_files], [_size(f) for f in our_files]
            load0 = os.getloadavg()
            m0 = busy_cores()
            fake0 = tree_cpu([fake.pid])
            cpu0 = tree_cpu(u.pids), tree_cpu([o.proc.pid])
            t0 = time.monotonic()
            await asyncio.sleep(args.window / 2)
            conns = [
                (await http.get(f"/__fake/streams/{sid}")).json()["open_connections"]
                for sid in sids
            ]
            await asyncio.sleep(max(0.0, t0 + args.window - time.monotonic()))
            cpu1 = tree_cpu(u.pids), tree_cpu([o.proc.pid])
            t1 = time.monotonic()
            fake1 = tree_cpu([fake.pid])
            m1 = busy_cores()
            size1 = [_size(f) for f in up_files], [_size(f) for f in our_files]
            mem = tree_memory(u.pids), tree_memory([o.proc.pid])
            alive = sum(p.poll() is None for p in u.procs)
            states = await o.states()
        elapsed = t1 - t0
        sides = []
        for k in range(2):
            (r_user, r_sys), (r_user1, r_sys1) = cpu0[k], cpu1[k]
            rss, pss, nprocs = mem[k]
            mbit = [(b - a) * 8 / elapsed / 1e6 for a, b in zip(size0[k], size1[k], strict=True)]
            user, sys_ = (r_user1 - r_user) / elapsed, (r_sys1 - r_sys) / elapsed
            sides.append(Side(user, sys_, rss, pss, nprocs, mbit))
        up_side, our_side = sides
        print(
            f"window:           {elapsed:.1f} s; load average at its start {load0[0]:.2f} "
            f"{load0[1]:.2f} {load0[2]:.2f}; machine {(m1 - m0) / elapsed:.2f} of "
            f"{os.cpu_count()} cores busy; fake TikTok {sum(fake1) - sum(fake0):.1f} s = "
            f"{(sum(fake1) - sum(fake0)) / elapsed:.3f} core (not counted)"
        )
        print(
            f"still recording:  upstream {alive}/{streams} processes, ours "
            f"{states.count('STARTED')}/{streams} jobs STARTED; fake open connections per live: "
            f"{min(conns)}..{max(conns)} (one per side expected: 2)"
        )
        for name, s in (("upstream", up_side), ("ours", our_side)):
            pm = sorted(s.per_stream_mbit)
            print(
                f"{name:<9} CPU {s.cores:.3f} core ({100 * s.cores:.1f} % of a core; user "
                f"{s.cpu_user:.3f}, sys {s.cpu_sys:.3f}); RSS {s.rss:.1f} MiB, PSS {s.pss:.1f} MiB"
                f" ({s.procs} processes); written {sum(pm):.1f} Mbit/s, per stream "
                f"{pm[0]:.2f} / {statistics.median(pm):.2f} / {pm[-1]:.2f} (min/median/max)"
            )
        print(
            f"A/B (ours / upstream): CPU {our_side.cores / up_side.cores:.3f}, RSS "
            f"{our_side.rss / up_side.rss:.3f}, PSS {our_side.pss / up_side.pss:.3f}"
        )

        # Both stop on their own at the duration; then the upstream converts, we remux.
        deadline = time.monotonic() + duration + 180

        async def finished() -> bool:
            if time.monotonic() > deadline:
                return True
            done = all(p.poll() is not None for p in u.procs)
            return done and all(s in TERMINAL for s in await o.states())

        await wait_for(finished, duration + 240, "both sides to finish", every=2)
        codes = sorted({p.poll() for p in u.procs}, key=str)
        end_states = await o.states()
        print(
            f"ended:            upstream exit codes {codes}; ours "
            f"{', '.join(f'{s} {end_states.count(s)}' for s in sorted(set(end_states)))}"
        )
        up_final = sorted(p for d in u.outdirs for p in d.iterdir() if p.is_file())
        our_final = []
        for job_id in o.job_ids:
            doc = await o.store.recording(job_id)
            if doc is not None:
                our_final += [o.root / seg.path for seg in doc.segments]
        sem = asyncio.Semaphore(2)
        up_dec = await asyncio.gather(*(decode(ffmpeg, p, sem) for p in up_final))
        our_dec = await asyncio.gather(*(decode(ffmpeg, p, sem) for p in our_final))
        print(describe("upstream", list(up_dec)))
        print(describe("ours", list(our_dec)))
        return up_side, our_side
    finally:
        if ours is not None:
            if ours.proc.poll() is None:
                ours.proc.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    await asyncio.to_thread(ours.proc.wait, 30)
            _kill_group(ours.proc)
            await ours.bus.close()
        if up is not None:
            for proc in up.procs:
                _kill_group(proc)
        if fake is not None and fake.poll() is None:
            fake.kill()
            fake.wait()
        await nats.stop()
        if args.keep:
            print(f"kept:             {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


async def main(args: argparse.Namespace) -> None:
    if args.upstream is None:
        msg = "--upstream PATH (a checkout) or TLR_ROOT is needed"
        raise SystemExit(msg)
    args.upstream = args.upstream.resolve()
    if not (args.upstream / "src" / "main.py").exists():
        msg = f"{args.upstream}: no src/main.py (not a tiktok-live-recorder checkout)"
        raise SystemExit(msg)
    args.python, versions = upstream_venv(args.upstream, args.upstream_venv)
    print(f"upstream:         {args.upstream}, commit {upstream_commit(args.upstream)}")
    print(f"upstream venv:    {args.upstream_venv} ({versions})")
    print(f"ours:             {ROOT}, commit {upstream_commit(ROOT)}")
    print(f"ffmpeg:           {choose_ffmpeg(os.environ.get('FFMPEG_BIN')).path}")
    results = []
    first = args.first
    for n in range(1, args.runs + 1):
        results.append(await run_once(args, n, first))
        first = "ours" if first == "upstream" else "upstream"
    print("\n=== summary ===")
    for n, (u, o) in enumerate(results, 1):
        print(
            f"run {n}: upstream {100 * u.cores:.1f} % of a core, ours {100 * o.cores:.1f} %: "
            f"A/B CPU {o.cores / u.cores:.3f}; RSS {u.rss:.0f} vs {o.rss:.0f} MiB "
            f"(A/B {o.rss / u.rss:.3f}); PSS {u.pss:.0f} vs {o.pss:.0f} MiB"
        )
    print(json.dumps([{"upstream": vars(u), "ours": vars(o)} for u, o in results], default=str))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--upstream",
        type=Path,
        default=Path(os.environ["TLR_ROOT"]) if os.environ.get("TLR_ROOT") else None,
        help="checkout of Michele0303/tiktok-live-recorder (default: $TLR_ROOT)",
    )
    parser.add_argument(
        "--upstream-venv",
        type=Path,
        default=Path("/tmp/tlr-upstream-venv"),
        help="venv for the upstream's dependencies (made on first use)",
    )
    parser.add_argument("--streams", type=int, default=20)
    parser.add_argument("--window", type=float, default=60.0, help="seconds measured")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds before the window")
    parser.add_argument(
        "--margin",
        type=float,
        default=30.0,
        help="seconds of recording past the window (covers the ramp); duration = settle +"
        " window + margin",
    )
    parser.add_argument("--ramp-timeout", type=float, default=60.0)
    parser.add_argument("--profile", default="h264_720p_2m", help="fake TikTok media profile")
    parser.add_argument("--delivery", choices=DELIVERIES, default="segments")
    parser.add_argument("--runs", type=int, default=1, help="runs, alternating the start order")
    parser.add_argument("--first", choices=("upstream", "ours"), default="upstream")
    parser.add_argument("--keep", action="store_true", help="keep each run's files and logs")
    asyncio.run(main(parser.parse_args()))
