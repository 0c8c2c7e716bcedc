"""What the end-to-end tests share: page fixtures served from the test server's origin, the one
script that records what the library does, and waits on what it does (never on the clock)."""

from __future__ import annotations

import json
from typing import Any

BELOW_THE_FOLD = '<div style="height: 2400px">top of the page</div>'

RECORD = """(() => {
  window.__decisions = []; // microadjust:decision details, in order
  window.__posted = []; // messages the page posted to the microadjust worker
  window.__received = []; // messages that worker posted to the page
  window.__longtasks = [];
  window.__shifts = [];
  document.addEventListener('microadjust:decision', (e) => window.__decisions.push(e.detail));
  const Native = window.Worker;
  window.Worker = class extends Native {
    constructor(url, options) {
      super(url, options);
      this.tapped = String(url).includes('/microadjust/app-');
      if (this.tapped) this.addEventListener('message', (e) => window.__received.push(e.data));
    }
    postMessage(message, ...transfer) {
      if (this.tapped) window.__posted.push(message);
      return super.postMessage(message, ...transfer);
    }
  };
  const onLongTasks = (entries) => {
    for (const t of entries) {
      window.__longtasks.push({start: t.startTime, duration: t.duration,
        attribution: t.attribution.map((a) => a.containerSrc || a.containerName || a.name)});
    }
  };
  const onShifts = (entries) => {
    for (const s of entries) if (!s.hadRecentInput) window.__shifts.push(s.value);
  };
  const longtasks = new PerformanceObserver((list) => onLongTasks(list.getEntries()));
  longtasks.observe({type: 'longtask', buffered: true});
  const shifts = new PerformanceObserver((list) => onShifts(list.getEntries()));
  shifts.observe({type: 'layout-shift', buffered: true});
  // entries already reported but not yet delivered to the observers: take them now
  window.__takeRecords = () => {
    onLongTasks(longtasks.takeRecords());
    onShifts(shifts.takeRecords());
  };
})();"""

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

FLUSHES = "window.__posted.filter((m) => m.type === 'events').length"


LEARN_UNDER_AUTOMATION = {"automation": "learn"}  # Playwright sets navigator.webdriver


def fixture_page(
    body: str, config: dict[str, Any] | None = None, head: str = "", defer: bool = True
) -> str:
    """A page that uses the script tag, with ``body`` and its JSON configuration: ``config``
    over ``"automation": "learn"``, since a page driven by Playwright looks automated and would
    otherwise learn nothing (a test of that passes ``{"automation": "ignore"}``)."""
    settings = json.dumps({**LEARN_UNDER_AUTOMATION, **(config or {})})
    settings = f"<script type='application/json' data-microadjust>{settings}</script>"
    return (
        "<!doctype html><html><head><meta charset='utf-8'><link rel='icon' href='data:,'>"
        f"{settings}{head}<script src='/microadjust/microadjust.js'{' defer' if defer else ''}>"
        "</script></head>"
        f"<body>{body}</body></html>"
    )


def record(page) -> None:
    """From the next load on, record decisions, worker messages, long tasks and layout shifts."""
    page.add_init_script(RECORD)


def open_fixture(visit, server: str, html: str, query: str = "") -> None:
    """Serve ``html`` at /t/page.html on the server's origin, record the library, and load it."""
    visit.context.route(
        server + "/t/page.html*",
        lambda route: route.fulfill(status=200, content_type="text/html", body=html),
    )
    record(visit.page)
    visit.page.goto(server + "/t/page.html" + query)


def decided(page, *slots: str, count: int = 0) -> dict[str, dict[str, Any]]:
    """Wait until each of ``slots`` (and at least ``count`` slots) has a decision on screen;
    return the latest decision per slot."""
    page.wait_for_function(
        """([slots, count]) => {
          const seen = new Set(window.__decisions.map((d) => d.slot));
          return seen.size >= count && slots.every((slot) => seen.has(slot));
        }""",
        arg=[list(slots), count],
        timeout=60_000,  # it may include the boot, which the loader allows 30 s
    )
    return {d["slot"]: d for d in page.evaluate("window.__decisions")}


def decisions(visit) -> dict[str, dict[str, Any]]:
    """The decisions applied so far, by slot (the latest per slot)."""
    return {d["slot"]: d for d in visit.page.evaluate("window.__decisions")}


def wait_for_value(page, read: str, condition: str, what: str, timeout_s: float = 15) -> Any:
    """Evaluate the (async) expression ``read`` once per frame until the JavaScript function
    ``condition`` accepts its value; return the value. For values only a promise gives (the
    worker's IndexedDB, microadjust.export()), which page.wait_for_function cannot wait on."""
    return page.evaluate(
        f"""async () => {{
          const deadline = performance.now() + {timeout_s * 1000};
          for (;;) {{
            const value = await ({read});
            if (({condition})(value)) return value;
            if (performance.now() > deadline) throw new Error({json.dumps(f"waiting for {what}")});
            await new Promise(requestAnimationFrame);
          }}
        }}"""
    )


def stored_state(visit) -> dict[str, Any] | None:
    """The engine's checkpoint in IndexedDB, or None."""
    raw = visit.page.evaluate(STORED_STATE)
    return None if raw is None else json.loads(raw)


def wait_for_stored_state(visit, condition: str, what: str) -> dict[str, Any]:
    """Wait until the engine's checkpoint exists and ``condition`` (JavaScript) accepts it."""
    raw = wait_for_value(
        visit.page, STORED_STATE, f"(raw) => raw && ({condition})(JSON.parse(raw))", what
    )
    return json.loads(raw)


def next_frame(page) -> None:
    """Wait until the page has rendered the frame after this one: writes it scheduled are done."""
    page.evaluate("new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))")


def worker_caught_up(page, flushes: int = 1, click: bool = True) -> None:
    """Wait until the page has sent ``flushes`` more batches of behaviour to the worker (one
    per flush interval; with ``click``, each after a click that gives it something to send),
    the worker has answered a request sent after them (it handles messages in order), and any
    decision that came with them is on screen."""
    for _ in range(flushes):
        sent = page.evaluate(FLUSHES)
        if click:
            page.mouse.click(1, 1)
        page.wait_for_function(f"{FLUSHES} > {sent}")
    page.evaluate("microadjust.export()")
    next_frame(page)


def layout_shift(page) -> float:
    """The page's cumulative layout shift so far, including the frame just rendered."""
    next_frame(page)
    return page.evaluate("window.__takeRecords(), window.__shifts.reduce((a, b) => a + b, 0)")


def long_tasks(page, since: float) -> list[dict[str, Any]]:
    """The long tasks on the main thread that started at ``since`` (ms) or later."""
    return page.evaluate(
        "(since) => (window.__takeRecords(), window.__longtasks.filter((t) => t.start >= since))",
        since,
    )


def console_drained(visit) -> None:
    """Wait until every console message logged so far is in ``visit.console`` (in order)."""
    marker = "e2e: console drained"
    with visit.page.expect_console_message(lambda message: message.text == marker):
        visit.page.evaluate(f"console.debug({json.dumps(marker)})")


def warnings_from_the_library(visit, at_least: int = 0) -> list[str]:
    """The console warnings of microadjust, once there are at least ``at_least`` of them."""
    while len(warned := [w for w in visit.warnings() if "microadjust" in w]) < at_least:
        visit.page.wait_for_event("console")
    return warned


def wait_for_request(visit, fragment: str) -> None:
    """Wait until the page or one of its workers has requested a URL containing ``fragment``."""
    if not any(fragment in url for url in visit.requests):
        visit.context.wait_for_event("request", lambda request: fragment in request.url)
