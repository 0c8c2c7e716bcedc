"""Speed benchmark: rank + reward time per decision on CPython, microadjust vs VW vs MABWiser.

Every learner gets the same seeded contexts of about 50 features (42 numeric, 8 strings and
booleans) with 4 actions. A decision is timed from the dict context going in to the reward
being learned, including whatever text formatting or vectorizing the library needs. Figures
are the median and 99th percentile over ``--decisions`` decisions after ``--warmup`` ones.

Run: ``.venv/bin/python bench/speed.py [--decisions N] [--markdown]``
"""

from __future__ import annotations

import argparse
import datetime
import gc
import math
import os
import platform
import random
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import quality_adapters as qa  # noqa: E402

ACTIONS = ["variant_a", "variant_b", "variant_c", "variant_d"]
NUMERIC = 42
CATEGORICAL = {
    "device": ["mobile", "desktop", "tablet"],
    "referrer": ["search", "social", "direct", "email"],
    "country": ["de", "fr", "us", "uk", "es", "it"],
    "browser": ["chrome", "safari", "firefox", "edge"],
    "page_type": ["home", "product", "article", "checkout"],
    "daypart": ["morning", "afternoon", "evening", "night"],
}
BOOLEANS = ["returning", "logged_in"]
BLOCK = 100  # learners take turns every BLOCK decisions


def contexts(n: int, seed: int) -> list[dict[str, float | int | str | bool]]:
    """``n`` seeded contexts with 42 numeric, 6 categorical and 2 boolean features."""
    rng = random.Random(seed)
    out: list[dict[str, float | int | str | bool]] = []
    for _ in range(n):
        ctx: dict[str, float | int | str | bool] = {
            f"x{i}": round(rng.gauss(0.0, 1.0), 4) for i in range(NUMERIC)
        }
        ctx.update({k: rng.choice(v) for k, v in CATEGORICAL.items()})
        ctx.update({k: rng.random() < 0.3 for k in BOOLEANS})
        out.append(ctx)
    return out


def click(context: dict, action: str, draw: float) -> float:
    """A simple seeded reward: click when the draw falls under a context-dependent rate."""
    k = ACTIONS.index(action)
    device_match = context["device"] == CATEGORICAL["device"][k % 3]
    z = -3.0 + 0.5 * float(context[f"x{k}"]) + (0.7 if device_match else 0.0)
    return 1.0 if draw < 1.0 / (1.0 + math.exp(-z)) else 0.0


@dataclass
class Timing:
    """Per-decision times of one learner, in microseconds."""

    learner: str
    median: float = float("nan")
    p99: float = float("nan")
    mean: float = float("nan")
    cpu_median: float = float("nan")
    cpu_p99: float = float("nan")
    error: str = ""


class Timed:
    """One learner under the clock: its adapter, per-decision times (ns), or why it failed."""

    def __init__(self, name: str, factory: qa.AdapterFactory, seed: int) -> None:
        self.name = name
        self.error = ""
        self.adapter: qa.Adapter | None = None
        self.times: list[int] = []
        self.cpu_times: list[int] = []
        try:
            self.adapter = factory(seed)
        except Exception as exc:
            self.fail(exc)

    def fail(self, exc: Exception) -> None:
        """Stop timing this learner and keep a short reason."""
        if isinstance(exc, ImportError):
            self.error = f"missing: {exc.name or exc}"
        else:
            traceback.print_exc(file=sys.stderr)
            self.error = f"{type(exc).__name__}: {exc}"
        self.adapter = None

    def decide(self, ctx: dict, draw: float, timed: bool) -> None:
        """One rank + reward; the environment's reward is computed off the clock."""
        if self.adapter is None:
            return
        clock, cpu = time.perf_counter_ns, time.process_time_ns
        try:
            start, cpu_start = clock(), cpu()
            action, _ = self.adapter.choose(ctx, ACTIONS)
            stop, cpu_stop = clock(), cpu()
            reward = click(ctx, action, draw)
            resume, cpu_resume = clock(), cpu()
            self.adapter.learn(reward)
            end, cpu_end = clock(), cpu()
        except Exception as exc:
            self.fail(exc)
            return
        if timed:
            self.times.append((stop - start) + (end - resume))
            self.cpu_times.append((cpu_stop - cpu_start) + (cpu_end - cpu_resume))

    def timing(self) -> Timing:
        """Median, p99 and mean in microseconds."""
        if self.error or not self.times:
            return Timing(self.name, error=self.error or "no decisions")
        us = np.asarray(self.times) / 1000.0
        cpu = np.asarray(self.cpu_times) / 1000.0
        return Timing(
            self.name,
            float(np.median(us)),
            float(np.percentile(us, 99)),
            float(us.mean()),
            cpu_median=float(np.median(cpu)),
            cpu_p99=float(np.percentile(cpu, 99)),
        )


def time_all(
    factories: dict[str, qa.AdapterFactory],
    ctxs: list,
    draws: list[float],
    warmup: int,
    seed: int,
    block: int = BLOCK,
) -> list[Timing]:
    """Time every learner on the same decisions, taking turns in blocks of ``block`` decisions.

    Taking turns (in a rotating order) spreads background load on the machine evenly over the
    learners; blocks rather than single decisions keep each learner's caches and its own
    garbage collections its own (one decision each in turn would charge one learner for the
    collections another one's garbage triggered). A collection runs before each block.
    """
    learners = [Timed(name, factory, seed) for name, factory in factories.items()]
    starts = range(0, len(ctxs), block)
    for b, first in enumerate(starts):
        k = b % len(learners)
        for learner in learners[k:] + learners[:k]:
            gc.collect()
            for i in range(first, min(first + block, len(ctxs))):
                learner.decide(ctxs[i], draws[i], timed=i >= warmup)
    for learner in learners:
        close = getattr(learner.adapter, "close", None)
        if close:
            close()
    return [learner.timing() for learner in learners]


def _fmt(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.0f}" if x >= 100 else f"{x:.1f}"


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
    widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*head), fmt.format(*("-" * w for w in widths))]
    return "\n".join(lines + [fmt.format(*r) for r in rows])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=3000, help="timed decisions per learner")
    parser.add_argument("--warmup", type=int, default=300, help="untimed decisions first")
    parser.add_argument("--seed", type=int, default=0, help="seed of contexts and learners")
    parser.add_argument("--markdown", action="store_true", help="print markdown for the README")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    load = os.getloadavg()[0]
    n = args.warmup + args.decisions
    ctxs = contexts(n, args.seed)
    draw_rng = random.Random(args.seed + 1)
    draws = [draw_rng.random() for _ in range(n)]
    factories = {**qa.microadjust_factories(), **qa.competitor_factories(mabwiser_batch=1)}
    timings = time_all(factories, ctxs, draws, args.warmup, args.seed)

    rows = [
        [t.learner, _fmt(t.median), _fmt(t.p99), _fmt(t.mean)]
        + [_fmt(t.cpu_median), _fmt(t.cpu_p99), t.error]
        for t in timings
    ]
    vw = [t for t in timings if t.learner.startswith("vw:") and not t.error]
    goal_rows = []
    if vw:
        best = {
            field: min(vw, key=lambda t, f=field: getattr(t, f))
            for field in ("median", "p99", "cpu_median", "cpu_p99")
        }
        for t in timings:
            if not t.learner.startswith("ma:"):
                continue
            if t.error:
                goal_rows.append([t.learner, "n/a", "n/a", "n/a", "n/a"])
                continue
            row = [t.learner]
            for field, v in best.items():
                mine, theirs = getattr(t, field), getattr(v, field)
                verdict = "met" if mine <= theirs else "NOT met"
                row.append(f"{verdict}: {_fmt(mine)} vs {_fmt(theirs)} ({v.learner})")
            goal_rows.append(row)
    elapsed = time.perf_counter() - start
    today = datetime.date.today().isoformat()
    header = (
        f"### Speed ({today})\n\n"
        f"`bench/speed.py --decisions {args.decisions} --seed {args.seed}`: CPython "
        f"{platform.python_version()} on {platform.machine()}, one process, one BLAS thread (as in "
        "Pyodide), learners taking turns "
        f"every {BLOCK} decisions (load average at start {load:.1f}); "
        f"{NUMERIC + len(CATEGORICAL) + len(BOOLEANS)} context features "
        f"({NUMERIC} numeric, {len(CATEGORICAL)} categorical, {len(BOOLEANS)} boolean), "
        f"{len(ACTIONS)} actions; time of rank + reward per decision in microseconds over "
        f"{args.decisions} decisions after {args.warmup} warm-up ones, including the library's "
        "own input preparation (VW text lines, MABWiser numeric rows). MABWiser LinUCB is "
        "updated with partial_fit after every decision here. "
        f"Engine: microadjust {qa.engine_revision()}."
    )
    if not args.markdown:
        header = header.replace("### ", "").replace("`", "")
    parts = [
        header,
        "",
        _table(
            ["learner", "median (us)", "p99 (us)", "mean (us)", "CPU median", "CPU p99", "note"],
            rows,
            args.markdown,
        ),
        "",
        "Goal: each microadjust policy at or below Vowpal Wabbit's Python binding (the better",
        "VW configuration for each figure), median and p99; CPU time (process_time) is the",
        "check that holds up when other jobs load the machine:",
        "",
        _table(
            ["policy", "median (us)", "p99 (us)", "CPU median (us)", "CPU p99 (us)"],
            goal_rows,
            args.markdown,
        ),
    ]
    print("\n".join(parts))
    print(f"\nspeed run took {elapsed:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    # single-threaded BLAS everywhere: what Pyodide has, and no spinning BLAS threads in timings
    with threadpool_limits(limits=1):
        raise SystemExit(main())
