"""The grammar of the ``nats`` CLI (natscli) that tests/unit/test_runbook.py reads commands with."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

ROOT = Path(__file__).resolve().parents[1]

# Sample values for the placeholders a key or subject may hold; the keys a bucket holds are
# built by the code's own helpers from the same values.
JOB = "job-sample-1"
ROOM = "7000000000000000001"
PLACEHOLDERS = {"task_id": JOB, "job_id": JOB, "room_id": ROOM}
PLACEHOLDER = re.compile(r"<([a-z_]+)>")

# nats CLI flags (natscli), so positional arguments are told apart from flag values.
NATS_VALUE_FLAGS = frozenset(
    {"--server", "-s", "--context", "--creds", "--timeout", "--config", "--subject"}
    | {"--seq", "--keep", "--count", "--revision", "--sequence", "--since", "--id"}
    | {"--last-for", "-S", "--stream", "--consumer", "--bucket", "--key", "--replies"}
    | {"--reply-timeout", "--wait", "--header", "-H", "--description", "--dir"}
    | {"--unprocessed-critical", "--outstanding-ack-critical", "--last-ack-critical"}
    | {"--redelivery-critical", "--waiting-critical", "--last-delivery-critical"}
)
NATS_BOOL_FLAGS = frozenset(
    {"--raw", "-r", "--json", "-j", "--no-ack", "--ack", "--nak", "--term", "-f", "--force"}
    | {"--history", "--updates", "--no-deletes", "--select", "--names", "-n", "--state"}
    | {"--dry-run", "--jetstream", "-J", "--force-stdin", "--no-templates", "--leaders", "-l"}
)


class Names(Protocol):
    """What the code declares that a nats command may name."""

    @property
    def streams(self) -> dict[str, tuple[str, ...]]: ...  # name -> its subjects
    @property
    def durables(self) -> dict[str, frozenset[str]]: ...  # stream -> durable names
    @property
    def keys(self) -> dict[str, frozenset[str]]: ...  # bucket -> sample keys
    @property
    def event_subjects(self) -> frozenset[str]: ...
    @property
    def request_subjects(self) -> frozenset[str]: ...  # micro endpoints and $SRV
    @property
    def subjects(self) -> frozenset[str]: ...  # everything one may subscribe to
    @property
    def services(self) -> frozenset[str]: ...


def parse_flags(
    args: list[str], values: frozenset[str], bools: frozenset[str]
) -> tuple[list[str], dict[str, list[str]], list[str]]:
    """Positionals, flags (name -> values) and the flags nobody declared."""
    positionals: list[str] = []
    flags: dict[str, list[str]] = {}
    unknown: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("-") and len(arg) > 1:
            name, eq, value = arg.partition("=")
            if name in values:
                if not eq:
                    i += 1
                    value = args[i] if i < len(args) else ""
                flags.setdefault(name, []).append(value)
            elif name in bools and not eq:
                flags.setdefault(name, []).append("")
            else:
                unknown.append(arg)
        else:
            positionals.append(arg)
        i += 1
    return positionals, flags, unknown


def fill(text: str) -> tuple[str, list[str]]:
    """``text`` with its placeholders replaced by sample values; the unknown placeholders."""
    unknown = [m.group(1) for m in PLACEHOLDER.finditer(text) if m.group(1) not in PLACEHOLDERS]
    return PLACEHOLDER.sub(lambda m: PLACEHOLDERS.get(m.group(1), m.group()), text), unknown


def overlap(a: str, b: str) -> bool:
    """True when some subject (or key) matches both patterns (``*`` one token, ``>`` the rest)."""
    ta, tb = a.split("."), b.split(".")

    def match(i: int, j: int) -> bool:
        if i < len(ta) and ta[i] == ">":
            return j < len(tb)
        if j < len(tb) and tb[j] == ">":
            return i < len(ta)
        if i == len(ta) or j == len(tb):
            return i == len(ta) and j == len(tb)
        return (ta[i] == tb[j] or "*" in (ta[i], tb[j])) and match(i + 1, j + 1)

    return match(0, 0)


def check_subject(subject: str, allowed: frozenset[str] | tuple[str, ...], what: str) -> list[str]:
    filled, unknown = fill(subject)
    if unknown:
        return [f"unknown placeholder <{unknown[0]}> in {what} {subject}"]
    if not any(overlap(filled, s) for s in allowed):
        return [f"{what} {subject} matches no declared subject"]
    return []


def check_key(bucket: str, key: str, cat: Names) -> list[str]:
    filled, unknown = fill(key)
    if unknown:
        return [f"unknown placeholder <{unknown[0]}> in key {key}"]
    if not any(overlap(filled, k) for k in cat.keys.get(bucket, ())):
        return [f"bucket {bucket} holds no key like {key}"]
    return []


def check_stream(name: str | None, cat: Names) -> list[str]:
    if name is None:
        return ["a stream name is missing"]
    return [] if name in cat.streams else [f"no stream named {name}"]


def check_durable(stream: str | None, durable: str | None, cat: Names) -> list[str]:
    if stream is None or durable is None:
        return ["a stream or durable name is missing"]
    if stream not in cat.durables:
        return [f"stream {stream} has no declared durable"]
    if durable == "<durable>" or durable in cat.durables[stream]:
        return []
    return [f"stream {stream} has no durable named {durable}"]


def check_bucket(bucket: str | None, cat: Names) -> list[str]:
    if bucket is None:
        return ["a bucket name is missing"]
    return [] if bucket in cat.keys else [f"no KV bucket named {bucket}"]


def check_service(name: str | None, cat: Names) -> list[str]:
    if name is None:
        return ["a service name is missing"]
    return [] if name in cat.services | {"<service>"} else [f"no micro service named {name}"]


def check_config_file(path: str, kind: str) -> tuple[list[str], str | None]:
    """A definition file: a repo file must exist; the name it defines (or its file name)."""
    if not Path(path).is_absolute():
        file = ROOT / path
        if not file.is_file():
            return [f"{path} does not exist"], None
        data = json.loads(file.read_text())
        return [], data.get("durable_name" if kind == "consumer" else "name")
    return [], Path(path).stem


def _arg(args: list[str], i: int) -> str | None:
    return args[i] if i < len(args) else None


def flag_value(flags: dict[str, list[str]], name: str) -> str | None:
    return flags[name][0] if flags.get(name) else None


def check_nats(args: list[str], cat: Names) -> tuple[list[str], list[str]]:
    """The positionals of ``nats <args>`` and the problems found in it."""
    pos, flags, unknown = parse_flags(args, NATS_VALUE_FLAGS, NATS_BOOL_FLAGS)
    problems = [f"unknown nats flag {u} (teach the checker)" for u in unknown]
    group, verb, rest = _arg(pos, 0), _arg(pos, 1), pos[2:]
    handlers = {
        "stream": _nats_stream,
        "consumer": _nats_consumer,
        "kv": _nats_kv,
        "micro": _nats_micro,
        "sub": _nats_sub,
        "req": _nats_req,
        "pub": _nats_pub,
        "server": _nats_server,
    }
    if group in ("context", "account", "events"):
        return pos, problems
    handler = handlers.get(group or "")
    if handler is None:
        return pos, [*problems, f"unsupported nats command {group} (teach the checker)"]
    return pos, problems + handler(NatsCommand(verb, rest, flags), cat)


@dataclass(frozen=True)
class NatsCommand:
    """``nats <group> <verb> <args...>`` with its flags."""

    verb: str | None
    args: list[str]
    flags: dict[str, list[str]]


def _nats_stream(cmd: NatsCommand, cat: Names) -> list[str]:
    verb, args, flags = cmd.verb, cmd.args, cmd.flags
    stream = _arg(args, 0)
    if verb in ("ls", "report", "find"):
        everything = tuple(s for subjects in cat.streams.values() for s in subjects)
        return [p for s in flags.get("--subject", []) for p in check_subject(s, everything, "-")]
    if verb in ("add", "edit"):
        problems = []
        for path in flags.get("--config", []):
            found, defined = check_config_file(path, "stream")
            problems += found or check_stream(defined, cat)
            if stream is not None and defined is not None and defined != stream:
                problems.append(f"{path} defines {defined}, not {stream}")
        if stream is not None or verb == "edit":
            problems += check_stream(stream, cat)
        return problems
    if verb == "cluster" and _arg(args, 0) == "step-down":
        return check_stream(_arg(args, 1), cat)
    if verb not in ("info", "state", "view", "get", "purge", "rm", "rmm", "subjects", "gaps"):
        return [f"unsupported nats stream {verb} (teach the checker)"]
    problems = check_stream(stream, cat)
    if problems or stream is None:
        return problems
    subjects = [*flags.get("--subject", []), *flags.get("--last-for", []), *flags.get("-S", [])]
    if verb == "subjects" and len(args) > 1:
        subjects.append(args[1])
    for s in subjects:
        problems += check_subject(s, cat.streams[stream], f"subject of {stream}")
    return problems


def _nats_consumer(cmd: NatsCommand, cat: Names) -> list[str]:
    verb, args, flags = cmd.verb, cmd.args, cmd.flags
    stream = _arg(args, 0)
    if verb in ("ls", "report"):
        if stream not in cat.durables:
            return [f"stream {stream} has no declared durable"]
        return []
    if verb == "add":
        problems = []
        for path in flags.get("--config", []):
            found, defined = check_config_file(path, "consumer")
            problems += found or check_durable(stream, defined, cat)
        if len(args) > 1 or not flags.get("--config"):
            problems += check_durable(stream, _arg(args, 1), cat)
        return problems
    if verb == "cluster" and stream == "step-down":
        return check_durable(_arg(args, 1), _arg(args, 2), cat)
    two = ("info", "state", "rm", "reset", "next", "pause", "resume", "edit", "graph", "unpin")
    if verb not in two:
        return [f"unsupported nats consumer {verb} (teach the checker)"]
    return check_durable(stream, _arg(args, 1), cat)


def _nats_kv(cmd: NatsCommand, cat: Names) -> list[str]:
    verb, args = cmd.verb, cmd.args
    bucket, key = _arg(args, 0), _arg(args, 1)
    if verb in ("ls", "info", "status"):
        return [] if bucket is None else check_bucket(bucket, cat)
    if verb in ("compact",):
        return check_bucket(bucket, cat)
    if verb not in ("get", "history", "del", "purge", "put", "create", "update", "revert", "watch"):
        return [f"unsupported nats kv {verb} (teach the checker)"]
    problems = check_bucket(bucket, cat)
    if problems or bucket is None:
        return problems
    if key is None:
        return [] if verb in ("watch", "del") else [f"nats kv {verb} needs a key"]
    return check_key(bucket, key, cat)


def _nats_micro(cmd: NatsCommand, cat: Names) -> list[str]:
    verb, args = cmd.verb, cmd.args
    name = _arg(args, 0)
    if verb in ("ls", "list", "ping"):
        return [] if name is None else check_service(name, cat)
    if verb in ("info", "stats"):
        return check_service(name, cat)
    return [f"unsupported nats micro {verb} (teach the checker)"]


def _nats_sub(cmd: NatsCommand, cat: Names) -> list[str]:
    verb, args = cmd.verb, cmd.args
    subjects = [s for s in [verb, *args] if s is not None]
    if not subjects:
        return ["nats sub needs a subject"]
    return [p for s in subjects for p in check_subject(s, cat.subjects, "subject")]


def _nats_req(cmd: NatsCommand, cat: Names) -> list[str]:
    verb = cmd.verb
    if verb is None:
        return ["nats req needs a subject"]
    filled, unknown = fill(verb)
    if unknown or filled not in cat.request_subjects:
        return [f"nobody answers requests on {verb}"]
    return []


def _nats_pub(cmd: NatsCommand, cat: Names) -> list[str]:
    verb = cmd.verb
    if verb not in cat.event_subjects:
        return [f"{verb} is not an event subject"]
    return []


def _nats_server(cmd: NatsCommand, cat: Names) -> list[str]:
    verb, args, flags = cmd.verb, cmd.args, cmd.flags
    if verb in ("report", "ls", "list", "ping", "info"):
        return []
    if verb == "cluster" and _arg(args, 0) in ("peer-remove", "step-down"):
        return []
    if verb != "check":
        return [f"unsupported nats server {verb} (teach the checker)"]
    what = _arg(args, 0)
    stream = flag_value(flags, "--stream")
    if what == "jetstream":
        return []
    if what == "stream":
        return check_stream(stream, cat)
    if what == "consumer":
        return check_durable(stream, flag_value(flags, "--consumer"), cat)
    if what == "kv":
        bucket = flag_value(flags, "--bucket")
        problems = check_bucket(bucket, cat)
        keys = flags.get("--key", [])
        if bucket is not None and not problems:
            problems += [p for k in keys for p in check_key(bucket, k, cat)]
        return problems
    return [f"unsupported nats server check {what} (teach the checker)"]
