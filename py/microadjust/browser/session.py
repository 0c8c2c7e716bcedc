"""The worker's message handler: plain Python, so it runs (and is tested) on CPython too.

web/worker.js boots Pyodide, then passes every message, the page's and its own, through
:meth:`WorkerSession.handle_json`, its one call into Python. The messages, and the dispatch
table that routes each to its ``on_<type>`` handler here, are in
:mod:`microadjust.browser.protocol`; sync and segments are wired in by their own classes
(:mod:`microadjust.browser.sync`, :class:`microadjust.browser.segments.Segments`).

>>> session = WorkerSession()
>>> [reply["type"] for reply in session.handle({"v": 1, "type": "init", "config": {"seed": 1}})]
['ready', 'plan', 'unsaved']
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
from dataclasses import dataclass
from typing import Any

from .. import __version__
from ..core.engine import Engine
from ..core.errors import InvalidState, MicroadjustError, UnknownEvent
from ..core.params import is_finite_number
from ..core.records import Decision
from .ahead import DEFAULT_EXPIRY_S, AheadBook, Issued
from .attribution import Attribution
from .automation import Automation
from .protocol import (
    Adoption,
    Message,
    ProtocolError,
    Replies,
    SlotRequest,
    check_ahead,
    check_context,
    check_envelope,
    check_events,
    check_slots,
    optional_str,
    reply,
    require_field,
    require_finite,
    routes,
)
from .segments import Segments
from .signals import Signals
from .sync import Sync
from .triggers import Trigger, parse_trigger

STATE_SCHEMA = 1
# options for the worker itself; the rest of the page's config configures the Engine
WORKER_OPTIONS = frozenset({"segments", "sync", "automation", "ahead_expiry_s"})
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
        "rage_clicks",
        "dead_clicks",
        "exit_intent",
        "scroll_back",
    }
)


@dataclass(frozen=True, slots=True)
class Placed:
    """A slot's decision on this page view: its events for the attribution and, for the sync
    server, the one decision it counts (a ranking's top position: the item placed first),
    what the page offered in the slot and the context it was decided in."""

    events: list[tuple[str, str | None]]  # (event id, ranked item or None), top first
    counted: Decision | None  # None: a ranking of a single item decides nothing
    offered: list[str]
    context: Mapping[str, Any]
    decided_at: float  # the engine's time of the decision: its attribution window starts here
    ahead: bool = False  # made ahead and shown from first paint: not decided again (unless live)


class WorkerSession:
    """One page view's engine, behaviour signals, triggers and attribution, driven by messages."""

    def __init__(self) -> None:
        self.engine: Engine | None = None
        self.config: dict[str, Any] = {}
        self.context: dict[str, Any] = {}  # the page's context: device, hour, referrer...
        self.signals = Signals()
        self.attribution = Attribution()
        self.decided: dict[str, Placed] = {}  # slot -> its latest decision on this page view
        self.waiting: dict[str, tuple[Trigger, SlotRequest]] = {}  # slots behind a trigger
        self.visits = 0
        self.rewards = 0  # rewards received on this device, over all visits
        self.persist = False  # the visitor allows keeping state on this device
        self.explain = False  # the page's debug panel is open: decisions say why
        self.sync = Sync.off()  # the optional sync server: priors down, bounded counts up
        self.segments: Segments | None = None  # behavioural micro-segments, when configured
        self.ahead = AheadBook()  # slots seen, and decisions made ahead for the next page view
        self.ahead_expiry_s = DEFAULT_EXPIRY_S  # 0: nothing is decided ahead
        self.automation = Automation()  # does this page view look automated, and does it learn
        self.saved = ""  # the fingerprint of the last checkpoint
        self.routes = routes(self)

    @property
    def keeps(self) -> bool:
        """Whether to store state on this device: the visitor allows it, and the page view may
        learn (an automated one, unless the site says ``"automation": "learn"``, keeps nothing)."""
        return self.persist and self.automation.learns

    @property
    def dirty(self) -> bool:
        """True when what the device keeps changed since the last checkpoint."""
        return self.fingerprint() != self.saved

    def fingerprint(self) -> str:
        """A cheap stand-in for :meth:`snapshot` that changes whenever it does: the engine
        changes only by this page view's decisions (each has a new event id in ``decided``)
        and by rewards, which close open decisions in the attribution."""
        decided = {
            slot: [event_id for event_id, _ in placed.events]
            for slot, placed in self.decided.items()
        }
        kept = [self.persist, self.visits, self.rewards, decided, self.ahead.fingerprint()]
        return json.dumps([*kept, self.attribution.to_state(), self.sync.to_state()])

    def handle_json(self, text: str, from_host: bool = False) -> str:
        """JSON in, JSON list of replies out; never raises: a broken engine never breaks a page.

        The worker's one call into Python: ``from_host`` is true for its own messages."""
        try:
            replies = self.handle(json.loads(text), from_host=from_host)
        except MicroadjustError as error:
            replies = [reply("error", message=str(error), fatal=self.engine is None)]
        except Exception as error:  # noqa: BLE001 - reported to the page, which keeps its defaults
            message = f"internal error: {error!r}"
            replies = [reply("error", message=message, fatal=self.engine is None)]
        return json.dumps(replies)

    def handle(self, message: Message, *, from_host: bool = False) -> Replies:
        """Apply one message; raise a MicroadjustError, changing nothing, if it is invalid."""
        route = check_envelope(message, self.routes, from_host=from_host)
        if self.engine is None and message["type"] != "init":
            raise ProtocolError(f"{message['type']!r} message before 'init'")
        replies = route.handler(message)
        if self.keeps and self.dirty:
            replies.append(reply("unsaved"))
        return replies

    def snapshot(self) -> dict[str, Any]:
        """Everything this device keeps about the visitor, as a JSON-ready object."""
        return {
            "schema": STATE_SCHEMA,
            "visits": self.visits,
            "rewards": self.rewards,
            "attribution": self.attribution.to_state(),
            "engine": self.engine.to_state(),
            "sync": self.sync.to_state(),
            "segments": self.segments.to_state() if self.segments else None,
            "ahead": self.ahead.to_state(),
        }

    # --- message handlers (the dispatch table is protocol.routes) ---------------------------

    def on_init(self, message: Message) -> Replies:
        if self.engine is not None:
            raise ProtocolError("'init' message: the session is already initialized")
        config = dict(require_field(message, "config", Mapping))
        context = check_context(message)
        expiry_s = config.get("ahead_expiry_s", DEFAULT_EXPIRY_S)
        if not is_finite_number(expiry_s) or expiry_s < 0:
            raise ProtocolError(
                "'init' message: ahead_expiry_s must be a number of seconds >= 0 (0: decide"
                f" nothing ahead), got {expiry_s!r}"
            )
        automation = Automation.configure(
            config.get("automation", "ignore"), webdriver=message.get("automated") is True
        )
        saved = message.get("state")
        notes, restored = [], None
        if saved is not None:
            try:
                restored = restore(saved)
            except MicroadjustError as error:
                note = f"starting afresh: the saved state is unusable ({error})"
                notes.append(reply("error", message=note))
        ahead = AheadBook()
        if restored is None:
            restored = fresh_engine(config), 0, 0, Attribution()
        else:
            try:  # the worker's own decisions made ahead: unusable ones cost only themselves
                ahead = AheadBook.from_state(saved.get("ahead"), restored[0].params["dim"])
            except MicroadjustError as error:
                notes.append(reply("error", message=f"decisions made ahead dropped: {error}"))
        engine, visits, rewards, attribution = restored
        try:
            adoptions = check_ahead(message)
        except ProtocolError as error:  # the page's decisions made ahead only: the engine runs
            adoptions = []
            notes.append(reply("error", message=f"no decision made ahead is adopted: {error}"))
        saved = saved if isinstance(saved, Mapping) else {}
        option = config.get("segments")
        segments = (
            Segments.from_state(saved.get("segments"), option=option, seed=visits + 1)
            if option
            else None
        )
        persist = message.get("persist") is not False
        try:
            sync = Sync.from_state(
                saved.get("sync"),
                config=config.get("sync"),
                gpc=message.get("gpc") is True,
                consent=persist,
            )
            sync_off = []
        except MicroadjustError as error:
            sync, sync_off = Sync.off(), [reply("error", message=f"sync is off: {error}")]
        self.engine, self.rewards, self.attribution = engine, rewards, attribution
        self.config, self.context, self.visits = config, context, visits + 1
        self.segments, self.sync, self.persist = segments, sync, persist
        self.ahead, self.ahead_expiry_s = ahead, float(expiry_s)
        self.automation = automation
        self.explain = message.get("explain") is True
        priors = sync.load_priors(message.get("priors"))  # before windows close: their 0s count
        ready = reply(
            "ready",
            engine=__version__,
            restored=visits > 0,
            visits=self.visits,
            rewards=self.rewards,
            boot_ms=message.get("boot_ms"),
            max_slots=engine.params["max_slots"],
            **({} if automation.learns else {"ignored": self._ignored()}),
        )
        self._close_windows()
        refused = self._adopt(adoptions)
        plan = reply(
            "plan",
            packages=list(Segments.packages) if segments else [],
            upload_interval_ms=sync.upload_interval_ms(),
        )
        return [*notes, ready, *sync_off, *priors, *refused, plan]

    def on_page(self, message: Message) -> Replies:
        """A new page view in a single-page app: fresh behaviour signals, same visitor."""
        self.context = check_context(message)
        self.signals, self.waiting, self.decided = Signals(), {}, {}
        return []

    def on_events(self, message: Message) -> Replies:
        events = check_events(message)
        now_ms = message.get("t")
        self.automation.observe(events)
        self.signals.ingest(events)
        for event in events:
            slot = event.get("slot", "")
            if event["kind"] == "applied" and slot in self.decided:
                placed = self.decided[slot]
                for position, (event_id, item) in enumerate(placed.events):
                    self.attribution.show(event_id, slot, placed.decided_at, item, position)
            elif event["kind"] == "impression" and slot in self.decided:
                self._seen(slot, self.decided[slot])
        ready = [
            spec
            for slot, (trigger, spec) in list(self.waiting.items())
            if trigger(self._signals(slot, now_ms))
        ]
        for spec in ready:
            del self.waiting[spec.slot]
        self._close_windows()
        # the page is hidden, maybe for good: offer the sync server a batch now, not later
        hidden = any(event["kind"] == "hidden" for event in events)
        replies = self._decisions(ready, None)
        if hidden:  # what it learned on this view goes into the next one's decisions, and
            # their save comes before an upload, whose own save must precede the request
            replies += [*self._decide_ahead(), *self._upload()]
        return replies

    def on_decide(self, message: Message) -> Replies:
        slots = check_slots(message)
        request_id = message.get("id")
        if "context" in message:
            self.context = check_context(message)
        now_ms, errors, now = message.get("t"), [], []
        for spec in slots:
            if request_id is None and spec.trigger is None:
                self.ahead.declare(spec)
            placed = self.decided.get(spec.slot)
            if request_id is None and placed is not None and placed.ahead and not spec.live:
                continue  # it shows a decision made ahead: one decision per slot and page view
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
        replies = [*self._decisions(now, request_id), *errors]
        return replies if request_id is not None else [*replies, *self._ahead_due()]

    def on_reward(self, message: Message) -> Replies:
        goal = require_field(message, "goal", str)
        value = require_finite(message, "value")
        slot, item = optional_str(message, "slot"), optional_str(message, "item")
        t_ms = None if message.get("t") is None else require_finite(message, "t")
        if slot is not None:  # clicked in a slot (a goal from JavaScript may come on page load)
            self.automation.goal_clicked(t_ms)
        if not self.automation.learns:  # a bot's goal teaches nothing; its decisions stay open
            ignored = self._ignored()
            return [reply("rewarded", goal=goal, value=value, event_ids=[], ignored=ignored)]
        if slot is None:
            shares = [(event_id, 1.0) for event_id in self.attribution.conversions()]
        else:
            shares = self.attribution.direct(slot, item)
        rewarded, now = [], time.time()
        for event_id, share in shares:
            self.sync.client.record_reward(
                event_id, value * share, now=now
            )  # if its exposure was counted
            try:
                self.engine.reward(event_id, value * share)
                rewarded.append(event_id)
            except UnknownEvent:  # expired in the engine meanwhile: nothing to learn
                pass
        self.attribution.resolve([event_id for event_id, _ in shares], slot=slot)
        self.rewards += bool(rewarded)
        ahead = self._ahead_due() if rewarded else []  # the model changed
        return [reply("rewarded", goal=goal, value=value, event_ids=rewarded), *ahead]

    def on_consent(self, message: Message) -> Replies:
        """The visitor gave or withdrew consent to keep state here (and to upload)."""
        self.persist = require_field(message, "granted", bool)
        self.sync.set_consent(self.persist)
        return [] if self.persist else [reply("erase")]

    def on_forget(self, message: Message) -> Replies:
        """Erase what this device learned, and keep nothing more in this page view."""
        self.engine = fresh_engine(self.config)
        self.attribution, self.decided, self.waiting = Attribution(), {}, {}
        self.visits, self.rewards, self.persist = 1, 0, False
        self.ahead = AheadBook()
        if self.segments is not None:
            self.segments.forget()
        self.sync.forget()
        return [reply("erase"), reply("forgotten", id=message.get("id"))]

    def on_export(self, message: Message) -> Replies:
        return [reply("exported", id=message.get("id"), data=self.snapshot())]

    def on_checkpoint(self, message: Message) -> Replies:
        """The state to store, when it changed and the visitor allows keeping it."""
        if not (self.keeps and self.dirty):
            return []
        return [self._save()]

    def on_sync_upload(self, message: Message) -> Replies:
        return self._upload()

    def on_sync_result(self, message: Message) -> Replies:
        batch_id = require_field(message, "batch_id", str)
        return self.sync.result(batch_id, require_field(message, "status", int))

    def on_packages_loaded(self, message: Message) -> Replies:
        packages = require_field(message, "packages", list)
        if self.segments is not None:
            self.segments.packages_loaded(packages)
        return []

    # --- helpers ----------------------------------------------------------------------------

    def _save(self) -> dict[str, Any]:
        """The ``save`` reply of the state as it is now, which is then no longer dirty."""
        self.saved = self.fingerprint()
        return reply("save", state=self.snapshot())

    def _ignored(self) -> str:
        """Why this page view learns nothing, for the site owner (``ignored`` in replies)."""
        return f"this page view looks automated: {self.automation.reason}"

    def _upload(self) -> Replies:
        """A batch for the sync server, unless this page view looks automated (and the site
        does not learn from those): then nothing goes up."""
        return self.sync.upload() if self.automation.learns else []

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
        self._close_windows()  # before the engine's clock moves on past a window that closed
        context = self._context()
        if self.segments is not None:
            context["segment"] = self.segments.segment(context)
        for spec in specs:
            if spec.slot not in self.decided:  # its first decision on this page view
                errors += self.sync.install_priors(self.engine, spec.slot, context)
            try:
                decision, placed = self._decide_one(spec, context)
            except MicroadjustError as error:
                errors.append(reply("error", slot=spec.slot, message=f"keeps its default: {error}"))
                continue
            self.decided[spec.slot] = placed
            decisions.append(decision)
        return [reply("decisions", id=request_id, decisions=decisions), *errors]

    def _decide_one(
        self, spec: SlotRequest, context: dict[str, Any]
    ) -> tuple[dict[str, Any], Placed]:
        """The decision for the page, and what the attribution and the sync server need of it."""
        now = time.time()  # one clock for the engine and the attribution window
        explain = self.explain
        if spec.items is None:
            d = self.engine.rank(context, spec.variants, slot=spec.slot, now=now, explain=explain)
            decision = {
                "slot": spec.slot,
                "variant": d.action,
                "probability": d.probability,
                "event_id": d.event_id,
                "reason": d.reason,
                "holdout": d.holdout,
                **({"why": d.why.to_dict()} if d.why else {}),
            }
            return decision, Placed([(d.event_id, None)], d, spec.variants, context, now)
        ranking = self.engine.rank_cascade(
            context, spec.items, slot=spec.slot, now=now, explain=explain
        )
        top = ranking.decisions[0] if ranking.decisions else None
        decision = {
            "slot": spec.slot,
            "variant": ranking.order[0],
            "order": ranking.order,
            "probability": top.probability if top else 1.0,
            "event_id": top.event_id if top else None,
            "reason": top.reason if top else "a single item",
            "holdout": top.holdout if top else False,
            **({"why": top.why.to_dict()} if top and top.why else {}),
        }
        events = [(d.event_id, d.action) for d in ranking.decisions]
        return decision, Placed(events, top, spec.items, context, now)

    def _adopt(self, adoptions: list[Adoption]) -> Replies:
        """The decisions made ahead that the page showed from first paint become this page
        view's decisions of their slots, shown now; a refused one teaches nothing."""
        now, refused = time.time(), []
        for adoption in adoptions:
            slot = adoption.spec.slot
            try:
                issued = self.ahead.find(adoption, now)
                decisions = self.engine.adopt(issued.decisions, now=now)
            except MicroadjustError as error:
                note = f"the decision made ahead for slot {slot!r} is not adopted: {error}"
                refused.append(reply("error", message=f"{note}; the slot is decided now"))
                continue
            self.ahead.shown(slot)
            items = [d.action for d in decisions] if issued.ranking else [None]
            events = [(d.event_id, item) for d, item in zip(decisions, items, strict=True)]
            context = issued.decisions[0].context
            self.decided[slot] = Placed(
                events, decisions[0], issued.offered, context, now, ahead=True
            )
            for position, (event_id, item) in enumerate(events):
                self.attribution.show(event_id, slot, now, item, position)
        self.ahead.prune(now)
        return refused

    def on_decide_ahead(self, message: Message) -> Replies:
        return self._decide_ahead()

    def _ahead_due(self) -> Replies:
        """Ask the host for ``decide_ahead`` in a later task (the next page view's decisions
        are made after this page's reach it); nothing when none would be made."""
        return [reply("ahead_due")] if self._decides_ahead() else []

    def _decides_ahead(self) -> bool:
        return bool(self.keeps and self.ahead_expiry_s and self.ahead.declared)

    def _decide_ahead(self) -> Replies:
        """The next page view's decision of every slot seen, stored (``save``) before the
        page gets them (``ahead``); nothing when nothing is kept (no consent, or an automated
        page view)."""
        if not self._decides_ahead():
            return []
        now = time.time()
        self.ahead.prune(now)
        context = {  # the next page view's, most likely: reached by a link, nothing done yet
            **self.context,
            **Signals().snapshot(),
            "referrer": "internal",
            "visits": self.visits + 1,
            "returning": True,
        }
        if self.segments is not None:
            context["segment"] = self.segments.segment(context)
        issued, errors = [], []
        for spec in self.ahead.declared.values():
            errors += self.sync.install_priors(self.engine, spec.slot, context)  # as live ones
            try:
                if spec.items is None:
                    decisions = [self.engine.rank_ahead(context, spec.variants, slot=spec.slot)]
                else:
                    decisions = self.engine.rank_cascade_ahead(context, spec.items, slot=spec.slot)
            except MicroadjustError:  # e.g. more slots than the engine takes: decided live
                continue
            if decisions:
                offered = spec.variants if spec.items is None else spec.items
                expires = now + self.ahead_expiry_s
                issued.append(
                    Issued(spec.slot, spec.items is not None, offered, decisions, expires)
                )
        self.ahead.issue(issued)
        return [*errors, self._save(), reply("ahead", decisions=[one.for_page() for one in issued])]

    def _seen(self, slot: str, placed: Placed) -> None:
        """The slot's decision was seen (the attribution rule): each of its open events may now
        earn a site-wide goal, and the sync server counts the exposure of the first time."""
        newly = [event_id for event_id, _ in placed.events if self.attribution.see(event_id)]
        d = placed.counted
        if d is not None and d.event_id in newly and self.automation.learns:
            self.sync.client.record_shown(
                d.event_id,
                slot,
                d.action,
                variants=placed.offered,
                holdout=d.holdout,
                context=placed.context,
                now=time.time(),
            )

    def _close_windows(self) -> None:
        """Seen decisions whose attribution window closed without a reward learn 0 (nothing
        is learned while the page view looks automated)."""
        if not self.automation.learns:
            return
        window = self.engine.params["attribution_window_s"]
        for event_id, closed_at in self.attribution.closed(time.time(), window):
            self.sync.client.record_reward(event_id, 0.0, now=closed_at)
            with contextlib.suppress(UnknownEvent):
                self.engine.reward(event_id, 0.0, now=closed_at)


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
