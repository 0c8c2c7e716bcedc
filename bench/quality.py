"""Quality benchmark: microadjust policies vs Vowpal Wabbit and MABWiser on the same streams.

Every learner sees the same seeded streams (see ``streams.py``) in one run. A cell is the
learner's average reward over the stream, progressive validation (each decision is scored
before the learner sees its reward). For the shifted web stream it also prints the mean click
rate of the chosen CTAs just before and right after the shift and how many decisions each
learner needs to recover.

Run: ``.venv/bin/python bench/quality.py [--quick] [--seed N] [--markdown]``
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
import traceback
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import quality_adapters as qa  # noqa: E402
import streams as st  # noqa: E402

MABWISER_BATCH = 1  # partial_fit after every decision (set >1 to batch if too slow)
RECOVERY_FRACTION = 0.9  # "recovered" = within 10% of the pre-shift level (or the optimum)
AUTO_TOLERANCE = 0.02  # "auto" within 2% of microadjust's best policy


@dataclass
class Run:
    """Outcome of one learner on one stream."""

    stream: str
    learner: str
    mean_reward: float = float("nan")
    chosen_expected: np.ndarray = field(default_factory=lambda: np.zeros(0))
    seconds: float = 0.0
    error: str = ""


def learners() -> dict[str, qa.AdapterFactory]:
    """Every learner in column order: microadjust policies first, then the competitors."""
    return {**qa.microadjust_factories(), **qa.competitor_factories(MABWISER_BATCH)}


def run_one(stream_key: str, learner_key: str, seed: int, quick: bool) -> Run:
    """Play one learner through one stream; never raises (errors are reported in the cell)."""
    result = Run(stream_key, learner_key)
    threadpool_limits(limits=1)  # one BLAS thread per worker process, like Pyodide
    start = time.perf_counter()
    try:
        stream = st.all_streams(quick)[stream_key](seed)
        adapter = learners()[learner_key](seed)
        rewards = np.zeros(len(stream))
        expected = np.zeros(len(stream))
        for t, (context, actions, reward_fn) in enumerate(stream):
            action, _ = adapter.choose(context, actions)
            rewards[t] = reward_fn(action)
            expected[t] = reward_fn.expected[action]
            adapter.learn(rewards[t])
        close = getattr(adapter, "close", None)
        if close:
            close()
        result.mean_reward = float(rewards.mean())
        result.chosen_expected = expected
    except ImportError as exc:
        result.error = f"missing: {exc.name or exc}"
    except Exception as exc:  # a broken learner must not stop the whole table
        result.error = f"{type(exc).__name__}: {exc}"
        traceback.print_exc(file=sys.stderr)
    result.seconds = time.perf_counter() - start
    return result


@dataclass
class Reference:
    """What no learner can beat (optimal) and what random play gets, per stream."""

    n: int
    n_actions: int
    optimal: np.ndarray  # best action's mean reward at each step
    uniform: float
    shift_at: int | None


def reference(stream_key: str, seed: int, quick: bool) -> Reference:
    """Optimal and uniform-random mean rewards of a stream."""
    stream = st.all_streams(quick)[stream_key](seed)
    optimal, uniform = [], []
    n_actions = 0
    for _, actions, reward_fn in stream:
        values = list(reward_fn.expected.values())
        optimal.append(max(values))
        uniform.append(sum(values) / len(values))
        n_actions = len(actions)
    return Reference(
        len(optimal),
        n_actions,
        np.asarray(optimal),
        float(np.mean(uniform)),
        getattr(stream, "shift_at", None),
    )


@dataclass
class Recovery:
    """How a learner copes with the preference shift."""

    before: float  # mean click rate of chosen CTAs in the window before the shift
    after: float  # same, in the window right after the shift
    second_half: float  # same, over everything after the shift
    decisions: int | None  # decisions after the shift until back near its own pre-shift level
    decisions_common: int | None  # same, to the level of the best learner before the shift


def level_before(expected: np.ndarray, shift_at: int, window: int) -> float:
    """Mean of the last ``window`` values before the shift."""
    return float(expected[max(0, shift_at - window) : shift_at].mean())


def first_recovery(
    expected: np.ndarray, shift_at: int, window: int, step: int, target: float
) -> int | None:
    """End of the first post-shift window (stepping by ``step``) whose mean reaches ``target``,
    counted in decisions from the shift; ``None`` if none does."""
    cumulative = np.concatenate([[0.0], np.cumsum(expected)])
    for k in range(0, len(expected) - shift_at - window + 1, step):
        if (cumulative[shift_at + k + window] - cumulative[shift_at + k]) / window >= target:
            return k + window
    return None


def recovery(
    expected: np.ndarray, ref: Reference, window: int, step: int, best_before: float
) -> Recovery:
    """Window means around the shift and decisions until recovery.

    A learner has recovered when a window's mean is within ``1 - RECOVERY_FRACTION`` of a
    level: its own pre-shift level (``decisions``) or the best pre-shift level of all learners
    (``decisions_common``), either capped by the optimal policy's post-shift level.
    """
    s = ref.shift_at or 0
    optimal_after = float(ref.optimal[s:].mean())
    before = level_before(expected, s, window)
    own = RECOVERY_FRACTION * min(before, optimal_after)
    common = RECOVERY_FRACTION * min(best_before, optimal_after)
    return Recovery(
        before=before,
        after=float(expected[s : s + window].mean()),
        second_half=float(expected[s:].mean()),
        decisions=first_recovery(expected, s, window, step, own),
        decisions_common=first_recovery(expected, s, window, step, common),
    )


def average_reference(refs: list[Reference]) -> Reference:
    """The per-step mean of several seeds' references of one stream."""
    first = refs[0]
    optimal = np.mean([r.optimal for r in refs], axis=0)
    uniform = float(np.mean([r.uniform for r in refs]))
    return Reference(first.n, first.n_actions, optimal, uniform, first.shift_at)


def average_runs(runs: list[Run]) -> Run:
    """One learner's runs over several seeds, averaged (the first error wins)."""
    errors = [r.error for r in runs if r.error]
    merged = Run(runs[0].stream, runs[0].learner, seconds=sum(r.seconds for r in runs))
    if errors:
        merged.error = errors[0]
        return merged
    merged.mean_reward = float(np.mean([r.mean_reward for r in runs]))
    merged.chosen_expected = np.mean([r.chosen_expected for r in runs], axis=0)
    return merged


# --- goals ----------------------------------------------------------------------------------


def is_ma(key: str) -> bool:
    return key.startswith("ma:")


def is_vw(key: str) -> bool:
    return key.startswith("vw:")


def best_of(runs: dict[str, Run], keep) -> tuple[str, float] | None:
    """Best (learner, mean reward) among the learners ``keep`` selects that ran."""
    scored = [(k, r.mean_reward) for k, r in runs.items() if keep(k) and not r.error]
    return max(scored, key=lambda kv: kv[1]) if scored else None


def goals(
    table: dict[str, dict[str, Run]], recoveries: dict[str, Recovery]
) -> list[tuple[str, bool | None, str]]:
    """Each goal: (statement, met? (None when it cannot be judged), evidence)."""
    out: list[tuple[str, bool | None, str]] = []
    for stream, runs in table.items():
        ma, vw = best_of(runs, is_ma), best_of(runs, is_vw)
        if ma is None or vw is None:
            out.append((f"best microadjust >= best VW on {stream}", None, "not run"))
        else:
            out.append(
                (
                    f"best microadjust >= best VW on {stream}",
                    ma[1] >= vw[1],
                    f"{ma[0]} {ma[1]:.4f} vs {vw[0]} {vw[1]:.4f}",
                )
            )
    for stream, runs in table.items():
        ma = best_of(runs, is_ma)
        auto = runs.get("ma:auto")
        if ma is None or auto is None or auto.error:
            out.append((f"auto within 2% of microadjust's best on {stream}", None, "not run"))
            continue
        ok = auto.mean_reward >= (1 - AUTO_TOLERANCE) * ma[1]
        gap = 1 - auto.mean_reward / ma[1] if ma[1] else 0.0
        out.append(
            (
                f"auto within 2% of microadjust's best on {stream}",
                ok,
                f"auto {auto.mean_reward:.4f} vs {ma[0]} {ma[1]:.4f} ({gap:.1%} behind)",
            )
        )
    goal = "auto back at the best pre-shift level no slower than VW's fastest"
    vw_times = [r.decisions_common for k, r in recoveries.items() if is_vw(k)]
    vw_times = [t for t in vw_times if t is not None]
    auto_rec = recoveries.get("ma:auto")
    if auto_rec is None:
        out.append((goal, None, "not run"))
    else:
        fastest = min(vw_times) if vw_times else None
        mine = auto_rec.decisions_common
        ok = mine is not None and (fastest is None or mine <= fastest)
        out.append((goal, ok, f"auto {_recovered(mine)} vs VW {_recovered(fastest)} decisions"))
    return out


# --- printing -------------------------------------------------------------------------------


def _recovered(decisions: int | None) -> str:
    return "never" if decisions is None else str(decisions)


def _cell(run: Run) -> str:
    return "n/a" if run.error else f"{run.mean_reward:.4f}"


def render(
    table: dict[str, dict[str, Run]],
    refs: dict[str, Reference],
    recoveries: dict[str, Recovery],
    window: int,
    best_before: float,
    checks: list[tuple[str, bool | None, str]],
    header: str,
    markdown: bool,
) -> str:
    """The quality report as plain text or markdown."""
    columns = list(next(iter(table.values()))) if table else []
    head = ["stream", "n", "actions", *columns, "optimal", "random"]
    rows = []
    for stream, runs in table.items():
        ref = refs[stream]
        rows.append(
            [stream, str(ref.n), str(ref.n_actions)]
            + [_cell(runs[c]) for c in columns]
            + [f"{ref.optimal.mean():.4f}", f"{ref.uniform:.4f}"]
        )
    shift_head = [
        "learner",
        f"before shift ({window})",
        f"after shift ({window})",
        "whole 2nd half",
        "back at own level after",
        "back at best level after",
    ]
    shift_rows = [
        [k, f"{r.before:.4f}", f"{r.after:.4f}", f"{r.second_half:.4f}"]
        + [_recovered(r.decisions), _recovered(r.decisions_common)]
        for k, r in recoveries.items()
    ]
    goal_rows = [
        [text, {True: "met", False: "NOT met", None: "n/a"}[ok], why] for text, ok, why in checks
    ]
    parts = [header, ""]
    parts += [
        "Average reward per decision (progressive validation); higher is better.",
        "",
        _table(head, rows, markdown),
        "",
        *_errors(table),
    ]
    if recoveries:
        parts += [
            "Web stream preference shift: mean click rate of the chosen CTAs (their true rates)",
            f"in the {window} decisions before and right after the shift, and over the whole",
            "second half; back at a level = decisions after the shift until a",
            f"{window}-decision window is within {1 - RECOVERY_FRACTION:.0%} of the learner's own",
            f"pre-shift level, or of the best pre-shift level of all learners ({best_before:.4f}),",
            "either capped by the optimal policy's post-shift level.",
            "",
            _table(shift_head, shift_rows, markdown),
            "",
        ]
    parts += [
        "Goals:",
        "",
        _table(["goal", "status", "figures"], goal_rows, markdown),
    ]
    return "\n".join(parts)


def _errors(table: dict[str, dict[str, Run]]) -> list[str]:
    """One line per learner that could not run, with its (first) error, then a blank line."""
    seen: dict[str, str] = {}
    for runs in table.values():
        for key, run in runs.items():
            if run.error:
                seen.setdefault(key, f"{run.stream}: {run.error}")
    if not seen:
        return []
    return [f"n/a: {key} failed ({why})" for key, why in seen.items()] + [""]


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(
        [fmt.format(*head), fmt.format(*("-" * w for w in widths))] + [fmt.format(*r) for r in rows]
    )


def _subset(keys: list[str], wanted: str | None, what: str) -> list[str]:
    """Keep the comma-separated ``wanted`` keys (all when ``None``), in their usual order."""
    if not wanted:
        return keys
    chosen = [w.strip() for w in wanted.split(",") if w.strip()]
    unknown = [w for w in chosen if w not in keys]
    if unknown:
        raise SystemExit(f"unknown {what}(s) {unknown}; expected some of {keys}")
    return [k for k in keys if k in chosen]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller streams")
    parser.add_argument("--seed", type=int, default=0, help="seed of streams and learners")
    parser.add_argument("--markdown", action="store_true", help="print markdown for the README")
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="average over seeds seed, seed+1, ... (default: 3, or 1 with --quick)",
    )
    parser.add_argument("--streams", help="comma-separated subset of streams (default: all)")
    parser.add_argument("--learners", help="comma-separated subset of learners (default: all)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    stream_keys = _subset(list(st.all_streams(args.quick)), args.streams, "stream")
    learner_keys = _subset(list(learners()), args.learners, "learner")
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)
    seeds = [args.seed + i for i in range(max(1, repeats))]
    refs = {s: average_reference([reference(s, x, args.quick) for x in seeds]) for s in stream_keys}
    jobs = [(s, k, x) for s in stream_keys for k in learner_keys for x in seeds]
    # the biggest streams first, so the workers finish together
    jobs.sort(key=lambda job: -refs[job[0]].n)
    results: dict[tuple[str, str], list[Run]] = {}
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = [pool.submit(run_one, s, k, x, args.quick) for s, k, x in jobs]
        for i, future in enumerate(futures, 1):
            run = future.result()
            results.setdefault((run.stream, run.learner), []).append(run)
            status = run.error or f"{run.mean_reward:.4f}"
            print(
                f"[{i}/{len(jobs)}] {run.stream} {run.learner}: {status} ({run.seconds:.1f}s)",
                file=sys.stderr,
            )
    table = {s: {k: average_runs(results[s, k]) for k in learner_keys} for s in stream_keys}

    window = 300 if args.quick else 500
    step = 50 if args.quick else 100
    ran = {k: r for k, r in table.get("web_shift", {}).items() if not r.error}
    recoveries: dict[str, Recovery] = {}
    best_before = 0.0
    if ran:
        web = refs["web_shift"]
        best_before = max(
            level_before(r.chosen_expected, web.shift_at or 0, window) for r in ran.values()
        )
        recoveries = {
            k: recovery(r.chosen_expected, web, window, step, best_before) for k, r in ran.items()
        }
    checks = goals(table, recoveries)
    elapsed = time.perf_counter() - start
    today = datetime.date.today().isoformat()
    mode = "quick" if args.quick else "full"
    mabwiser_updates = (
        "after every decision"
        if MABWISER_BATCH == 1
        else f"in chunks of {MABWISER_BATCH} decisions (slow one row at a time)"
    )
    header = (
        f"### Quality ({today})\n\n"
        f"`bench/quality.py{' --quick' if args.quick else ''} --seed {args.seed} "
        f"--repeats {len(seeds)}`: {mode} run, averaged over {len(seeds)} seed(s), "
        f"{len(jobs)} learner-stream runs on {args.jobs} processes in {elapsed:.0f} s. "
        f"MABWiser LinUCB (alpha=1) is updated with partial_fit {mabwiser_updates}. "
        "VW: `--cb_explore_adf -q UA` with `--epsilon 0.05` or `--squarecb`. "
        "Supervised streams: scikit-learn bundled datasets, z-scored, several shuffled passes. "
        f"Engine: microadjust {qa.engine_revision()}."
    )
    if not args.markdown:
        header = header.replace("### ", "").replace("`", "")
    print(render(table, refs, recoveries, window, best_before, checks, header, args.markdown))
    print(f"\nquality run took {elapsed:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    # single-threaded BLAS everywhere: what Pyodide has, and no spinning BLAS threads in timings
    with threadpool_limits(limits=1):
        raise SystemExit(main())
