"""Which decisions a reward belongs to, and which earned nothing.

A decision is *shown* when the page applied it, and *seen* once its slot was at least half
visible for a second (the page reports that as an impression). Rewards go:

- for a goal clicked inside a slot: to that slot's decision;
- for a goal clicked inside a ranking (a cascade: the visitor scanned the items from the top
  and chose one): the chosen item's position earns the value, the positions above it earn 0,
  those below were not examined and teach nothing;
- for a goal reported from JavaScript (``microadjust.reward(name, value)``): to every seen
  decision still open.

Each decision earns at most one reward. A seen decision that earns none within the
attribution window earns 0 when the window closes; a decision never seen teaches nothing.

>>> book = Attribution()
>>> book.show("e1", "cta", t=0.0)
>>> book.see("e1")
True
>>> book.conversions()
['e1']
>>> book.closed(now=10.0, window_s=5.0)
[('e1', 5.0)]
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..core.errors import InvalidState


@dataclass
class Shown:
    """One applied decision: its slot, when it was made, and whether it was seen."""

    slot: str
    t: float
    seen: bool = False
    item: str | None = None  # for a ranking: the item placed at this decision's position
    position: int = 0


@dataclass
class Attribution:
    """Open decisions of this visitor, keyed by event id."""

    open: dict[str, Shown] = field(default_factory=dict)

    def show(
        self, event_id: str, slot: str, t: float, item: str | None = None, position: int = 0
    ) -> None:
        """Record that the page applied a decision."""
        self.open[event_id] = Shown(slot, t, item=item, position=position)

    def see(self, event_id: str) -> bool:
        """Mark a decision seen; True only the first time (False if it was seen already, or
        is not open: resolved, or unknown), so each exposure is counted once."""
        shown = self.open.get(event_id)
        if shown is None or shown.seen:
            return False
        shown.seen = True
        return True

    def direct(self, slot: str, item: str | None = None) -> list[tuple[str, float]]:
        """(event id, share of the value) for a goal clicked inside ``slot`` (at ``item``)."""
        mine = [(eid, shown) for eid, shown in self.open.items() if shown.slot == slot]
        if item is None:
            latest = max(mine, key=lambda pair: pair[1].t, default=None)
            return [] if latest is None else [(latest[0], 1.0)]
        hit = next((s.position for _, s in mine if s.item == item), None)
        last = hit if hit is not None else len(mine)  # the last item has no decision of its own
        return [(eid, float(s.position == hit)) for eid, s in mine if s.position <= last]

    def conversions(self) -> list[str]:
        """Seen decisions still open: those a site-wide goal rewards."""
        return [eid for eid, shown in self.open.items() if shown.seen]

    def resolve(self, event_ids: list[str], slot: str | None = None) -> None:
        """Close decisions that got their reward; with ``slot``, close the slot's others too."""
        for eid in event_ids:
            self.open.pop(eid, None)
        if slot is not None:
            for eid in [e for e, s in self.open.items() if s.slot == slot]:
                del self.open[eid]

    def closed(self, now: float, window_s: float) -> list[tuple[str, float]]:
        """Seen decisions whose window closed unrewarded, with the time it closed; drops
        unseen ones past their window. The caller rewards the former with 0."""
        due = [(eid, s) for eid, s in self.open.items() if now - s.t >= window_s]
        for eid, _ in due:
            del self.open[eid]
        return [(eid, s.t + window_s) for eid, s in due if s.seen]

    def to_state(self) -> dict[str, Any]:
        return {eid: asdict(shown) for eid, shown in self.open.items()}

    @classmethod
    def from_state(cls, state: Any) -> Attribution:
        try:
            return cls({eid: Shown(**shown) for eid, shown in dict(state).items()})
        except (TypeError, ValueError) as error:
            raise InvalidState(f"attribution state is malformed: {error}") from error
