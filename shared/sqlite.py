"""Opening a SQLite file in WAL mode when another process may be opening it at the same moment."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiosqlite

LOCK_WAIT = 30.0  # seconds to wait for another opener's lock before giving up


async def connect_wal(path: Path, *, schema: str = "", **kwargs: Any) -> aiosqlite.Connection:
    """A connection to ``path`` (created if missing) in ``journal_mode=WAL``, with ``schema``
    (idempotent DDL) applied.

    SQLite's busy timeout covers ordinary lock waits, but two processes opening a new file
    together can still get "database is locked" at once: switching to WAL, or upgrading a
    read to a write (``CREATE ... IF NOT EXISTS`` reads the schema first). So the switch is
    retried, and the schema runs in a ``BEGIN IMMEDIATE`` transaction, which takes the write
    lock up front and so waits its turn, until :data:`LOCK_WAIT` has passed.
    """
    await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
    db = await aiosqlite.connect(path, timeout=LOCK_WAIT, **kwargs)
    try:
        await _while_locked(db, lambda: _pragma(db, "journal_mode=WAL"))
        if schema:
            script = f"BEGIN IMMEDIATE;\n{schema}\nCOMMIT;"
            await _while_locked(db, lambda: db.executescript(script))
    except BaseException:
        await db.close()
        raise
    return db


async def _pragma(db: aiosqlite.Connection, pragma: str) -> None:
    # Read to the end and close: an open statement would keep a later COMMIT from running.
    async with db.execute(f"PRAGMA {pragma}") as cursor:
        await cursor.fetchall()


async def _while_locked(db: aiosqlite.Connection, step: Callable[[], Awaitable[object]]) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LOCK_WAIT
    delay = 0.02
    while True:
        try:
            await step()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or loop.time() > deadline:
                raise
            if db.in_transaction:
                await db.rollback()
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.5)
