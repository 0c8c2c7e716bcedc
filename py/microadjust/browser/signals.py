"""Behavioural signals of one page view, folded from the page's event batches.

>>> s = Signals()
>>> s.ingest([{"kind": "scroll", "t": 2000, "depth": 0.4}, {"kind": "click", "t": 5000}])
>>> s.snapshot(now_ms=10000)["scroll_depth"], s.snapshot(now_ms=10000)["idle_s"]
(0.4, 5.0)
>>> s.ingest([{"kind": "rage_click", "t": 5100}, {"kind": "exit_intent", "t": 9000}])
>>> s.snapshot()["rage_clicks"], s.snapshot()["exit_intent"], s.snapshot()["scroll_back"]
(1, True, 0)

The loader detects the anomalies (``rage_click``, ``dead_click``, ``exit_intent``,
``scroll_back``; thresholds in web/microadjust.js and the README's signal table); here they
are counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Signals:
    """Dwell, scroll depth, clicks, idle time, anomalies and per-slot visible time, in one
    page view."""

    scroll_depth: float = 0.0
    clicks: int = 0
    rage_clicks: int = 0
    dead_clicks: int = 0
    exit_intent: bool = False
    scroll_back: int = 0
    last_t_ms: float = 0.0
    last_interaction_ms: float = 0.0
    hidden_since_ms: float | None = None
    hidden_total_ms: float = 0.0
    slot_visible_since: dict[str, float] = field(default_factory=dict)
    slot_visible_ms: dict[str, float] = field(default_factory=dict)

    def ingest(self, events: Iterable[Mapping[str, Any]]) -> None:
        """Fold a batch of validated events (see microadjust.browser.protocol) in time order."""
        for event in sorted(events, key=lambda e: e["t"]):
            t, kind = float(event["t"]), event["kind"]
            self.last_t_ms = max(self.last_t_ms, t)
            if kind == "scroll":
                self.scroll_depth = max(self.scroll_depth, float(event["depth"]))
                self.last_interaction_ms = t
            elif kind == "click":
                self.clicks += 1
                self.last_interaction_ms = t
            elif kind == "rage_click":
                self.rage_clicks += 1
            elif kind == "dead_click":
                self.dead_clicks += 1
            elif kind == "exit_intent":
                self.exit_intent = True
            elif kind == "scroll_back":
                self.scroll_back += 1
            elif kind == "hidden" and self.hidden_since_ms is None:
                self.hidden_since_ms = t
            elif kind == "visible" and self.hidden_since_ms is not None:
                self.hidden_total_ms += t - self.hidden_since_ms
                self.hidden_since_ms = None
            elif kind == "slot_in":
                self.slot_visible_since.setdefault(event["slot"], t)
            elif kind == "slot_out" and event["slot"] in self.slot_visible_since:
                since = self.slot_visible_since.pop(event["slot"])
                self.slot_visible_ms[event["slot"]] = (
                    self.slot_visible_ms.get(event["slot"], 0) + t - since
                )

    def visible_s(self, slot: str, now_ms: float) -> float:
        """How long the slot has been at least half visible, in seconds."""
        since = self.slot_visible_since.get(slot)
        running = now_ms - since if since is not None else 0.0
        return (self.slot_visible_ms.get(slot, 0.0) + running) / 1000

    def snapshot(self, now_ms: float | None = None) -> dict[str, float | bool]:
        """The signals as context features; ``now_ms`` defaults to the latest event's time."""
        now = max(self.last_t_ms, now_ms or 0.0)
        hidden = self.hidden_total_ms + (
            now - self.hidden_since_ms if self.hidden_since_ms is not None else 0.0
        )
        return {
            "dwell_s": round((now - hidden) / 1000, 3),
            "scroll_depth": self.scroll_depth,
            "clicks": self.clicks,
            "idle_s": round((now - self.last_interaction_ms) / 1000, 3),
            "rage_clicks": self.rage_clicks,
            "dead_clicks": self.dead_clicks,
            "exit_intent": self.exit_intent,
            "scroll_back": self.scroll_back,
        }
