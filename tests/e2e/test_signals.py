"""Behavioural anomaly signals from real input (Playwright's mouse): each fires a
``data-ma-trigger`` slot that the input just before it, a near miss, did not fire."""

from __future__ import annotations

from .helpers import (
    BELOW_THE_FOLD,
    decided,
    fixture_page,
    next_frame,
    open_fixture,
    worker_caught_up,
)

BUTTON = "<button type='button' style='position: fixed; left: 20px; top: 200px'>Add</button>"
TEXT = "<p style='position: fixed; left: 400px; top: 200px'>Plain words</p>"


def page_with_trigger(visit, server: str, trigger: str) -> None:
    """A long page with a button, plain text, and a live slot behind ``trigger``, booted."""
    slot = (
        f"<aside data-ma-slot='offer' data-ma-trigger='{trigger}' data-ma-live>"
        "<template data-ma-variant='help'>Need a hand?</template></aside>"
    )
    open_fixture(visit, server, fixture_page(BUTTON + TEXT + slot + BELOW_THE_FOLD * 2))
    visit.page.evaluate("microadjust.ready")
    visit.page.mouse.move(300, 400)


def not_fired(visit) -> None:
    """The worker has seen the input so far, and the slot is still undecided."""
    worker_caught_up(visit.page, click=False)
    assert "offer" not in {d["slot"] for d in visit.page.evaluate("window.__decisions")}


def test_rage_clicks_on_one_spot_fire_a_trigger(server, visit):
    page_with_trigger(visit, server, "rage_clicks >= 1")
    for x in (30, 90, 150):  # three clicks, but on three spots of the button
        visit.page.mouse.click(x, 210)
    not_fired(visit)
    visit.page.mouse.click(60, 210, click_count=3)  # three on one spot, at once
    decided(visit.page, "offer")


def test_a_dead_click_fires_a_trigger(server, visit):
    page_with_trigger(visit, server, "dead_clicks >= 1")
    visit.page.click("button")  # interactive: not a dead click
    not_fired(visit)
    visit.page.click("p")
    decided(visit.page, "offer")


def test_the_pointer_leaving_through_the_top_fires_an_exit_intent_trigger(server, visit):
    page_with_trigger(visit, server, "exit_intent")
    visit.page.mouse.move(300, 5)  # near the top, still on the page
    not_fired(visit)
    visit.page.mouse.move(300, -5)  # out, toward the tab bar
    decided(visit.page, "offer")


def test_a_fast_scroll_back_up_fires_a_trigger(server, visit):
    page_with_trigger(visit, server, "scroll_back >= 1")
    visit.page.mouse.wheel(0, 3000)  # down: no scroll back
    visit.page.wait_for_function("scrollY >= 3000")
    next_frame(visit.page)  # the scroll's frame ran
    not_fired(visit)
    visit.page.mouse.wheel(0, -3000)
    decided(visit.page, "offer")
