"""Decisions made ahead, as a returning visitor meets them: every slot in view is decided before
first paint, each arrives as a decision with its event id, and clicks on it teach the engine."""

from __future__ import annotations

import json
from typing import Any

import pytest

from .helpers import BELOW_THE_FOLD, fixture_page, record, worker_caught_up

CACHE = "JSON.parse(localStorage.getItem('microadjust:ahead') || '{}')"

# On each slot's first change: what it shows, and whether anything was painted yet.
FIRST_APPLIED = """window.__firstApplied = {};
new MutationObserver((changes) => {
  for (const change of changes) {
    const slot = change.target.dataset.maSlot ?? change.target.dataset.maRank;
    if (slot in window.__firstApplied) continue;
    window.__firstApplied[slot] = {applied: change.target.dataset.maApplied,
                                  paints: performance.getEntriesByType('paint').length};
  }
}).observe(document, {attributes: true, subtree: true, attributeFilter: ['data-ma-applied']});"""

IN_VIEW = (
    "<h1 data-ma-slot='headline'>Plain<template data-ma-variant='bold'>Bold</template>"
    "<template data-ma-variant='calm'>Calm</template></h1>"
    "<div data-ma-slot='cta'><a href='#' data-ma-goal='cta'>Buy</a>"
    "<template data-ma-variant='deal'><a href='#' data-ma-goal='cta'>Deal</a></template></div>"
    "<ul data-ma-rank='cards'><li data-ma-item='a'>A</li><li data-ma-item='b'>B</li>"
    "<li data-ma-item='c'>C</li></ul>"
)


class Site:
    """One page at /t/page.html whose markup the test may change between page views."""

    def __init__(self, visit, server: str, html: str) -> None:
        self.visit, self.html = visit, html
        visit.context.route(
            server + "/t/page.html*",
            lambda route: route.fulfill(status=200, content_type="text/html", body=self.html),
        )
        record(visit.page)
        visit.page.goto(server + "/t/page.html")

    def cached_after_decisions(self, *slots: str) -> dict[str, Any]:
        """Wait for this page view's decisions made ahead (for ``slots``, new ones); return them."""
        page = self.visit.page
        page.evaluate("window.microadjust.ready")
        shown = [d["event_id"] for d in page.evaluate("window.__decisions")]
        return page.wait_for_function(
            f"""([slots, shown]) => {{
              const cache = {CACHE};
              const ahead = window.__received.some((m) => m.type === 'ahead');
              return ahead && slots.every((s) => cache[s] && !shown.includes(cache[s].event_id))
                && cache;
            }}""",
            arg=[list(slots), shown],
            timeout=120_000,  # it includes a boot, which the learning test allows 120 s
        ).json_value()

    def returning(self) -> None:
        """The visitor comes back: the next page view, recording each slot's first change."""
        self.visit.page.add_init_script(FIRST_APPLIED)
        self.visit.page.reload()

    def first_applied(self) -> dict[str, dict[str, Any]]:
        return self.visit.page.evaluate("window.__firstApplied")

    def decision_events(self) -> dict[str, dict[str, Any]]:
        return {d["slot"]: d for d in self.visit.page.evaluate("window.__decisions")}


def choice(entry: dict[str, Any]) -> str:
    """What data-ma-applied shows for a cached decision: the variant, or a ranking's order."""
    return ",".join(entry["order"]) if "order" in entry else entry["variant"]


@pytest.mark.parametrize("defer", [False, True], ids=["synchronous tag", "defer"])
def test_a_returning_visitor_sees_engine_decisions_in_every_slot_in_view_before_first_paint(
    server, visit, defer
):
    site = Site(visit, server, fixture_page(IN_VIEW + BELOW_THE_FOLD, defer=defer))
    cached = site.cached_after_decisions("headline", "cta", "cards")
    site.returning()
    page = visit.page
    page.wait_for_function("window.__decisions.length >= 3")
    first = site.first_applied()
    for slot in ("headline", "cta", "cards"):
        assert first[slot]["applied"] == choice(cached[slot]), slot
        if not defer:  # as each slot is parsed; with defer at DOMContentLoaded, usually before
            assert first[slot]["paints"] == 0, slot
        decision = site.decision_events()[slot]
        assert decision["event_id"] == cached[slot]["event_id"] and decision["ahead"] is True
        assert decision["probability"] == cached[slot]["probability"] and decision["reason"]
    page.evaluate("window.microadjust.ready")
    worker_caught_up(page)
    decided = [d["slot"] for m in page.evaluate("window.__received") if m["type"] == "decisions"
               for d in m["decisions"]]  # fmt: skip
    assert decided == []  # one decision per slot and page view: the one made ahead
    page.click("[data-ma-slot=cta] a")  # the engine adopted it: a click rewards that decision
    rewarded = page.wait_for_function(
        "window.__received.find((m) => m.type === 'rewarded')"
    ).json_value()
    assert rewarded["event_ids"] == [cached["cta"]["event_id"]]
    assert visit.errors == [] and not [w for w in visit.warnings() if "microadjust" in w]


def test_a_visitor_who_clicks_only_one_variant_without_scrolling_gets_it(server, visit):
    offer = (
        "<div data-ma-slot='offer'><a href='#' data-ma-goal='buy'>Plain offer</a>"
        "<template data-ma-variant='x'><a href='#' data-ma-goal='buy'>Offer X</a></template></div>"
    )
    config = {"policy": "epsilon_greedy", "epsilon": 0.02, "boot_timeout_s": 120}  # many boots
    site = Site(visit, server, fixture_page(offer + BELOW_THE_FOLD, config, defer=False))
    page = visit.page
    site.cached_after_decisions("offer")  # a first visit: the slot in view stays as it is
    shown: list[str] = []
    while "x" not in shown or len(shown) - shown.index("x") <= 10:
        assert len(shown) < 8 or "x" in shown, f"x was never shown: {shown}"
        site.returning()
        page.wait_for_function("window.__decisions.some((d) => d.slot === 'offer')")
        decision = site.decision_events()["offer"]
        assert decision["ahead"] is True  # before first paint, from the view before
        shown.append(decision["variant"])
        if decision["variant"] == "x":
            page.evaluate("window.microadjust.ready")
            page.click("[data-ma-slot=offer] a")
            page.wait_for_function(  # the model changed: the next view's decision comes after
                """() => {
                  const types = window.__received.map((m) => m.type);
                  const rewarded = types.indexOf('rewarded');
                  return rewarded >= 0 && types.lastIndexOf('ahead') > rewarded;
                }""",
                timeout=60_000,
            )
        site.cached_after_decisions("offer")
        assert page.evaluate("window.scrollY") == 0
    last = shown[-10:]
    assert last.count("x") >= 8, shown


def test_an_expired_decision_or_one_for_changed_variants_is_not_applied(server, visit):
    slots = {
        name: f"<div data-ma-slot='{name}'>{name}<template data-ma-variant='b'>B</template>"
        f"<template data-ma-variant='c'>C</template></div>"
        for name in ("fresh", "stale", "changed")
    }
    site = Site(visit, server, fixture_page("".join(slots.values()) + BELOW_THE_FOLD, defer=False))
    cached = site.cached_after_decisions("fresh", "stale", "changed")
    cached["stale"]["expires"] = int(visit.page.evaluate("Date.now()")) - 1000
    visit.page.evaluate(
        "(cache) => localStorage.setItem('microadjust:ahead', cache)", json.dumps(cached)
    )
    site.html = site.html.replace(  # 'changed' now offers a variant 'd' instead of 'c'
        "changed<template data-ma-variant='b'>B</template><template data-ma-variant='c'>",
        "changed<template data-ma-variant='b'>B</template><template data-ma-variant='d'>",
    )
    assert "data-ma-variant='d'" in site.html
    site.returning()
    page = visit.page
    page.evaluate("window.microadjust.ready")
    worker_caught_up(page)
    first, events = site.first_applied(), site.decision_events()
    assert first["fresh"] == {"applied": choice(cached["fresh"]), "paints": 0}
    assert events["fresh"]["event_id"] == cached["fresh"]["event_id"]
    for slot in ("stale", "changed"):
        assert slot not in first or first[slot]["paints"] > 0, slot  # in view: kept as painted
        assert slot not in events or events[slot]["event_id"] != cached[slot]["event_id"], slot
    live = {d["slot"] for m in page.evaluate("window.__received") if m["type"] == "decisions"
            for d in m["decisions"]}  # fmt: skip
    assert live == {"stale", "changed"}  # decided now, not adopted
