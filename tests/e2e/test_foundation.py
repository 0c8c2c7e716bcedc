"""The script tag, as a visitor's browser runs it: boot, decide, apply, persist, fail safely."""

from __future__ import annotations

import json

import pytest

from .helpers import (
    BELOW_THE_FOLD,
    SLOTS,
    console_drained,
    decided,
    fixture_page,
    layout_shift,
    long_tasks,
    open_fixture,
    record,
    wait_for_request,
    wait_for_stored_state,
)

# the worker's runtime script: pyodide.asm.js as build/pyodide_glue.py derives it
RUNTIME_SCRIPT = "pyodide.asm-1glue.js"
TWO_SLOTS = fixture_page(
    BELOW_THE_FOLD
    + "<h2 data-ma-slot='headline'>Plain<template data-ma-variant='bold'>Bold</template></h2>"
    + "<div data-ma-slot='cta'><a href='#' data-ma-goal='cta'>Buy</a>"
    + "<template data-ma-variant='deal'><a href='#' data-ma-goal='cta'>Deal</a></template></div>"
)


def test_the_engine_boots_and_personalizes_the_slots(server, visit):
    open_fixture(visit, server, TWO_SLOTS)
    info = visit.page.evaluate("window.microadjust.ready")
    assert info["engine"] == "0.1.0" and info["restored"] is False
    assert visit.page.evaluate("microadjust.version") == info["engine"]  # both: pyproject.toml
    chosen = decided(visit.page, "headline", "cta")
    for slot in visit.page.evaluate(SLOTS):
        decision = chosen[slot["slot"]]
        assert slot["applied"] == decision["variant"]
        assert 0 < decision["probability"] <= 1 and decision["event_id"] and decision["reason"]
        expected = slot["variants"].get(
            decision["variant"], "Plain" if slot["slot"] == "headline" else "Buy"
        )
        assert slot["text"] == expected
    assert visit.errors == []


def test_the_demo_shop_personalizes_without_shifting_or_blocking(server, visit):
    record(visit.page)
    visit.page.goto(server + "/")  # the demo's own configuration: under Playwright the visit
    # looks automated, so it learns nothing, and is personalized all the same
    visit.page.evaluate("window.microadjust.ready")
    decided(visit.page, "roasts")
    for _ in range(2):  # the visitor scrolls down and back: held-back slots change out of view
        visit.page.mouse.wheel(0, 4000)
        visit.page.wait_for_function("scrollY + innerHeight >= document.body.scrollHeight - 1")
        chosen = decided(visit.page, "headline", "cta", "hero-art", "roasts", "reviews")
        visit.page.mouse.wheel(0, -4000)
        visit.page.wait_for_function("scrollY === 0")
    assert layout_shift(visit.page) == 0
    started = visit.page.evaluate("performance.getEntriesByName('microadjust:start')[0].startTime")
    assert long_tasks(visit.page, since=started) == []
    order = visit.page.eval_on_selector_all(
        "[data-ma-rank=roasts] > [data-ma-item]", "(items) => items.map((i) => i.dataset.maItem)"
    )
    assert order == chosen["roasts"]["order"]
    assert visit.errors == []


def test_no_request_leaves_the_origin(server, visit):
    open_fixture(visit, server, TWO_SLOTS)
    visit.page.evaluate("window.microadjust.ready")
    decided(visit.page, "headline", "cta")
    assert any("pyodide.asm.wasm" in url for url in visit.requests)
    assert any(url.endswith(".whl") for url in visit.requests), "the worker's requests are seen"
    assert [url for url in visit.requests if not url.startswith(server + "/")] == []
    assert not [url for url in visit.requests if "scikit_learn" in url or "scipy" in url]


def test_scikit_learn_loads_after_the_first_decision_when_segments_need_it(server, visit):
    body = TWO_SLOTS.split("<body>")[1].split("</body>")[0]
    open_fixture(visit, server, fixture_page(body, {"segments": True}))
    visit.page.evaluate("window.microadjust.ready")
    decided(visit.page, "headline", "cta")
    wait_for_request(visit, "scikit_learn")
    wheels = [url.rsplit("/", 1)[1].split("-")[0] for url in visit.requests if url.endswith(".whl")]
    assert wheels.index("scikit_learn") > wheels.index("microadjust")
    visit.page.evaluate("microadjust.decide('later', ['default', 'b'])")  # now with a segment
    assert visit.errors == [] and not [w for w in visit.warnings() if "microadjust" in w]


def test_no_long_task_on_the_main_thread_while_the_engine_boots(server, visit):
    open_fixture(visit, server, TWO_SLOTS)
    visit.page.evaluate("window.microadjust.ready")
    decided(visit.page, "headline", "cta")
    started = visit.page.evaluate("performance.getEntriesByName('microadjust:start')[0].startTime")
    assert long_tasks(visit.page, since=started) == []


def test_a_reload_keeps_the_learned_state(server, visit):
    open_fixture(visit, server, TWO_SLOTS)
    visit.page.evaluate("window.microadjust.ready")
    decided(visit.page, "cta")
    visit.page.click("[data-ma-slot=cta] a")  # a goal in the slot: its decision is rewarded
    first = wait_for_stored_state(visit, "(s) => s.rewards === 1", "a reward")
    assert first["visits"] == 1
    visit.page.reload()
    info = visit.page.evaluate("window.microadjust.ready")
    assert info["restored"] is True and info["visits"] == 2
    second = wait_for_stored_state(
        visit,
        "(s) => s.visits === 2"
        f" && JSON.stringify(s.engine) !== JSON.stringify({json.dumps(first['engine'])})",
        "the second visit's decisions, stored on top of the first's",
    )
    assert second["rewards"] == 1


def engine_worker(page):
    [worker] = [w for w in page.workers if w.url.endswith("/worker.js")]
    return worker


def worker_marks(page) -> list[str]:
    """The boot steps the engine's worker has marked so far (microadjust:worker:<step>)."""
    return engine_worker(page).evaluate("performance.getEntriesByType('mark').map((m) => m.name)")


def wait_for_worker_mark(page, step: str) -> None:
    """Wait until the engine's worker marks ``step`` (a PerformanceObserver, not a poll)."""
    engine_worker(page).evaluate(
        """(name) => new Promise((resolve, reject) => {
          const seen = () => performance.getEntriesByName(name).length > 0;
          if (seen()) return resolve();
          const observer = new PerformanceObserver(() => {
            if (seen()) { observer.disconnect(); resolve(); }
          });
          observer.observe({ type: 'mark' });
          setTimeout(() => reject(new Error(`no ${name} mark in 30 s`)), 30000); // a bound only
        })""",
        f"microadjust:worker:{step}",
    )


def test_a_first_visit_loads_the_runtime_again_for_the_next_views_code_cache(server, visit):
    open_fixture(visit, server, TWO_SLOTS)
    assert visit.page.evaluate("window.microadjust.ready")["restored"] is False
    decided(visit.page, "headline", "cta")
    wait_for_worker_mark(visit.page, "compiled-again")  # compile.js imported the runtime script
    assert sum(url.endswith(f"/{RUNTIME_SCRIPT}") for url in visit.requests) == 2
    assert not any(url.endswith("/pyodide.asm.js") for url in visit.requests)  # the official one
    wait_for_stored_state(visit, "(s) => s.visits === 1", "the first visit's state")
    visit.page.reload()  # a returning view (its state restored) finds the code cache written
    assert visit.page.evaluate("window.microadjust.ready")["restored"] is True
    decided(visit.page, "headline", "cta")
    marks = worker_marks(visit.page)  # compile.js is scheduled, if at all, as ready is marked
    assert "microadjust:worker:ready" in marks and "microadjust:worker:compile-again" not in marks
    assert visit.errors == []


@pytest.mark.parametrize(
    "broken",
    [
        {"status": 404, "body": "gone"},
        {"body": "throw new Error('broken')", "content_type": "text/javascript"},
    ],
    ids=["missing", "throwing"],
)
def test_a_failed_second_load_of_the_runtime_leaves_the_engine_running(server, visit, broken):
    loads = []

    def second_load_broken(route):  # the engine's own load passes, compile.js's fails
        loads.append(route.request.url)
        return route.fulfill(**broken) if len(loads) > 1 else route.continue_()

    visit.context.route(f"**/{RUNTIME_SCRIPT}", second_load_broken)
    open_fixture(visit, server, TWO_SLOTS)
    visit.page.evaluate("window.microadjust.ready")
    decided(visit.page, "headline", "cta")
    wait_for_worker_mark(visit.page, "compile-again-failed")
    decision = visit.page.evaluate("microadjust.decide('later', ['default', 'b'])")
    assert decision["variant"] in ("default", "b")  # the engine still answers
    assert len(loads) == 2
    assert visit.errors == [] and not [w for w in visit.warnings() if "microadjust" in w]


@pytest.mark.parametrize("missing", ["worker.js", "pyodide.js", RUNTIME_SCRIPT, "pyodide.asm.wasm"])
def test_a_broken_engine_leaves_the_default_content(server, visit, missing):
    visit.context.route(f"**/{missing}", lambda route: route.fulfill(status=404, body="gone"))
    html = fixture_page(BELOW_THE_FOLD + TWO_SLOTS.split("<body>")[1], {"boot_timeout_s": 8})
    open_fixture(visit, server, html)
    before = visit.page.evaluate(SLOTS)
    outcome = visit.page.evaluate("window.microadjust.ready.then(() => 'ready', (e) => e.message)")
    assert outcome != "ready"
    console_drained(visit)  # the warning came before the rejection; nothing else may follow
    warnings = [w for w in visit.warnings() if w.startswith("microadjust:")]
    assert len(warnings) == 1 and "default content" in warnings[0]
    assert visit.errors == []
    after = visit.page.evaluate(SLOTS)
    assert after == before and all(s["applied"] is None for s in after)


def test_the_debug_panel_explains_each_decision(server, visit):
    open_fixture(visit, server, TWO_SLOTS, query="?microadjust=debug")
    panel = visit.page.locator("aside[aria-label='microadjust decisions']")
    panel.locator("[data-slot=cta]").get_by_text("p=").wait_for()  # a row, then its decision
    assert "ready in" in panel.inner_text() and "p=" in panel.inner_text()


STRICT_CSP = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self'"


def test_personalization_works_under_the_minimum_content_security_policy(server, visit):
    """The README's minimum policy, on the page and on the worker's own script."""

    def with_csp(route, request):
        if request.url.endswith("/t/page.html"):
            route.fulfill(status=200, content_type="text/html", body=html, headers=csp)
        else:
            response = route.fetch()
            route.fulfill(response=response, headers={**response.headers, **csp})

    csp = {"Content-Security-Policy": STRICT_CSP}
    below_the_fold = "<br>" * 200  # no inline style: the policy forbids those too
    html = TWO_SLOTS.replace("<link rel='icon' href='data:,'>", "").replace(
        BELOW_THE_FOLD, below_the_fold
    )
    visit.context.route(server + "/t/page.html", with_csp)
    visit.context.route("**/worker.js", with_csp)
    violations = []
    visit.page.on(
        "console", lambda m: violations.append(m.text) if "Content Security" in m.text else None
    )
    record(visit.page)
    visit.page.goto(server + "/t/page.html")
    # wait_for_function evaluates a string in the page, which this very policy forbids
    decided_slots = visit.page.evaluate(
        """() => new Promise((resolve, reject) => {
          const seen = () => new Set(window.__decisions.map((d) => d.slot));
          const done = () => seen().has('headline') && seen().has('cta');
          if (done()) return resolve([...seen()].sort());
          document.addEventListener('microadjust:decision', () => {
            if (done()) resolve([...seen()].sort());
          });
          setTimeout(() => reject(new Error('no decisions within 60 s')), 60000);
        })"""
    )
    assert decided_slots == ["cta", "headline"]
    assert violations == [] and visit.errors == []
