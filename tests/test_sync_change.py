"""Change detection on released increments: a real shift cuts the memory of its slot or cell
near the change, steady rates under release noise do not, and the cut sum is what is published."""

from __future__ import annotations

import math

import numpy as np
import pytest

from microadjust.server.change import change_points
from microadjust.server.release import Increment, decayed_sum

SIGMA = 2.0  # the release noise of each count of one increment


def increments(rng: np.random.Generator, rates: list[dict[str, dict[str, float]]], shown: float):
    """One increment per entry of ``rates`` (cell -> variant -> click rate), with noise."""
    out = []
    for seq, table in enumerate(rates):
        counts = {}
        for cell, by_variant in table.items():
            counts[cell] = {}
            for variant, rate in by_variant.items():
                clicks = rng.binomial(int(shown), rate)
                noisy = np.array([shown, clicks]) + rng.normal(0, SIGMA, 2)
                counts[cell][variant] = noisy.tolist()
        out.append(Increment(seq, float(seq), float(seq + 1), SIGMA, {"cta": counts}))
    return out


BEFORE = {"*": {"a": 0.03, "b": 0.075}, "device=mobile": {"a": 0.03, "b": 0.075}}
AFTER = {"*": {"a": 0.075, "b": 0.03}, "device=mobile": {"a": 0.075, "b": 0.03}}


def test_a_shift_cuts_the_memory_of_the_cells_that_changed_near_the_change():
    rng = np.random.default_rng(1)
    history = increments(rng, [BEFORE] * 20 + [AFTER] * 6, shown=400)
    starts = change_points(history, now=26.0, half_life_days=math.inf)
    assert set(starts) == {("cta", "*"), ("cta", "device=mobile")}
    assert all(abs(start - 20) <= 1 for start in starts.values())
    published = decayed_sum(history, now=26.0, half_life_days=math.inf, starts=starts)
    shown, reward = published.counts["cta"]["*"]["a"]
    assert reward / shown == pytest.approx(0.075, abs=0.02)  # the new rate, not the mixture


@pytest.mark.parametrize("seed", range(20))
def test_steady_rates_under_noise_keep_their_memory(seed):
    rng = np.random.default_rng(seed)
    history = increments(rng, [BEFORE] * 30, shown=100)  # thin: noise matters
    assert change_points(history, now=30.0, half_life_days=math.inf) == {}


def test_a_cell_of_its_own_changes_alone():
    rng = np.random.default_rng(2)
    moved = {"*": BEFORE["*"], "device=mobile": AFTER["device=mobile"]}
    history = increments(rng, [BEFORE] * 20 + [moved] * 8, shown=400)
    starts = change_points(history, now=28.0, half_life_days=math.inf)
    assert (
        list(starts) == [("cta", "device=mobile")]
        and abs(starts[("cta", "device=mobile")] - 20) <= 1
    )


def test_pending_increments_and_a_single_increment_are_no_evidence():
    rng = np.random.default_rng(3)
    [one] = increments(rng, [BEFORE], shown=400)
    pending = Increment(5, 1.0, 2.0, SIGMA, None)
    assert change_points([one, pending], now=2.0, half_life_days=math.inf) == {}
    assert change_points([], now=2.0, half_life_days=math.inf) == {}
