"""The page ⇄ worker message protocol, version 1: the one place it is written down.

Every message is a JSON object with ``v`` (the protocol version, 1) and ``type``.
The page's loader (web/microadjust.js) and the worker (web/worker.js) speak it; the worker hands
each message to :class:`microadjust.browser.session.WorkerSession` and posts back what that returns.

Page → worker (``id``, where given, is echoed in the reply):

=============== ==========================================================================
type            fields
=============== ==========================================================================
init            ``config`` (object: engine parameters such as ``policy``, ``holdout``,
                ``attribution_window_s``), ``context`` (object), ``state`` (object or null:
                what ``checkpoint`` saved on an earlier visit, added by the worker from
                IndexedDB), ``boot_ms`` (number, added by the worker); ``persist`` and
                ``gpc`` (the visitor's consent and Global Privacy Control, from the loader);
                ``priors`` (object or null: the sync server's priors, fetched by the worker
                when ``config.sync`` is set, see :mod:`microadjust.browser.sync_client`)
page            ``context``: a new page view of a single-page app (behaviour starts afresh)
events          ``events``: list of ``{kind, t, ...}``, ``t`` in ms since navigation start;
                ``t`` (optional): the page's time now. Kinds: ``scroll`` (``depth`` 0..1),
                ``click``, ``hidden``, ``visible``, ``slot_in`` / ``slot_out`` (``slot`` is
                / is no longer at least half visible), ``applied`` (``slot``: its decision is
                on screen), ``impression`` (``slot``: seen, half visible for a second)
decide          ``slots``: list of ``{slot, variants}`` (variant names, ``"default"`` the
                page's own content) or ``{slot, items}`` (a ranking's item ids, in page
                order), each with an optional ``trigger`` expression; ``context``, ``t``, ``id``
reward          ``goal`` (name), ``value`` (number), ``slot`` and ``item`` (optional: where
                the goal was clicked; without them every seen decision shares the goal)
forget          erase what this device learned; ``export``: ask for it, with ``id``
packages_loaded ``packages``: the lazily loaded Pyodide packages now importable
=============== ==========================================================================

Worker → page:

=============== ==========================================================================
ready           ``engine`` (version), ``restored`` (bool: state came from an earlier
                visit), ``visits``, ``rewards`` (counts on this device), ``boot_ms``
decisions       ``id``, ``decisions``: list of ``{slot, variant, probability, event_id,
                reason}``; a ranking's also has ``order`` (item ids, top first)
rewarded        ``goal``, ``value``, ``event_ids`` (the decisions it was attributed to)
forgotten       ``id``; ``exported``: ``id``, ``data`` (all this device keeps, as JSON)
error           ``message``; ``slot`` when about one slot; ``fatal: true`` when the engine
                cannot run (the page keeps its defaults)
synced          ``priors_version`` (the sync server's prior now installed, or null),
                ``uploaded`` (noisy batches this device's server acknowledged, in all)
=============== ==========================================================================

A context is a flat object of string, number and boolean values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..core.errors import MicroadjustError

PROTOCOL_VERSION = 1
EVENT_KINDS = frozenset(
    {"scroll", "click", "hidden", "visible", "slot_in", "slot_out", "applied", "impression"}
)
SLOT_EVENTS = frozenset({"slot_in", "slot_out", "applied", "impression"})
MAX_EVENTS_PER_BATCH = 1000
MAX_SLOTS = 50
HANDLED_TYPES = frozenset(
    {"init", "page", "events", "decide", "reward", "forget", "export", "packages_loaded"}
)


@dataclass(frozen=True)
class SlotRequest:
    """One slot to decide: its variants, or a ranking's items; maybe behind a trigger."""

    slot: str
    variants: list[str] | None = None
    items: list[str] | None = None
    trigger: str | None = None


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


def check_envelope(message: Any) -> str:
    """The message's type, once its version and type are known to be valid."""
    if not isinstance(message, Mapping):
        raise ProtocolError(f"a message must be an object, got {type(message).__name__}")
    if message.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(
            f"protocol version {message.get('v')!r} is not supported; this engine speaks"
            f" version {PROTOCOL_VERSION}"
        )
    kind = message.get("type")
    if kind not in HANDLED_TYPES:
        raise ProtocolError(
            f"unknown message type {kind!r}; expected one of {sorted(HANDLED_TYPES)}"
        )
    return kind


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
        if event["kind"] in SLOT_EVENTS and not isinstance(event.get("slot"), str):
            raise ProtocolError(f"{where}: a {event['kind']} event needs a slot name")
    return events


def check_slots(message: Mapping[str, Any]) -> list[SlotRequest]:
    slots = require_field(message, "slots", list)
    if len(slots) > MAX_SLOTS:
        raise ProtocolError(f"'decide' message: at most {MAX_SLOTS} slots at once")
    checked = []
    for index, entry in enumerate(slots):
        where = f"'decide' message: slots[{index}]"
        if not isinstance(entry, Mapping) or not isinstance(entry.get("slot"), str):
            raise ProtocolError(f"{where} needs a slot name")
        names = entry.get("items", entry.get("variants"))
        if not isinstance(names, list) or not all(isinstance(v, str) for v in names):
            raise ProtocolError(f"{where} needs variants (or a ranking's items), a list of names")
        trigger = entry.get("trigger")
        if trigger is not None and not isinstance(trigger, str):
            raise ProtocolError(f"{where}: trigger must be a string")
        kind = "items" if "items" in entry else "variants"
        checked.append(SlotRequest(entry["slot"], trigger=trigger, **{kind: names}))
    return checked


def optional_str(message: Mapping[str, Any], field: str) -> str | None:
    """The field's value if it is a string, None if absent; anything else is an error."""
    return None if message.get(field) is None else require_field(message, field, str)


def check_context(message: Mapping[str, Any]) -> dict[str, str | int | float | bool]:
    context = message.get("context", {})
    if not isinstance(context, Mapping):
        raise ProtocolError(f"{message.get('type')!r} message: context must be an object")
    return dict(context)
