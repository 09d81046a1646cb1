"""Schemathesis fuzzes every operation of /openapi.json against a gateway whose services run.

A real nats-server, the scheduler, the indexer and the notifier run in this test's event
loop, so no answer is a 503 for want of a dependency. Schemathesis' coverage cases, then
Hypothesis driving its strategies (valid and invalid data, fixed seed), run in a worker
thread; each request goes back to the loop, through the ASGI app. No response may be a 5xx;
each must have a documented status code and content type and a body matching its schema;
invalid input must be refused.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, Verbosity
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.errors import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from services.gateway.app import create_app
from services.gateway.nats_link import NatsLink
from services.gateway.settings import GatewaySettings
from services.indexer.service import IndexerService
from services.indexer.settings import IndexerSettings
from services.notifier.service import NotifierService
from services.notifier.settings import NotifierSettings
from services.scheduler.service import SchedulerService
from services.scheduler.settings import SchedulerSettings
from shared.bus import Bus
from shared.secrets import new_key
from tests.helpers import eventually
from tlr.fake_tiktok import FakeTikTok
from tlr.nats_server import NatsServer

KEY = "k-fuzz"
BASE_URL = "http://gw"
ROOM = "7503448765740976902"
# Random cases per operation and generation mode (valid, invalid). With the coverage cases
# this is about 5,500 requests, 40-55 s on this 2-CPU machine; a loaded CI runner took more
# than 120 s, hence the test's own timeout (a hung request still fails after REQUEST_TIMEOUT).
MAX_EXAMPLES = 200
FEW_EXAMPLES = 5
REQUEST_TIMEOUT = 30.0  # a hung request fails the test instead of hanging CI
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    # Invalid input must be refused (4xx), not quietly read some other way.
    negative_data_rejection,
]
COOKIES = ".tiktok.com\tTRUE\t/\tTRUE\t2000000000\tsessionid\tfuzz-cookie\n"


@pytest.fixture
def hypothesis_home(tmp_path: Path) -> Iterator[None]:
    """Hypothesis' caches go to the test's tmp dir, never into the repository."""
    set_hypothesis_home_dir(tmp_path / "hypothesis")
    yield
    set_hypothesis_home_dir(None)


@pytest.fixture
async def client(
    nats_server: NatsServer, bus: Bus, fake_tiktok: FakeTikTok, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    cookies = tmp_path / "cookies"
    cookies.mkdir()
    (cookies / "alice.txt").write_text(COOKIES)
    common: dict[str, Any] = {
        "nats_url": nats_server.client_url,
        "tiktok_web_base": fake_tiktok.base_url,
        "tiktok_webcast_base": fake_tiktok.base_url,
        "recordings_dir": tmp_path / "recordings",
        "cookies_dir": cookies,
        "secret_key": new_key(),
    }
    # A budget no fuzzing run spends: the limiter is counted, never in the way.
    gateway = GatewaySettings(api_keys=[KEY], rate_limit_per_min=1_000_000, **common)
    scheduler = SchedulerSettings(
        instance_id="sched-fuzz", scheduler_db=tmp_path / "scheduler.sqlite3", **common
    )
    indexer = IndexerSettings(
        instance_id="indexer-fuzz", index_db=tmp_path / "index.sqlite3", **common
    )
    notifier = NotifierSettings(instance_id="notifier-fuzz", **common)
    # Fuzzed watchers name rooms the fake does not know, which it omits from check_alive, as
    # TikTok's WAF does: the scheduler would pause its egress for minutes and only stop once
    # the pause ends. With fake_alive every room id is "alive" and fails at room_info instead.
    # The WAF's proof of work costs ~0.7 s of CPU per diagnostics request, hundreds of times
    # here: fuzzing judges the API's answers, and the WAF path has its own tests.
    await fake_tiktok.set_scenario(fake_alive=True, waf_challenge=False)
    await fake_tiktok.create_user("alice")
    async with (
        SchedulerService(bus, scheduler),
        IndexerService(bus, indexer),
        NotifierService(bus, notifier),
        NatsLink(gateway) as link,
    ):
        await link.wait_connected()
        transport = httpx.ASGITransport(app=create_app(gateway, link=link))
        async with httpx.AsyncClient(
            transport=transport, base_url=BASE_URL, headers={"X-API-Key": KEY}
        ) as c:
            yield c


async def seed(client: httpx.AsyncClient) -> list[str]:
    """A recording job and two watchers the scheduler knows, so that fuzzing reaches the
    found branches of the routes too, not only their 404s. Returns the job ids."""
    tasks = []
    for path, body in (
        ("/recordings", {"room_id": ROOM}),
        ("/watchers", {"url": "@alice"}),
        ("/watchers", {"room_id": ROOM}),
    ):
        r = await client.post(path, json=body)
        assert r.status_code == 202, r.text
        tasks.append(r.json()["task_id"])

    async def registered() -> bool:
        for key in ("@alice", ROOM):
            if (await client.get(f"/watchers/{key}")).status_code != 200:
                return False
        return True

    await eventually(registered)
    return tasks


def to_httpx(case: schemathesis.Case) -> dict[str, Any]:
    """The request schemathesis would send over the wire, as httpx arguments: its own
    serialization (query, JSON, headers) through a requests PreparedRequest."""
    kwargs = case.as_transport_kwargs(base_url=BASE_URL)
    kwargs["headers"]["X-API-Key"] = KEY
    known = {"method", "url", "headers", "params", "json", "data", "files", "cookies"}
    unknown = set(kwargs) - known
    assert not unknown, f"schemathesis sent transport arguments this test ignores: {unknown}"
    prepared = requests.Request(**{k: v for k, v in kwargs.items() if k in known}).prepare()
    # httpx sets Content-Length from the content it sends. Values go as the bytes requests
    # would send (latin-1): httpx takes str values only in ASCII, and a header such as
    # Idempotency-Key is fuzzed with any character.
    headers = {
        k: v.encode("latin-1") if isinstance(v, str) else v
        for k, v in prepared.headers.items()
        if k.lower() != "content-length"
    }
    return {
        "method": prepared.method,
        "url": prepared.url,
        "headers": headers,
        "content": prepared.body,
    }


def examples_for(operation: schemathesis.APIOperation) -> int:
    """Examples per generation mode: an operation without inputs is the same request again
    and again, so a few are enough."""
    inputs = [p for p in operation.iter_parameters() if p.name != "X-API-Key"]
    return MAX_EXAMPLES if inputs or len(operation.body) else FEW_EXAMPLES


def check(
    operation: schemathesis.APIOperation,
    case: schemathesis.Case,
    send: Callable[[dict[str, Any]], httpx.Response],
    failures: dict[str, str],
) -> None:
    """Send ``case``; keep a failure with the request that reproduces it, once per kind."""
    response = send(to_httpx(case))
    try:
        case.validate_response(response, checks=CHECKS)
    except FailureGroup as exc:
        text = str(exc)
        # One report per kind and status: the same bug found again is noise.
        failures.setdefault(
            f"{operation.label} {response.status_code} {text.splitlines()[0]}", text
        )


def cover_operation(
    schema: schemathesis.BaseSchema,
    operation: schemathesis.APIOperation,
    send: Callable[[dict[str, Any]], httpx.Response],
    failures: dict[str, str],
) -> None:
    """Schemathesis' coverage cases: boundaries (min, max, one past), wrong types, missing
    and unknown fields, odd content types. Deterministic, a few dozen per operation."""
    for case in schema.iter_coverage_cases(
        operation,
        generation_modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
        generation_config=schema.config.generation,
    ):
        check(operation, case, send, failures)


def fuzz_operation(
    operation: schemathesis.APIOperation,
    send: Callable[[dict[str, Any]], httpx.Response],
    failures: dict[str, str],
) -> None:
    """The schema's examples, then random valid and invalid cases for one operation."""
    strategies = [
        *operation.get_strategies_from_examples(),
        *(
            operation.as_strategy(generation_mode=mode)
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        ),
    ]

    @hypothesis.settings(
        max_examples=examples_for(operation) * 2,
        derandomize=True,  # the same cases on every run: CI is reproducible
        database=None,
        deadline=None,
        # A failing case is reported as found: shrinking it would double the run time.
        phases=[Phase.generate],
        # They judge how fast data is generated on this machine, not the API.
        suppress_health_check=list(HealthCheck),
        verbosity=Verbosity.quiet,
    )
    @hypothesis.given(case=st.one_of(strategies))
    def run(case: schemathesis.Case) -> None:
        check(operation, case, send, failures)

    run()


@pytest.mark.timeout(360)
@pytest.mark.usefixtures("hypothesis_home")
async def test_every_operation_survives_fuzzing(client: httpx.AsyncClient) -> None:
    jobs = await seed(client)
    doc = (await client.get("/openapi.json")).json()
    for method in ("get", "delete"):
        (task_id,) = doc["paths"]["/jobs/{task_id}"][method]["parameters"]
        task_id["schema"]["examples"] = jobs  # ids that exist: the found branches
    schema = schemathesis.openapi.from_dict(doc)
    # Every case carries a valid key (see to_httpx): a missing key is not what is fuzzed, and
    # a case whose only flaw is the key must not be expected to fail.
    schema.config.generation.update(with_security_parameters=False)
    # Deletes last: the seeded watchers and jobs stay there for the other operations.
    operations = sorted(
        (result.ok() for result in schema.get_all_operations()),
        key=lambda op: op.method.upper() == "DELETE",
    )
    assert len(operations) >= 14
    loop = asyncio.get_running_loop()

    def send(request: dict[str, Any]) -> httpx.Response:
        future = asyncio.run_coroutine_threadsafe(client.request(**request), loop)
        return future.result(timeout=REQUEST_TIMEOUT)

    def fuzz_all() -> dict[str, str]:
        failures: dict[str, str] = {}
        for operation in operations:
            cover_operation(schema, operation, send, failures)
            fuzz_operation(operation, send, failures)
        return failures

    # The loop must keep running (NATS, services, the app) while Hypothesis blocks its thread.
    failures = await asyncio.to_thread(fuzz_all)
    assert not failures, f"{len(failures)} failures:\n\n" + "\n\n".join(failures.values())
