"""The page ⇄ worker message protocol, version 1: the one place it is written down.

Every message is a JSON object with ``v`` (the protocol version, 1) and ``type``.
web/worker.js (the *host*) talks to Python through exactly one call,
``WorkerSession.handle_json(text, from_host)``: a message in, a JSON list of replies out. It
passes on every message of the page's loader (web/microadjust.js) with ``from_host`` false,
and sends its own *host messages* with ``from_host`` true. Of the replies, the *host replies*
below are for web/worker.js; it posts every other reply to the page. :func:`routes` is the
dispatch table: message type → who may send it → the handler.

Page → worker (``id``, where given, is echoed in the reply):

=============== ==========================================================================
type            fields
=============== ==========================================================================
init            ``config`` (object: engine parameters such as ``policy``, ``holdout``,
                ``attribution_window_s``), ``context`` (object), ``state`` (object or null:
                what a ``save`` reply held on an earlier visit, added by the worker from
                IndexedDB), ``boot_ms`` (number, added by the worker); ``persist`` and
                ``gpc`` (the visitor's consent and Global Privacy Control, from the loader);
                ``automated`` (bool: ``navigator.webdriver``; with ``config.automation``
                ``"ignore"``, the default, see :mod:`microadjust.browser.automation`);
                ``priors`` (object or null: the sync server's priors, fetched by the worker
                when ``config.sync`` is set, see :mod:`microadjust.browser.sync`);
                ``ahead`` (optional): the decisions made ahead that the page shows, applied
                before first paint, each ``{slot, variants}`` or ``{slot, items}`` (what
                the page offers now), ``live`` (optional bool), ``event_id``, ``variant``
                and, for a ranking, ``order`` (see :mod:`microadjust.browser.ahead`)
                ``explain`` (bool: the page's debug panel is open, so each decision says
                why; off, decisions pay nothing for it)
page            ``context``: a new page view of a single-page app (behaviour starts afresh)
events          ``events``: list of ``{kind, t, ...}``, ``t`` in ms since navigation start;
                ``t`` (optional): the page's time now. Kinds: ``scroll`` (``depth`` 0..1),
                ``click`` (``trusted``: false for a click made by a script), ``input`` (the
                visitor's first trusted pointer, touch, key or wheel input), ``rage_click``,
                ``dead_click``, ``exit_intent``, ``scroll_back`` (behaviour the loader
                detected, README "Signals"), ``hidden``, ``visible``, ``slot_in`` /
                ``slot_out`` (``slot`` is / is no longer at least half visible), ``applied``
                (``slot``: its decision is on screen), ``impression`` (``slot``: seen, half
                visible for a second; the sync server counts the decision's exposure then,
                and its reward later).
                The loader sends a batch at once when the page is hidden; a ``hidden``
                event makes the worker try a sync upload right away (an ``upload`` reply)
decide          ``slots``: list of ``{slot, variants}`` (variant names, ``"default"`` the
                page's own content) or ``{slot, items}`` (a ranking's item ids, in page
                order), each with an optional ``trigger`` expression and ``live`` (bool:
                ``data-ma-live``, decided even when it shows a decision made ahead);
                ``context``, ``t``, ``id`` (given only by ``microadjust.decide()``; without
                it the slots, but for triggers, are remembered to be decided ahead)
reward          ``goal`` (name), ``value`` (number), ``slot`` and ``item`` (optional: where
                the goal was clicked; without them every seen decision shares the goal),
                ``t`` (optional: the page's time of a goal clicked in a slot, in ms)
consent         ``granted`` (bool): the visitor gave or withdrew consent to keep state on
                this device (and to contribute to the sync server)
forget          ``id``: erase what this device learned, and keep nothing more in this page view
export          ``id``: ask for all this device keeps
=============== ==========================================================================

Worker → page:

=============== ==========================================================================
ready           ``engine`` (version), ``restored`` (bool: state came from an earlier
                visit), ``visits``, ``rewards`` (counts on this device), ``boot_ms``,
                ``max_slots`` (the engine's limit: the loader decides the page's first
                ``max_slots`` slots in document order, and asks in ``decide`` messages of
                at most ``MAX_SLOTS`` (50) slots each); ``ignored`` (why nothing will be
                learned, when the page view looks automated from the start)
decisions       ``id``, ``decisions``: list of ``{slot, variant, probability, event_id,
                reason, holdout}``; a ranking's also has ``order`` (item ids, top first);
                with ``explain`` on, ``why``: ``{score, terms: [{feature, contribution}],
                runner_up: {action, score} or null}`` (:mod:`microadjust.core.why`; for a
                ranking, its top position's)
rewarded        ``goal``, ``value``, ``event_ids`` (the decisions it was attributed to);
                ``ignored`` (why nothing was learned, when the page view looks automated)
ahead           ``decisions``: the next page view's decisions, made ahead, for every slot
                seen (after a page view's decisions, after a reward, when the page is
                hidden), each ``{slot, variant, probability, event_id, reason, holdout,
                expires}``
                (``expires`` in ms since the epoch) and ``variants`` or, for a ranking,
                ``items`` and ``order``; the page keeps them, replacing the earlier ones,
                and shows each at most once. Sent only when the visitor allows storing, and
                only after the ``save`` of the state that holds them
forgotten       ``id``
exported        ``id``, ``data`` (all this device keeps, as JSON)
error           ``message``; ``slot`` when about one slot; ``fatal: true`` when the engine
                cannot run (the page keeps its defaults). web/worker.js posts one itself,
                once, when IndexedDB fails: the engine then runs without keeping state
synced          ``priors_version`` (the sync server's prior now installed, or null),
                ``uploaded`` (batches of counts the sync server acknowledged, in all)
=============== ==========================================================================

Host → worker (web/worker.js's own messages; the page may not send them):

=============== ==========================================================================
checkpoint      ask for the state to persist: answered by ``save``, or by nothing when it
                did not change since the last one or the visitor does not allow storing
sync_upload     the upload timer fired: answered by ``upload`` when a batch may go now
sync_result     ``batch_id``, ``status`` (the HTTP status, 0 when the request failed):
                how the server answered an ``upload``
packages_loaded ``packages``: the lazily loaded Pyodide packages now importable
decide_ahead    make the next page view's decisions now: answered by ``save`` and ``ahead``,
                or by nothing when nothing is kept
=============== ==========================================================================

Worker → host (host replies; never posted to the page):

=============== ==========================================================================
plan            after ``ready``: ``packages`` (Pyodide packages to load once the first
                decisions are out, then send ``packages_loaded``), ``upload_interval_ms``
                (how often to send ``sync_upload``; null when the site takes no uploads)
ahead_due       the decisions made ahead are out of date (a decision or a reward changed what
                the next page view would get): send ``decide_ahead`` in a task of its own,
                so the decisions just made reach the page first
unsaved         the state changed since the last ``checkpoint`` and may be stored: send a
                ``checkpoint`` soon (the host waits a moment, so bursts are saved once)
save            ``state``: the checkpoint to store in IndexedDB (the ``init`` ``state`` of
                the next visit); also unasked, right before an ``ahead`` reply, which the
                host posts only once the write is done
erase           delete the stored checkpoint (``forget``, or consent withdrawn); the replies
                after it wait until it is done
upload          ``url``, ``key``, ``batch_id``, ``body`` (JSON text): POST ``body`` with
                ``keepalive``, after saving a ``checkpoint`` (the batch is stored before it
                is sent, so a retry carries the same ``batch_id``); then send ``sync_result``
=============== ==========================================================================

Persisting is derived, not flagged by hand: after each message the session compares a cheap
fingerprint of what the device keeps with the one of the last ``checkpoint``; while they differ
(and storing is allowed), the reply list ends with ``unsaved``.

A context is a flat object of string, number and boolean values.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from ..core.errors import MicroadjustError

PROTOCOL_VERSION = 1
EVENT_KINDS = frozenset(
    {"scroll", "click", "hidden", "visible", "slot_in", "slot_out", "applied", "impression"}
    | {"input", "rage_click", "dead_click", "exit_intent", "scroll_back"}
)
SLOT_EVENTS = frozenset({"slot_in", "slot_out", "applied", "impression"})
MAX_EVENTS_PER_BATCH = 1000
MAX_SLOTS = 50
HOST_REPLIES = frozenset({"plan", "ahead_due", "unsaved", "save", "erase", "upload"})

Message = Mapping[str, Any]
Replies = list[dict[str, Any]]


def reply(kind: str, **fields: Any) -> dict[str, Any]:
    """A worker → page (or, for the types in :data:`HOST_REPLIES`, worker → host) message."""
    return {"v": PROTOCOL_VERSION, "type": kind, **fields}


class Receiver(Protocol):
    """What answers the messages: one method per message type (the worker session)."""

    def on_init(self, message: Message) -> Replies: ...
    def on_page(self, message: Message) -> Replies: ...
    def on_events(self, message: Message) -> Replies: ...
    def on_decide(self, message: Message) -> Replies: ...
    def on_reward(self, message: Message) -> Replies: ...
    def on_consent(self, message: Message) -> Replies: ...
    def on_forget(self, message: Message) -> Replies: ...
    def on_export(self, message: Message) -> Replies: ...
    def on_checkpoint(self, message: Message) -> Replies: ...
    def on_sync_upload(self, message: Message) -> Replies: ...
    def on_sync_result(self, message: Message) -> Replies: ...
    def on_packages_loaded(self, message: Message) -> Replies: ...
    def on_decide_ahead(self, message: Message) -> Replies: ...


@dataclass(frozen=True, slots=True)
class Route:
    """Who may send a message type, and what handles it."""

    sender: Literal["page", "host"]
    handler: Callable[[Message], Replies]


def routes(receiver: Receiver) -> dict[str, Route]:
    """The dispatch table, message type → route; built once per session."""
    r = receiver
    return {
        "init": Route("page", r.on_init),
        "page": Route("page", r.on_page),
        "events": Route("page", r.on_events),
        "decide": Route("page", r.on_decide),
        "reward": Route("page", r.on_reward),
        "consent": Route("page", r.on_consent),
        "forget": Route("page", r.on_forget),
        "export": Route("page", r.on_export),
        "checkpoint": Route("host", r.on_checkpoint),
        "sync_upload": Route("host", r.on_sync_upload),
        "sync_result": Route("host", r.on_sync_result),
        "packages_loaded": Route("host", r.on_packages_loaded),
        "decide_ahead": Route("host", r.on_decide_ahead),
    }


@dataclass(frozen=True)
class SlotRequest:
    """One slot to decide: its variants, or a ranking's items; maybe behind a trigger."""

    slot: str
    variants: list[str] | None = None
    items: list[str] | None = None
    trigger: str | None = None
    live: bool = False  # data-ma-live: decided even when it shows a decision made ahead


@dataclass(frozen=True)
class Adoption:
    """A decision made ahead that the page shows (``init``'s ``ahead``)."""

    spec: SlotRequest  # the slot as the page offers it now
    event_id: str
    shown: list[str]  # the variant, or the ranking's order


class ProtocolError(MicroadjustError):
    """A message does not follow the protocol; the text says which field and what was expected."""


def require_field(message: Mapping[str, Any], field: str, kind: type | tuple[type, ...]) -> Any:
    """The field's value, if it has the expected type."""
    value = message.get(field)
    if not isinstance(value, kind) or isinstance(value, bool) and bool not in _as_tuple(kind):
        expected = " or ".join(k.__name__ for k in _as_tuple(kind))
        raise ProtocolError(
            f"{message.get('type')!r} message: field {field!r} must be {expected},"
            f" got {type(value).__name__}"
        )
    return value


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def require_finite(message: Mapping[str, Any], field: str) -> float:
    value = float(require_field(message, field, (int, float)))
    if not math.isfinite(value):
        raise ProtocolError(f"{message.get('type')!r} message: field {field!r} must be finite")
    return value


def check_envelope(message: Any, table: Mapping[str, Route], *, from_host: bool) -> Route:
    """The message's route, once its version, type and sender are known to be valid."""
    if not isinstance(message, Mapping):
        raise ProtocolError(f"a message must be an object, got {type(message).__name__}")
    if message.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(
            f"protocol version {message.get('v')!r} is not supported; this engine speaks"
            f" version {PROTOCOL_VERSION}"
        )
    kind = message.get("type")
    route = table.get(kind) if isinstance(kind, str) else None
    if route is None:
        raise ProtocolError(f"unknown message type {kind!r}; expected one of {sorted(table)}")
    if route.sender == "host" and not from_host:
        raise ProtocolError(f"{kind!r} is a message of the worker host; the page cannot send it")
    return route


def check_events(message: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    events = require_field(message, "events", list)
    if len(events) > MAX_EVENTS_PER_BATCH:
        raise ProtocolError(f"'events' message: at most {MAX_EVENTS_PER_BATCH} events per batch")
    for index, event in enumerate(events):
        where = f"'events' message: events[{index}]"
        if not isinstance(event, Mapping) or event.get("kind") not in EVENT_KINDS:
            raise ProtocolError(f"{where} needs a kind among {sorted(EVENT_KINDS)}")
        t = event.get("t")
        if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t) or t < 0:
            raise ProtocolError(f"{where} needs t, a finite time in ms >= 0")
        if event["kind"] == "scroll":
            depth = event.get("depth")
            if isinstance(depth, bool) or not isinstance(depth, int | float) or not 0 <= depth <= 1:
                raise ProtocolError(f"{where}: a scroll event needs depth between 0 and 1")
        if event["kind"] == "click" and not isinstance(event.get("trusted", True), bool):
            raise ProtocolError(f"{where}: a click's trusted must be a boolean")
        if event["kind"] in SLOT_EVENTS and not isinstance(event.get("slot"), str):
            raise ProtocolError(f"{where}: a {event['kind']} event needs a slot name")
    return events


def check_slots(message: Mapping[str, Any]) -> list[SlotRequest]:
    slots = require_field(message, "slots", list)
    if len(slots) > MAX_SLOTS:
        raise ProtocolError(f"'decide' message: at most {MAX_SLOTS} slots at once")
    return [_slot_request(entry, f"'decide' message: slots[{i}]") for i, entry in enumerate(slots)]


def check_ahead(message: Mapping[str, Any]) -> list[Adoption]:
    """The ``init`` message's decisions made ahead that the page shows (none if absent)."""
    entries = message.get("ahead", [])
    if not isinstance(entries, list) or len(entries) > MAX_SLOTS:
        raise ProtocolError(f"'init' message: ahead must be a list of at most {MAX_SLOTS} entries")
    checked = []
    for index, entry in enumerate(entries):
        where = f"'init' message: ahead[{index}]"
        spec = _slot_request(entry, where)
        shown = entry.get("order") if spec.items is not None else [entry.get("variant")]
        if not isinstance(entry.get("event_id"), str) or not _names(shown):
            raise ProtocolError(f"{where} needs an event_id and the variant (or order) shown")
        checked.append(Adoption(spec, entry["event_id"], shown))
    return checked


def _names(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _slot_request(entry: Any, where: str) -> SlotRequest:
    if not isinstance(entry, Mapping) or not isinstance(entry.get("slot"), str):
        raise ProtocolError(f"{where} needs a slot name")
    names = entry.get("items", entry.get("variants"))
    if not _names(names):
        raise ProtocolError(f"{where} needs variants (or a ranking's items), a list of names")
    trigger = entry.get("trigger")
    if trigger is not None and not isinstance(trigger, str):
        raise ProtocolError(f"{where}: trigger must be a string")
    live = entry.get("live", False)
    if not isinstance(live, bool):
        raise ProtocolError(f"{where}: live must be true or false")
    kind = "items" if "items" in entry else "variants"
    return SlotRequest(entry["slot"], trigger=trigger, live=live, **{kind: names})


def optional_str(message: Mapping[str, Any], field: str) -> str | None:
    """The field's value if it is a string, None if absent; anything else is an error."""
    return None if message.get(field) is None else require_field(message, field, str)


def check_context(message: Mapping[str, Any]) -> dict[str, str | int | float | bool]:
    context = message.get("context", {})
    if not isinstance(context, Mapping):
        raise ProtocolError(f"{message.get('type')!r} message: context must be an object")
    return dict(context)
