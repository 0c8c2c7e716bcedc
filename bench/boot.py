"""What the script tag costs a page: bytes shipped, time to first decision, main-thread blocking.

    .venv/bin/python bench/boot.py [--runs 3] [--markdown]

Builds dist/ if needed, serves it on a free loopback port and loads the demo in Debian's Chromium
as a visitor has it, with a profile on disk: cold (a fresh profile: empty HTTP cache) and warm
(the next page view, after reading the first for a few seconds: HTTP cache and Chromium's
compiled-code caches), each also with the page's CPU throttled 4x through the DevTools protocol
(``Emulation.setCPUThrottlingRate``; Chromium does not throttle workers this way, see throttle()),
and once more in a private window, where Chromium keeps no compiled code between page views.
Time to first decision is measured in the page, from navigation start to the first
``microadjust:decision`` event. Blocking time is the Total Blocking Time of the main thread
(sum of each long task's time beyond 50 ms) from navigation start to the first decision.
The worker's own ``microadjust:worker:*`` performance marks split the warm boot into steps.
A first visit's transfer is the files the cold load requested, at the size of the brotli
(or gzip) twin the server sends; the machine's other load makes times noisy, not bytes.
The warm loads start without the decisions made ahead, so they time the engine's own boot. A
last load, the returning page view, has them: the share of the demo's slots (not triggers,
not manual ones) that show a decision made ahead applied before first paint.
The loader's own dev-tools timings (``performance.measure`` entries ``microadjust:boot``,
``microadjust:decide:<slot>``, ``microadjust:apply:<slot>``) are read from the page after the
first decisions and printed too.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from conftest import CHROMIUM, CHROMIUM_FLAGS, serving  # noqa: E402

PROBE = """
window.__tasks = [];
new PerformanceObserver((l) => l.getEntries().forEach((t) => window.__tasks.push(t.duration)))
  .observe({type: 'longtask', buffered: true});
window.__first = new Promise((resolve) => document.addEventListener(
  'microadjust:decision', () => resolve(performance.now()), {once: true}));
window.__beforePaint = new Set(); // slots applied before first paint...
window.__ahead = new Set(); // ...and slots showing a decision made ahead
new MutationObserver((changes) => {
  if (performance.getEntriesByType('paint').length) return;
  for (const {target} of changes) {
    window.__beforePaint.add(target.dataset.maSlot ?? target.dataset.maRank);
  }
}).observe(document, {attributes: true, subtree: true, attributeFilter: ['data-ma-applied']});
document.addEventListener('microadjust:decision', (e) => {
  if (e.detail.ahead) window.__ahead.add(e.detail.slot);
});
"""
WORKER_STEPS = ["init", "python", "installed", "imported", "ready", "decided"]
# the worker's marks, in ms since the page's navigation start (the worker has its own clock)
WORKER_MARKS = """(pageOrigin) => Object.fromEntries(performance.getEntriesByType('mark')
  .filter((m) => m.name.startsWith('microadjust:worker:'))
  .map((m) => [m.name.slice(19), performance.timeOrigin + m.startTime - pageOrigin]))"""


def worker_marks(page) -> dict[str, float]:
    """When the engine's worker reached each boot step, in ms since navigation start."""
    [worker] = [w for w in page.workers if w.url.endswith("/worker.js")]
    return worker.evaluate(WORKER_MARKS, page.evaluate("performance.timeOrigin"))


ELIGIBLE = """document.querySelectorAll(['[data-ma-slot]:not([data-ma-trigger])',
  '[data-ma-rank]'].map((hosts) => hosts + ':not([data-ma-manual])').join()).length"""
CACHED = (
    "(n) => Object.keys(JSON.parse(localStorage.getItem('microadjust:ahead') || '{}')).length >= n"
)
AHEAD_BEFORE_PAINT = """new Promise((resolve) => requestAnimationFrame(() =>
  requestAnimationFrame(() => resolve(
    [...window.__ahead].filter((slot) => window.__beforePaint.has(slot)).length))))"""

# The loader's timings once the first decisions are applied (two frames after the first one).
MEASURES = """window.__first.then(() => new Promise((done) => requestAnimationFrame(() =>
  requestAnimationFrame(() => done(performance.getEntriesByType('measure')
    .filter((m) => m.name.startsWith('microadjust:'))
    .map((m) => [m.name.split(':')[1], m.duration]))))))"""

AS_A_VISITOR = [*CHROMIUM_FLAGS, "--disable-blink-features=AutomationControlled"]


@dataclass
class Figures:
    """Times (ms) per load kind, the bundle files the cold loads requested, and the share of
    slots a returning page view showed from first paint (per CPU throttling label)."""

    times: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    requested: set[str] = field(default_factory=set)
    before_paint: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))


def file_sizes(path: Path) -> tuple[int, int, int]:
    """(bytes, brotli bytes, gzip bytes) as the server sends the file."""
    raw = path.stat().st_size
    twins = [path.with_name(path.name + suffix) for suffix in (".br", ".gz")]
    return raw, *(twin.stat().st_size if twin.exists() else raw for twin in twins)


def throttle(context, page, rate: float) -> None:
    """Slow the page's main thread ``rate`` times.

    Chromium (156) refuses ``Emulation.setCPUThrottlingRate`` for a worker target ("Operation
    is only supported for pages, not workers"), so the engine's own start-up runs unthrottled:
    this row shows the loader's and the page's share on a slow phone, not Python's.
    """
    session = context.new_cdp_session(page)
    session.send("Emulation.setCPUThrottlingRate", {"rate": rate})


# (CPU throttling, label, private window): a visitor's own profile keeps Chromium's compiled-code
# caches (V8's for pyodide.asm.js, the WebAssembly code cache for pyodide.asm.wasm); a private
# window keeps none, so its warm load compiles everything again
KINDS = ((1, "", False), (4, "_4x", False), (1, "_private", True))
DWELL_MS = 3000  # a visitor reads each page this long before the next (Chromium writes its
# WebAssembly code cache once enough of the module is optimized, about a second after start)
# a visitor's first page view, the next one, and the one after (V8 caches the code of a script
# like pyodide.asm.js from its second load on, so the third view is the steady state)
PAGE_VIEWS = ("cold", "warm", "later")


@contextmanager
def visitor(playwright, *, private: bool) -> Iterator:
    """A browser context as a visitor has it: a fresh profile on disk, or a private window."""
    if private:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=AS_A_VISITOR)
        try:
            yield browser.new_context()
        finally:
            browser.close()
        return
    with tempfile.TemporaryDirectory() as profile:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, args=AS_A_VISITOR
        )
        try:
            yield context
        finally:
            context.close()


def time_boot(base: str, runs: int) -> Figures:
    from playwright.sync_api import sync_playwright

    figures = Figures()
    with sync_playwright() as playwright:
        for _ in range(runs):
            for rate, label, private in KINDS:
                # a visitor, not a bot: with navigator.webdriver set the demo learns and keeps
                # nothing, so no decision would be made ahead for the returning page view
                with visitor(playwright, private=private) as context:
                    page = context.new_page()
                    page.add_init_script(PROBE)
                    if rate != 1:
                        throttle(context, page, rate)
                    urls: list[str] = []
                    context.on("request", lambda request, urls=urls: urls.append(request.url))
                    for kind in PAGE_VIEWS:
                        if kind == "cold":
                            page.goto(base + "/")
                        else:  # the engine's own boot: without the decisions made ahead
                            page.wait_for_function(CACHED, arg=page.evaluate(ELIGIBLE))
                            page.wait_for_timeout(DWELL_MS)
                            page.evaluate("localStorage.removeItem('microadjust:ahead')")
                            page.reload()
                        figures.times[kind + label].append(page.evaluate("window.__first"))
                        if rate == 1:
                            for step, at in worker_marks(page).items():
                                figures.times[f"{kind}{label}:{step}"].append(at)
                        for name, duration in page.evaluate(MEASURES):  # boot, decide, apply
                            figures.times[f"{name}_{kind}{label}"].append(duration)
                        blocking = page.evaluate(
                            "window.__tasks.reduce((s, d) => s + Math.max(0, d - 50), 0)"
                        )
                        figures.times[f"tbt_{kind}{label}"].append(blocking)
                        if kind == "cold":
                            figures.requested.update(
                                url.split("?")[0][len(base) + 1 :]
                                for url in urls
                                if url.startswith(base + "/microadjust/")
                            )
                    figures.before_paint[label].append(returning_share(page))
    return figures


def returning_share(page) -> float:
    """A returning page view: the share of eligible slots shown from first paint by a decision
    made ahead (the cache is full before it starts)."""
    eligible = page.evaluate(ELIGIBLE)
    page.wait_for_function(CACHED, arg=eligible, timeout=60_000)
    page.reload()
    page.wait_for_function("performance.getEntriesByType('paint').length > 0")
    return page.evaluate(AHEAD_BEFORE_PAINT) / eligible


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="cold+warm loads to take the median of")
    parser.add_argument("--markdown", action="store_true", help="print a dated markdown table")
    args = parser.parse_args()
    subprocess.run([sys.executable, str(ROOT / "build" / "bundle.py")], check=True)
    with serving() as base:
        figures = time_boot(base, args.runs)

    dist = ROOT / "dist"
    bundle = [p for p in (dist / "microadjust").rglob("*") if p.is_file()]
    bundle = [p for p in bundle if p.suffix not in (".br", ".gz") and not p.name.startswith(".")]
    first_visit = [file_sizes(dist / path) for path in sorted(figures.requested)]
    raw, brotli, gzipped = (sum(column) for column in zip(*first_visit, strict=True))
    loader_raw, loader_br, loader_gz = file_sizes(dist / "microadjust" / "microadjust.js")
    median = {key: statistics.median(values) for key, values in figures.times.items()}
    mb, mib = 10**6, 2**20
    rows = [
        (
            "loader `microadjust.js`",
            f"{loader_raw / 1024:.1f} KiB, {loader_br / 1024:.1f} KiB brotli"
            f" ({loader_gz / 1024:.1f} KiB gzip)",
        ),
        (
            "first visit downloads",
            f"{raw / mib:.1f} MiB: {brotli / mb:.2f} MB brotli ({brotli / mib:.2f} MiB),"
            f" {gzipped / mb:.2f} MB gzip",
        ),
        (
            "whole bundle (scipy, scikit-learn load when needed)",
            f"{sum(p.stat().st_size for p in bundle) / mib:.1f} MiB",
        ),
        ("time to first decision, cold", f"{median['cold'] / 1000:.2f} s"),
        (
            f"time to first decision, warm: the next page view ({DWELL_MS / 1000:.0f} s later)"
            " / the one after",
            f"{median['warm'] / 1000:.2f} s / {median['later'] / 1000:.2f} s",
        ),
        (
            "the same in a private window (no compiled-code caches), cold / warm / the one after",
            " / ".join(f"{median[kind + '_private'] / 1000:.2f} s" for kind in PAGE_VIEWS),
        ),
        (
            "the same with the page's main thread throttled 4x, cold / warm / the one after",
            " / ".join(f"{median[kind + '_4x'] / 1000:.2f} s" for kind in PAGE_VIEWS),
        ),
        *(
            (
                f"{kind}, inside the worker: script started / Python up / numpy and engine"
                " unpacked / imported / engine ready / first decision out",
                " / ".join(f"{median[f'{kind}:{step}'] / 1000:.2f} s" for step in WORKER_STEPS),
            )
            for kind in ("warm", "later")
        ),
        (
            "a returning page view: slots applied before first paint (4x)",
            f"{statistics.median(figures.before_paint['']):.0%}"
            f" ({statistics.median(figures.before_paint['_4x']):.0%})",
        ),
        (
            "main-thread blocking time until then, cold / warm (4x: cold / warm)",
            f"{median['tbt_cold']:.0f} ms / {median['tbt_warm']:.0f} ms"
            f" ({median['tbt_cold_4x']:.0f} ms / {median['tbt_warm_4x']:.0f} ms)",
        ),
        (
            "dev-tools timings (`microadjust:*` measures), cold / warm: boot; decision round"
            " trip; DOM write",
            "; ".join(
                " / ".join(
                    f"{median[key]:.{digits}f} ms" if key in median else "none recorded"
                    for key in (f"{name}_cold", f"{name}_warm")
                )
                for name, digits in (("boot", 0), ("decide", 0), ("apply", 2))
            ),
        ),
    ]
    if args.markdown:
        today = datetime.date.today().isoformat()
        print(f"Boot, {today}, headless Chromium, 2 cores, median of {args.runs}:\n")
        print("| figure | value |\n| --- | --- |")
        for figure, value in rows:
            print(f"| {figure} | {value} |")
        return 0
    print(f"{'requested on a first visit':<64} {'bytes':>12} {'brotli':>12} {'gzip':>12}")
    for path, sizes in zip(sorted(figures.requested), first_visit, strict=True):
        print(f"  {path:<62} {sizes[0]:>12,} {sizes[1]:>12,} {sizes[2]:>12,}")
    for figure, value in rows:
        print(f"{figure}: {value}")
    for key, values in figures.times.items():
        print(f"{key:<12} median {median[key]:8.0f} ms   runs {[round(v) for v in values]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
