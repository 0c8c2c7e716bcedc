"""Publication cost: CPU per bucket-day row to read, parse and aggregate the stored sums.

The admin's report reads every bucket-day row (per site, day, slot and source bucket, up to
4,096 buckets a day), parses each row's sums and aggregates them robustly
(:func:`microadjust.server.aggregate.robust_totals`); a purge rebuilds increments' sums the same
way. (A publication reads neither: it releases the running sums kept per increment.) This
fills a throw-away SQLite store with ``--rows`` rows of a realistic shape (2 slots, up to 24
cells, 1-4 variants a cell), then times each step ``--repeat`` times with the process's CPU
clock and prints the best run of each, in µs per row. Bounded: a few seconds at the default
20,000 rows.

Run: ``.venv/bin/python bench/publication_cost.py [--rows 20000] [--repeat 5]``
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "py"))

from microadjust.server.aggregate import SlotSums, robust_totals  # noqa: E402
from microadjust.server.storage import Storage  # noqa: E402

SLOTS = {"cta": ["default", "quiz", "deal", "free-shipping"], "headline": ["default", "story"]}
CELLS = [
    f"device={d},referrer={r},returning={n}"
    for d in ("desktop", "mobile", "tablet")
    for r in ("direct", "search", "social", "internal")
    for n in ("false", "true")
]
BUCKETS = 4096


def random_sums(rng: np.random.Generator, variants: list[str]) -> SlotSums:
    """A bucket-day of a few visitors: a few cells, a few variants each, small counts."""
    sums = SlotSums()
    for cell in rng.choice(CELLS, size=int(rng.integers(1, 6)), replace=False):
        chosen = rng.choice(variants, size=int(rng.integers(1, len(variants) + 1)), replace=False)
        sums.variants[str(cell)] = {
            str(v): [float(rng.integers(1, 20)), float(rng.integers(0, 5))] for v in chosen
        }
        sums.holdout[str(cell)] = [float(rng.integers(0, 3)), float(rng.integers(0, 2))]
    return sums


def fill(store: Storage, rows: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = []
    for index in range(rows):
        slot = list(SLOTS)[index % len(SLOTS)]
        day, bucket = divmod(index // len(SLOTS), BUCKETS)
        values.append(("shop", 20_000 + day, slot, bucket, random_sums(rng, SLOTS[slot]).to_json()))
    insert = "INSERT INTO bucket_sums (site, day, slot, bucket, sums) VALUES (?, ?, ?, ?, ?)"
    with store._transaction() as run:
        for row in values:
            run(insert, row)


def best_cpu_s(step: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.process_time()
        step()
        times.append(time.process_time() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        store = Storage(data_dir=Path(data_dir))
        store.migrate()
        fill(store, args.rows, args.seed)

        def read() -> list:
            with store._transaction(write=False) as run:
                sql = "SELECT day, slot, bucket, sums FROM bucket_sums WHERE site = ? AND day >= ?"
                return run(sql, ("shop", 0)).fetchall()

        rows = store.bucket_rows("shop")
        aggregate = lambda: robust_totals(rows, bucket_cap=8.0, max_shown=4)  # noqa: E731
        figures = {
            "read (SQL rows)": best_cpu_s(read, args.repeat),
            "read + parse (Storage.bucket_rows)": best_cpu_s(
                lambda: store.bucket_rows("shop"), args.repeat
            ),
            "aggregate (robust_totals)": best_cpu_s(aggregate, args.repeat),
        }
        store.close()
    print(f"{len(rows)} bucket-day rows, best of {args.repeat}, CPU µs per row:")
    for name, seconds in figures.items():
        print(f"  {name:38s} {seconds / len(rows) * 1e6:6.2f}")
    total = figures["read + parse (Storage.bucket_rows)"] + figures["aggregate (robust_totals)"]
    print(f"  {'total (read, parse, aggregate)':38s} {total / len(rows) * 1e6:6.2f}")


if __name__ == "__main__":
    main()
