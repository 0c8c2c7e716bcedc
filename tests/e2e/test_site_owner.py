"""What a site owner expects of the script: preview links, analytics hooks, the debug panel's
"why", and timings in the browser's dev tools."""

from __future__ import annotations

import json

from .helpers import (
    BELOW_THE_FOLD,
    console_drained,
    decided,
    fixture_page,
    open_fixture,
    wait_for_stored_state,
    warnings_from_the_library,
    worker_caught_up,
)

SLOTS = (  # the headline may change in view, so its decisions show at once
    "<h2 data-ma-slot='headline' data-ma-live>Plain"
    "<template data-ma-variant='bold'>Bold</template></h2>"
    "<div data-ma-slot='cta'><a href='#' data-ma-goal='cta'>Buy</a>"
    "<template data-ma-variant='deal'><a href='#' data-ma-goal='cta'>Deal</a></template></div>"
    "<ol data-ma-rank='cards'><li data-ma-item='a'>a</li><li data-ma-item='b'>b</li>"
    "<li data-ma-item='c'>c</li></ol>"
)
PAGE = fixture_page(SLOTS, {"seed": 4})
ORDER = "[...document.querySelectorAll('[data-ma-item]')].map((i) => i.dataset.maItem)"


def posted(visit, kind: str) -> list[dict]:
    return visit.page.evaluate(f"window.__posted.filter((m) => m.type === '{kind}')")


def test_a_preview_link_shows_its_variants_and_nothing_learns_from_them(server, visit):
    open_fixture(visit, server, PAGE, query="?microadjust=preview:cta=deal,cards=c.a")
    chosen = decided(visit.page, "headline", "cta", "cards")
    page = visit.page
    assert page.inner_text("[data-ma-slot=cta]") == "Deal"
    assert page.evaluate(ORDER) == ["c", "a", "b"]  # the items not named follow in page order
    for slot in ("cta", "cards"):
        assert chosen[slot]["preview"] is True and chosen[slot]["event_id"] is None
    assert chosen["cards"]["order"] == ["c", "a", "b"]
    assert "preview" not in chosen["headline"]  # the engine still decides the others
    assert page.evaluate("microadjust.decide('cta')")["variant"] == "deal"

    page.click("[data-ma-slot=cta] a")  # a goal in a previewed slot
    worker_caught_up(page, flushes=3)  # flushes a second apart: impressions were taken
    decide = [s["slot"] for m in posted(visit, "decide") for s in m["slots"]]
    assert "headline" in decide and "cta" not in decide and "cards" not in decide
    assert [m for m in posted(visit, "reward") if m.get("slot") in ("cta", "cards")] == []
    slot_events = [
        (e["kind"], e["slot"]) for m in posted(visit, "events") for e in m["events"] if "slot" in e
    ]
    assert ("impression", "headline") in slot_events
    assert not [e for e in slot_events if e[1] in ("cta", "cards") and e[0] != "slot_in"]

    state = wait_for_stored_state(visit, "(s) => 'headline' in s.engine.slots", "a checkpoint")
    stored = json.dumps(state)
    assert '"cta"' not in stored and '"cards"' not in stored  # not learned, not for upload
    page.wait_for_function("(localStorage.getItem('microadjust:ahead') || '').includes('headline')")
    cache = json.loads(page.evaluate("localStorage.getItem('microadjust:ahead')"))
    assert "headline" in cache and "cta" not in cache and "cards" not in cache
    assert visit.errors == []


def test_a_bad_preview_warns_once_naming_each_bad_part_and_the_rest_applies(server, visit):
    query = "?microadjust=preview:cta=nope,headline=bold,ghost=x,cards=b.zz&microadjust=debug,oops"
    open_fixture(visit, server, fixture_page(BELOW_THE_FOLD + SLOTS), query=query)
    chosen = decided(visit.page, "headline", "cta", "cards")
    assert chosen["headline"]["preview"] is True and chosen["headline"]["variant"] == "bold"
    assert "preview" not in chosen["cta"] and "preview" not in chosen["cards"]
    visit.page.locator("aside[aria-label='microadjust decisions']").wait_for()  # debug is on too
    console_drained(visit)
    warnings = warnings_from_the_library(visit)
    assert len(warnings) == 1, warnings
    for part in ('"cta=nope"', '"ghost=x"', '"cards=b.zz"', '"oops"'):
        assert part in warnings[0], (part, warnings[0])
    assert "headline=bold" not in warnings[0]
    assert 'no variant "nope"' in warnings[0] and 'no item "zz"' in warnings[0]


def test_decisions_go_to_the_data_layer_only_when_opted_in_and_without_identifier(server, visit):
    html = fixture_page(BELOW_THE_FOLD + SLOTS, {"seed": 4, "datalayer": True})
    open_fixture(visit, server, html, query="?microadjust=preview:cta=deal")
    chosen = decided(visit.page, "headline", "cta", "cards")
    pushed = visit.page.evaluate("window.dataLayer")
    assert {p["microadjust_slot"] for p in pushed} == {"headline", "cards"}  # not the preview
    for push in pushed:
        decision = chosen[push["microadjust_slot"]]
        assert set(push) - {"microadjust_order"} == {
            "event",
            "microadjust_slot",
            "microadjust_variant",
            "microadjust_holdout",
            "microadjust_reason",
        }
        assert push["event"] == "microadjust_decision"
        assert push["microadjust_variant"] == decision["variant"]
        assert push["microadjust_holdout"] is decision["holdout"] is False
        assert decision["reason"].startswith(push["microadjust_reason"])
        assert decision["event_id"] not in json.dumps(push)
    cards = next(p for p in pushed if p["microadjust_slot"] == "cards")
    assert cards["microadjust_order"] == ",".join(chosen["cards"]["order"])

    open_fixture(visit, server, fixture_page(BELOW_THE_FOLD + SLOTS, {"seed": 4}))
    decided(visit.page, "headline", "cta", "cards")
    assert visit.page.evaluate("window.dataLayer") is None


def test_boot_round_trips_and_writes_show_in_the_dev_tools_timings(server, visit):
    open_fixture(visit, server, fixture_page(BELOW_THE_FOLD + SLOTS, {"seed": 4}))
    chosen = decided(visit.page, "headline", "cta", "cards")
    names = visit.page.evaluate(
        "performance.getEntriesByType('measure').map((m) => m.name)"
        ".filter((n) => n.startsWith('microadjust:'))"
    )
    assert names.count("microadjust:boot") == 1
    assert sorted(n for n in names if n.startswith("microadjust:decide:")) == [
        "microadjust:decide:cards",
        "microadjust:decide:cta",
        "microadjust:decide:headline",
    ]
    changed = {s for s, d in chosen.items() if d.get("order", ["a", "b", "c"]) != ["a", "b", "c"]}
    changed |= {s for s, d in chosen.items() if "order" not in d and d["variant"] != "default"}
    assert {n.removeprefix("microadjust:apply:") for n in names if ":apply:" in n} == changed

    # a long-lived page: the timings stay bounded (the loader keeps at most 200)
    visit.page.evaluate(
        "(async () => { for (let i = 0; i < 250; i++)"
        " await microadjust.decide('popup' + (i % 5), ['default', 'b']); })()"
    )
    count = visit.page.evaluate(
        "performance.getEntriesByType('measure')"
        ".filter((m) => m.name.startsWith('microadjust:decide:popup')).length"
    )
    assert 0 < count <= 200


def test_the_debug_panel_shows_why_and_marks_and_links_a_preview(server, visit):
    # a live, manual slot decided again and again; the visitor buys from every variant
    body = (
        "<h2 data-ma-slot='headline'>Plain<template data-ma-variant='bold'>Bold</template></h2>"
        "<div data-ma-slot='offer' data-ma-manual data-ma-live><button data-ma-goal='buy'>Buy"
        "</button><template data-ma-variant='sale'><button data-ma-goal='buy'>Sale</button>"
        "</template></div>"
    )
    visit.context.grant_permissions(["clipboard-read", "clipboard-write"])
    query = "?microadjust=debug,preview:headline=bold"
    open_fixture(visit, server, fixture_page(body, {"seed": 2}), query=query)
    page = visit.page
    panel = page.locator("aside[aria-label='microadjust decisions']")
    page.evaluate("microadjust.ready")
    for _ in range(30):  # the first decisions know nothing yet; later ones have learned
        decision = page.evaluate("microadjust.decide('offer')")
        why = decision["why"]
        page.wait_for_function(  # on screen (applied): a goal clicked now rewards it
            "(id) => window.__decisions.some((d) => d.event_id === id)", arg=decision["event_id"]
        )
        if why["terms"]:
            break
        page.click("[data-ma-slot=offer] button")
    assert why["terms"], "a rewarded variant's score has terms"
    row = panel.locator("[data-slot=offer]")
    row.get_by_text("why (score terms):").wait_for()
    text = row.inner_text()
    for term in why["terms"]:
        assert term["feature"] in text
    assert f"runner-up {why['runner_up']['action']} {why['runner_up']['score']:.3f}" in text
    assert "PREVIEW" in panel.locator("[data-slot=headline]").inner_text()
    assert "PREVIEW" not in text

    panel.get_by_role("button", name="Copy preview link").click()
    link = panel.get_by_label("preview link").input_value()
    offer = page.get_attribute("[data-ma-slot=offer]", "data-ma-applied")
    assert link.endswith(f"/t/page.html?microadjust=preview:headline=bold,offer={offer}")
    page.get_by_text("copied").wait_for()
    assert page.evaluate("navigator.clipboard.readText()") == link

    page.goto(link)  # the link shows the same variants, each previewed
    shown = decided(page, "headline", "offer")
    assert {s: d["variant"] for s, d in shown.items()} == {"headline": "bold", "offer": offer}
    assert all(d["preview"] for d in shown.values())
    assert visit.errors == []


PANEL = "aside[aria-label='microadjust decisions']"
PROMO = "<div data-ma-slot='promo'>A<template data-ma-variant='b'>B</template></div>"


def test_the_debug_panel_marks_a_decision_made_ahead_though_it_loaded_after_its_event(
    server, visit
):
    open_fixture(visit, server, fixture_page(PROMO + BELOW_THE_FOLD, {"seed": 4}))
    page = visit.page
    cached = page.wait_for_function(  # the next page view's decision, made ahead
        "(JSON.parse(localStorage.getItem('microadjust:ahead')) || {}).promo",
        timeout=60_000,  # it includes the boot
    ).json_value()
    page.goto(server + "/t/page.html?microadjust=debug")  # the visitor returns, in debug mode
    shown = decided(page, "promo")["promo"]
    assert shown["ahead"] is True and shown["event_id"] == cached["event_id"]
    panel = page.locator(PANEL)
    row = panel.locator("[data-slot=promo]")
    row.get_by_text("MADE AHEAD", exact=True).wait_for()
    page.evaluate("microadjust.ready")
    worker_caught_up(page)  # adopted by the engine: not decided again, so the mark stays
    text = row.inner_text()
    assert f"promo → {cached['variant']}" in text
    assert f"p={cached['probability']:.3f} · {cached['reason']}" in text
    assert "MADE AHEAD" in text
    assert "MADE AHEAD: decided on the page view before" in panel.inner_text()  # said once
    assert [d["slot"] for d in page.evaluate("window.__decisions")] == ["promo"]
    assert "learning: no sign of automation so far" in panel.inner_text()  # "automation": "learn"
    assert visit.errors == []


def test_the_debug_panel_says_why_an_automated_page_view_learns_nothing(server, visit):
    html = fixture_page(PROMO, {"automation": "ignore"})  # Playwright sets navigator.webdriver
    open_fixture(visit, server, html, query="?microadjust=debug")
    panel = visit.page.locator(PANEL)
    verdict = "this page view looks automated: navigator.webdriver is set; it learns nothing"
    panel.get_by_text(verdict).wait_for()
    assert "learning:" not in panel.inner_text()
    console_drained(visit)
    told = [m.text for m in visit.console if "looks automated" in m.text]
    assert len(told) == 1  # the site owner is told once, at ready, before any goal
    assert visit.errors == []
