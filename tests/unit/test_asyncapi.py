"""The AsyncAPI event catalogue: current, valid, and listing every subject the code publishes."""

from __future__ import annotations

import ast
import json
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import msgspec
import pytest
from nats.micro.service import ServicePing
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from services.gateway.app import create_app
from services.gateway.nats_link import NatsLink
from services.gateway.settings import GatewaySettings
from shared import (
    asyncapi,
    egresses,
    files,
    generated,
    job_list,
    jobs,
    notifications,
    watchers,
)
from shared.events import (
    EVENT_TYPES,
    DeleteReason,
    EgressAdded,
    EgressFailed,
    EgressRemoved,
    Event,
    FileDeleted,
    RecordedFile,
    RecordingFinished,
    RecordingOptions,
    RecordingRequested,
    RecordingStarted,
    RoomLive,
    UploadDone,
    UploadedFile,
    WatchDeleted,
    WatchPaused,
    WatchRequested,
    WatchResumed,
    WatchUpdated,
)
from shared.subjects import DURABLES, EVENTS, subject_for
from tlr import asyncapi_file

ROOT = Path(__file__).resolve().parents[2]
DOC_FILE = ROOT / asyncapi_file.DOC_PATH
EVENTS_MD = ROOT / "docs" / "events.md"
SCANNED = ("shared", "services")
DOC_URI = "urn:tlr:asyncapi"
T0 = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)
OPTIONS = RecordingOptions(upload_s3=True, quality="hd", proxy="sealed:abc")

FINISHED = RecordingFinished(
    job_id="j2",
    room_id="75",
    files=[RecordedFile(path="75/a.mp4", size=10, duration_s=1.5, part=1)],
    started_at=T0,
    error_code="CANCELLED",
    upload_s3=True,
)

SUBSCRIPTION = notifications.Subscription(
    id="0123456789abcdef0123456789abcdef",
    owner="ann",
    events=["room.live"],
    watchers=["@ann"],
    kind="webhook",
    target_sealed="sealed:v1:abc",
    target_shown="https://hooks.example.com/…",
    secret_sealed="sealed:v1:def",
    created_at=T0,
    dead_letters_total=1,
    dead_letters=[
        notifications.DeadLetter(
            event_id="e1", event_type="room.live", job_id="j2", attempts=8, error="HTTP 500", at=T0
        )
    ],
)

# A real instance of every payload type in the document, nested structs filled in.
SAMPLES: list[Any] = [
    WatchRequested(task_id="t1", key="@ann", unique_id="ann", poll_interval=30, options=OPTIONS),
    WatchDeleted(key="@ann"),
    WatchPaused(key="@ann"),
    WatchResumed(key="@ann"),
    WatchUpdated(key="@ann", task_id="t1", poll_interval=20, options=OPTIONS, paused=False),
    EgressAdded(name="eu-1", proxy="sealed:abc", requests_per_min=90.0),
    EgressRemoved(name="eu-1"),
    EgressFailed(name="eu-1", error_code="WAF_BLOCKED", job_id="j1"),
    RecordingRequested(job_id="j1", url="@ann", duration=60, options=OPTIONS),
    RoomLive(job_id="j2", room_id="75", watcher_key="@ann", title="hi", options=OPTIONS),
    RecordingStarted(job_id="j2", room_id="75", recorder_id="rec-1", part=1),
    FINISHED,
    UploadDone(
        job_id="j2",
        files=[UploadedFile(path="75/a.mp4", bucket="b", key="75/a.mp4", size=10, etag="e")],
    ),
    FileDeleted(path="75/a.mp4", reason=DeleteReason.UPLOADED, job_id="j2", size=10),
    files.FileQuery(room_id="75", since=T0, page=2),
    files.FilePage(
        items=[
            files.IndexedFile(
                name="a.mp4",
                path="75/a.mp4",
                size=10,
                mtime=T0,
                s3=files.S3Location(bucket="b", key="75/a.mp4"),
            )
        ],
        total=1,
        page=1,
        page_size=50,
    ),
    files.RebuildReply(scanned=3, added=1, updated=1, removed=1),
    files.FileGet(id=7),
    files.IndexedFile(name="a.mp4", path="75/a.mp4", size=10, mtime=T0, id=7, thumbnail=True),
    job_list.JobQuery(
        owner="ann-key",
        statuses=["SUCCESS", "FAILURE"],
        user="ann",
        after=job_list.Position(created_us=1_772_323_200_000_000, job_id="j1"),
    ),
    job_list.JobPage(
        items=[
            job_list.JobSummary(
                job_id="j2", kind="recording", status="FAILURE", created_at=T0, error_code="X"
            )
        ],
        next=job_list.Position(created_us=1_772_323_100_000_000, job_id="j2"),
    ),
    watchers.GetRequest(key="@ann"),
    watchers.ListRequest(page=1, page_size=10),
    watchers.Watcher(key="@ann", task_id="t1", created_at=T0, jobs=["j2"], options=OPTIONS),
    watchers.ListReply(
        items=[watchers.Watcher(key="@ann", task_id="t1", created_at=T0)],
        total=1,
    ),
    egresses.EgressList(
        items=[
            egresses.EgressStatus(
                name="eu-1", kind="proxy", source="api", requests_per_min=90.0, since=T0
            )
        ],
        healthy_capacity_per_min=90.0,
        need_per_min=12.5,
    ),
    egresses.PickRequest(name="eu-1"),
    egresses.PickReply(name="eu-1", proxy="sealed:abc"),
    SUBSCRIPTION,
    notifications.SubscriptionRef(id=SUBSCRIPTION.id),
    notifications.SubscriptionsQuery(owner="ann"),
    notifications.SubscriptionsReply(items=[SUBSCRIPTION]),
    notifications.SubscriptionDeleted(deleted=True),
    ServicePing(id="x1", name="indexer", version="0.1.0", metadata={"instance": "idx-1"}),
    jobs.JobRequest(job_id="j2", room_id="75", options=OPTIONS, watcher_key="@ann"),
    jobs.RecordingPart(
        job_id="j2",
        recorder_id="rec-1",
        started_at=T0,
        segments=[jobs.SegmentEntry(path="75/a.mp4", size=10, state="final")],
    ),
    jobs.UploadPart(
        job_id="j2", files=[UploadedFile(path="75/a.mp4", bucket="b", key="k", size=10)]
    ),
]


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return asyncapi.build()


def schema_for(doc: dict[str, Any], name: str) -> jsonschema.protocols.Validator:
    """A Draft 2020-12 validator of ``components.schemas[name]`` whose $refs resolve in ``doc``."""
    registry: Registry[Any] = Registry().with_resource(
        DOC_URI, Resource.from_contents(doc, default_specification=DRAFT202012)
    )
    schema = {"$ref": f"{DOC_URI}#/components/schemas/{name}"}
    return jsonschema.Draft202012Validator(schema, registry=registry)


def resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"{ref} points outside the document"
    node: Any = doc
    for part in ref[2:].split("/"):
        assert isinstance(node, dict), ref
        assert part in node, f"{ref} does not resolve"
        node = node[part]
    return node


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def event_channels(doc: dict[str, Any]) -> dict[str, str]:
    """Address -> channel id of the channels that carry events (they name a stream)."""
    return {c["address"]: k for k, c in doc["channels"].items() if "x-stream" in c}


def addresses(doc: dict[str, Any]) -> set[str]:
    return {c["address"] for c in doc["channels"].values() if c.get("address")}


# --- the checked-in file -----------------------------------------------------------------------


def test_checked_in_document_is_current() -> None:
    assert not asyncapi_file.stale(DOC_FILE), (
        f"{asyncapi_file.DOC_PATH} differs from what the code generates: run `tlr asyncapi` "
        "and commit it"
    )


def test_generation_is_deterministic(doc: dict[str, Any]) -> None:
    assert asyncapi.render() == asyncapi.render()
    assert json.loads(asyncapi.render()) == json.loads(json.dumps(doc))  # tuples: JSON lists


def test_main_writes_then_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "docs" / "asyncapi.json"
    assert asyncapi_file.main_asyncapi(check=True, path=path) == 1  # missing
    assert asyncapi_file.main_asyncapi(check=False, path=path) == 0
    assert asyncapi_file.main_asyncapi(check=True, path=path) == 0
    path.write_text(path.read_text().replace('"room.live"', '"room.dead"'))
    assert asyncapi_file.main_asyncapi(check=True, path=path) == 1
    assert "run `tlr asyncapi`" in capsys.readouterr().err


# --- validity ----------------------------------------------------------------------------------


def asyncapi3_model() -> Any:
    # asyncapi3 0.0.2 declares a pydantic field named "schema", which warns at import; the
    # suite turns warnings into errors.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        from asyncapi3 import AsyncAPI3

    return AsyncAPI3


def test_document_validates_as_asyncapi_3(doc: dict[str, Any]) -> None:
    model = asyncapi3_model().model_validate(doc)
    assert model.asyncapi == "3.0.0"
    assert set(model.channels or {}) == set(doc["channels"])


def _publish_verb(doc: dict[str, Any]) -> None:
    doc["operations"]["send_room_live"]["action"] = "publish"  # an AsyncAPI 2 verb


def _no_version(doc: dict[str, Any]) -> None:
    del doc["info"]["version"]


def _bare_extension(doc: dict[str, Any]) -> None:
    doc["nats"] = doc.pop("x-nats")  # extensions must start with x-


def _dotted_channel_id(doc: dict[str, Any]) -> None:
    doc["channels"]["room.live"] = doc["channels"].pop("room_live")


@pytest.mark.parametrize(
    "breaks", [_publish_verb, _no_version, _bare_extension, _dotted_channel_id]
)
def test_the_validator_refuses_broken_documents(
    doc: dict[str, Any], breaks: Callable[[dict[str, Any]], None]
) -> None:
    broken = json.loads(json.dumps(doc))
    breaks(broken)
    with pytest.raises(ValueError, match="validation error"):
        asyncapi3_model().model_validate(broken)


def test_every_ref_resolves_within_the_document(doc: dict[str, Any]) -> None:
    found = list(refs(doc))
    assert len(found) > 50
    for ref in found:
        resolve(doc, ref)


def test_operations_reference_their_own_channel_messages(doc: dict[str, Any]) -> None:
    """AsyncAPI 3: an operation's (and reply's) messages are a subset of its channel's."""
    for name, op in doc["operations"].items():
        parts = [op, op["reply"]] if "reply" in op else [op]
        for part in parts:
            channel = part["channel"]["$ref"]
            for message in part["messages"]:
                assert message["$ref"].startswith(channel + "/messages/"), name
        for server in resolve(doc, op["channel"]["$ref"])["servers"]:
            assert server["$ref"].startswith("#/servers/")


def test_every_schema_is_a_valid_draft_2020_12_schema(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    for schema in schemas.values():
        jsonschema.Draft202012Validator.check_schema(schema)
    for message in doc["components"]["messages"].values():
        if "headers" in message:
            jsonschema.Draft202012Validator.check_schema(message["headers"])


def payload_names(doc: dict[str, Any]) -> set[str]:
    prefix = "#/components/schemas/"
    out = set()
    for message in doc["components"]["messages"].values():
        if "payload" in message:
            out.add(message["payload"]["$ref"].removeprefix(prefix))
    for key in doc["x-nats"]["kv"]["jobs"]["keys"].values():
        if "$ref" in key["schema"]:
            out.add(key["schema"]["$ref"].removeprefix(prefix))
    return out


def test_a_real_instance_of_every_payload_validates(doc: dict[str, Any]) -> None:
    sampled = {type(s).__name__ for s in SAMPLES}
    assert sampled == payload_names(doc), "every payload needs a sample here"
    for sample in SAMPLES:
        instance = json.loads(msgspec.json.encode(sample))
        schema_for(doc, type(sample).__name__).validate(instance)


def test_payload_schemas_are_not_vacuous(doc: dict[str, Any]) -> None:
    finished = json.loads(msgspec.json.encode(FINISHED))
    validator = schema_for(doc, "RecordingFinished")
    validator.validate(finished)
    for broken in (
        {**finished, "type": "room.live"},  # another event's tag
        {k: v for k, v in finished.items() if k != "job_id"},  # a required field missing
        {**finished, "returncode": "0"},  # a mistyped field
        {**finished, "files": [{"size": 1}]},  # a nested struct without its path
    ):
        assert not validator.is_valid(broken)


def test_event_messages_carry_the_tag_and_the_publish_headers(doc: dict[str, Any]) -> None:
    for event_type in EVENT_TYPES:
        tag = subject_for(event_type)
        channel = doc["channels"][event_channels(doc)[tag]]
        (ref,) = channel["messages"].values()
        message = resolve(doc, ref["$ref"])
        assert message["name"] == tag
        assert message["contentType"] == "application/json"
        assert message["description"]
        schema = resolve(doc, message["payload"]["$ref"])
        assert schema["properties"]["type"]["enum"] == [tag]
        assert {"v", "event_id", "correlation_id", "occurred_at"} <= set(schema["properties"])
        headers = message["headers"]
        assert "Nats-Msg-Id" in headers["required"]
        assert headers["properties"]["Event-Type"]["const"] == tag


# --- the document lists every subject: declarations ---------------------------------------------


def test_every_event_type_has_a_channel_and_no_channel_is_stale(doc: dict[str, Any]) -> None:
    channels = event_channels(doc)
    assert set(channels) == {subject_for(t) for t in EVENT_TYPES}
    assert set(channels) == set(EVENTS.subjects or [])
    endpoints = {e.subject for e in asyncapi.ENDPOINTS}
    assert addresses(doc) == set(channels) | endpoints
    send = {
        resolve(doc, op["channel"]["$ref"])["address"]
        for op in doc["operations"].values()
        if op["action"] == "send"
    }
    assert send == set(channels)


def test_the_stream_and_its_durables_are_described(doc: dict[str, Any]) -> None:
    stream = doc["x-nats"]["streams"][EVENTS.name]
    assert stream["max_age_s"] == EVENTS.max_age
    assert stream["duplicate_window_s"] == EVENTS.duplicate_window
    on_events = [d for d in DURABLES if d.stream == EVENTS.name]
    assert set(stream["consumers"]) == {d.name for d in on_events}
    for durable in on_events:
        for subject in durable.config.filter_subjects or []:
            assert durable.name in doc["channels"][event_channels(doc)[subject]]["x-durables"]


# --- the document lists every subject: the code ------------------------------------------------


@dataclass
class Scan:
    event_classes: dict[str, str | None]  # class name -> tag
    constructed: list[tuple[str, str]]  # (file, class name)
    published_literals: list[tuple[str, str]]  # (file, subject)
    endpoints: list[tuple[str, str]]  # (file, endpoint subject relative to its group)


def _called_name(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


def _const_str(node: ast.expr | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def scan_code(root: Path = ROOT) -> Scan:
    """Event classes, the places that construct them, subject literals given to ``publish``
    and the micro endpoints added, in every module under shared/ and services/."""
    trees = {
        Path(path.relative_to(root)).as_posix(): ast.parse(path.read_text(), str(path))
        for top in SCANNED
        for path in sorted((root / top).rglob("*.py"))
    }
    scan = Scan({}, [], [], [])
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and any(
                (isinstance(b, ast.Name) and b.id == "Event")
                or (isinstance(b, ast.Attribute) and b.attr == "Event")
                for b in node.bases
            ):
                scan.event_classes[node.name] = _const_str(_keyword_of_class(node, "tag"))
    for file, tree in trees.items():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = _called_name(node)
            if name in scan.event_classes:
                scan.constructed.append((file, name))
            elif name == "publish":
                first = node.args[0] if node.args else _keyword(node, "subject")
                literal = _const_str(first)
                if literal is not None:
                    scan.published_literals.append((file, literal))
            elif name == "add_endpoint":
                subject = _const_str(_keyword(node, "subject") or _keyword(node, "name"))
                assert subject is not None, f"{file}: add_endpoint without a literal subject"
                scan.endpoints.append((file, subject))
    return scan


def _keyword_of_class(node: ast.ClassDef, name: str) -> ast.expr | None:
    return next((k.value for k in node.keywords if k.arg == name), None)


@pytest.fixture(scope="module")
def scan() -> Scan:
    return scan_code()


def test_the_scan_finds_every_event_class(scan: Scan) -> None:
    assert scan.event_classes == {t.__name__: subject_for(t) for t in EVENT_TYPES}


def test_the_scan_sees_what_a_service_could_publish(tmp_path: Path) -> None:
    """The scan itself: an undeclared event and a hand-typed subject are both found."""
    service = tmp_path / "services" / "notifier"
    service.mkdir(parents=True)
    (service / "handlers.py").write_text(
        "from shared import events as ev\n"
        "class Pinged(ev.Event, frozen=True, tag='notifier.pinged'):\n"
        "    pass\n"
        "async def go(bus, nc):\n"
        "    await bus.publish(Pinged())\n"
        "    await nc.publish('notifier.raw', b'')\n"
        "    await nc.publish(subject='notifier.kw')\n"
    )
    scan = scan_code(tmp_path)
    assert scan.event_classes == {"Pinged": "notifier.pinged"}
    assert scan.constructed == [("services/notifier/handlers.py", "Pinged")]
    assert [s for _, s in scan.published_literals] == ["notifier.raw", "notifier.kw"]


def test_every_event_the_code_constructs_is_in_the_document(
    scan: Scan, doc: dict[str, Any]
) -> None:
    tags = {name: scan.event_classes[name] for _, name in scan.constructed}
    for file, name in scan.constructed:
        assert tags[name] in addresses(doc), f"{file} constructs {name}, not in the document"
    # And the other way: no channel for an event nothing publishes.
    assert set(tags.values()) == set(event_channels(doc))


def test_every_subject_literal_published_is_in_the_document(
    scan: Scan, doc: dict[str, Any]
) -> None:
    assert scan.published_literals, "the scan should see the $SRV.PING of shared/micro.py"
    for file, subject in scan.published_literals:
        assert subject in addresses(doc), f"{file} publishes on {subject}, not in the document"


def test_every_micro_endpoint_of_a_service_is_in_the_document(
    scan: Scan, doc: dict[str, Any]
) -> None:
    found = set()
    for file, subject in scan.endpoints:
        parts = Path(file).parts
        if parts[0] == "services":
            found.add(f"tlr.{parts[1]}.{subject}")
        else:
            # shared/micro.py: the `status` endpoint every service has; for operators.
            assert (file, subject) == ("shared/micro.py", "status")
    assert found
    assert found <= addresses(doc)


def test_producers_match_the_services_that_construct_each_event(scan: Scan) -> None:
    seen: dict[str, set[str]] = {}
    for file, name in scan.constructed:
        parts = Path(file).parts
        if parts[0] == "services":
            seen.setdefault(name, set()).add(parts[1])
    declared = {t.__name__: set(p) for t, p in asyncapi.PRODUCERS.items()}
    assert seen == declared


def test_every_event_type_is_catalogued_once() -> None:
    assert set(asyncapi.PRODUCERS) == set(EVENT_TYPES)
    assert all(issubclass(t, Event) for t in asyncapi.PRODUCERS)


# --- docs/events.md ----------------------------------------------------------------------------


def sections(text: str, level: str) -> dict[str, str]:
    """Heading line -> the text under it, for headings of ``level`` ("##" or "###")."""
    parts = re.split(rf"^{level} ", text, flags=re.MULTILINE)[1:]
    return {p.split("\n", 1)[0]: p for p in parts}


def test_events_md_documents_every_event_and_every_field() -> None:
    text = EVENTS_MD.read_text()
    envelope = sections(text, "##")["The envelope"]
    for field in msgspec.structs.fields(Event):
        assert f"| `{field.name}` |" in envelope
    events = sections(text, "###")
    shared = events["Shared objects"]
    for nested in (RecordingOptions, RecordedFile, UploadedFile):
        for field in msgspec.structs.fields(nested):
            assert f"| `{field.name}` |" in shared, f"{nested.__name__}.{field.name}"
    envelope_fields = {f.name for f in msgspec.structs.fields(Event)}
    for event_type in EVENT_TYPES:
        tag = subject_for(event_type)
        (section,) = [body for title, body in events.items() if f"`{tag}`" in title]
        for field in msgspec.structs.fields(event_type):
            if field.name not in envelope_fields:
                assert f"| `{field.name}` |" in section, f"{tag}: {field.name}"
        producers = ", ".join(sorted(asyncapi.PRODUCERS[event_type]))
        assert f"| `{tag}` | {producers} |" in text, f"{tag}: published by {producers}"


def test_events_md_embeds_the_example_subscriber_verbatim() -> None:
    example = (ROOT / "docs" / "examples" / "subscriber.py").read_text()
    assert f"```python\n{example}```" in EVENTS_MD.read_text()


# --- served by the gateway ---------------------------------------------------------------------


async def test_gateway_serves_the_document_without_a_key() -> None:
    settings = GatewaySettings(api_keys=["k"], nats_url="nats://127.0.0.1:1")
    app = create_app(settings, link=NatsLink(settings))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        r = await client.get("/asyncapi.json")
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/json"
        assert r.text == DOC_FILE.read_text()
        openapi = (await client.get("/openapi.json")).json()
    # Like /openapi.json, it is not an operation of the REST API (nor fuzzed as one).
    assert "/asyncapi.json" not in openapi["paths"]


def test_schema_defaults_come_from_the_structs_not_the_msgspec_version() -> None:
    schemas = asyncapi.build()["components"]["schemas"]
    finished = schemas["RecordingFinished"]["properties"]
    assert finished["files"]["default"] == []  # default_factory=list: a constant
    assert "default" not in finished["event_id"]  # a fresh id each time: no constant
    assert "default" not in finished["ended_at"]
    assert "default" not in schemas["RecordingRequested"]["properties"]["options"]
    assert schemas["UploadPart"]["properties"]["attempt"]["default"] == 1


def test_descriptions_are_dedented_like_docstrings() -> None:
    indented = {"description": "First line.\n\n    Second, indented.\n    ", "n": [{"x": 1}]}
    flat = {"description": "First line.\n\nSecond, indented.", "n": [{"x": 1}]}
    assert generated.normalised(indented) == generated.normalised(flat) == flat
    # Only prose is touched: a property that happens to be named "description" is a schema.
    schema = {"properties": {"description": {"type": "string"}}}
    assert generated.normalised(schema) == schema
    descriptions = [
        text
        for schema in asyncapi.build()["components"]["schemas"].values()
        if isinstance(text := schema.get("description"), str)
    ]
    assert descriptions
    assert not [text for text in descriptions if "\n    " in text]
