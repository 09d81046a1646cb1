"""The scheduler's egress pick in memory (``EgressPicker``), for the recorder's handler tests."""

from __future__ import annotations

from services.recorder.deps import PickFailed
from shared.egresses import PickReply


class FakeEgressPicker:
    """``egresses`` maps each egress's name to its sealed proxy (None: direct); a name asked
    for that is not in it gets the first by name, as the least-loaded. ``asked`` lists the
    names asked for; ``failing`` makes every pick fail as with no scheduler running."""

    def __init__(self, egresses: dict[str, str | None] | None = None) -> None:
        self.egresses = dict(egresses or {})
        self.asked: list[str | None] = []
        self.failing = False

    async def pick(self, name: str | None) -> PickReply:
        self.asked.append(name)
        if self.failing:
            msg = "no scheduler answers egress picks"
            raise PickFailed(msg)
        if not self.egresses:
            return PickReply()
        chosen = name if name in self.egresses else min(self.egresses)
        return PickReply(name=chosen, proxy=self.egresses[chosen])
