"""The worker's message handler: plain Python, so it runs (and is tested) on CPython too.

web/worker.js boots Pyodide, then passes every page message through
:meth:`WorkerSession.handle_json` and posts back the replies. The messages are described in
:mod:`microadjust.protocol`.

>>> session = WorkerSession()
>>> [reply["type"] for reply in session.handle({"v": 1, "type": "init", "config": {"seed": 1}})]
['ready']
>>> decide = {"v": 1, "type": "decide", "slots": [{"slot": "cta", "variants": ["default", "b"]}]}
>>> session.handle(decide)[0]["decisions"][0]["variant"] in ("default", "b")
True
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from typing import Any

from . import __version__
from .engine import Engine
from .errors import InvalidState, MicroadjustError
from .protocol import (
    PROTOCOL_VERSION,
    ProtocolError,
    check_context,
    check_envelope,
    check_events,
    check_slots,
    require_field,
    require_finite,
)
from .signals import Signals

STATE_SCHEMA = 1


def reply(kind: str, **fields: Any) -> dict[str, Any]:
    """A worker → page message."""
    return {"v": PROTOCOL_VERSION, "type": kind, **fields}


class WorkerSession:
    """One page view's engine, behaviour signals and persistence, driven by messages."""

    def __init__(self) -> None:
        self.engine: Engine | None = None
        self.signals = Signals()
        self.visits = 0
        self.rewards = 0  # rewards received on this device, over all visits
        self.last_event: dict[str, str] = {}  # slot -> event id of the decision shown
        self.dirty = False  # True when state changed since the last checkpoint

    def handle_json(self, text: str) -> str:
        """JSON in, JSON list of replies out; never raises: a broken engine never breaks a page."""
        try:
            replies = self.handle(json.loads(text))
        except MicroadjustError as error:
            replies = [reply("error", message=str(error), fatal=self.engine is None)]
        except Exception as error:  # noqa: BLE001 - reported to the page, which keeps its defaults
            replies = [
                reply("error", message=f"internal error: {error!r}", fatal=self.engine is None)
            ]
        return json.dumps(replies)

    def handle(self, message: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Apply one page message; raise a MicroadjustError, changing nothing, if it is invalid."""
        kind = check_envelope(message)
        if kind == "init":
            return self._init(message)
        if self.engine is None:
            raise ProtocolError(f"{kind!r} message before 'init'")
        return getattr(self, f"_{kind}")(message)

    def lazy_packages(self) -> list[str]:
        """Pyodide packages the configured features need, to load after the first decision."""
        return self.engine.lazy_packages() if hasattr(self.engine, "lazy_packages") else []

    def checkpoint(self) -> str:
        """The state to persist on this device, as JSON; marks it saved."""
        self.dirty = False
        return json.dumps(
            {
                "schema": STATE_SCHEMA,
                "visits": self.visits,
                "rewards": self.rewards,
                "engine": self.engine.state(),
            }
        )

    # --- message handlers -------------------------------------------------------------------

    def _init(self, message: Mapping[str, Any]) -> list[dict[str, Any]]:
        if self.engine is not None:
            raise ProtocolError("'init' message: the session is already initialized")
        config = dict(require_field(message, "config", Mapping))
        saved = message.get("state")
        replies = []
        restored = None
        if saved is not None:
            try:
                restored = restore(saved)
            except MicroadjustError as error:
                note = f"starting afresh: the saved state is unusable ({error})"
                replies.append(reply("error", message=note))
        if restored is None:
            config.setdefault("seed", secrets.randbits(32))  # each visitor explores differently
            try:
                restored = Engine(**config), 0, 0
            except TypeError as error:
                raise ProtocolError(f"'init' message: bad engine configuration: {error}") from error
        self.engine, visits, self.rewards = restored
        self.visits, self.dirty = visits + 1, True
        ready = reply(
            "ready",
            engine=__version__,
            restored=visits > 0,
            visits=self.visits,
            rewards=self.rewards,
            boot_ms=message.get("boot_ms"),
        )
        return [*replies, ready]

    def _events(self, message: Mapping[str, Any]) -> list[dict[str, Any]]:
        self.signals.ingest(check_events(message))
        return []

    def _decide(self, message: Mapping[str, Any]) -> list[dict[str, Any]]:
        slots = check_slots(message)
        context = {**check_context(message), **self.signals.snapshot(), "visits": self.visits}
        decisions, replies = [], []
        for slot, variants in slots:  # each slot on its own: a bad one keeps its default
            try:
                decision = self.engine.rank(context, variants, slot=slot)
            except MicroadjustError as error:
                replies.append(reply("error", message=f"slot {slot!r} keeps its default: {error}"))
                continue
            self.last_event[slot] = decision.event_id
            decisions.append(
                {
                    "slot": slot,
                    "variant": decision.action,
                    "probability": decision.probability,
                    "event_id": decision.event_id,
                    "reason": decision.reason,
                }
            )
        self.dirty = self.dirty or bool(decisions)
        return [reply("decisions", decisions=decisions), *replies]

    def _reward(self, message: Mapping[str, Any]) -> list[dict[str, Any]]:
        slot = require_field(message, "slot", str)
        value = require_finite(message, "value")
        if slot not in self.last_event:
            raise ProtocolError(f"'reward' message: slot {slot!r} has no decision to reward")
        event_id = self.last_event[slot]
        self.engine.reward(event_id, value)
        del self.last_event[slot]
        self.rewards += 1
        self.dirty = True
        return [reply("rewarded", slot=slot, event_id=event_id, value=value)]

    def _packages_loaded(self, message: Mapping[str, Any]) -> list[dict[str, Any]]:
        require_field(message, "packages", list)
        return []


def restore(saved: Any) -> tuple[Engine, int, int]:
    """Engine, visits and rewards from a checkpoint; InvalidState if it cannot be used."""
    if not isinstance(saved, Mapping) or saved.get("schema") != STATE_SCHEMA:
        raise InvalidState(f"expected a checkpoint with schema {STATE_SCHEMA}")
    counts = [saved.get("visits"), saved.get("rewards")]
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in counts):
        raise InvalidState("checkpoint 'visits' and 'rewards' must be non-negative integers")
    return Engine.from_state(saved["engine"]), *counts
