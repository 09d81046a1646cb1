"""docs/runbook.md names only real things: streams, durables, buckets and keys, subjects, micro
services, REST routes, metrics and settings, each checked against the code that declares it.

An operator copies these commands at 3 a.m.; a renamed durable or route must fail here, not
there. The checker is strict: a ``nats`` subcommand or flag it does not know is a problem too,
so no command slips through unchecked (the nats CLI's grammar: tests/nats_cli_grammar.py).
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import inspect
import pkgutil
import re
import shlex
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY
from pydantic_settings import BaseSettings

import services
from services.gateway.app import create_app
from services.gateway.nats_link import SERVICE as GATEWAY_SERVICE
from services.gateway.nats_link import NatsLink
from services.gateway.settings import GatewaySettings
from services.indexer.service import LEADER_LEASE as INDEXER_LEADER_LEASE
from services.notifier import store as notifier_store
from services.recorder import handlers as recorder_handlers
from services.scheduler.service import LEADER_LEASE
from shared import config, files, job_list, jobs, watchers
from shared.errors import ErrorCode
from shared.events import EVENT_TYPES
from shared.micro import endpoint_subject
from shared.service import BaseService
from shared.subjects import (
    BUCKETS,
    CLAIMS,
    CLAIMS_BUCKET,
    DAY,
    DURABLES,
    EVENTS,
    JOBS,
    JOBS_BUCKET,
    STREAMS,
    SUBSCRIPTIONS_BUCKET,
    kv_stream_config,
    subject_for,
)
from tests.nats_cli_grammar import (
    JOB,
    PLACEHOLDER,
    ROOM,
    check_nats,
    flag_value,
    parse_flags,
)
from tlr.devstack import DevStackSettings

ROOT = Path(__file__).resolve().parents[2]
RUNBOOK = ROOT / "docs" / "runbook.md"

# The recorder names a room's lease inline (services/recorder/handlers.py); a test below keeps
# this copy honest.
ROOM_LEASE = "room.{room_id}"
SUB = "0123456789abcdef0123456789abcdef"  # a subscription id, as POST /subscriptions makes them

# What each service serves on METRICS_PORT (shared/ops_http.py).
OPS_PATHS = frozenset({"/metrics", "/healthz", "/ready"})
# nats-server's monitoring endpoints.
MONITORING_PATHS = frozenset(
    {"/varz", "/connz", "/routez", "/gatewayz", "/leafz", "/subsz", "/accountz"}
    | {"/jsz", "/healthz", "/raftz", "/ipqueuesz", "/stacksz"}
)
# JetStream advisories about a consumer's messages: $JS.EVENT.ADVISORY.CONSUMER.<kind>.<s>.<c>
ADVISORY_KINDS = ("MAX_DELIVERIES", "MSG_TERMINATED", "MSG_NAKED")

CURL_VALUE_FLAGS = frozenset(
    {"-X", "--request", "-H", "--header", "-d", "--data", "--data-raw", "--data-binary"}
    | {"-o", "--output", "-D", "--dump-header", "-w", "--write-out", "-m", "--max-time"}
)
CURL_BOOL_FLAGS = frozenset(
    {"-s", "-S", "-sS", "-f", "--fail", "-i", "--include", "-v", "-N", "-L", "--silent"}
    | {"--show-error", "-I", "--head"}
)
CURL_DATA_FLAGS = frozenset({"-d", "--data", "--data-raw", "--data-binary"})

SEPARATORS = frozenset({"|", "||", "&&", ";"})
REDIRECTS = frozenset({"<", ">", ">>", "2>", "&>"})
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=.*")
_LOCAL_URL = re.compile(r"(?:https?://)?(?:localhost|127\.0\.0\.1|<host>):(\d+|<[a-z_]+>)(.*)")
_METRIC = re.compile(r"\btlr_[a-z0-9_]+\*?")
# UPPER_SNAKE words that read as settings; not after "." (NATS subject tokens).
_SETTING = re.compile(r"(?<![\w.-])[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b")


# --- what the code declares ---------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]


@dataclass(frozen=True)
class Catalogue:
    streams: dict[str, tuple[str, ...]]  # name -> its subjects
    durables: dict[str, frozenset[str]]  # stream -> durable names
    keys: dict[str, frozenset[str]]  # bucket -> sample keys
    event_subjects: frozenset[str]
    request_subjects: frozenset[str]  # request/reply: micro endpoints and $SRV
    subjects: frozenset[str]  # everything one may subscribe to
    services: frozenset[str]
    routes: tuple[Route, ...]
    served: Callable[[str, str], bool]
    metrics: frozenset[str]
    settings: frozenset[str]
    error_codes: frozenset[str]


def service_classes() -> list[type[BaseService]]:
    """The BaseService of every services/<name>/service.py."""
    found = []
    for pkg in pkgutil.iter_modules(services.__path__):
        name = f"services.{pkg.name}.service"
        if importlib.util.find_spec(name) is None:
            continue
        module = importlib.import_module(name)
        found += [
            obj
            for obj in vars(module).values()
            if inspect.isclass(obj) and issubclass(obj, BaseService) and obj is not BaseService
        ]
    return found


def exported_metrics() -> frozenset[str]:
    """Every sample name the services expose, as Prometheus writes it."""
    service_classes()  # each service's module imports its metrics
    importlib.import_module("services.gateway.app")
    suffixes = {
        "counter": ("_total",),
        "histogram": ("", "_bucket", "_sum", "_count"),
        "summary": ("", "_sum", "_count"),
        "info": ("_info",),
    }
    return frozenset(
        family.name + suffix
        for family in REGISTRY.collect()
        for suffix in suffixes.get(family.type, ("",))
    )


def settings_names() -> frozenset[str]:
    # The settings every service reads (shared.config) and each service's own (settings.py).
    modules = [config]
    for info in pkgutil.iter_modules(services.__path__):
        if (ROOT / "services" / info.name / "settings.py").exists():
            modules.append(importlib.import_module(f"services.{info.name}.settings"))
    classes: list[type[BaseSettings]] = [
        obj
        for module in modules
        for obj in vars(module).values()
        if inspect.isclass(obj) and issubclass(obj, BaseSettings) and obj is not BaseSettings
    ]
    classes.append(DevStackSettings)
    return frozenset(
        (str(cls.model_config.get("env_prefix", "")) + name).upper()
        for cls in classes
        for name in cls.model_fields
    )


def compose_variables() -> frozenset[str]:
    # What compose.yaml interpolates (`${NAME:-default}`): set in .env or the environment.
    text = (ROOT / "compose.yaml").read_text()
    return frozenset(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", text))


def gateway() -> FastAPI:
    """The gateway as the unit tests build it: NATS is never reached."""
    settings = GatewaySettings(api_keys=["k"], nats_url="nats://127.0.0.1:1")
    return create_app(settings, link=NatsLink(settings))


def openapi_routes(app: FastAPI) -> tuple[Route, ...]:
    return tuple(
        Route(method.upper(), re.compile(_route_regex(path)))
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    )


def served(app: FastAPI) -> Callable[[str, str], bool]:
    """Whether the gateway routes ``method path`` at all (404/405 mean no), for the paths kept
    out of the OpenAPI document (``/metrics``, the docs). Asked in process, without NATS."""

    async def ask(method: str, path: str) -> int:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            return (await client.request(method, path)).status_code

    return lambda method, path: asyncio.run(ask(method, path)) not in (404, 405)


def _route_regex(template: str) -> str:
    parts = re.split(r"(\{[^}]+\})", template)
    body = "".join(
        (".+" if p.endswith(":path}") else "[^/]+") if p.startswith("{") else re.escape(p)
        for p in parts
    )
    return f"^{body}$"


def sample_keys() -> dict[str, frozenset[str]]:
    """The keys each bucket holds, built by the code's own helpers from sample ids."""
    return {
        JOBS_BUCKET: frozenset(
            {
                jobs.request_key(JOB),
                jobs.recording_key(JOB),
                jobs.upload_key(JOB),
                jobs.room_key(ROOM),
            }
        ),
        CLAIMS_BUCKET: frozenset(
            {ROOM_LEASE.format(room_id=ROOM), LEADER_LEASE, INDEXER_LEADER_LEASE}
        ),
        SUBSCRIPTIONS_BUCKET: frozenset(
            {notifier_store.INDEX, notifier_store.sub_key(SUB), notifier_store.try_key(SUB, 7)}
        ),
    }


def build_catalogue() -> Catalogue:
    kv_streams = [kv_stream_config(b) for b in BUCKETS]
    streams = {str(s.name): tuple(s.subjects or ()) for s in [*STREAMS, *kv_streams]}
    durables: dict[str, set[str]] = {}
    for d in DURABLES:
        durables.setdefault(d.stream, set()).add(d.name)
    names = frozenset({c.name for c in service_classes()} | {GATEWAY_SERVICE})
    keys = sample_keys()
    events = frozenset(subject_for(t) for t in EVENT_TYPES)
    micro = {endpoint_subject(n, "status") for n in names}
    micro |= {files.QUERY, files.GET, files.REBUILD, job_list.QUERY, watchers.GET, watchers.LIST}
    srv = {f"$SRV.{verb}" for verb in ("PING", "INFO", "STATS")}
    srv |= {f"{s}.{n}" for s in set(srv) for n in names}
    advisories = {
        f"$JS.EVENT.ADVISORY.CONSUMER.{kind}.{d.stream}.{d.name}"
        for kind in ADVISORY_KINDS
        for d in DURABLES
    }
    kv_subjects = {f"$KV.{bucket}.{key}" for bucket, ks in keys.items() for key in ks}
    stream_patterns = {p for subjects in streams.values() for p in subjects}
    app = gateway()
    return Catalogue(
        streams=streams,
        durables={s: frozenset(ds) for s, ds in durables.items()},
        keys=keys,
        event_subjects=events,
        request_subjects=frozenset(micro | srv),
        subjects=frozenset(events | micro | srv | advisories | kv_subjects | stream_patterns),
        services=names,
        routes=openapi_routes(app),
        served=served(app),
        metrics=exported_metrics(),
        settings=settings_names() | compose_variables(),
        error_codes=frozenset(c.value for c in ErrorCode),
    )


# --- reading the runbook ------------------------------------------------------------------------


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    checked: Counter[str] = field(default_factory=Counter)
    nats: list[list[str]] = field(default_factory=list)  # positionals of each nats command


def sh_lines(markdown: str) -> Iterator[tuple[int, str]]:
    """Each command line of every ```sh block (continuations joined), with its line number."""
    for block in re.finditer(r"^```sh\n(.*?)^```", markdown, re.S | re.M):
        first = markdown.count("\n", 0, block.start(1)) + 1
        pending, start = "", first
        for offset, raw in enumerate(block.group(1).splitlines()):
            if not pending:
                start = first + offset
            if raw.endswith("\\"):
                pending += raw[:-1] + " "
                continue
            line, pending = pending + raw, ""
            if line.strip():
                yield start, line


def segments(tokens: list[str]) -> Iterator[list[str]]:
    """The simple commands of a pipeline, without redirections and leading assignments."""
    current: list[str] = []
    skip = False
    for token in [*tokens, ";"]:
        if skip:
            skip = False
        elif token in SEPARATORS:
            while current and _ASSIGNMENT.fullmatch(current[0]):
                current.pop(0)
            if current:
                yield current
            current = []
        elif token in REDIRECTS:
            skip = True
        elif not re.fullmatch(r"\d?>&\d", token):
            current.append(token)


def check_markdown(markdown: str, cat: Catalogue) -> Report:
    report = Report()
    for number, line in sh_lines(markdown):
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError as exc:
            report.problems.append(f"line {number}: does not parse ({exc}): {line}")
            continue
        for command in segments(tokens):
            found: list[str] = []
            if command[0] == "nats":
                report.checked["nats"] += 1
                positionals, found = check_nats(command[1:], cat)
                report.nats.append(positionals)
            elif command[0] == "curl":
                report.checked["curl"] += 1
                found = check_curl(command[1:], cat)
            report.problems += [f"line {number}: {p}: {line}" for p in found]
    report.problems += check_metrics(markdown, cat)
    report.problems += check_settings(markdown, cat)
    return report


def check_metrics(text: str, cat: Catalogue) -> list[str]:
    known = cat.metrics
    problems = []
    for name in sorted({m.group() for m in _METRIC.finditer(text)}):
        if name.endswith("*"):
            if not any(k.startswith(name[:-1]) for k in known):
                problems.append(f"no metric starts with {name[:-1]}")
        elif name not in known:
            problems.append(f"metric {name} is not exported by any service")
    return problems


def check_settings(text: str, cat: Catalogue) -> list[str]:
    problems = []
    for name in sorted({m.group() for m in _SETTING.finditer(text)}):
        if name in cat.settings or name in cat.error_codes or name.startswith("AWS_"):
            continue
        problems.append(f"{name} is neither a setting nor an error code")
    return problems


# --- curl ---------------------------------------------------------------------------------------


def check_curl(args: list[str], cat: Catalogue) -> list[str]:
    pos, flags, unknown = parse_flags(args, CURL_VALUE_FLAGS, CURL_BOOL_FLAGS)
    problems = [f"unknown curl flag {u} (teach the checker)" for u in unknown]
    if len(pos) != 1:
        return [*problems, f"expected one URL, got {pos}"]
    url = pos[0]
    method = flag_value(flags, "-X") or flag_value(flags, "--request")
    if not method:
        sends = any(f in flags for f in CURL_DATA_FLAGS)
        method = "HEAD" if "-I" in flags or "--head" in flags else "POST" if sends else "GET"
    base, path = _split_url(url)
    path = path.split("?", 1)[0] or "/"
    if base == "gateway":
        in_schema = any(r.method == method and r.pattern.match(path) for r in cat.routes)
        if not in_schema and (PLACEHOLDER.search(path) or not cat.served(method, path)):
            problems.append(f"the gateway has no {method} {path}")
    elif base == "monitoring":
        if path not in MONITORING_PATHS:
            problems.append(f"nats-server monitoring has no {path}")
    elif base == "ops":
        if path not in OPS_PATHS:
            problems.append(f"a service's ops port has no {path}")
    else:
        problems.append(f"unknown base URL in {url}")
    return problems


def _split_url(url: str) -> tuple[str, str]:
    """Which server a URL addresses (gateway, monitoring, ops) and its path."""
    for var, base in (("$API", "gateway"), ("${API}", "gateway"), ("$MON", "monitoring")):
        if url.startswith(var):
            return base, url[len(var) :]
    found = _LOCAL_URL.fullmatch(url)
    if found is None:
        return "", url
    port, path = found.groups()
    if port == "8000":
        return "gateway", path
    if port == "8222":
        return "monitoring", path
    if port == "<metrics_port>" or (port.isdigit() and 9100 <= int(port) < 9200):
        return "ops", path
    return "", url


# --- tests --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return build_catalogue()


@pytest.fixture(scope="module")
def report(catalogue: Catalogue) -> Report:
    return check_markdown(RUNBOOK.read_text(), catalogue)


def test_the_runbook_covers_every_incident_of_the_seed() -> None:
    headings = re.findall(r"^## (.+)$", RUNBOOK.read_text(), re.M)
    topics = [
        "Watch a job",
        "Cancel",
        "Queues and lag",
        "Redeliver or purge",
        "S3 outage",
        "Disk full",
        "TikTok rate limits",
        "Recorder crash",
        "NATS node loss",
        "Upgrade with zero lost events",
        "Logs",
        "Metrics to alert on",
    ]
    missing = [t for t in topics if not any(t in h for h in headings)]
    assert missing == []


def test_every_command_names_what_the_code_declares(report: Report) -> None:
    assert report.problems == []
    # Not vacuous: the runbook is mostly commands, and they were all read.
    assert report.checked["nats"] >= 50
    assert report.checked["curl"] >= 15


def test_every_durable_and_bucket_has_its_command(report: Report, catalogue: Catalogue) -> None:
    """Each durable can be inspected and each bucket read by a command the runbook gives."""
    inspected = {(p[2], p[3]) for p in report.nats if p[:2] == ["consumer", "info"] and len(p) > 3}
    declared = {(s, d) for s, ds in catalogue.durables.items() for d in ds}
    assert declared - inspected == set()
    read = {p[2] for p in report.nats if p[:2] in (["kv", "get"], ["kv", "ls"]) and len(p) > 2}
    assert set(catalogue.keys) - read == set()


def test_the_names_table_states_the_declared_limits() -> None:
    """The figures an operator reasons with (ack_wait, retention, TTLs) are the declared ones."""
    text = RUNBOOK.read_text()
    rows = dict(re.findall(r"^\| durable on `\w+` \| `([\w-]+)` \|(.*)$", text, re.M))
    for durable in DURABLES:
        row = rows[durable.name]
        assert f"(ack_wait {durable.config.ack_wait:g} s)" in row
        assert all(f"`{s}`" in row for s in durable.config.filter_subjects or ())
    assert EVENTS.max_age is not None
    assert EVENTS.duplicate_window is not None
    assert JOBS.ttl is not None
    assert CLAIMS.ttl is not None
    events = re.search(r"^\| stream \| `EVENTS` \|.*$", text, re.M)
    assert events is not None
    assert f"{EVENTS.max_age / DAY:g} days" in events.group()
    assert f"dedupe window {EVENTS.duplicate_window / 60:g} min" in events.group()
    assert f"{JOBS.ttl / DAY:g} days" in text
    assert f"TTL {CLAIMS.ttl:g} s" in text


def test_the_recorders_lease_key_is_the_one_checked() -> None:
    # services/recorder/handlers.py builds the lease name inline; ROOM_LEASE must match it.
    source = inspect.getsource(recorder_handlers)
    assert 'f"' + ROOM_LEASE + '"' in source


@pytest.mark.parametrize(
    ("snippet", "wrong"),
    [
        ("nats consumer info EVENTS recorder", "recorder"),
        ("nats consumer info EVENT recorders", "EVENT"),
        ("nats stream info EVENT", "EVENT"),
        ("nats stream view EVENTS --subject recording.done", "recording.done"),
        ("nats kv get jobs jobs.<task_id>", "jobs.<task_id>"),
        ("nats kv get jobs job.<taskid>", "taskid"),
        ("nats kv get claims job.<task_id>", "job.<task_id>"),
        ("nats kv get job job.<task_id>", "job"),
        ("nats sub 'recordings.>'", "recordings.>"),
        ("nats req tlr.recorders.status ''", "tlr.recorders.status"),
        ("nats micro info recorders", "recorders"),
        ("nats consumer add EVENTS --config nats/consumers/EVENTS/recorder.json", "recorder.json"),
        ("nats stream frobnicate EVENTS", "frobnicate"),
        ("nats consumer next EVENTS uploader --noack", "--noack"),
        ("curl -s -H 'X-API-Key: k' $API/job/<task_id>", "/job/<task_id>"),
        ("curl -s -X POST -H 'X-API-Key: k' $API/jobs/<task_id>", "POST /jobs/<task_id>"),
        ("curl -s $API/metric", "GET /metric"),
        ("curl -s -X POST $API/metrics", "POST /metrics"),
        ("curl -s $MON/jetstream", "/jetstream"),
        ("curl -s http://127.0.0.1:9102/status", "/status"),
        ("echo 'rate(tlr_recorder_bytes[5m])'", "tlr_recorder_bytes"),
        ("export RETENTION_DAY=7", "RETENTION_DAY"),
    ],
)
def test_a_wrong_name_is_reported(catalogue: Catalogue, snippet: str, wrong: str) -> None:
    problems = check_markdown(f"```sh\n{snippet}\n```\n", catalogue).problems
    assert any(wrong in p for p in problems), problems


def test_the_same_names_spelled_right_pass(catalogue: Catalogue) -> None:
    snippet = "\n".join(
        [
            "nats consumer info EVENTS recorders",
            "nats kv get jobs job.<task_id>.up --raw | jq .",
            "nats kv watch jobs 'job.<task_id>.>'",
            "nats sub 'recording.>'",
            "nats req tlr.recorder.status ''",
            "curl -s -X DELETE -H 'X-API-Key: k' $API/jobs/<task_id>",
            "curl -s $API/metrics",
            "export RETENTION_DAYS=7",
        ]
    )
    report = check_markdown(f"```sh\n{snippet}\n```\n", catalogue)
    assert report.problems == []
    assert report.checked == Counter({"nats": 5, "curl": 2})
