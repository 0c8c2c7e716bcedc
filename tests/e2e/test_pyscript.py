"""The PyScript page: the same engine from ``<script type="py" worker>``, self-hosted, offline."""

from __future__ import annotations

import urllib.request

from .helpers import SLOTS, long_tasks, next_frame, record

PAGE = "/pyscript.html"

STATUS = "document.querySelector('#ma-status')"


IN_VIEW = """[...document.querySelectorAll('[data-ma-slot]')].filter((slot) => {
  const box = slot.getBoundingClientRect();
  return box.bottom > 0 && box.top < innerHeight;
}).map((slot) => slot.dataset.maSlot)"""


def boot(visit, url: str) -> None:
    """Open the page and wait until Python has decided every slot."""
    record(visit.page)
    visit.page.goto(url)
    visit.page.wait_for_function(f"{STATUS}.dataset.state !== 'booting'", timeout=60_000)
    assert visit.page.evaluate(f"{STATUS}.dataset.state") == "ready", visit.console


def scroll_past_every_slot(visit) -> dict[str, dict]:
    """Scroll to the bottom, so decisions waiting for their slot to leave the view apply."""
    visit.page.evaluate("scrollTo(0, document.documentElement.scrollHeight)")
    visit.page.wait_for_function("window.__decisions.length === 3")
    return {d["slot"]: d for d in visit.page.evaluate("window.__decisions")}


def test_python_in_a_pyscript_worker_personalizes_every_slot(server, visit):
    boot(visit, server + PAGE)
    assert visit.page.evaluate(f"{STATUS}.dataset.pythonThread") == "DedicatedWorkerGlobalScope"
    in_view = visit.page.evaluate(IN_VIEW)
    assert "headline" in in_view and "reviews" not in in_view
    for slot in visit.page.evaluate(SLOTS):  # nothing swapped under the visitor's eyes
        if slot["slot"] in in_view:
            assert slot["applied"] in (None, "default")
    decisions = scroll_past_every_slot(visit)
    slots = visit.page.evaluate(SLOTS)
    assert {s["slot"] for s in slots} == set(decisions) == {"headline", "cta", "reviews"}
    for slot in slots:
        decision = decisions[slot["slot"]]
        assert slot["applied"] == decision["variant"]
        assert decision["variant"] in ["default", *slot["variants"]]
        assert 0 < decision["probability"] <= 1 and decision["event_id"]
        if decision["variant"] != "default":  # the visible content is the chosen template's
            assert slot["text"] == slot["variants"][decision["variant"]]
    log = visit.page.inner_text("#ma-log")
    assert all(f"{slot} → {d['variant']}" in log for slot, d in decisions.items())
    assert visit.errors == []


def test_a_click_rewards_the_decision_shown_in_that_slot(server, visit):
    boot(visit, server + PAGE)
    decisions = scroll_past_every_slot(visit)
    visit.page.click("[data-ma-slot=cta] a")
    reward = f"cta: reward 1.0 for {decisions['cta']['event_id']}"
    visit.page.locator("#ma-log").get_by_text(reward).wait_for()
    assert visit.errors == []


def test_no_request_leaves_the_origin_on_a_first_and_a_second_visit(server, visit):
    boot(visit, server + PAGE)
    first = list(visit.requests)
    # The second visit takes PyScript's package cache: Pyodide 0.27 gets the stored lock file
    # as a blob: URL (lockFileURL) and loads numpy and the engine wheel without micropip.
    visit.page.reload()
    visit.page.wait_for_function(f"{STATUS}.dataset.state === 'ready'", timeout=60_000)
    second = visit.requests[len(first) :]
    numpy = "/numpy-2.0.2-cp312-cp312-pyodide_2024_0_wasm32.whl"
    for requests in (first, second):  # the worker's requests are seen too
        assert any(url.endswith("/pyodide.asm.wasm") for url in requests)
        assert any(url.endswith(numpy) for url in requests)
        assert any("/app-" in url and url.endswith(".whl") for url in requests)
        assert any("/microadjust/pyscript-" in url for url in requests)
    assert any(url.endswith("/micropip-0.9.0-py3-none-any.whl") for url in first)
    assert not any("micropip" in url for url in second), "the second visit used the package cache"
    # blob: URLs of this origin are objects the page made itself (PyScript's worker script and
    # the cached lock file), not requests over the network
    offsite = [
        url
        for url in visit.requests
        if not url.startswith(server + "/") and not url.startswith(f"blob:{server}/")
    ]
    assert offsite == []
    assert visit.errors == []


def test_no_long_task_on_the_main_thread_after_the_load_event(server, visit):
    boot(visit, server + PAGE)
    loaded = visit.page.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd")
    assert loaded > 0
    # Pyodide boots, micropip installs and the engine ranks in the worker
    assert long_tasks(visit.page, since=loaded) == []


def test_only_the_pyscript_page_is_cross_origin_isolated(server, visit):
    """PyScript's worker reaches the DOM through a SharedArrayBuffer, which needs COOP/COEP."""
    with urllib.request.urlopen(server + PAGE) as response:
        assert response.headers["Cross-Origin-Opener-Policy"] == "same-origin"
        assert response.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
    with urllib.request.urlopen(server + "/") as response:
        assert response.headers["Cross-Origin-Opener-Policy"] is None
    boot(visit, server + PAGE)
    assert visit.page.evaluate("crossOriginIsolated") is True


def test_a_missing_engine_wheel_leaves_the_default_content(server, visit):
    visit.context.route("**/app-*/*.whl", lambda route: route.fulfill(status=404, body="gone"))
    with visit.page.expect_event("pageerror", timeout=60_000) as failure:
        visit.page.goto(server + PAGE)
    assert "micropip" in str(failure.value)  # PyScript reports the failed install, uncaught
    next_frame(visit.page)  # the install failing ends the boot: nothing else is coming
    slots = visit.page.evaluate(SLOTS)
    assert all(s["applied"] is None for s in slots)
    assert slots[0]["text"].startswith("Coffee that tastes like where it grew.")
    assert visit.page.evaluate(f"{STATUS}.dataset.state") == "booting"
