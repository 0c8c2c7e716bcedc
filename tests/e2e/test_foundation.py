"""The script tag, as a visitor's browser runs it: boot, decide, apply, persist, fail safely."""

from __future__ import annotations

import json
import time

import pytest

RECORD = """
window.__decisions = [];
window.__longtasks = [];
document.addEventListener('microadjust:decision', (e) => window.__decisions.push(e.detail));
new PerformanceObserver((list) => {
  for (const t of list.getEntries()) {
    window.__longtasks.push({start: t.startTime, duration: t.duration});
  }
}).observe({type: 'longtask', buffered: true});
"""

SLOT_STATE = """[...document.querySelectorAll('[data-ma-slot]')].map((slot) => ({
  slot: slot.dataset.maSlot, applied: slot.dataset.maApplied ?? null,
  text: [...slot.childNodes].filter((n) => n.nodeName !== 'TEMPLATE')
    .map((n) => n.textContent).join('').replace(/\\s+/g, ' ').trim(),
  variants: Object.fromEntries([...slot.querySelectorAll(':scope > template')].map(
    (t) => [t.dataset.maVariant, t.content.textContent.replace(/\\s+/g, ' ').trim()])),
}))"""

STORED_STATE = """new Promise((resolve) => {
  const open = indexedDB.open('microadjust', 1);
  open.onupgradeneeded = () => open.result.createObjectStore('state');
  open.onsuccess = () => {
    const get = open.result.transaction('state').objectStore('state').get('engine');
    get.onsuccess = () => resolve(get.result ?? null);
  };
})"""


def stored_state(visit, until, timeout_s: float = 10) -> dict:
    """The engine's checkpoint in IndexedDB, once ``until(checkpoint)`` holds."""
    deadline = time.monotonic() + timeout_s
    while True:
        raw = visit.page.evaluate(STORED_STATE)
        if raw is not None and until(json.loads(raw)):
            return json.loads(raw)
        if time.monotonic() > deadline:
            raise AssertionError(f"the stored state did not satisfy the condition: {raw}")
        time.sleep(0.1)


def boot(visit, url: str) -> dict:
    visit.page.add_init_script(RECORD)
    visit.page.goto(url)
    info = visit.page.evaluate("window.microadjust.ready")
    visit.page.wait_for_function("window.__decisions.length >= 3")
    return info


def test_the_engine_boots_and_personalizes_every_slot(server, visit):
    info = boot(visit, server + "/")
    assert info["engine"] == "0.1.0" and info["restored"] is False
    visit.page.wait_for_timeout(200)  # let the animation frame that applies them run
    slots = visit.page.evaluate(SLOT_STATE)
    assert {s["slot"] for s in slots} == {"headline", "cta", "reviews"}
    decisions = {d["slot"]: d for d in visit.page.evaluate("window.__decisions")}
    for slot in slots:
        decision = decisions[slot["slot"]]
        assert slot["applied"] == decision["variant"]
        assert 0 < decision["probability"] <= 1 and decision["event_id"]
        if decision["variant"] != "default":  # the visible content is the chosen template's
            assert slot["text"] == slot["variants"][decision["variant"]]
    assert visit.errors == []


def test_no_request_leaves_the_origin(server, visit):
    boot(visit, server + "/")
    visit.page.wait_for_timeout(500)
    assert visit.requests, "requests were recorded"
    assert any("pyodide.asm.wasm" in url for url in visit.requests)
    assert any(url.endswith(".whl") for url in visit.requests), "the worker's requests are seen"
    assert [url for url in visit.requests if not url.startswith(server + "/")] == []


def test_no_long_task_on_the_main_thread_while_the_engine_boots(server, visit):
    boot(visit, server + "/")
    started = visit.page.evaluate("performance.getEntriesByName('microadjust:start')[0].startTime")
    visit.page.wait_for_timeout(500)
    during = [t for t in visit.page.evaluate("window.__longtasks") if t["start"] >= started]
    assert during == []


def test_a_reload_keeps_the_learned_state(server, visit):
    boot(visit, server + "/")
    visit.page.click("[data-ma-slot=cta] a")  # a reward for the CTA's decision
    first = stored_state(visit, lambda state: state["rewards"] == 1)
    assert first["visits"] == 1
    visit.page.reload()
    info = visit.page.evaluate("window.microadjust.ready")
    assert info["restored"] is True
    # the second visit's decisions are stored on top of what the first one learned
    second = stored_state(visit, lambda s: s["visits"] == 2 and s["engine"] != first["engine"])
    assert second["rewards"] == first["rewards"] == 1


@pytest.mark.parametrize("missing", ["worker.js", "pyodide.js"])
def test_a_broken_engine_leaves_the_default_content(server, visit, missing):
    visit.context.route(f"**/{missing}", lambda route: route.fulfill(status=404, body="gone"))
    visit.page.goto(server + "/")
    before = visit.page.evaluate(SLOT_STATE)
    outcome = visit.page.evaluate("window.microadjust.ready.then(() => 'ready', (e) => e.message)")
    assert outcome != "ready"
    visit.page.wait_for_timeout(300)
    warnings = [w for w in visit.warnings() if w.startswith("microadjust:")]
    assert len(warnings) == 1 and "default content" in warnings[0]
    assert visit.errors == []
    after = visit.page.evaluate(SLOT_STATE)
    assert after == before and all(s["applied"] is None for s in after)


def test_the_debug_panel_explains_each_decision(server, visit):
    boot(visit, server + "/?microadjust=debug")
    panel = visit.page.locator("aside[aria-label='microadjust decisions']")
    panel.get_by_text("cta →").wait_for()
    assert "ready in" in panel.inner_text() and "p=" in panel.inner_text()
