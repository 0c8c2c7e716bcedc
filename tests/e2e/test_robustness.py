"""Hostile page states: too many slots, a broken IndexedDB in the worker, a visitor saving data.
On each, ``ready`` settles and the page keeps working (or keeps its defaults), with one warning."""

from __future__ import annotations

import pytest

from .helpers import (
    BELOW_THE_FOLD,
    SLOTS,
    console_drained,
    decided,
    decisions,
    fixture_page,
    open_fixture,
    warnings_from_the_library,
    worker_caught_up,
)

TWO_SLOTS = (
    "<h2 data-ma-slot='headline'>Plain<template data-ma-variant='bold'>Bold</template></h2>"
    "<div data-ma-slot='cta'><a href='#' data-ma-goal='cta'>Buy</a>"
    "<template data-ma-variant='deal'><a href='#' data-ma-goal='cta'>Deal</a></template></div>"
)


def many_slots(count: int) -> str:
    return "".join(
        f"<p data-ma-slot='s{n:02}'>Plain<template data-ma-variant='b'>B</template></p>"
        for n in range(count)
    )


def library_warnings(visit) -> list[str]:
    console_drained(visit)
    return [w for w in visit.warnings() if w.startswith("microadjust:")]


@pytest.mark.parametrize(("count", "config"), [(60, {}), (60, {"max_slots": 60})])
def test_the_first_slots_the_engine_takes_are_decided_and_the_rest_named_once(
    server, visit, count, config
):
    """51 and more slots used to overflow one 'decide' message, and no slot was decided."""
    open_fixture(visit, server, fixture_page(BELOW_THE_FOLD + many_slots(count), config))
    info = visit.page.evaluate("window.microadjust.ready")
    limit = config.get("max_slots", 32)
    decided(visit.page, count=limit)
    worker_caught_up(visit.page)  # every 'decide' message was answered
    expected = [f"s{n:02}" for n in range(limit)]  # the first ones, in document order
    assert sorted(decisions(visit)) == expected
    applied = [s["slot"] for s in visit.page.evaluate(SLOTS) if s["applied"] is not None]
    assert applied == expected
    warned = library_warnings(visit)
    if limit < count:
        assert len(warned) == 1, warned
        assert (
            f"takes {limit} slots" in warned[0] and f"{count - limit} of this page's" in warned[0]
        )
    else:
        assert warned == []
    assert info["engine"] and visit.errors == []


THROW = "() => { throw new DOMException('broken by the test', 'UnknownError'); }"
BROKEN_INDEXEDDB = {  # appended to the worker's script: only the worker's IndexedDB breaks
    "open throws": f"IDBFactory.prototype.open = {THROW};",
    "no indexedDB": f"Object.defineProperty(self, 'indexedDB', {{ get: {THROW} }});",
    "a read fails": f"IDBDatabase.prototype.transaction = {THROW};",
    "a write fails": f"IDBObjectStore.prototype.put = {THROW};",
}


@pytest.mark.parametrize("breakage", BROKEN_INDEXEDDB)
def test_a_broken_indexeddb_in_the_worker_leaves_the_engine_running_without_state(
    server, visit, breakage
):
    def broken(route):
        response = route.fetch()
        body = response.text() + "\n" + BROKEN_INDEXEDDB[breakage] + "\n"
        route.fulfill(response=response, body=body)

    visit.context.route("**/worker.js", broken)
    open_fixture(visit, server, fixture_page(BELOW_THE_FOLD + TWO_SLOTS))
    info = visit.page.evaluate("window.microadjust.ready")
    assert info["restored"] is False
    decided(visit.page, "headline", "cta")
    warnings_from_the_library(visit, at_least=1)  # a write is tried once there is state
    visit.page.click("[data-ma-slot=cta] a")  # a reward: the state changes, another write
    worker_caught_up(visit.page)
    warned = library_warnings(visit)
    assert len(warned) == 1 and "IndexedDB failed" in warned[0], warned
    assert "without keeping its state" in warned[0]
    assert visit.errors == []
    assert visit.page.evaluate("microadjust.decide('later', ['default', 'b'])")["variant"]


def test_a_visitor_saving_data_downloads_nothing_and_keeps_the_defaults(server, visit):
    visit.page.add_init_script(
        "Object.defineProperty(Navigator.prototype, 'connection',"
        " { get: () => ({ saveData: true, effectiveType: '4g' }) });"
    )
    open_fixture(visit, server, fixture_page(BELOW_THE_FOLD + TWO_SLOTS))
    outcome = visit.page.evaluate("microadjust.ready.then(() => 'ready', (e) => e.message)")
    assert "saveData" in outcome
    warned = library_warnings(visit)
    assert len(warned) == 1 and "save data" in warned[0] and "default content" in warned[0]
    assert visit.page.workers == [] and visit.page.evaluate("window.__posted") == []
    fetched = [url for url in visit.requests if "/microadjust/" in url]
    assert fetched == [server + "/microadjust/microadjust.js"], fetched
    assert all(s["applied"] is None for s in visit.page.evaluate(SLOTS))
    assert visit.errors == []
