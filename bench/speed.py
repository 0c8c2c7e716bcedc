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
    error: str = ""


def time_learner(
    name: str, factory: qa.AdapterFactory, ctxs: list, draws: list[float], warmup: int, seed: int
) -> Timing:
    """Time rank + reward for each decision after ``warmup`` untimed ones."""
    try:
        adapter = factory(seed)
        for ctx, draw in zip(ctxs[:warmup], draws[:warmup], strict=True):
            action, _ = adapter.choose(ctx, ACTIONS)
            adapter.learn(click(ctx, action, draw))
        rewards = [0.0] * len(ctxs)  # the environment's reward is computed off the clock
        times = np.zeros(len(ctxs) - warmup)
        gc.collect()
        clock = time.perf_counter_ns
        for i in range(warmup, len(ctxs)):
            ctx = ctxs[i]
            start = clock()
            action, _ = adapter.choose(ctx, ACTIONS)
            stop = clock()
            rewards[i] = click(ctx, action, draws[i])
            resume = clock()
            adapter.learn(rewards[i])
            times[i - warmup] = (stop - start) + (clock() - resume)
        close = getattr(adapter, "close", None)
        if close:
            close()
    except ImportError as exc:
        return Timing(name, error=f"missing: {exc.name or exc}")
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        return Timing(name, error=f"{type(exc).__name__}: {exc}")
    us = times / 1000.0
    return Timing(name, float(np.median(us)), float(np.percentile(us, 99)), float(us.mean()))


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
    n = args.warmup + args.decisions
    ctxs = contexts(n, args.seed)
    draw_rng = random.Random(args.seed + 1)
    draws = [draw_rng.random() for _ in range(n)]
    factories = {**qa.microadjust_factories(), **qa.competitor_factories(mabwiser_batch=1)}
    timings = []
    for name, factory in factories.items():
        timing = time_learner(name, factory, ctxs, draws, args.warmup, args.seed)
        print(f"{name}: {timing.error or f'{timing.median:.1f} us median'}", file=sys.stderr)
        timings.append(timing)

    rows = [[t.learner, _fmt(t.median), _fmt(t.p99), _fmt(t.mean), t.error] for t in timings]
    vw = [t for t in timings if t.learner.startswith("vw:") and not t.error]
    goal_rows = []
    if vw:
        fastest = min(vw, key=lambda t: t.median)
        for t in timings:
            if not t.learner.startswith("ma:"):
                continue
            if t.error:
                goal_rows.append([t.learner, "n/a", t.error])
                continue
            ok = t.median <= fastest.median and t.p99 <= fastest.p99
            goal_rows.append(
                [
                    t.learner,
                    "met" if ok else "NOT met",
                    f"median {_fmt(t.median)} / p99 {_fmt(t.p99)} us vs {fastest.learner} "
                    f"{_fmt(fastest.median)} / {_fmt(fastest.p99)} us",
                ]
            )
    elapsed = time.perf_counter() - start
    today = datetime.date.today().isoformat()
    header = (
        f"### Speed ({today})\n\n"
        f"`bench/speed.py --decisions {args.decisions} --seed {args.seed}`: CPython "
        f"{platform.python_version()} on {platform.machine()}, one process; "
        f"{NUMERIC + len(CATEGORICAL) + len(BOOLEANS)} context features "
        f"({NUMERIC} numeric, {len(CATEGORICAL)} categorical, {len(BOOLEANS)} boolean), "
        f"{len(ACTIONS)} actions; time of rank + reward per decision in microseconds over "
        f"{args.decisions} decisions after {args.warmup} warm-up ones, including the library's "
        "own input preparation (VW text lines, MABWiser numeric rows). MABWiser LinUCB is "
        "updated with partial_fit after every decision here."
    )
    if not args.markdown:
        header = header.replace("### ", "").replace("`", "")
    parts = [
        header,
        "",
        _table(["learner", "median (us)", "p99 (us)", "mean (us)", "note"], rows, args.markdown),
        "",
        "Goal: each microadjust policy at or below Vowpal Wabbit's Python binding "
        "(the faster VW configuration), median and p99:",
        "",
        _table(["policy", "status", "figures"], goal_rows, args.markdown),
    ]
    print("\n".join(parts))
    print(f"\nspeed run took {elapsed:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
