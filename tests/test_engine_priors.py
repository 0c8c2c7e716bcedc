"""Sufficient statistics, merging, and hierarchical priors."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from microadjust import Engine, InvalidPrior, InvalidSlot, merge_stats

ACTIONS = ["a", "b"]


def train(eng: Engine, n: int, seed: int, slot: str = "default", t0: float = 0.0):
    rng = np.random.default_rng(seed)
    for t in range(n):
        ctx = {"device": "mobile" if rng.random() < 0.5 else "desktop"}
        dec = eng.rank(ctx, ACTIONS, slot=slot, now=t0 + t)
        good = "a" if ctx["device"] == "mobile" else "b"
        eng.reward(dec.event_id, float(rng.random() < (0.9 if dec.action == good else 0.1)),
                   now=t0 + t)  # fmt: skip


def as_json(eng: Engine) -> str:
    return json.dumps(eng.state(), sort_keys=True)


def test_stats_are_json_and_additive():
    e1, e2 = Engine(policy="linucb", seed=1), Engine(policy="linucb", seed=2)  # no discount
    train(e1, 100, 1)
    train(e2, 80, 2)
    s1, s2 = e1.stats(), e2.stats()
    json.dumps(s1, allow_nan=False)
    assert s1["schema"]["format"] == "microadjust.stats"
    assert s1["schema"]["features"]["dim"] == 64
    a = s1["actions"]["a"]
    assert {"n", "reward_sum", "successes", "failures", "xtx", "xty"} <= set(a)
    merged = merge_stats(s1, s2)
    for act in ACTIONS:
        n = s1["actions"][act]["n"] + s2["actions"][act]["n"]
        assert merged["actions"][act]["n"] == n
        np.testing.assert_allclose(
            merged["actions"][act]["xtx"],
            np.array(s1["actions"][act]["xtx"]) + np.array(s2["actions"][act]["xtx"]),
        )
    total = sum(s1["actions"][x]["n"] + s2["actions"][x]["n"] for x in ACTIONS)
    assert total == 180
    decayed = merge_stats(s1, s2, decay=0.5)
    assert decayed["actions"]["a"]["n"] == pytest.approx(
        0.5 * s1["actions"]["a"]["n"] + s2["actions"]["a"]["n"]
    )
    # the bias feature's Gram entry counts observations
    assert np.array(a["xtx"])[0, 0] == pytest.approx(a["n"])


def test_a_site_prior_makes_early_decisions_good():
    site = Engine(seed=0)
    train(site, 400, 0)
    stats = site.stats()
    fresh = Engine(seed=5, policy="linucb")
    fresh.set_prior("default", stats, weight=1.0)
    cold = Engine(seed=5, policy="linucb")
    rng = np.random.default_rng(9)
    good_prior = good_cold = 0
    for t in range(30):
        ctx = {"device": "mobile" if rng.random() < 0.5 else "desktop"}
        best = "a" if ctx["device"] == "mobile" else "b"
        good_prior += fresh.rank(ctx, ACTIONS, now=float(t)).action == best
        good_cold += cold.rank(ctx, ACTIONS, now=float(t)).action == best
    assert good_prior >= 27
    assert good_prior > good_cold


def test_visitor_data_overrides_a_capped_prior():
    site = Engine(seed=0)
    train(site, 1000, 0)
    # a visitor who behaves the opposite way
    eng = Engine(seed=1, prior_strength=10.0)
    eng.set_prior("default", site.stats())
    rng = np.random.default_rng(3)
    for t in range(300):
        ctx = {"device": "mobile"}
        dec = eng.rank(ctx, ACTIONS, now=float(t))
        eng.reward(dec.event_id, float(rng.random() < (0.9 if dec.action == "b" else 0.1)),
                   now=float(t))  # fmt: skip
    assert eng.policy_probabilities({"device": "mobile"}, ACTIONS)["b"] > 0.9


def test_segment_level_and_removal_and_round_trip():
    site = Engine(seed=0)
    train(site, 200, 0)
    eng = Engine(seed=0)
    eng.set_prior("hero", site.stats(), weight=0.5)
    eng.set_prior("hero", site.stats(), weight=1.0, level="segment")
    train(eng, 20, 1, slot="hero")
    clone = Engine.from_state(json.loads(json.dumps(eng.state())))
    assert as_json(clone) == as_json(eng)
    eng.set_prior("hero", site.stats(), weight=0, level="segment")
    assert set(eng.state()["slots"]["hero"]["priors"]) == {"site"}


def test_prior_for_an_action_seen_later():
    site = Engine(seed=0)
    train(site, 200, 0)
    eng = Engine(seed=0)
    eng.set_prior("default", site.stats())
    eng.rank({"device": "mobile"}, ["a"], now=0.0)  # 'b' not seen yet
    dec = eng.rank({"device": "desktop"}, ["a", "b"], now=1.0)
    assert dec.action == "b"


def bad_priors():
    good = Engine(seed=0)
    train(good, 30, 0)
    s = good.stats()
    other_dim = Engine(seed=0, dim=32)
    train(other_dim, 10, 0)
    out = [other_dim.stats(), {"actions": {}}, "nope", {**s, "actions": "x"}]
    for path, value in [
        (("actions", "a", "n"), float("nan")),
        (("actions", "a", "n"), -1.0),
        (("actions", "a", "xty"), [1.0]),
        (("actions", "a", "xtx"), [[0.0]]),
        (("schema", "version"), 99),
        (("schema", "features", "hash"), "md5"),
    ]:
        bad = copy.deepcopy(s)
        target = bad
        for k in path[:-1]:
            target = target[k]
        target[path[-1]] = value
        out.append(bad)
    asym = copy.deepcopy(s)
    asym["actions"]["a"]["xtx"][0][1] += 5.0
    out.append(asym)
    return out


@pytest.mark.parametrize("prior", bad_priors())
def test_bad_prior_rejected_without_state_change(prior):
    eng = Engine(seed=0)
    train(eng, 20, 0)
    before = as_json(eng)
    with pytest.raises(InvalidPrior):
        eng.set_prior("default", prior)
    assert as_json(eng) == before


def test_bad_prior_arguments():
    eng = Engine(seed=0)
    s = eng.stats()
    before = as_json(eng)
    with pytest.raises(InvalidPrior):
        eng.set_prior("default", s, weight=-1)
    with pytest.raises(InvalidPrior):
        eng.set_prior("default", s, level="planet")
    with pytest.raises(InvalidSlot):
        eng.set_prior("", s)
    assert as_json(eng) == before
    with pytest.raises(InvalidPrior):
        merge_stats(s, Engine(dim=16).stats())
