"""Several processes opening one new SQLite file at once all get a usable WAL connection."""

from __future__ import annotations

import asyncio
from pathlib import Path

from shared.sqlite import connect_wal

SCHEMA = """
CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, v TEXT);
CREATE INDEX IF NOT EXISTS t_v ON t (v);
"""


async def test_concurrent_openers_of_a_new_file_all_succeed(tmp_path: Path) -> None:
    # Each aiosqlite connection has its own thread, like separate processes on one file. Plain
    # connect + "PRAGMA journal_mode=WAL" + "CREATE ... IF NOT EXISTS" fails here about one
    # round in two with "database is locked", whatever the busy timeout.
    async def open_and_write(path: Path, n: int) -> str:
        db = await connect_wal(path, schema=SCHEMA)
        try:
            await db.execute("INSERT INTO t VALUES (?, ?)", (str(n), "x"))
            await db.commit()
            async with db.execute("PRAGMA journal_mode") as cur:
                row = await cur.fetchone()
            assert row is not None
            return str(row[0])
        finally:
            await db.close()

    for round_ in range(20):
        path = tmp_path / f"r{round_}" / "db.sqlite3"
        modes = await asyncio.gather(*(open_and_write(path, n) for n in range(6)))
        assert modes == ["wal"] * 6
        db = await connect_wal(path)
        async with db.execute("SELECT count(*) FROM t") as cur:
            assert await cur.fetchone() == (6,)
        await db.close()
