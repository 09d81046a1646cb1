"""API_KEYS and API_KEYS_FILE: parsing, roles, errors that never quote a key, constant-time
lookup, what a key sees."""

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
        (f"ok k1\nops {SECRET} 10 extra extra\n", 2, "found 5 field"),
        (f"ops {SECRET} 10 20\n", 1, "one requests-per-minute at most"),
        (f"ops {SECRET} 10 extra\n", 1, "whole number"),
        (f"ops {SECRET} many\n", 1, "whole number"),
        (f"ops {SECRET} 0\n", 1, "whole number"),
        (f"ops {SECRET} -5\n", 1, "whole number"),
        (f"ops {SECRET} 1.5\n", 1, "whole number"),
        (f"ops {SECRET} \u00b2\n", 1, "whole number"),
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


def test_roles_come_after_the_key_in_any_order() -> None:
    keys = parse_keys_file(
        "root k-root role=admin\n"
        "ops  k-ops  role=admin 120\n"
        "ci   k-ci   30 role=user\n"
        "view k-view\n"
    )
    assert [(k.name, k.rate_limit, k.admin) for k in keys] == [
        ("root", None, True),
        ("ops", 120, True),
        ("ci", 30, False),
        ("view", None, False),
    ]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (f"ops {SECRET} role=root\n", "the role must be role=admin or role=user"),
        (f"ops {SECRET} role=Admin\n", "the role must be role=admin or role=user"),
        (f"ops {SECRET} role=\n", "the role must be role=admin or role=user"),
        (f"ops {SECRET} role={SECRET}\n", "the role must be role=admin or role=user"),
        (f"ops {SECRET} role=admin role=user\n", "role= is given twice"),
        (f"ops {SECRET} admin\n", "a role is written role=admin"),
        (f"ops {SECRET} roles=admin\n", "whole number"),
        ("ops role=admin\n", "the key is missing"),
        (f"ops {SECRET} 10 role=admin x\n", "found 5 field"),
    ],
)
def test_a_bad_role_is_named_and_never_quoted(text: str, problem: str) -> None:
    with pytest.raises(ApiKeysFileError) as err:
        parse_keys_file(text, source="keys.txt")
    message = str(err.value)
    assert message.startswith("keys.txt line 1: ")
    assert problem in message
    assert SECRET not in message
    assert "root" not in message


def test_a_key_sees_its_own_items_and_an_admin_sees_all() -> None:
    user, admin = parse_keys_file("alice k-a\nroot k-r role=admin\n")
    assert user.sees("alice")
    assert not user.sees("bob")
    assert not user.sees(None)  # from before ownership: an admin's only
    assert user.owner_filter == "alice"
    assert admin.sees("alice")
    assert admin.sees(None)
    assert admin.owner_filter is None
    assert not ApiKey.bare("k-bare").admin  # API_KEYS keys are never admins


def test_two_keys_may_not_share_a_name(tmp_path: Path) -> None:
    bare_name = key_id("k-bare")
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text(f"{bare_name} k-other role=admin\n")
    settings = GatewaySettings(api_keys=["k-bare"], api_keys_file=keys_file)
    with pytest.raises(ApiKeysFileError, match=f"two different API keys are named {bare_name}"):
        ApiKeyRegistry.from_settings(settings)
    # The same key in both places is one key, not two.
    keys_file.write_text(f"{bare_name} k-bare role=admin\n")
    assert len(ApiKeyRegistry.from_settings(settings)) == 1


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
