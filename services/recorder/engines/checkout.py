"""The upstream CLI's checkout (TLR_ROOT): its commit, the pin, its Python, a private copy.

The commit is read from the git files themselves (HEAD, a loose ref or packed-refs, a
worktree's ``gitdir:``), so neither git nor a shell is needed.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from shared.errors import ErrorCode

_SHA = re.compile(r"^[0-9a-f]{40}$")
_PIN = re.compile(r"^[0-9a-f]{7,40}$")
# Files the CLI reads beside its code: each run gets its own (cookies.json) or none (Telegram).
PRIVATE_FILES = frozenset(("cookies.json", "telegram.json"))
_SKIPPED = frozenset(("__pycache__",))


class CheckoutError(Exception):
    """The checkout cannot be used; ``code`` is the job's error code."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Checkout:
    """A usable checkout: where it is, its commit, and the Python that runs it."""

    root: Path
    commit: str | None
    python: Path
    pinned: bool  # at TLR_PIN (or no pin set)

    @property
    def src(self) -> Path:
        return self.root / "src"


def read_commit(root: Path) -> str | None:
    """The commit SHA checked out at ``root``, or None when it is not a git checkout."""
    git = root / ".git"
    try:
        if git.is_file():  # a worktree or submodule: "gitdir: <path>"
            target = git.read_text().strip().removeprefix("gitdir:").strip()
            git = (root / target).resolve()
        head = (git / "HEAD").read_text().strip()
    except OSError:
        return None
    if _SHA.match(head):
        return head
    if not head.startswith("ref:"):
        return None
    ref = head.removeprefix("ref:").strip()
    common = git
    with contextlib.suppress(OSError):  # a worktree keeps its refs in the main repository
        common = (git / (git / "commondir").read_text().strip()).resolve()
    for base in (git, common):
        try:
            sha = (base / ref).read_text().strip()
        except OSError:
            continue
        if _SHA.match(sha):
            return sha
    try:
        packed = (common / "packed-refs").read_text()
    except OSError:
        return None
    for line in packed.splitlines():
        sha, _, name = line.partition(" ")
        if name.strip() == ref and _SHA.match(sha):
            return sha
    return None


def pin_matches(commit: str | None, pin: str) -> bool:
    """True when ``commit`` is ``pin`` (a full SHA or a prefix of at least 7 hex digits)."""
    pin = pin.strip().lower()
    if not _PIN.match(pin):
        return False
    return commit is not None and commit.startswith(pin)


def open_checkout(
    root: Path | None, python: Path | None, pin: str | None, *, override: bool
) -> Checkout:
    """The checkout at ``root`` ready to run, or CheckoutError saying why not.

    Raises:
        CheckoutError: no TLR_ROOT, no ``src/main.py`` in it, no Python to run it
            (ENGINE_UNAVAILABLE), or its commit is not TLR_PIN and no override
            (ENGINE_PIN_MISMATCH).
    """
    if root is None:
        msg = "the tlr-cli engine needs TLR_ROOT (a checkout of tiktok-live-recorder)"
        raise CheckoutError(ErrorCode.ENGINE_UNAVAILABLE, msg)
    root = root.resolve()
    if not (root / "src" / "main.py").is_file():
        msg = f"TLR_ROOT {root} holds no src/main.py: not a tiktok-live-recorder checkout"
        raise CheckoutError(ErrorCode.ENGINE_UNAVAILABLE, msg)
    commit = read_commit(root)
    pinned = pin is None or pin_matches(commit, pin)
    if not pinned and not override:
        msg = (
            f"TLR_ROOT is at commit {commit or 'unknown'}, not TLR_PIN {pin}: refused "
            "(check the checkout out at the pin, or set TLR_PIN_OVERRIDE=true)"
        )
        raise CheckoutError(ErrorCode.ENGINE_PIN_MISMATCH, msg)
    if python is None:
        venv = root / ".venv" / "bin" / "python"
        python = venv if venv.exists() else Path(sys.executable)
    if not os.access(python, os.X_OK):
        msg = f"TLR_PYTHON {python} is not an executable"
        raise CheckoutError(ErrorCode.ENGINE_UNAVAILABLE, msg)
    return Checkout(root=root, commit=commit, python=python, pinned=pinned)


def mirror_src(src: Path, dest: Path) -> None:
    """A private copy of ``src`` in ``dest`` (blocking): real folders, each file a symlink to
    the checkout's, except PRIVATE_FILES. The CLI finds ``cookies.json`` relative to its own
    modules' paths, which Python does not resolve through symlinked files (it would through
    a symlinked folder), so each run reads the cookies file written in ``dest`` for it."""
    dest.mkdir(mode=0o700, exist_ok=True)
    for entry in os.scandir(src):
        if entry.name in _SKIPPED or entry.name in PRIVATE_FILES:
            continue
        target = dest / entry.name
        if entry.is_dir(follow_symlinks=False):
            mirror_src(Path(entry.path), target)
        elif entry.is_file():
            target.symlink_to(entry.path)
