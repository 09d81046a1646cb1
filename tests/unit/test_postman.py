"""The Postman collection in docs/postman/ is current, complete and a v2.1 collection."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tlr.client import postman

CHECKED_IN = Path(__file__).resolve().parents[2] / postman.DEFAULT_PATH
METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return postman.openapi_document()


@pytest.fixture(scope="module")
def checked_in() -> dict[str, Any]:
    body: dict[str, Any] = json.loads(CHECKED_IN.read_text())
    return body


def requests_of(collection: dict[str, Any]) -> list[dict[str, Any]]:
    """Every request item, however deep in folders."""
    out: list[dict[str, Any]] = []
    for item in collection["item"]:
        out.extend(requests_of(item) if "item" in item else [item])
    return out


def openapi_path(url: dict[str, Any]) -> str:
    return "/" + "/".join(re.sub(r"^:(.+)$", r"{\1}", s) for s in url["path"])


def test_checked_in_collection_is_what_the_api_generates(doc: dict[str, Any]) -> None:
    assert CHECKED_IN.read_text() == postman.render(doc), (
        "docs/postman is out of date: run `tlr postman`"
    )
    assert not postman.stale(CHECKED_IN)


def test_every_operation_is_one_request(doc: dict[str, Any], checked_in: dict[str, Any]) -> None:
    operations = {
        (method.upper(), path)
        for path, ops in doc["paths"].items()
        for method in ops
        if method.upper() in METHODS
    }
    requests = [
        (r["request"]["method"], openapi_path(r["request"]["url"])) for r in requests_of(checked_in)
    ]
    assert len(requests) == len(set(requests))
    assert set(requests) == operations


def test_collection_is_structurally_v2_1(checked_in: dict[str, Any]) -> None:
    info = checked_in["info"]
    assert info["schema"] == postman.SCHEMA_URL
    assert info["name"]
    variables = {v["key"]: v["value"] for v in checked_in["variable"]}
    assert {"baseUrl", "apiKey"} <= set(variables)
    auth = {a["key"]: a["value"] for a in checked_in["auth"]["apikey"]}
    assert checked_in["auth"]["type"] == "apikey"
    assert auth == {"key": "X-API-Key", "value": "{{apiKey}}", "in": "header"}
    for folder in checked_in["item"]:
        assert folder["name"]
        assert isinstance(folder["item"], list)
        assert folder["item"]
    for item in requests_of(checked_in):
        assert item["name"]
        request = item["request"]
        assert request["method"] in METHODS
        assert isinstance(request["header"], list)
        url = request["url"]
        assert url["host"] == ["{{baseUrl}}"]
        assert url["raw"].split("?")[0] == "{{baseUrl}}/" + "/".join(url["path"])
        for var in url.get("variable", []):
            assert f":{var['key']}" in url["path"]
            assert var["value"] == f"{{{{{var['key']}}}}}"
            assert var["key"] in variables  # a collection variable to set once
        for query in url.get("query", []):
            assert set(query) <= {"key", "value", "disabled", "description"}
        if "body" in request:
            assert request["body"]["mode"] == "raw"
            json.loads(request["body"]["raw"])
            assert {"key": "Content-Type", "value": "application/json"} in request["header"]


def test_auth_follows_the_openapi_security(doc: dict[str, Any], checked_in: dict[str, Any]) -> None:
    """Public routes (health, readiness) send no key; every other one inherits X-API-Key."""
    public = {
        (method.upper(), path)
        for path, ops in doc["paths"].items()
        for method, op in ops.items()
        if not op.get("security")
    }
    assert public == {("GET", "/healthz"), ("GET", "/ready")}
    for item in requests_of(checked_in):
        request = item["request"]
        key = (request["method"], openapi_path(request["url"]))
        assert ("auth" in request) == (key in public), key
        if key in public:
            assert request["auth"] == {"type": "noauth"}


def test_example_bodies_come_from_the_schemas(checked_in: dict[str, Any]) -> None:
    bodies = {
        openapi_path(r["request"]["url"]): json.loads(r["request"]["body"]["raw"])
        for r in requests_of(checked_in)
        if "body" in r["request"]
    }
    # The examples declared on the request models; one of room_id / url, as the API wants.
    assert bodies["/recordings"]["url"] == "https://www.tiktok.com/@alice/live"
    assert "room_id" not in bodies["/recordings"]
    assert bodies["/watchers"]["url"] == "@alice"
    assert bodies["/watchers"]["poll_interval"] == 60  # the default


def test_stale_and_write(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "c.json"
    assert postman.stale(target)
    assert postman.main_postman(True, target) == 1
    assert "run `tlr postman`" in capsys.readouterr().err
    assert postman.main_postman(False, target) == 0
    assert postman.main_postman(True, target) == 0
    target.write_text(target.read_text().replace("X-API-Key", "X-Api-Key"))
    assert postman.stale(target)
