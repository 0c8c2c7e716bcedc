"""How long the worker's Python steps take: the engine's import, its init and the first decision.

    .venv/bin/python bench/import_time.py [--runs 5] [--importtime 25] [--wheel OTHER.whl ...]
        [--runtime OTHER/pyodide-* ...]

Boots the trimmed, precompiled runtime of dist/ under Node as web/worker.js does
(bench/import_time.cjs), then times, in one fresh process per run, what follows ``installed``
in the worker's boot marks: ``import microadjust.browser.session`` (``imported``), the
WorkerSession and the demo's ``init`` message (``ready``, on a returning visitor's saved state
as in the warm load of bench/boot.py, and on a first visit's), and the demo's first ``decide``.
Each step's share spent compiling and instantiating WebAssembly (numpy's shared libraries,
loaded on first import) is printed beside it: the rest is Python (with V8's lazy compilation,
a function's code is compiled when it first runs, and counts as Python), and so is the time
Python's cyclic garbage collector ran. Prints the median and the fastest wall time of the
runs, and the median CPU time of the process (all threads: less disturbed than wall time by
the machine's other load).
``--importtime N`` adds one run under ``PYTHONPROFILEIMPORTTIME`` and its N costliest modules
by their own time (microseconds, as Python prints them). ``--wheel`` also times another build
of the engine wheel (an earlier commit's, say) on the same runtime, and ``--runtime`` another
build's Pyodide directory (its numpy and runtime script) with the same wheel, for a
before/after: the runs of each are interleaved.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "py"))
from microadjust.browser.session import WorkerSession  # noqa: E402

DEMO_CONFIG = {"policy": "auto", "holdout": 0.05, "attribution_window_s": 1800}
DEMO_CONTEXT = {
    "device": "desktop",
    "viewport_w": 1280,
    "viewport_h": 900,
    "touch": False,
    "hour": 10,
    "weekday": 3,
    "language": "en",
    "referrer": "direct",
    "page": "shop",
}
DEMO_SLOTS = [
    {"slot": "headline", "variants": ["default", "deal", "social"]},
    {"slot": "cta", "variants": ["default", "discount", "quiz"]},
    {"slot": "hero-art", "variants": ["default", "beans"]},
    {"slot": "roasts", "items": ["huila", "yirgacheffe", "night-shift"]},
    {"slot": "reviews", "variants": ["default", "rating"]},
    {"slot": "nudge", "variants": ["default", "free"], "trigger": "dwell_s > 30"},
]
STEPS = ["import", "session", "init", "decide"]

# Runs inside Pyodide: one line of JSON, each step's wall, WebAssembly, CPU and garbage
# collection time, in ms.
SCRIPT = """
import gc, json, time, js
collecting = [0.0, 0.0]  # since when, and how long in all
def collector(phase, info):
    if phase == "start":
        collecting[0] = time.perf_counter()
    else:
        collecting[1] += time.perf_counter() - collecting[0]
gc.callbacks.append(collector)
def step(name, run):
    wasm, cpu, gc_s, start = js.wasmTiming.ms, js.cpuMs(), collecting[1], time.perf_counter()
    result = run()
    wall = (time.perf_counter() - start) * 1000
    took[name] = [wall, js.wasmTiming.ms - wasm, js.cpuMs() - cpu, (collecting[1] - gc_s) * 1000]
    return result
took = {}
messages = json.loads(open("/host/messages.json").read())
session = step("import", lambda: __import__("microadjust.browser.session").browser.session)
session = step("session", session.WorkerSession)
for name in ("init", "decide"):
    text = json.dumps(messages[name])  # as the worker's JSON.stringify, not timed
    replies = json.loads(step(name, lambda: session.handle_json(text)))
    assert not [r for r in replies if r["type"] == "error"], replies
print("TIMES " + json.dumps(took))
"""


@dataclass(frozen=True)
class Runtime:
    """The worker's files in dist/: Pyodide, its runtime script, the trimmed stdlib,
    precompiled numpy, the wheel."""

    pyodide: Path
    script: str  # the runtime script's name in ``pyodide``
    numpy: Path
    wheel: Path

    @classmethod
    def in_dist(cls) -> Runtime:
        subprocess.run([sys.executable, str(ROOT / "build" / "bundle.py")], check=True)
        [wheel] = (ROOT / "dist" / "microadjust").glob("app-*/microadjust-*.whl")
        return cls.in_directory(next((ROOT / "dist" / "microadjust").glob("pyodide-*")), wheel)

    @classmethod
    def in_directory(cls, pyodide: Path, wheel: Path) -> Runtime:
        """The runtime of a built ``pyodide-*`` directory (its own numpy and runtime script:
        the official one in a build that derives none), with ``wheel``."""
        derived = json.loads((pyodide / "pyodide-lock.json").read_text())["derived"]
        script = derived.get("runtime", {"file_name": "pyodide.asm.js"})["file_name"]
        return cls(pyodide, script, pyodide / derived["numpy"]["file_name"], wheel)

    def run(self, host: Path, importtime: bool = False) -> subprocess.CompletedProcess[str]:
        command = ["node", str(ROOT / "bench" / "import_time.cjs"), str(self.pyodide), str(host)]
        command += ["script.py", "python_stdlib-engine.zip", self.script]
        command += [str(self.numpy), str(self.wheel)]
        result = subprocess.run(
            command + (["--importtime"] if importtime else []),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if result.returncode != 0:
            raise SystemExit(f"the runtime failed:\n{result.stderr[-3000:]}")
        return result


def saved_state() -> dict:
    """A returning visitor's checkpoint: one page view of the demo, decided, then saved."""
    session = WorkerSession()
    session.handle(init_message(None))
    session.handle({"v": 1, "type": "decide", "context": DEMO_CONTEXT, "slots": DEMO_SLOTS})
    return session.snapshot()


def init_message(state: dict | None) -> dict:
    return {
        "v": 1,
        "type": "init",
        "config": DEMO_CONFIG,
        "context": DEMO_CONTEXT,
        "state": state,
        "boot_ms": 700,
        "persist": True,
        "gpc": False,
        "automated": False,
        "priors": None,
        "explain": False,
        "ahead": [],
    }


def times(runtime: Runtime, host: Path) -> dict[str, list[float]]:
    [line] = [x for x in runtime.run(host).stdout.splitlines() if x.startswith("TIMES ")]
    return json.loads(line[len("TIMES ") :])


def importtime_table(runtime: Runtime, host: Path, top: int) -> list[tuple[int, int, str]]:
    """(self µs, cumulative µs, module) of the costliest imports, costliest first."""
    row = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)")
    rows = [
        (int(m[1]), int(m[2]), m[3][1:] + m[4])
        for m in map(row.match, runtime.run(host, importtime=True).stderr.splitlines())
        if m
    ]
    return sorted(rows, reverse=True)[:top]


def report(label: str, runs: list[dict[str, list[float]]]) -> None:
    """Each step's wall time (median, fastest), and its WebAssembly, CPU and garbage collection
    time (medians)."""
    print(f"{label}, {len(runs)} runs (ms: wall median, fastest; wasm, CPU, gc medians):")
    for name in [*STEPS, "total"]:
        steps = STEPS if name == "total" else [name]
        wall, wasm, cpu, gc = ([sum(run[s][i] for s in steps) for run in runs] for i in range(4))
        print(
            f"  {name:8} {statistics.median(wall):7.1f} {min(wall):7.1f}"
            f"   wasm {statistics.median(wasm):6.1f}   cpu {statistics.median(cpu):7.1f}"
            f"   gc {statistics.median(gc):6.1f}"
        )


def paired(label: str, runs: list[dict[str, list[float]]], others: list[dict]) -> None:
    """The median of the differences of runs made back to back: steadier than a difference
    of medians when the machine's load changes during the runs."""
    print(f"{label}, median of paired differences (ms, wall):")
    for name in [*STEPS, "total"]:
        steps = STEPS if name == "total" else [name]
        deltas = [
            sum(run[s][0] - other[s][0] for s in steps)
            for run, other in zip(runs, others, strict=True)
        ]
        print(f"  {name:8} {statistics.median(deltas):+7.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--importtime", type=int, default=0, metavar="N")
    parser.add_argument(
        "--wheel", type=Path, action="append", default=[], help="another engine wheel to time"
    )
    parser.add_argument(
        "--runtime",
        type=Path,
        action="append",
        default=[],
        help="another build's dist/microadjust/pyodide-* directory to time (with dist's wheel)",
    )
    args = parser.parse_args()
    runtimes = {"dist": Runtime.in_dist()}
    for pyodide in args.runtime:
        runtimes[str(pyodide)] = Runtime.in_directory(pyodide, runtimes["dist"].wheel)
    for wheel in args.wheel:
        runtimes[wheel.name if wheel.name not in runtimes else str(wheel)] = dataclasses.replace(
            runtimes["dist"], wheel=wheel
        )
    decide = {"v": 1, "type": "decide", "context": DEMO_CONTEXT, "slots": DEMO_SLOTS, "t": 800}
    with tempfile.TemporaryDirectory() as tmp:
        host = Path(tmp)
        (host / "script.py").write_text(SCRIPT)
        for visit, state in (("returning", saved_state()), ("first", None)):
            messages = {"init": init_message(state), "decide": decide}
            (host / "messages.json").write_text(json.dumps(messages))
            runs: dict[str, list] = {name: [] for name in runtimes}
            for _ in range(args.runs):  # interleaved: a change of the machine's load hits all
                for name, runtime in runtimes.items():
                    runs[name].append(times(runtime, host))
            for name in runtimes:
                report(f"{visit} visit, {name}", runs[name])
            for name in list(runtimes)[1:]:
                paired(f"{visit} visit, dist - {name}", runs["dist"], runs[name])
        if args.importtime:
            print(f"\n{args.importtime} costliest imports (self µs, cumulative µs, module):")
            for own, cumulative, module in importtime_table(
                runtimes["dist"], host, args.importtime
            ):
                print(f"  {own:8} {cumulative:8}  {module}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
