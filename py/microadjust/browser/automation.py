"""Whether a page view looks automated: a bot's clicks must not teach the engine or the fleet.

The loader reports facts (``automated`` at ``init``: ``navigator.webdriver``; an ``input``
event at the visitor's first trusted pointer, touch, key or wheel input; ``click`` events with
``trusted``; the time of a goal clicked in a slot); the rules are here, so they are tested in
one place. A goal from JavaScript (``microadjust.reward``) is not judged by input or time: a
thank-you page rewards on load, after input on an earlier page. Once a page
view looks automated it stays so, and with the site's ``"automation": "ignore"`` (the default)
the session learns, keeps and uploads nothing from then on. Decisions are still made and
shown, so the page looks the same to a bot as to a person.

>>> view = Automation.configure("ignore", webdriver=False)
>>> view.observe([{"kind": "input", "t": 900}])
>>> view.goal_clicked(t_ms=1500.0)
>>> view.learns
True
>>> view.goal_clicked(t_ms=120.0)
>>> view.learns, view.reason
(False, 'a goal 120 ms after the page started (a person needs at least 500 ms)')
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .protocol import ProtocolError

MODES = ("ignore", "learn")
MIN_GOAL_MS = 500  # a goal sooner after navigation start: no one has read the page yet
MIN_CLICK_GAP_MS = 30  # two clicks closer together: faster than any human double-click


@dataclass
class Automation:
    """This page view's verdict: ``reason`` says why it looks automated (None: it does not)."""

    mode: str = "ignore"
    human_input: bool = False  # a trusted pointer, touch, key or wheel input happened
    last_click_ms: float | None = None
    reason: str | None = None

    @classmethod
    def configure(cls, mode: Any, *, webdriver: bool) -> Automation:
        """The verdict at ``init``: the page's ``config.automation`` and navigator.webdriver."""
        if mode not in MODES:
            raise ProtocolError(
                f"'init' message: config 'automation' must be one of {', '.join(map(repr, MODES))},"
                f" got {mode!r}"
            )
        return cls(mode=mode, reason="navigator.webdriver is set" if webdriver else None)

    @property
    def learns(self) -> bool:
        """Whether the session may learn, keep and upload: a person, or a site that opted in."""
        return self.reason is None or self.mode == "learn"

    def observe(self, events: Iterable[Mapping[str, Any]]) -> None:
        """Fold a batch of validated events: the first input, and clicks too fast for a person."""
        for event in sorted(events, key=lambda e: e["t"]):
            if event["kind"] == "input":
                self.human_input = True
            elif event["kind"] == "click" and event.get("trusted") is not False:
                t = float(event["t"])
                if self.last_click_ms is not None and t - self.last_click_ms < MIN_CLICK_GAP_MS:
                    gap = round(t - self.last_click_ms)
                    self._flag(f"two clicks {gap} ms apart (a person needs {MIN_CLICK_GAP_MS} ms)")
                self.last_click_ms = t

    def goal_clicked(self, t_ms: float | None) -> None:
        """Judge a goal clicked in a slot at page time ``t_ms`` (None: not known): a person's
        click comes after their pointer or key input, and not before they could see the page."""
        if not self.human_input:
            self._flag("a goal before any pointer, touch or key input")
        elif t_ms is not None and t_ms < MIN_GOAL_MS:
            self._flag(
                f"a goal {round(t_ms)} ms after the page started"
                f" (a person needs at least {MIN_GOAL_MS} ms)"
            )

    def _flag(self, reason: str) -> None:
        if self.reason is None:  # the first evidence is the one reported
            self.reason = reason
