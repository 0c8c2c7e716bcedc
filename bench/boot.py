"""What the script tag costs a page: bytes shipped, time to first decision, main-thread blocking.

    .venv/bin/python bench/boot.py [--runs 3] [--markdown]

Builds dist/ if needed, serves it on a free loopback port and loads the demo in Debian's Chromium:
cold (a fresh profile: empty HTTP cache) and warm (a reload: HTTP cache and compiled wasm cache).
Time to first decision is measured in the page, from navigation start to the first
``microadjust:decision`` event. Blocking time is the Total Blocking Time of the main thread
(sum of each long task's time beyond 50 ms) from navigation start to the first decision.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import json
import statistics
import subprocess
import sys
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
"""


def bundle_bytes() -> tuple[list[tuple[str, int, int]], list[str]]:
    """(path, bytes, gzip bytes) for every file in the bundle, and the ones a first visit loads."""
    bundle = ROOT / "dist" / "microadjust"
    lock = json.loads(next(bundle.glob("pyodide-*/pyodide-lock.json")).read_text())
    boot_packages = {"numpy", "micropip", "packaging"}
    boot_wheels = {lock["packages"][name]["file_name"] for name in boot_packages}
    rows, at_boot = [], []
    files = [p for p in bundle.rglob("*") if p.is_file() and p.suffix != ".gz"]
    for path in sorted(p for p in files if not p.name.startswith(".")):
        data = path.read_bytes()
        twin = path.with_name(path.name + ".gz")
        sent = twin.stat().st_size if twin.exists() else len(gzip.compress(data, 6))
        relative = str(path.relative_to(bundle))
        rows.append((relative, len(data), sent))
        is_wheel = path.suffix in (".whl", ".zip") and path.name != "python_stdlib.zip"
        if (
            path.name == "debug.js"
            or is_wheel
            and path.name not in boot_wheels
            and "app-" not in relative
        ):
            continue
        at_boot.append(relative)
    return rows, at_boot


def time_boot(base: str, runs: int) -> dict[str, list[float]]:
    from playwright.sync_api import sync_playwright

    figures: dict[str, list[float]] = {"cold": [], "warm": [], "tbt_cold": [], "tbt_warm": []}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        for _ in range(runs):
            context = browser.new_context()
            page = context.new_page()
            page.add_init_script(PROBE)
            for kind in ("cold", "warm"):
                if kind == "cold":
                    page.goto(base + "/")
                else:
                    page.reload()
                figures[kind].append(page.evaluate("window.__first"))
                blocking = page.evaluate(
                    "window.__tasks.reduce((s, d) => s + Math.max(0, d - 50), 0)"
                )
                figures[f"tbt_{kind}"].append(blocking)
            context.close()
        browser.close()
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="cold+warm loads to take the median of")
    parser.add_argument("--markdown", action="store_true", help="print a dated markdown table")
    args = parser.parse_args()
    subprocess.run([sys.executable, str(ROOT / "build" / "bundle.py")], check=True)
    rows, at_boot = bundle_bytes()
    with serving() as base:
        times = time_boot(base, args.runs)

    sizes = {path: (raw, sent) for path, raw, sent in rows}
    boot_raw = sum(sizes[p][0] for p in at_boot)
    boot_sent = sum(sizes[p][1] for p in at_boot)
    loader_raw, loader_sent = sizes["microadjust.js"]
    median = {key: statistics.median(values) for key, values in times.items()}
    today = datetime.date.today().isoformat()
    if args.markdown:
        mib = 2**20
        figures = [
            (
                "loader `microadjust.js`",
                f"{loader_raw / 1024:.1f} KiB, {loader_sent / 1024:.1f} KiB gzip",
            ),
            ("first visit downloads", f"{boot_raw / mib:.1f} MiB, {boot_sent / mib:.1f} MiB gzip"),
            (
                "whole bundle (scipy, scikit-learn load when needed)",
                f"{sum(r for _, r, _ in rows) / mib:.1f} MiB",
            ),
            ("time to first decision, cold", f"{median['cold'] / 1000:.2f} s"),
            ("time to first decision, warm (reload)", f"{median['warm'] / 1000:.2f} s"),
            (
                "main-thread blocking time until then, cold / warm",
                f"{median['tbt_cold']:.0f} ms / {median['tbt_warm']:.0f} ms",
            ),
        ]
        print(f"Boot, {today}, headless Chromium, 2 cores, median of {args.runs}:\n")
        print("| figure | value |\n| --- | --- |")
        for figure, value in figures:
            print(f"| {figure} | {value} |")
        return 0
    print(f"{'file':<64} {'bytes':>12} {'gzip':>12}")
    for path, raw, sent in rows:
        mark = "*" if path in at_boot else " "
        print(f"{mark} {path:<62} {raw:>12,} {sent:>12,}")
    print(f"* loaded on a first visit: {boot_raw:,} bytes, {boot_sent:,} sent with gzip")
    for key, values in times.items():
        print(f"{key:<10} median {median[key]:8.0f} ms   runs {[round(v) for v in values]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
