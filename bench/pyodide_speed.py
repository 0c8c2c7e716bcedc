"""Per-decision speed of the engine under Pyodide, in a Web Worker of Debian's Chromium.

    .venv/bin/python bench/pyodide_speed.py [--decisions 2000] [--markdown]

The same seeded contexts as bench/speed.py (about 50 features, 4 actions), timed the same way
(rank + reward, from the dict going in to the reward learned), but inside the browser: the
bundled Pyodide 0.27.7 with numpy 2.0.2 and the engine wheel. The page is cross-origin isolated
so that the timer's resolution is 5 µs rather than 100 µs.
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
import speed  # noqa: E402
from conftest import CHROMIUM, CHROMIUM_FLAGS, serving  # noqa: E402

POLICIES = ["auto", "epsilon_greedy", "thompson", "linucb", "lin_ts"]

TIMING = """
import json, math, random, time
from microadjust import Engine
ACTIONS = {actions!r}
NUMERIC = {numeric!r}
CATEGORICAL = {categorical!r}
BOOLEANS = {booleans!r}
{contexts}
{click}
def run(policy, n, warmup):
    engine, draws = Engine(policy=policy, seed=0), random.Random(2)
    times = []
    for i, context in enumerate(contexts(n + warmup, 1)):
        start = time.perf_counter()
        decision = engine.rank(context, ACTIONS)
        engine.reward(decision.event_id, click(context, decision.action, draws.random()))
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1e6)
    times.sort()
    return {{"median": times[len(times) // 2], "p99": times[int(len(times) * 0.99)]}}
json.dumps({{p: run(p, {decisions}, {warmup}) for p in {policies!r}}})
"""

WORKER = """
importScripts('{pyodide}pyodide.js');
onmessage = async ({{ data }}) => {{
  try {{
    const pyodide = await loadPyodide({{ indexURL: '{pyodide}',
                                         packages: ['numpy', 'micropip'] }});
    await pyodide.pyimport('micropip').install.callKwargs(data.wheel, {{ deps: false }});
    postMessage({{ isolated: self.crossOriginIsolated, result: pyodide.runPython(data.code) }});
  }} catch (error) {{
    postMessage({{ error: String(error) }});
  }}
}};
"""

PAGE = """<!doctype html><script>
window.run = (wheel, code) => new Promise((resolve) => {
  const url = URL.createObjectURL(new Blob([document.getElementById('worker').textContent]));
  const worker = new Worker(url);
  worker.onmessage = ({ data }) => resolve(data);
  worker.onerror = (event) => resolve({ error: event.message || 'the worker failed to load' });
  worker.postMessage({ wheel, code });
});
</script><script type="text/worker" id="worker">WORKER</script>"""


def measure(base: str, decisions: int) -> dict:
    from playwright.sync_api import sync_playwright

    loader = (ROOT / "dist" / "microadjust" / "microadjust.js").read_text()
    assets = json.loads(loader.split("const ASSETS = ")[1].split(";")[0])
    wheel = base + "/microadjust/" + assets["wheel"]
    code = TIMING.format(
        actions=speed.ACTIONS,
        numeric=speed.NUMERIC,
        categorical=speed.CATEGORICAL,
        booleans=speed.BOOLEANS,
        contexts=inspect.getsource(speed.contexts),
        click=inspect.getsource(speed.click),
        decisions=decisions,
        warmup=200,
        policies=POLICIES,
    )
    page = PAGE.replace("WORKER", WORKER.format(pyodide=base + "/microadjust/" + assets["pyodide"]))
    isolation = {
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cross-Origin-Embedder-Policy": "require-corp",
    }
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        tab = browser.new_page()
        tab.route(
            base + "/bench.html",
            lambda route: route.fulfill(
                status=200, content_type="text/html", body=page, headers=isolation
            ),
        )
        tab.goto(base + "/bench.html")
        answer = tab.evaluate("([wheel, code]) => run(wheel, code)", [wheel, code])
        browser.close()
    if "error" in answer:
        raise RuntimeError(f"the benchmark failed in the browser: {answer['error']}")
    return {"isolated": answer["isolated"], **json.loads(answer["result"])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=2000)
    parser.add_argument("--markdown", action="store_true", help="print a dated markdown table")
    args = parser.parse_args()
    subprocess.run([sys.executable, str(ROOT / "build" / "bundle.py")], check=True)
    with serving() as base:
        figures = measure(base, args.decisions)
    if not figures.pop("isolated"):
        print("warning: the page was not cross-origin isolated; timer resolution is 100 µs")
    if args.markdown:
        print(
            f"Under Pyodide 0.27.7 in Chromium's worker, {datetime.date.today().isoformat()},"
            f" {args.decisions} decisions, rank + reward, µs:\n"
        )
        print("| policy | median | p99 |\n| --- | --- | --- |")
    for policy, timing in figures.items():
        if args.markdown:
            print(f"| {policy} | {timing['median']:.0f} | {timing['p99']:.0f} |")
        else:
            print(f"{policy:<16} median {timing['median']:8.0f} µs   p99 {timing['p99']:8.0f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
