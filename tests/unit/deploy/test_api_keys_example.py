"""The API_KEYS_FILE examples of the deploy files and the runbook make the keys they promise."""

from __future__ import annotations

import re
import secrets
from pathlib import Path

import pytest

from services.gateway.api_keys import parse_keys_file
from tests.unit.deploy.helpers import ROOT

EXAMPLE = ROOT / "deploy" / "api-keys.example"
# Where an operator is shown a command that writes an API_KEYS_FILE with an admin.
WITH_COMMANDS = [
    EXAMPLE,
    ROOT / "compose.yaml",
    ROOT / "deploy" / "k8s" / "secret.yaml",
    ROOT / "deploy" / "k8s" / "README.md",
    ROOT / "docs" / "runbook.md",
]
_PRINTF = re.compile(r"printf '([^']*role=admin[^']*)'")


def test_the_example_file_lists_no_key() -> None:
    # compose mounts it until an operator gives their own: it must accept no key at all.
    assert parse_keys_file(EXAMPLE.read_text()) == []


def test_the_example_lines_make_one_admin_and_one_user() -> None:
    text = EXAMPLE.read_text()
    shown = re.findall(r"^#   (\w+ +<64 hex digits>.*)$", text, re.M)
    lines = [line.replace("<64 hex digits>", secrets.token_hex(32)) for line in shown]
    keys = parse_keys_file("\n".join(lines))
    assert [(k.name, k.admin, k.rate_limit) for k in keys] == [
        ("ops", True, 600),
        ("acme", False, 120),
    ]


def _printf(template: str) -> str:
    """What ``printf template "$(openssl rand -hex 32)" ...`` writes."""
    out = template.replace("\\n", "\n")
    while "%s" in out:
        out = out.replace("%s", secrets.token_hex(32), 1)
    return out


@pytest.mark.parametrize("path", WITH_COMMANDS, ids=lambda p: str(p.relative_to(ROOT)))
def test_each_printf_shown_writes_a_file_with_one_admin(path: Path) -> None:
    templates = _PRINTF.findall(path.read_text())
    assert templates, f"{path.name} shows no command that makes an admin"
    for template in templates:
        keys = parse_keys_file(_printf(template))
        assert [k.name for k in keys if k.admin] == ["ops"], template
