"""The indexer's NATS wiring: its durable on recording.finished and upload.done."""

from __future__ import annotations

from shared.service import BaseService
from shared.subjects import INDEXER


class IndexerService(BaseService):
    name = "indexer"
    description = "Indexes recorded files; answers file queries; applies retention"
    durables = (INDEXER,)
