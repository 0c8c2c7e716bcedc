"""What the end-to-end tests share: page fixtures served from the test server's origin, and
scripts that read what the library did."""

from __future__ import annotations

import json
import time
from typing import Any

BELOW_THE_FOLD = '<div style="height: 2400px">top of the page</div>'

RECORD = """
window.__decisions = [];
window.__longtasks = [];
window.__shifts = [];
document.addEventListener('microadjust:decision', (e) => window.__decisions.push(e.detail));
new PerformanceObserver((list) => {
  for (const t of list.getEntries()) {
    window.__longtasks.push({start: t.startTime, duration: t.duration});
  }
}).observe({type: 'longtask', buffered: true});
new PerformanceObserver((list) => {
  for (const s of list.getEntries()) if (!s.hadRecentInput) window.__shifts.push(s.value);
}).observe({type: 'layout-shift', buffered: true});
"""

SLOTS = """[...document.querySelectorAll('[data-ma-slot]')].map((slot) => ({
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
    get.onsuccess = () => { open.result.close(); resolve(get.result ?? null); };
  };
})"""


def fixture_page(
    body: str, config: dict[str, Any] | None = None, head: str = "", defer: bool = True
) -> str:
    """A page that uses the script tag, with ``body`` and an optional JSON configuration."""
    settings = ""
    if config is not None:
        settings = f"<script type='application/json' data-microadjust>{json.dumps(config)}</script>"
    return (
        "<!doctype html><html><head><meta charset='utf-8'><link rel='icon' href='data:,'>"
        f"{settings}{head}<script src='/microadjust/microadjust.js'{' defer' if defer else ''}>"
        "</script></head>"
        f"<body>{body}</body></html>"
    )


def open_fixture(visit, server: str, html: str, query: str = "") -> None:
    """Serve ``html`` at /t/page.html on the server's origin, record the library, and load it."""
    visit.context.route(
        server + "/t/page.html*",
        lambda route: route.fulfill(status=200, content_type="text/html", body=html),
    )
    visit.page.add_init_script(RECORD)
    visit.page.goto(server + "/t/page.html" + query)


def wait_until(condition, what: str, timeout_s: float = 15) -> Any:
    """Poll ``condition()`` until it returns something truthy."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def stored_state(visit) -> dict[str, Any] | None:
    """The engine's checkpoint in IndexedDB, or None."""
    raw = visit.page.evaluate(STORED_STATE)
    return None if raw is None else json.loads(raw)


def decisions(visit) -> dict[str, dict[str, Any]]:
    """The decisions applied so far, by slot (the latest per slot)."""
    return {d["slot"]: d for d in visit.page.evaluate("window.__decisions")}
