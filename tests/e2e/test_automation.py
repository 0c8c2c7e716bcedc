"""Bot filtering in Chromium: Playwright sets navigator.webdriver, so by default its visit is
personalized like any other but learns, keeps and uploads nothing; with ``"automation":
"learn"`` it learns, keeps and uploads as a person's visit would."""

from __future__ import annotations

from .helpers import (
    BELOW_THE_FOLD,
    console_drained,
    decided,
    fixture_page,
    open_fixture,
    stored_state,
    wait_for_request,
    wait_for_stored_state,
)
from .test_sync import HIDE, IMPRESSION, KEY, sync_server  # noqa: F401 - the sync server fixture

GOAL = "<a href='#buy' data-ma-goal='click'>%s</a>"
CTA = (
    f"<div data-ma-slot='cta'>{GOAL % 'Shop the beans'}"
    f"<template data-ma-variant='discount'>{GOAL % '15% off'}</template>"
    f"<template data-ma-variant='quiz'>{GOAL % 'Your roast'}</template></div>"
)
REWARDED = "window.__received.find((m) => m.type === 'rewarded')"


def seen_clicked_and_left(visit, base: str, automation: str) -> dict:
    """A visit that sees the slot, clicks its goal and hides the page; the worker's reward reply."""
    config = {"automation": automation, "sync": {"site": "solo", "key": KEY, "upload": True}}
    open_fixture(visit, base, fixture_page(BELOW_THE_FOLD + CTA, config))
    decided(visit.page, "cta")  # below the fold: applied at once
    visit.page.locator("[data-ma-slot=cta]").scroll_into_view_if_needed()
    visit.page.wait_for_function(IMPRESSION, arg="cta", timeout=60_000)
    visit.page.click("[data-ma-slot=cta] a")
    rewarded = visit.page.wait_for_function(REWARDED).json_value()
    visit.page.evaluate(HIDE)
    return rewarded


def test_an_automated_visit_is_personalized_but_learns_keeps_and_uploads_nothing(
    sync_server,  # noqa: F811
    visit,
):
    rewarded = seen_clicked_and_left(visit, sync_server, "ignore")
    assert rewarded["event_ids"] == []
    assert rewarded["ignored"] == "this page view looks automated: navigator.webdriver is set"
    device = visit.page.evaluate("microadjust.export()")["device"]  # after the hidden batch
    assert device["rewards"] == 0 and device["engine"]["log"] == []  # no update
    sync = device["sync"]
    assert sync["budget"]["shown"] == {} and sync["unsent"] == {} and sync["pending"] is None
    assert stored_state(visit) is None  # nothing kept on the device
    assert not [url for url in visit.requests if "/uploads" in url]
    assert any(url.endswith("/v1/sites/solo/priors") for url in visit.requests)  # sync was on
    console_drained(visit)
    told = [m.text for m in visit.console if "looks automated" in m.text]
    assert len(told) == 1 and '"automation": "learn"' in told[0]  # why, once, for the site owner
    assert visit.errors == []


def test_with_learn_an_automated_visit_learns_keeps_and_uploads(sync_server, visit):  # noqa: F811
    rewarded = seen_clicked_and_left(visit, sync_server, "learn")
    assert len(rewarded["event_ids"]) == 1 and "ignored" not in rewarded
    state = wait_for_stored_state(visit, "(s) => s.rewards === 1", "the reward, kept")
    assert [entry["reward"] for entry in state["engine"]["log"]] == [1.0]
    wait_for_request(visit, "/uploads")
    assert visit.errors == []
