"""Two indexers share one INDEX_DB (services/indexer/service.py): what one writes, the other's
GET /files must list. Found by scenario 9 (test_leaders_frozen): after the indexer leader
changed, GET /files without filters listed 2 of 3 indexed files.

Each IndexStore caches the total of each filter until its OWN next write
(services/indexer/store.py, ``_total``: the cache is keyed by ``self._generation``, which only
this process's writes bump), and ``query`` cuts the page at that total (``limit = min(page_size,
total - offset)``). An instance that counted before another instance wrote (a standby after a
rebuild or a query, a thawed former leader) keeps answering the old total: the files written
since, or the oldest ones on the page, are missing from GET /files until it writes itself.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.indexer.store import IndexStore
from shared.files import FileQuery, IndexedFile

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def _file(n: int) -> IndexedFile:
    return IndexedFile(
        name=f"{n}.mp4", path=f"7001/{n}.mp4", size=1000, mtime=T0 + timedelta(minutes=n)
    )


@pytest.mark.xfail(
    strict=True,
    reason="services/indexer/store.py _total: the per-process totals cache is not invalidated "
    "by another indexer's writes to the shared INDEX_DB; query() truncates pages to it",
)
async def test_a_standby_indexer_lists_what_the_leader_indexed(tmp_path: Path) -> None:
    db = tmp_path / "index.sqlite3"
    async with IndexStore(db) as leader, IndexStore(db) as standby:
        await leader.bulk_insert([_file(1), _file(2)])
        assert (await standby.query(FileQuery())).total == 2  # the standby counts (and caches)
        await leader.bulk_insert([_file(3)])  # the leader indexes one more file
        page = await standby.query(FileQuery())
        assert page.total == 3
        assert [f.path for f in page.items] == ["7001/3.mp4", "7001/2.mp4", "7001/1.mp4"]
