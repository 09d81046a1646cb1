"""The recorder's NATS wiring: the shared ``recorders`` durable, leases and acks."""

from __future__ import annotations

from shared.service import BaseService
from shared.subjects import RECORDERS


class RecorderService(BaseService):
    name = "recorder"
    description = "Records live rooms; one recorder per room, failover by lease"
    durables = (RECORDERS,)
