"""The on-device noise: calibrated to the documented (epsilon, delta), clipped, unbiased."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microadjust.browser.privacy import (
    DEFAULT_DELTA,
    DEFAULT_EPSILON,
    IPS_CLIP,
    SENSITIVITY,
    Accumulator,
    gaussian_sigma,
)

decision = st.tuples(
    st.sampled_from(["s", "t"]),
    st.sampled_from(["default", "a", "b"]),
    st.floats(-5, 5, allow_nan=False),
    st.floats(0, 1e6, allow_nan=False),
    st.booleans(),
)


def flat(released: dict) -> np.ndarray:
    """Every released number of an upload, in a fixed order."""
    out = []
    for slot in sorted(released):
        entry = released[slot]
        for action in sorted(entry["actions"]):
            out += [entry["actions"][action]["n"], entry["actions"][action]["reward_sum"]]
        out += [entry["holdout"]["n"], entry["holdout"]["reward"]]
        out += [entry["ope"]["w"], entry["ope"]["wr"]]
    return np.array(out)


def accumulate(decisions, declare=()) -> Accumulator:
    acc = Accumulator()
    for slot, action in declare:
        acc.declare(slot, action)
    for slot, action, reward, weight, holdout in decisions:
        acc.add(slot, action, reward, weight=weight, holdout=holdout)
    return acc


def test_sigma_is_the_gaussian_mechanism_for_the_documented_defaults():
    expected = math.sqrt(6) * math.sqrt(2 * math.log(1.25 / 1e-5)) / 1.0
    assert (DEFAULT_EPSILON, DEFAULT_DELTA) == (1.0, 1e-5)
    assert gaussian_sigma(DEFAULT_EPSILON, DEFAULT_DELTA) == pytest.approx(expected)
    assert gaussian_sigma(0.5) == pytest.approx(2 * gaussian_sigma(1.0))
    with pytest.raises(ValueError, match="epsilon"):
        gaussian_sigma(2.0)
    with pytest.raises(ValueError, match="delta"):
        gaussian_sigma(1.0, 0.0)


@settings(max_examples=300, deadline=None)
@given(st.lists(decision, max_size=30), decision)
def test_one_decision_moves_an_upload_by_at_most_the_sensitivity(others, extra):
    """Adding one decision (any reward, any weight) changes the released vector by <= sqrt(6)."""
    declare = [(s, a) for s in ("s", "t") for a in ("default", "a", "b")]
    without = flat(accumulate(others, declare).exact())
    with_it = flat(accumulate([*others, extra], declare).exact())
    assert np.linalg.norm(with_it - without) <= SENSITIVITY + 1e-9


def test_contributions_are_clipped():
    acc = accumulate([("s", "a", 7.0, 1e9, True), ("s", "a", -3.0, 0.5, False)])
    out = acc.exact()["s"]
    assert out["actions"]["a"] == {"n": 2.0, "reward_sum": 1.0}
    assert out["holdout"] == {"n": 1.0, "reward": 1.0}
    assert out["ope"] == {"w": pytest.approx(1.0 + 0.5 / IPS_CLIP), "wr": pytest.approx(1.0)}


def test_noise_has_the_declared_spread_and_no_bias():
    acc = accumulate([("s", "a", 1.0, 1.0, False)] * 30, [("s", "default")])
    exact = flat(acc.exact())
    draws = np.array(
        [flat(acc.release(np.random.default_rng(seed))["slots"]) for seed in range(2000)]
    )
    sigma = gaussian_sigma(DEFAULT_EPSILON)
    assert np.allclose(draws.mean(axis=0), exact, atol=4 * sigma / math.sqrt(2000))
    assert np.allclose(draws.std(axis=0), sigma, rtol=0.08)


def test_every_number_is_noised_even_the_zeros_of_offered_actions():
    acc = accumulate([("s", "a", 1.0, 1.0, False)], [("s", "default"), ("s", "b")])
    released = acc.release(np.random.default_rng(1))
    assert sorted(released["slots"]["s"]["actions"]) == ["a", "b", "default"]
    assert np.all(flat(released["slots"]) != flat(acc.exact()))
    assert released["privacy"] == {
        "mechanism": "gaussian",
        "epsilon": 1.0,
        "delta": 1e-5,
        "sigma": pytest.approx(gaussian_sigma(1.0)),
        "ips_clip": IPS_CLIP,
    }


def test_the_privacy_module_ships_in_the_browser_without_server_imports():
    import ast
    from pathlib import Path

    import microadjust.browser.privacy as module

    tree = ast.parse(Path(module.__file__).read_text())
    imported = {
        (node.module or "").split(".")[0] if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported <= {"__future__", "math", "typing", "numpy", "collections"}
