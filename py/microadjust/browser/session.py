"""The worker's message handler: plain Python, so it runs (and is tested) on CPython too.

web/worker.js boots Pyodide, then passes every page message through
:meth:`WorkerSession.handle_json` and posts back the replies. The messages are described in
:mod:`microadjust.browser.protocol`.

>>> session = WorkerSession()
>>> [reply["type"] for reply in session.handle({"v": 1, "type": "init", "config": {"seed": 1}})]
['ready']
>>> decide = {"v": 1, "type": "decide", "slots": [{"slot": "cta", "variants": ["default", "b"]}]}
>>> session.handle(decide)[0]["decisions"][0]["variant"] in ("default", "b")
True
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import Mapping
from typing import Any

from .. import __version__
from ..core.engine import Engine
from ..core.errors import InvalidState, MicroadjustError, UnknownEvent
from .attribution import Attribution
from .protocol import (
    PROTOCOL_VERSION,
    ProtocolError,
    SlotRequest,
    check_context,
    check_envelope,
    check_events,
    check_slots,
    optional_str,
    require_field,
    require_finite,
)
from .segments import Segmenter
from .signals import Signals
from .sync_client import SyncClient
from .triggers import Trigger, parse_trigger

STATE_SCHEMA = 1
SEGMENT_SIGNALS = ("dwell_s", "scroll_depth", "clicks", "idle_s", "visits")
# options for the worker itself; the rest of the page's config configures the Engine
WORKER_OPTIONS = frozenset({"segments", "sync"})
SIGNALS = frozenset(
    {
        "dwell_s",
        "scroll_depth",
        "clicks",
        "idle_s",
        "visits",
        "returning",
        "device",
        "hour",
        "weekday",
        "visible_s",
    }
)


def reply(kind: str, **fields: Any) -> dict[str, Any]:
    """A worker → page message."""
    return {"v": PROTOCOL_VERSION, "type": kind, **fields}


class WorkerSession:
    """One page view's engine, behaviour signals, triggers and attribution, driven by messages."""

    def __init__(self) -> None:
        self.engine: Engine | None = None
        self.config: dict[str, Any] = {}
        self.context: dict[str, Any] = {}  # the page's context: device, hour, referrer...
        self.signals = Signals()
        self.attribution = Attribution()
        self.decided: dict[str, list[tuple[str, str | None]]] = {}  # slot -> (event id, item)
        self.waiting: dict[str, tuple[Trigger, SlotRequest]] = {}  # slots behind a trigger
        self.visits = 0
        self.rewards = 0  # rewards received on this device, over all visits
        self.dirty = False  # True when state changed since the last checkpoint
        self.sync = SyncClient()  # the optional sync server: priors down, noisy sums up
        self.segmenter: Segmenter | None = None  # behavioural micro-segments, when configured
        self.segment_rows: list[dict[str, float]] = []  # kept until scikit-learn has loaded
        self.can_fit_segments = False

    def handle_json(self, text: str) -> str:
        """JSON in, JSON list of replies out; never raises: a broken engine never breaks a page."""
        try:
            replies = self.handle(json.loads(text))
        except MicroadjustError as error:
            replies = [reply("error", message=str(error), fatal=self.engine is None)]
        except Exception as error:  # noqa: BLE001 - reported to the page, which keeps its defaults
            message = f"internal error: {error!r}"
            replies = [reply("error", message=message, fatal=self.engine is None)]
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
        """Pyodide packages the configured features need, loaded after the first decision."""
        return ["scikit-learn"] if self.config.get("segments") else []

    def snapshot(self) -> dict[str, Any]:
        """Everything this device keeps about the visitor, as a JSON-ready object."""
        return {
            "schema": STATE_SCHEMA,
            "visits": self.visits,
            "rewards": self.rewards,
            "attribution": self.attribution.state(),
            "engine": self.engine.state(),
            "sync": self.sync.state(),
            "segments": self.segmenter.to_dict() if self.segmenter else None,
        }

    def checkpoint(self) -> str:
        """The snapshot as JSON, to persist; marks it saved."""
        self.dirty = False
        return json.dumps(self.snapshot())

    # --- message handlers -------------------------------------------------------------------

    def _init(self, message: Mapping[str, Any]) -> list[dict[str, Any]]:
        if self.engine is not None:
            raise ProtocolError("'init' message: the session is already initialized")
        config = dict(require_field(message, "config", Mapping))
        context = check_context(message)
        replies = []
        restored = None
        if message.get("state") is not None:
            try:
                restored = restore(message["state"])
            except MicroadjustError as error:
                note = f"starting afresh: the saved state is unusable ({error})"
                replies.append(reply("error", message=note))
        if restored is None:
            restored = fresh_engine(config), 0, 0, Attribution()
        self.engine, visits, self.rewards, self.attribution = restored
        self.config, self.context = config, context
        self.visits, self.dirty = visits + 1, True
        self._segments_init(message)
        ready = reply(
            "ready",
            engine=__version__,
            restored=visits > 0,
            visits=self.visits,
            rewards=self.rewards,
            boot_ms=message.get("boot_ms"),
        )
        self._close_windows()
        return [*replies, ready, *self._sync_init(message)]

    def _page(self, message: Mapping[str, Any]) -> list[dict[str, Any]]:
        """A new page view in a single-page app: fresh behaviour signals, same visitor."""
        self.context = check_context(message)
        self.signals, self.waiting, self.decided = Signals(), {}, {}
        return []

    def _events(self, message: Mapping[str, Any]) -> list[dict[str, Any]]:
        events = check_events(message)
        now_ms = message.get("t")
        self.signals.ingest(events)
        for event in events:
            slot = event.get("slot", "")
            if event["kind"] == "applied" and slot in self.decided:
                for position, (event_id, item) in enumerate(self.decided[slot]):
                    self.attribution.show(event_id, slot, time.time(), item, position)
                self.dirty = True
            elif event["kind"] == "impression" and slot in self.decided:
                for event_id, _ in self.decided[slot]:
                    self.attribution.see(event_id)
                self.dirty = True
        ready = [
            spec
            for slot, (trigger, spec) in list(self.waiting.items())
            if trigger(self._signals(slot, now_ms))
        ]
        for spec in ready:
            del self.waiting[spec.slot]
        self._close_windows()
        return self._decisions(ready, None)

    def _decide(self, message: Mapping[str, Any]) -> list[dict[str, Any]]:
        slots = check_slots(message)
        request_id = message.get("id")
        if "context" in message:
            self.context = check_context(message)
        now_ms, errors, now = message.get("t"), [], []
        for spec in slots:
            if spec.trigger is None:
                now.append(spec)
                continue
            try:
                trigger = parse_trigger(spec.trigger)
                unknown = set(trigger.signals) - SIGNALS - set(self.context)
                if unknown:
                    raise ProtocolError(
                        f"unknown signal {sorted(unknown)[0]!r}; known: "
                        f"{', '.join(sorted(SIGNALS | set(self.context)))}"
                    )
            except MicroadjustError as error:
                errors.append(reply("error", slot=spec.slot, message=f"trigger: {error}"))
                continue
            if trigger(self._signals(spec.slot, now_ms)):
                now.append(spec)
            else:
                self.waiting[spec.slot] = (trigger, spec)
        return [*self._decisions(now, request_id), *errors]

    def _reward(self, message: Mapping[str, Any]) -> list[dict[str, Any]]:
        goal = require_field(message, "goal", str)
        value = require_finite(message, "value")
        slot, item = optional_str(message, "slot"), optional_str(message, "item")
        if slot is None:
            shares = [(event_id, 1.0) for event_id in self.attribution.conversions()]
        else:
            shares = self.attribution.direct(slot, item)
        rewarded = []
        for event_id, share in shares:
            try:
                self.engine.reward(event_id, value * share)
                rewarded.append(event_id)
            except UnknownEvent:  # expired in the engine meanwhile: nothing to learn
                pass
        self.attribution.resolve([event_id for event_id, _ in shares], slot=slot)
        self.rewards += bool(rewarded)
        self.dirty = self.dirty or bool(shares)
        return [reply("rewarded", goal=goal, value=value, event_ids=rewarded)]

    def _forget(self, message: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Erase what this device learned; the worker deletes the stored copy."""
        self.engine = fresh_engine(self.config)
        self.attribution, self.decided, self.waiting = Attribution(), {}, {}
        self.visits, self.rewards, self.dirty = 1, 0, False
        if self.segmenter is not None:
            self.segmenter, self.segment_rows = (
                Segmenter(SEGMENT_SIGNALS, self.segmenter.n_segments),
                [],
            )
        self.sync.pending = self.sync.watermark = None
        return [reply("forgotten", id=message.get("id"))]

    def _export(self, message: Mapping[str, Any]) -> list[dict[str, Any]]:
        return [reply("exported", id=message.get("id"), data=self.snapshot())]

    def _packages_loaded(self, message: Mapping[str, Any]) -> list[dict[str, Any]]:
        self.can_fit_segments = "scikit-learn" in require_field(message, "packages", list)
        return []

    # --- behavioural micro-segments (scikit-learn loads after the first decision) -----------

    def _segments_init(self, message: Mapping[str, Any]) -> None:
        option = self.config.get("segments")
        if not option:
            return
        saved = message.get("state") if isinstance(message.get("state"), Mapping) else {}
        with contextlib.suppress(InvalidState):  # an unusable saved segmenter: start afresh
            self.segmenter = (
                Segmenter.from_dict(saved["segments"]) if saved.get("segments") else None
            )
        if self.segmenter is None:
            n = option.get("n", 4) if isinstance(option, Mapping) else 4
            self.segmenter = Segmenter(SEGMENT_SIGNALS, n_segments=n, seed=self.visits)

    def _segment(self, context: Mapping[str, Any]) -> str:
        """The visitor's segment now; the segments learn from each decision's signals."""
        row = {name: float(context[name]) for name in SEGMENT_SIGNALS}
        self.segment_rows.append(row)
        if self.can_fit_segments:
            self.segmenter.partial_fit(self.segment_rows)
            self.segment_rows = []
        return self.segmenter.segment(row)

    # --- the optional sync server (web/worker.js fetches, this decides) ----------------------

    def _sync_init(self, message: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Configure sync from ``config.sync``, restore its state, install fetched priors."""
        saved = message.get("state")
        try:
            self.sync.configure(
                self.config.get("sync"),
                gpc=message.get("gpc") is True,
                consent=message.get("persist") is not False,
                saved=saved.get("sync") if isinstance(saved, Mapping) else None,
            )
        except MicroadjustError as error:
            return [reply("error", message=f"sync is off: {error}")]
        if self.sync.config is None or message.get("priors") is None:
            return []
        problems = self.sync.apply_priors(self.engine, message["priors"])
        self.dirty = True
        return [
            *(reply("error", message=problem) for problem in problems),
            reply("synced", priors_version=self.sync.priors_version, uploaded=self.sync.uploaded),
        ]

    def sync_plan(self) -> str:
        """JSON: the sync URLs, key and upload interval for the worker, or null."""
        return json.dumps(self.sync.describe())

    def sync_consent(self, granted: bool) -> None:
        """The visitor granted or withdrew consent (the page's ``consent`` message)."""
        self.sync.set_consent(bool(granted))
        self.dirty = True

    def sync_upload(self) -> str:
        """JSON body of the batch to upload now, or null; a new batch must be saved first."""
        try:
            body = self.sync.next_upload(self.engine)
        except MicroadjustError:
            return "null"
        self.dirty = self.dirty or body is not None
        return json.dumps(body)

    def sync_result(self, batch_id: str, status: int) -> str:
        """JSON list of replies once the server answered ``status`` to ``batch_id``."""
        if 200 <= status < 300:
            done = self.sync.acknowledged(batch_id)
        elif 400 <= status < 500 and status not in (408, 429):
            done = self.sync.rejected(batch_id)  # refused for good: never resend it
        else:
            return "[]"  # server or network trouble: the same batch is retried later
        self.dirty = self.dirty or done
        synced = reply(
            "synced", priors_version=self.sync.priors_version, uploaded=self.sync.uploaded
        )
        return json.dumps([synced] if done else [])

    # --- helpers ----------------------------------------------------------------------------

    def _context(self, now_ms: float | None = None) -> dict[str, Any]:
        """What the engine sees: page context, behaviour so far, visits."""
        return {
            **self.context,
            **self.signals.snapshot(now_ms),
            "visits": self.visits,
            "returning": self.visits > 1,
        }

    def _signals(self, slot: str, now_ms: float | None) -> dict[str, Any]:
        """What a slot's trigger sees: the context and the slot's own visible time."""
        visible_s = self.signals.visible_s(slot, now_ms or self.signals.last_t_ms)
        return {**self._context(now_ms), "visible_s": visible_s}

    def _decisions(self, specs: list[SlotRequest], request_id: Any) -> list[dict[str, Any]]:
        """Decide each slot on its own: one that the engine rejects keeps its default."""
        if not specs and request_id is None:
            return []
        decisions, errors = [], []
        context = self._context()
        if self.segmenter is not None:
            context["segment"] = self._segment(context)
        for spec in specs:
            try:
                decision, events = self._decide_one(spec, context)
            except MicroadjustError as error:
                errors.append(reply("error", slot=spec.slot, message=f"keeps its default: {error}"))
                continue
            self.decided[spec.slot] = events
            decisions.append(decision)
        self.dirty = self.dirty or bool(decisions)
        return [reply("decisions", id=request_id, decisions=decisions), *errors]

    def _decide_one(
        self, spec: SlotRequest, context: dict[str, Any]
    ) -> tuple[dict[str, Any], list[tuple[str, str | None]]]:
        """The decision for the page, and its events (event id, ranked item) for attribution."""
        if spec.items is None:
            d = self.engine.rank(context, spec.variants, slot=spec.slot)
            decision = {
                "slot": spec.slot,
                "variant": d.action,
                "probability": d.probability,
                "event_id": d.event_id,
                "reason": d.reason,
            }
            return decision, [(d.event_id, None)]
        ranking = self.engine.rank_cascade(context, spec.items, slot=spec.slot)
        top = ranking.decisions[0] if ranking.decisions else None
        decision = {
            "slot": spec.slot,
            "variant": ranking.order[0],
            "order": ranking.order,
            "probability": top.probability if top else 1.0,
            "event_id": top.event_id if top else None,
            "reason": top.reason if top else "a single item",
        }
        return decision, [(d.event_id, d.action) for d in ranking.decisions]

    def _close_windows(self) -> None:
        """Seen decisions whose attribution window closed without a reward learn 0."""
        window = self.engine.params["attribution_window_s"]
        for event_id, closed_at in self.attribution.closed(time.time(), window):
            with contextlib.suppress(UnknownEvent):
                self.engine.reward(event_id, 0.0, now=closed_at)
            self.dirty = True


def fresh_engine(config: Mapping[str, Any]) -> Engine:
    """A new engine for this visitor; each visitor explores with a seed of its own."""
    try:
        params = {k: v for k, v in config.items() if k not in WORKER_OPTIONS}
        return Engine(**{"seed": secrets.randbits(32), **params})
    except TypeError as error:
        raise ProtocolError(f"'init' message: bad engine configuration: {error}") from error


def restore(saved: Any) -> tuple[Engine, int, int, Attribution]:
    """Engine, visits, rewards and open decisions from a checkpoint; InvalidState if unusable."""
    if not isinstance(saved, Mapping) or saved.get("schema") != STATE_SCHEMA:
        raise InvalidState(f"expected a checkpoint with schema {STATE_SCHEMA}")
    counts = [saved.get("visits"), saved.get("rewards")]
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in counts):
        raise InvalidState("checkpoint 'visits' and 'rewards' must be non-negative integers")
    attribution = Attribution.from_state(saved.get("attribution", {}))
    return Engine.from_state(saved["engine"]), *counts, attribution
