"""The Postman collection (v2.1) of the REST API, generated from the gateway's OpenAPI document.

`tlr postman` writes docs/postman/tlr.postman_collection.json; `tlr postman --check` fails when
the checked-in file differs from what the current routes and schemas give.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shared import generated
from tlr import generated_files

SCHEMA_URL = "https://schema.getpostman.com/json/collection/v2.1.0/collection.json"
DEFAULT_PATH = Path("docs/postman/tlr.postman_collection.json")
METHODS = ("get", "post", "put", "patch", "delete")
BASE_URL = "http://127.0.0.1:8000"
# The API takes exactly one of these (400 otherwise), which its JSON Schema cannot say:
# an example body keeps the first of them that has an example.
ONE_OF = ("url", "room_id")

JsonObject = dict[str, Any]


def openapi_document() -> JsonObject:
    """The gateway's /openapi.json, without a server or NATS (settings from defaults only)."""
    from services.gateway.app import create_app
    from services.gateway.settings import GatewaySettings

    return create_app(GatewaySettings.model_construct()).openapi()


def collection(doc: JsonObject) -> JsonObject:
    """One request per operation, in folders by tag (else first path segment)."""
    folders: dict[str, list[JsonObject]] = {}
    path_vars: dict[str, str] = {}
    for path, operations in doc.get("paths", {}).items():
        for method in METHODS:
            op = operations.get(method)
            if op is None:
                continue
            tags = op.get("tags") or [path.strip("/").split("/")[0] or "root"]
            folders.setdefault(tags[0], []).append(_item(doc, path, method, op, path_vars))
    tag_docs = {t["name"]: t.get("description", "") for t in doc.get("tags", [])}
    info = doc.get("info", {})
    return {
        "info": {
            "name": info.get("title", "API"),
            "description": (
                f"{info.get('description', '').strip()}\n\n"
                "Generated from the gateway's OpenAPI document by `tlr postman`; do not edit. "
                "Set the collection variables `baseUrl` and `apiKey` (`make run` prints the "
                "key and keeps it in var/dev-api-key; an admin's, as the services, diagnostics "
                "and rebuild requests need). POST /recordings and POST /watchers "
                "store the new `task_id` for the requests on /jobs."
            ),
            "version": info.get("version", ""),
            "schema": SCHEMA_URL,
        },
        "auth": _api_key_auth(),
        "variable": [
            {"key": "baseUrl", "value": BASE_URL, "type": "string"},
            {"key": "apiKey", "value": "", "type": "string"},
            *(
                {"key": name, "value": value, "type": "string"}
                for name, value in sorted(path_vars.items())
            ),
        ],
        "item": [
            {"name": tag, **({"description": tag_docs[tag]} if tag_docs.get(tag) else {})}
            | {"item": items}
            for tag, items in folders.items()
        ],
    }


def _api_key_auth() -> JsonObject:
    return {
        "type": "apikey",
        "apikey": [
            {"key": "key", "value": "X-API-Key", "type": "string"},
            {"key": "value", "value": "{{apiKey}}", "type": "string"},
            {"key": "in", "value": "header", "type": "string"},
        ],
    }


def _item(
    doc: JsonObject, path: str, method: str, op: JsonObject, path_vars: dict[str, str]
) -> JsonObject:
    params = [_resolve(doc, p) for p in op.get("parameters", [])]
    segments = [
        f":{s[1:-1]}" if s.startswith("{") and s.endswith("}") else s
        for s in path.strip("/").split("/")
    ]
    variables = []
    for p in params:
        if p.get("in") != "path":
            continue
        # Path values are collection variables: set once, used by every request on them.
        path_vars.setdefault(p["name"], str(_first_example(p) or ""))
        variables.append({"key": p["name"], "value": f"{{{{{p['name']}}}}}", **_description(p)})
    query = [_query_param(p) for p in params if p.get("in") == "query"]
    enabled = [f"{q['key']}={q['value']}" for q in query if not q.get("disabled")]
    url: JsonObject = {
        "raw": "{{baseUrl}}/" + "/".join(segments) + ("?" + "&".join(enabled) if enabled else ""),
        "host": ["{{baseUrl}}"],
        "path": segments,
    }
    if query:
        url["query"] = query
    if variables:
        url["variable"] = variables
    request: JsonObject = {"method": method.upper(), "header": [], "url": url}
    if op.get("description"):  # the summary is the request's name
        request["description"] = op["description"]
    body_schema = (
        op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
    )
    if body_schema is not None:
        request["header"].append({"key": "Content-Type", "value": "application/json"})
        request["body"] = {
            "mode": "raw",
            "raw": json.dumps(example(doc, body_schema), indent=2),
            "options": {"raw": {"language": "json"}},
        }
    if not op.get("security"):
        request["auth"] = {"type": "noauth"}  # public: health and readiness
    item: JsonObject = {"name": op.get("summary") or f"{method.upper()} {path}"}
    item["request"] = request
    item["response"] = []
    if method == "post" and (saved := _saved_variables(doc, op)):
        item["event"] = [
            {
                "listen": "test",
                "script": {
                    "type": "text/javascript",
                    "exec": [
                        "if (pm.response.code >= 200 && pm.response.code < 300) {",
                        *(
                            f"    pm.collectionVariables.set('{name}', pm.response.json().{name});"
                            for name in saved
                        ),
                        "}",
                    ],
                },
            }
        ]
    return item


def _saved_variables(doc: JsonObject, op: JsonObject) -> list[str]:
    """Fields of a 2xx answer that name a path variable (``task_id``): kept for later calls."""
    names: set[str] = set()
    for status, response in op.get("responses", {}).items():
        if not str(status).startswith("2"):
            continue
        schema = response.get("content", {}).get("application/json", {}).get("schema")
        if schema is not None:
            names |= set(_resolve(doc, schema).get("properties", {}))
    return sorted(names & _all_path_params(doc))


def _all_path_params(doc: JsonObject) -> set[str]:
    return {
        p["name"]
        for ops in doc.get("paths", {}).values()
        for m in METHODS
        for p in ops.get(m, {}).get("parameters", [])
        if p.get("in") == "path"
    }


def _query_param(p: JsonObject) -> JsonObject:
    schema = p.get("schema", {})
    value = _first_example(p)
    if value is None:
        value = schema.get("default")
    out: JsonObject = {"key": p["name"], "value": "" if value is None else str(value)}
    if value is None and not p.get("required"):
        out["disabled"] = True  # listed so it can be switched on, but not sent
    out.update(_description(p))
    return out


def _description(p: JsonObject) -> JsonObject:
    text = p.get("description") or p.get("schema", {}).get("description")
    return {"description": text} if text else {}


def _first_example(p: JsonObject) -> Any:
    for holder in (p, p.get("schema", {})):
        if holder.get("examples"):
            examples = holder["examples"]
            # Parameter examples are a map of {name: {value}}; schema examples a list.
            if isinstance(examples, dict):
                return next(iter(examples.values())).get("value")
            return examples[0]
        if "example" in holder:
            return holder["example"]
    return None


def _resolve(doc: JsonObject, node: JsonObject) -> JsonObject:
    while "$ref" in node:
        ref: str = node["$ref"]
        target: Any = doc
        for part in ref.removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


_MISSING = object()


def example(doc: JsonObject, schema: JsonObject) -> Any:
    """An example value of ``schema``: its own examples, else its default, else one built
    from its properties (each property's example or default; optional ones without either are
    left out). ``ONE_OF`` fields are reduced to one."""
    value = _example(doc, schema, required=True, depth=0)
    return None if value is _MISSING else value


def _example(doc: JsonObject, schema: JsonObject, *, required: bool, depth: int) -> Any:
    found = _first_example(schema)
    if found is not None:
        return found
    if "default" in schema:
        return schema["default"]
    schema = _resolve(doc, schema)
    found = _first_example(schema)
    if found is not None:
        return found
    if depth > 8:
        return _MISSING
    branches = schema.get("anyOf") or schema.get("oneOf")
    if branches:
        concrete = [b for b in branches if b.get("type") != "null"]
        if not concrete:
            return _MISSING
        return _example(doc, concrete[0], required=required, depth=depth + 1)
    if schema.get("type") == "object" or "properties" in schema:
        needed = set(schema.get("required", []))
        body: JsonObject = {}
        for name, prop in schema.get("properties", {}).items():
            value = _example(doc, prop, required=name in needed, depth=depth + 1)
            if value is _MISSING or value is None or value == {}:
                continue
            body[name] = value
        present = [name for name in ONE_OF if name in body]
        for name in present[1:]:
            del body[name]
        return body
    if not required:
        return _MISSING
    return {"string": "", "integer": 0, "number": 0, "boolean": False, "array": []}.get(
        str(schema.get("type")), _MISSING
    )


def render(doc: JsonObject | None = None) -> str:
    # Normalised: FastAPI and pydantic render docstrings; their layout must not leak in.
    source = generated.normalised(doc or openapi_document())
    return json.dumps(collection(source), indent=2, ensure_ascii=False) + "\n"


def write(path: Path = DEFAULT_PATH) -> Path:
    return generated_files.write_text(path, render())


def stale(path: Path = DEFAULT_PATH) -> bool:
    """True when the file at ``path`` is missing or differs from a fresh generation."""
    return generated_files.is_stale(path, render())


def main_postman(check: bool, path: Path = DEFAULT_PATH) -> int:
    """`tlr postman [--check]`: write the collection, or exit 1 when it is out of date."""
    return generated_files.check_or_write(path, render(), check=check, command="tlr postman")
