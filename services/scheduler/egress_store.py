"""The egress pool on disk: the egresses and the watchers' assignments, in the scheduler's
SQLite file beside the watchers (the leader writes, every instance reads).

An egress row keeps its proxy sealed, as events and KV do, and the last health the leader
saw (JSON of :class:`~shared.egresses.EgressStatus`), so any instance can answer
``GET /egresses``. Assignments are saved so a restarted or new leader keeps every watcher
where it was.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Self

import aiosqlite
import msgspec

from services.scheduler.egress_pool import Egress, EgressPool
from services.scheduler.store import DEFAULT_POLL
from shared.egresses import EgressStatus
from shared.sqlite import connect_wal

_SCHEMA = """
CREATE TABLE IF NOT EXISTS egresses (
    name TEXT PRIMARY KEY,
    proxy TEXT,
    per_min REAL NOT NULL,
    source TEXT NOT NULL,
    health TEXT
);
CREATE TABLE IF NOT EXISTS egress_assignments (
    key TEXT PRIMARY KEY,
    egress TEXT NOT NULL
);
"""
_status = msgspec.json.Decoder(EgressStatus)


class EgressStore:
    """Async access to the pool's tables (its own connection to the watchers' file)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None

    async def __aenter__(self) -> Self:
        self._db = await connect_wal(self.path, schema=_SCHEMA)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._db is not None:
            await self._db.close()

    @property
    def db(self) -> aiosqlite.Connection:
        assert self._db is not None, "store not opened"
        return self._db

    async def load(self, pool: EgressPool) -> None:
        """Fill ``pool`` with the saved egresses and assignments (and nothing else)."""
        pool.clear()
        async with self.db.execute("SELECT name, proxy, per_min, source FROM egresses") as cur:
            for name, proxy, per_min, source in await cur.fetchall():
                pool.egresses[name] = Egress(name, proxy, float(per_min), source)
        async with self.db.execute("SELECT key, egress FROM egress_assignments") as cur:
            pool.assigned = {k: e for k, e in await cur.fetchall() if e in pool.egresses}
        pool.recount()

    async def put(self, eg: Egress) -> None:
        await self.db.execute(
            "INSERT INTO egresses (name, proxy, per_min, source) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET proxy = excluded.proxy, "
            "per_min = excluded.per_min, source = excluded.source",
            (eg.name, eg.proxy, eg.per_min, eg.source),
        )
        await self.db.commit()

    async def remove(self, name: str) -> None:
        await self.db.execute("DELETE FROM egresses WHERE name = ?", (name,))
        await self.db.execute("DELETE FROM egress_assignments WHERE egress = ?", (name,))
        await self.db.commit()

    async def save(self, pool: EgressPool) -> None:
        """The assignments that changed since the last save, and every egress's health."""
        moved, pool.moved = pool.moved, set()
        rows = [(k, pool.assigned[k]) for k in moved if k in pool.assigned]
        gone = [(k,) for k in moved if k not in pool.assigned]
        await self.db.executemany(
            "INSERT INTO egress_assignments (key, egress) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET egress = excluded.egress",
            rows,
        )
        await self.db.executemany("DELETE FROM egress_assignments WHERE key = ?", gone)
        await self.db.executemany(
            "UPDATE egresses SET health = ? WHERE name = ?",
            [(msgspec.json.encode(s).decode(), s.name) for s in pool.statuses()],
        )
        await self.db.commit()

    async def forget_watchers(self, keys: list[str]) -> None:
        await self.db.executemany(
            "DELETE FROM egress_assignments WHERE key = ?", [(k,) for k in keys]
        )
        await self.db.commit()

    async def statuses(self) -> list[EgressStatus]:
        """Every egress as the leader last saved it (a standby's answer)."""
        async with self.db.execute(
            "SELECT name, proxy, per_min, source, health FROM egresses ORDER BY name"
        ) as cur:
            rows = await cur.fetchall()
        out = []
        for name, proxy, per_min, source, health in rows:
            if health:
                out.append(_status.decode(health))
            else:
                out.append(Egress(name, proxy, float(per_min), source).status())
        return out

    async def pool_costs(self, batch_size: int) -> dict[str, float]:
        """Requests/s each active watcher without its own proxy costs: a ``batch_size``-th
        of a check_alive per interval, plus a resolve for a user."""
        async with self.db.execute(
            "SELECT key, (? + (COALESCE(json_extract(doc, '$.unique_id'), '') != '')) "
            "/ MAX(1, COALESCE(json_extract(doc, '$.poll_interval'), ?)) "
            "FROM watchers WHERE status = 'active' "
            "AND json_extract(doc, '$.options.proxy') IS NULL",
            (1.0 / batch_size, DEFAULT_POLL),
        ) as cur:
            return {str(k): float(c) for k, c in await cur.fetchall()}
