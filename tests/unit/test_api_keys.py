"""API_KEYS and API_KEYS_FILE: parsing, errors that never quote a key, constant-time lookup."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.gateway.api_keys import (
    ApiKey,
    ApiKeyRegistry,
    ApiKeysFileError,
    key_digest,
    key_id,
    load_keys_file,
    parse_keys_file,
)
from services.gateway.settings import GatewaySettings

SECRET = "s3cr3t-Key-value-0123456789"


def test_names_overrides_comments_and_blank_lines() -> None:
    keys = parse_keys_file(
        "# name key [requests-per-minute]\n"
        "\n"
        "ops   k-ops-1  120\n"
        "   # indented comment\n"
        "viewer\tk-view-2   # trailing comment\n"
        "ci.bot-1 k-ci-3 1\n"
    )
    assert [(k.name, k.rate_limit) for k in keys] == [
        ("ops", 120),
        ("viewer", None),
        ("ci.bot-1", 1),
    ]
    assert keys[0].digest == key_digest("k-ops-1")


def test_an_empty_file_has_no_keys() -> None:
    assert parse_keys_file("# nothing yet\n\n") == []


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        (f"{SECRET}\n", 1, "found 1 field"),
        (f"ok k1\nops {SECRET} 10 extra\n", 2, "found 4 field"),
        (f"ops {SECRET} many\n", 1, "whole number"),
        (f"ops {SECRET} 0\n", 1, "whole number"),
        (f"ops {SECRET} -5\n", 1, "whole number"),
        (f"ops {SECRET} 1.5\n", 1, "whole number"),
        (f"# c\n\nop$ {SECRET}\n", 3, "the name"),
        (f"ops k1\nops {SECRET}\n", 2, "already used on line 1"),
        (f"ops {SECRET}\nci {SECRET}\n", 2, "already listed on line 1"),
    ],
)
def test_a_malformed_line_is_named_and_never_quoted(text: str, line: int, problem: str) -> None:
    with pytest.raises(ApiKeysFileError) as err:
        parse_keys_file(text, source="keys.txt")
    message = str(err.value)
    assert message.startswith(f"keys.txt line {line}: ")
    assert problem in message
    assert SECRET not in message
    assert err.value.__cause__ is None
    assert err.value.__suppress_context__


def test_an_unreadable_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ApiKeysFileError, match="cannot be read"):
        load_keys_file(tmp_path / "missing.txt")
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"ops \xff\xfe\n")
    with pytest.raises(ApiKeysFileError, match="cannot be read"):
        load_keys_file(binary)


def test_lookup_returns_the_right_entry() -> None:
    registry = ApiKeyRegistry(parse_keys_file("ops k-ops 120\nviewer k-view\n"))
    found = registry.lookup("k-view")
    assert found is not None
    assert found.name == "viewer"
    ops = registry.lookup("k-ops")
    assert ops is not None
    assert (ops.name, ops.rate_limit) == ("ops", 120)
    for wrong in ("", "k-op", "k-ops ", "K-OPS", "k-ops-longer"):
        assert registry.lookup(wrong) is None


def test_the_registry_keeps_only_digests() -> None:
    registry = ApiKeyRegistry(parse_keys_file(f"ops {SECRET}\n"))
    assert SECRET not in repr(registry.__dict__)
    (entry,) = registry._keys
    assert SECRET not in repr(entry)
    assert SECRET not in entry.counter_id


def test_settings_merge_file_and_bare_keys(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text("ops k-ops 5\n")
    settings = GatewaySettings(api_keys=["k-bare", "k-ops"], api_keys_file=keys_file)
    registry = ApiKeyRegistry.from_settings(settings)
    assert len(registry) == 2
    bare = registry.lookup("k-bare")
    assert bare == ApiKey.bare("k-bare")
    assert bare.name == key_id("k-bare")
    assert bare.rate_limit is None
    # Listed in both places: the file's entry, with its name and limit, wins.
    ops = registry.lookup("k-ops")
    assert ops is not None
    assert (ops.name, ops.rate_limit) == ("ops", 5)


def test_settings_with_a_bad_file_fail(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text(f"# keys\nops {SECRET} lots\n")
    with pytest.raises(ApiKeysFileError, match=r"line 2") as err:
        ApiKeyRegistry.from_settings(GatewaySettings(api_keys_file=keys_file))
    assert SECRET not in str(err.value)
