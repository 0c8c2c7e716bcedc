"""The per-visitor contribution budget and the local mode's noise: calibrated as documented."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from microadjust.browser.privacy import (
    DEFAULT_DELTA,
    EPSILON_RANGE,
    ContributionBudget,
    local_noise,
    local_range,
    local_sigma,
    sensitivity,
    zcdp_rho,
)
from microadjust.core.errors import InvalidState


@pytest.mark.parametrize("epsilon", [0.1, 0.5, 1.0, 3.0, 10.0])
def test_rho_converts_back_to_exactly_epsilon(epsilon):
    """rho-zCDP is (rho + 2 sqrt(rho ln(1/delta)), delta)-DP (Bun & Steinke 2016)."""
    rho = zcdp_rho(epsilon)
    assert rho + 2 * math.sqrt(rho * math.log(1 / DEFAULT_DELTA)) == pytest.approx(epsilon)


def test_sigma_is_the_gaussian_mechanism_for_the_per_visitor_sensitivity():
    assert sensitivity(4) == 8.0
    expected = 8.0 / math.sqrt(2 * zcdp_rho(1.0))
    assert local_sigma(1.0, max_shown=4) == pytest.approx(expected)
    assert local_sigma(1.0, max_shown=8) == pytest.approx(2 * expected)  # linear in the bound
    assert local_sigma(2.0, max_shown=4) < expected  # more budget, less noise
    lo, hi = local_range(1.0, 4)
    assert (lo, hi) == (pytest.approx(-6 * expected), pytest.approx(4 + 6 * expected))


@pytest.mark.parametrize("epsilon", [EPSILON_RANGE[0] / 2, EPSILON_RANGE[1] * 2, math.nan])
def test_an_epsilon_out_of_range_is_refused(epsilon):
    with pytest.raises(ValueError, match="epsilon must be in"):
        local_sigma(epsilon, 4)


def test_the_noise_has_the_calibrated_spread_and_no_bias():
    values = [1.0, 0.0, 3.0, 1.0] * 500
    rng = np.random.default_rng(7)
    draws = np.array(local_noise(values, 3.0, 4, rng)) - np.array(values)
    sigma = local_sigma(3.0, 4)
    assert abs(draws.mean()) < 4 * sigma / math.sqrt(len(values))
    assert draws.std() == pytest.approx(sigma, rel=0.05)
    lo, hi = local_range(3.0, 4)
    assert draws.min() >= lo - 1 and draws.max() <= hi


@pytest.mark.parametrize("epsilon", [EPSILON_RANGE[0], 1.0, EPSILON_RANGE[1]])
def test_noise_beyond_the_range_lands_on_its_bounds_exactly(epsilon):
    """Clipped after rounding: the server accepts [lo, hi] and not a hundredth more."""
    lo, hi = local_range(epsilon, 2)

    class Huge:  # noise far past 6 sigma, both ways
        def normal(self, loc, scale, size):
            return np.array([-1e9, 1e9])

    assert local_noise([0.0, 2.0], epsilon, 2, Huge()) == [lo, hi]


def test_the_budget_bounds_a_slot_per_period_and_rolls_over():
    budget = ContributionBudget()
    rules = {"max_shown": 3, "period_s": 100.0}
    taken = [budget.take_shown("cta", now=float(t), **rules) for t in range(5)]
    assert taken == [True, True, True, False, False]
    assert budget.take_shown("hero", now=5.0, **rules)  # each slot has its own bound
    granted = [budget.take_reward("cta", 1.0, now=6.0, **rules) for _ in range(4)]
    assert granted == [1.0, 1.0, 1.0, 0.0]
    assert budget.take_reward("hero", 7.5, now=6.0, **rules) == 1.0  # clipped to [0, 1]
    assert budget.take_reward("hero", -2.0, now=6.0, **rules) == 0.0
    assert budget.take_shown("cta", now=100.0, **rules)  # a new period


def test_periods_are_aligned_to_the_servers_days():
    # one period's contribution must land in one aggregation day: a period starting at 23:59
    # would spread the bound over two days, each capped and noised on its own
    day = 86_400.0
    budget = ContributionBudget()
    assert budget.take_shown("cta", now=day - 60.0, max_shown=1, period_s=day)
    assert budget.take_shown("cta", now=day + 60.0, max_shown=1, period_s=day)
    assert not budget.take_shown("cta", now=2 * day - 60.0, max_shown=1, period_s=day)
    assert budget.period_start == day


def test_the_budget_survives_a_reload_and_a_broken_one_is_refused():
    budget = ContributionBudget()
    budget.take_shown("cta", now=0.0, max_shown=1, period_s=10.0)
    restored = ContributionBudget.from_state(json.loads(json.dumps(budget.to_state())))
    assert restored == budget
    assert not restored.take_shown("cta", now=1.0, max_shown=1, period_s=10.0)
    with pytest.raises(InvalidState, match="contribution budget"):
        ContributionBudget.from_state({"period_start": 0.0, "shown": [1]})


def test_the_privacy_module_ships_in_the_browser_without_server_imports():
    import ast
    from pathlib import Path

    import microadjust.browser.privacy as module

    tree = ast.parse(Path(module.__file__).read_text())
    absolute, relative = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            (relative if node.level else absolute).add((node.module or "").split(".")[0])
        elif isinstance(node, ast.Import):
            absolute |= {alias.name.split(".")[0] for alias in node.names}
    assert absolute <= {"__future__", "math", "typing", "numpy", "collections", "dataclasses"}
    assert relative <= {"core"}  # the engine's errors; never the server
