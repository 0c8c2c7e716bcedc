"""Decisions made ahead: the next page view's choice for each slot, drawn during this one.

A slot in view at load is never swapped under the visitor's eyes, so the engine, which starts
after first paint, could never decide it on that page view. Instead, after a page view's slots
are decided, after a reward and when the page is hidden, the worker decides the *next* page
view's choice for every slot of the site it has seen (not triggers, not manual slots) with
:meth:`~microadjust.core.engine.Engine.rank_ahead`: the current model, the context the next view
will likely have, holdout and guardrails, a new event id and the exact propensity. The loader
keeps them in ``localStorage`` until they expire, applies each before the next page view's first
paint, and names them in its ``init`` message. The worker then *adopts* each one
(:meth:`~microadjust.core.engine.Engine.adopt`): it is that page view's decision of the slot,
shown, seen, rewarded and learned like a live one, with the propensity it was drawn with, and
the slot is not decided again (unless it is ``data-ma-live``). A decision made ahead that is
never shown teaches nothing.

The :class:`AheadBook`, part of the worker's saved state, keeps the slots seen and the decisions
made ahead not yet shown. The page's copy is never trusted: a decision is adopted only if this
book holds its event id for that slot, unexpired, offered among the same names and showing the
same choice; the propensity, context and features come from the book.

The race: the worker stores a new set in IndexedDB *before* it posts the set to the page (the
``save`` reply precedes the ``ahead`` reply, and web/worker.js waits for the write), so the page
never holds a decision the worker could not have stored. The page may miss the newest set (it
was closed first), so the book keeps the last :data:`KEPT` sets of each slot. If nothing
matches (another tab's state was written last, or the write failed), the adoption is refused
with a console warning: the slot shows that variant with no decision behind it, learns
nothing from it, and is decided live (applied once out of view, like any slot in view).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..core.errors import InvalidState, MicroadjustError
from ..core.records import AheadDecision
from ..core.state import StateReader
from .protocol import MAX_SLOTS, Adoption, SlotRequest

__all__ = ["AheadBook", "AheadRefused", "Issued", "DEFAULT_EXPIRY_S", "KEPT"]

DEFAULT_EXPIRY_S = 24 * 3600.0
KEPT = 3  # sets kept per slot: the page holds the last one it received, maybe not the newest


class AheadRefused(MicroadjustError):
    """The page shows a decision made ahead that this device cannot stand behind."""


@dataclass(frozen=True, slots=True)
class Issued:
    """One slot's decision made ahead, as handed to the page: the engine's decisions (one; a
    ranking's: one per position, top first), the names the page must offer, its expiry."""

    slot: str
    ranking: bool
    offered: list[str]  # the variants, or the ranking's items
    decisions: list[AheadDecision]
    expires: float  # seconds since the epoch

    @property
    def event_id(self) -> str:
        return self.decisions[0].decision.event_id

    @property
    def shown(self) -> list[str]:
        """The variant, or the ranking's order: what the page shows."""
        top = [d.action for d in self.decisions]
        return top + [item for item in self.offered if item not in top] if self.ranking else top

    def for_page(self) -> dict[str, Any]:
        """The entry of the ``ahead`` reply, which the loader keeps."""
        d = self.decisions[0].decision
        offered = (
            {"items": self.offered, "order": self.shown}
            if self.ranking
            else {"variants": self.offered}
        )
        return {
            "slot": self.slot,
            "variant": d.action,
            "probability": d.probability,
            "event_id": d.event_id,
            "reason": d.reason,
            "holdout": d.holdout,
            "expires": round(self.expires * 1000),  # ms, as the page's Date.now()
            **offered,
        }

    def to_state(self) -> dict[str, Any]:
        return {
            "ranking": self.ranking,
            "offered": list(self.offered),
            "decisions": [d.to_state() for d in self.decisions],
            "expires": self.expires,
        }

    @classmethod
    def from_state(cls, slot: str, state: StateReader, dim: int) -> Issued:
        decisions = [AheadDecision.from_state(d, dim) for d in state["decisions"].list()]
        if not decisions:
            raise state["decisions"].error("at least one decision")
        offered = [name.str() for name in state["offered"].list()]
        return cls(slot, state["ranking"].bool(), offered, decisions, state["expires"].float())


@dataclass
class AheadBook:
    """The slots this device has seen, and its decisions made ahead that are not shown yet."""

    declared: dict[str, SlotRequest] = field(default_factory=dict)  # the most recent last
    issued: dict[str, list[Issued]] = field(default_factory=dict)  # per slot, oldest first

    def declare(self, spec: SlotRequest) -> None:
        """A slot seen on a page: decided ahead from now on (the :data:`MAX_SLOTS` most recent)."""
        self.declared.pop(spec.slot, None)
        self.declared[spec.slot] = SlotRequest(spec.slot, spec.variants, spec.items)
        while len(self.declared) > MAX_SLOTS:
            forgotten = next(iter(self.declared))
            del self.declared[forgotten]
            self.issued.pop(forgotten, None)

    def issue(self, issued: list[Issued]) -> None:
        """A new set, handed to the page; each slot keeps its :data:`KEPT` latest."""
        for one in issued:
            kept = self.issued.setdefault(one.slot, [])
            kept.append(one)
            del kept[:-KEPT]

    def find(self, adoption: Adoption, now: float) -> Issued:
        """The decision made ahead that the page says it shows; :class:`AheadRefused` (and
        nothing changes) unless it is one of this book's, unexpired, for the same names."""
        slot = adoption.spec.slot
        kept = self.issued.get(slot, [])
        issued = next((one for one in kept if one.event_id == adoption.event_id), None)
        if issued is None:
            raise AheadRefused(
                f"event {adoption.event_id!r} is not a decision made ahead for slot {slot!r}"
                " that this device holds (already shown, superseded, or never stored)"
            )
        if now > issued.expires:
            raise AheadRefused(f"the decision made ahead for slot {slot!r} has expired")
        offered = adoption.spec.items if issued.ranking else adoption.spec.variants
        if offered is None or sorted(offered) != sorted(issued.offered):
            raise AheadRefused(
                f"slot {slot!r} offers {offered}, the decision made ahead chose among"
                f" {issued.offered}"
            )
        if adoption.shown != issued.shown:
            raise AheadRefused(
                f"slot {slot!r} shows {adoption.shown}, the decision made ahead was {issued.shown}"
            )
        return issued

    def shown(self, slot: str) -> None:
        """The slot shows one of its decisions made ahead: the others are never shown."""
        self.issued.pop(slot, None)

    def prune(self, now: float) -> None:
        """Drop the expired decisions: never shown, they teach nothing."""
        for slot in list(self.issued):
            self.issued[slot] = [one for one in self.issued[slot] if now <= one.expires]
            if not self.issued[slot]:
                del self.issued[slot]

    def fingerprint(self) -> list[Any]:
        """Changes whenever :meth:`to_state` does (for the session's checkpoint test)."""
        issued = [[one.event_id for one in kept] for kept in self.issued.values()]
        return [list(self.declared), issued]

    def to_state(self) -> dict[str, Any]:
        declared = {
            name: {"items": spec.items} if spec.items is not None else {"variants": spec.variants}
            for name, spec in self.declared.items()
        }
        issued = {slot: [one.to_state() for one in kept] for slot, kept in self.issued.items()}
        return {"declared": declared, "issued": issued}

    @classmethod
    def from_state(cls, state: Any, dim: int) -> AheadBook:
        """The book of a checkpoint (an empty one for a checkpoint without it); InvalidState
        names what is wrong."""
        if state is None:
            return cls()
        root = StateReader(state, "ahead")
        book = cls()
        for name, spec in root["declared"].items():
            kind = "items" if spec.get("items") is not None else "variants"
            names = [n.str() for n in spec[kind].list()]
            book.declared[name] = SlotRequest(name, **{kind: names})
        for slot, kept in root["issued"].items():
            book.issued[slot] = [Issued.from_state(slot, one, dim) for one in kept.list()]
        if len(book.declared) > MAX_SLOTS:
            raise InvalidState(f"ahead.declared: expected at most {MAX_SLOTS} slots")
        return book
