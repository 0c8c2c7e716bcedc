"""Guardrails: holdout, caps, cooldown, minimum confidence; exact propensities under them."""

from __future__ import annotations

import numpy as np
import pytest

from microadjust import Engine

ACTIONS = ["default", "a", "b"]


def test_holdout_fraction_and_propensity():
    eng = Engine(seed=0, holdout=0.25, policy="epsilon_greedy", epsilon=1.0)
    n = 4000
    holdouts = 0
    for t in range(n):
        dec = eng.rank({"x": 1.0}, ACTIONS, now=float(t))
        holdouts += dec.holdout
        if dec.action == "default":
            # 0.25 holdout + 0.75 * uniform 1/3
            assert dec.probability == pytest.approx(0.25 + 0.75 / 3)
        else:
            assert dec.probability == pytest.approx(0.75 / 3)
            assert not dec.holdout
    assert abs(holdouts / n - 0.25) < 0.03


def test_session_cap():
    eng = Engine(seed=0, policy="epsilon_greedy", epsilon=1.0, max_adjustments_per_session=3,
                 session_timeout_s=100.0)  # fmt: skip
    shown = [eng.rank({}, ACTIONS, now=float(t)).action for t in range(40)]
    assert sum(a != "default" for a in shown) == 3
    last = eng.rank({}, ACTIONS, now=50.0)
    assert last.action == "default" and last.reason == "cap reached: default"
    assert last.probability == 1.0
    # a new session after the timeout resets the cap
    later = [eng.rank({}, ACTIONS, now=500.0 + t).action for t in range(20)]
    assert 1 <= sum(a != "default" for a in later) <= 3


def test_slot_cap_is_per_slot():
    eng = Engine(seed=0, policy="epsilon_greedy", epsilon=1.0, max_adjustments_per_slot=2)
    hero = [eng.rank({}, ACTIONS, slot="hero", now=float(t)).action for t in range(30)]
    foot = [eng.rank({}, ACTIONS, slot="foot", now=float(t)).action for t in range(30)]
    assert sum(a != "default" for a in hero) == 2
    assert sum(a != "default" for a in foot) == 2


def test_cooldown_keeps_the_shown_action():
    eng = Engine(seed=0, policy="epsilon_greedy", epsilon=1.0, cooldown_s=10.0)
    first = eng.rank({}, ACTIONS, now=0.0)
    for t in range(1, 10):
        dec = eng.rank({}, ACTIONS, now=float(t))
        assert dec.action == first.action and dec.reason.startswith("cooldown")
        assert dec.probability == 1.0
    actions = {eng.rank({}, ACTIONS, now=11.0 + 11 * t).action for t in range(30)}
    assert len(actions) > 1


def test_min_confidence_shows_default_until_the_model_is_sure():
    eng = Engine(seed=0, min_confidence=0.95, explore_floor=0.1)
    rng = np.random.default_rng(0)
    early = []
    for t in range(400):
        dec = eng.rank({"x": 1.0}, ACTIONS, now=float(t))
        rate = {"default": 0.3, "a": 0.8, "b": 0.1}[dec.action]
        eng.reward(dec.event_id, float(rng.random() < rate), now=float(t))
        if t < 3:
            early.append(dec)
    assert early[0].action == "default" and early[0].reason == "not confident yet: default"
    assert early[0].probability == pytest.approx(1 - 2 * 0.1 / 3)
    late = [eng.rank({"x": 1.0}, ACTIONS, now=1000.0 + t).action for t in range(50)]
    assert late.count("a") > 40


def test_first_action_is_default_when_none_named_default():
    eng = Engine(seed=0, holdout=0.99)
    assert eng.rank({}, ["x", "y"], now=0.0).action == "x"
