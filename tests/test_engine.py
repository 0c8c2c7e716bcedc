"""Engine contract, determinism, state round trips, learning, drift and guardrails."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from microadjust import (
    Decision,
    Engine,
    ExpiredEvent,
    InvalidActions,
    InvalidContext,
    InvalidParameter,
    InvalidReward,
    InvalidSlot,
    InvalidState,
    MicroadjustError,
    UnknownEvent,
    __version__,
)

POLICIES = ["auto", "epsilon_greedy", "thompson", "linucb", "lin_ts"]
ACTIONS = ["eco", "standard", "premium"]


def as_json(eng: Engine) -> str:
    return json.dumps(eng.state(), sort_keys=True, allow_nan=False)


def simulate(eng: Engine, n: int, seed: int, shift_at: int | None = None, t0: float = 0.0):
    """A contextual stream: mobile visitors like 'eco', desktop visitors 'premium'."""
    rng = np.random.default_rng(seed)
    rewards, best = [], []
    for t in range(n):
        device = "mobile" if rng.random() < 0.5 else "desktop"
        shifted = shift_at is not None and t >= shift_at
        good = {"mobile": "eco", "desktop": "premium"}[device]
        if shifted:
            good = {"mobile": "standard", "desktop": "eco"}[device]
        ctx = {"device": device, "scroll_depth": float(rng.random())}
        dec = eng.rank(ctx, ACTIONS, now=t0 + t)
        p = 0.8 if dec.action == good else 0.2
        r = 1.0 if rng.random() < p else 0.0
        eng.reward(dec.event_id, r, now=t0 + t)
        rewards.append(r)
        best.append(dec.action == good)
    return np.array(rewards), np.array(best)


def test_contract_and_version():
    eng = Engine(policy="auto", seed=0)
    dec = eng.rank({"device": "mobile", "scroll_depth": 0.4, "returning": True}, ACTIONS)
    assert isinstance(dec, Decision)
    assert dec.action in ACTIONS
    assert 0.0 < dec.probability <= 1.0
    assert isinstance(dec.event_id, str) and dec.event_id
    assert dec.slot == "default" and isinstance(dec.reason, str) and dec.holdout is False
    assert eng.reward(dec.event_id, 1.0) is None
    json.dumps(dec.to_dict())
    assert __version__ == "0.1.0"
    with pytest.raises(AttributeError):
        dec.action = "x"  # frozen


@pytest.mark.parametrize("policy", POLICIES)
def test_action_features_mapping(policy):
    eng = Engine(policy=policy, seed=1)
    actions = {
        "eco": {"price": 10.0, "tier": "low"},
        "premium": {"price": 90.0, "tier": "high", "promo": True},
    }
    for t in range(30):
        dec = eng.rank({"device": "mobile", "t": t}, actions, now=float(t))
        assert dec.action in actions
        eng.reward(dec.event_id, float(dec.action == "premium"), now=float(t))


def test_unknown_policy_and_params():
    with pytest.raises(InvalidParameter):
        Engine(policy="greedy")
    with pytest.raises(InvalidParameter, match="unknown parameter"):
        Engine(alpah=1.0)
    with pytest.raises(InvalidParameter):
        Engine(holdout=1.5)
    with pytest.raises(InvalidParameter):
        Engine(dim=0)
    with pytest.raises(InvalidParameter):
        Engine(seed=-1)
    assert issubclass(InvalidParameter, ValueError)


@pytest.mark.parametrize("policy", POLICIES)
def test_state_round_trip_is_exact_and_continues_identically(policy):
    eng = Engine(policy=policy, seed=3, holdout=0.1)
    simulate(eng, 150, seed=1)
    pending = eng.rank({"device": "mobile", "scroll_depth": 0.3}, ACTIONS, now=200.0)
    s = eng.state()
    text = json.dumps(s, allow_nan=False)
    clone = Engine.from_state(json.loads(text))
    assert as_json(clone) == as_json(eng)
    # the pending event survives, and the next decisions (RNG included) are identical
    eng.reward(pending.event_id, 1.0, now=201.0)
    clone.reward(pending.event_id, 1.0, now=201.0)
    for t in range(40):
        ctx = {"device": "desktop" if t % 3 else "mobile", "scroll_depth": t / 40}
        a = eng.rank(ctx, ACTIONS, now=300.0 + t)
        b = clone.rank(ctx, ACTIONS, now=300.0 + t)
        assert a == b
        eng.reward(a.event_id, float(t % 2), now=300.0 + t)
        clone.reward(b.event_id, float(t % 2), now=300.0 + t)
    assert as_json(clone) == as_json(eng)


def test_same_seed_same_decisions_different_seed_differs():
    a, b, c = Engine(seed=5), Engine(seed=5), Engine(seed=6)
    ra, _ = simulate(a, 100, seed=0)
    rb, _ = simulate(b, 100, seed=0)
    assert as_json(a) == as_json(b)
    simulate(c, 100, seed=0)
    assert as_json(a) != as_json(c)
    assert (ra == rb).all()


def test_from_state_rejects_garbage():
    with pytest.raises(InvalidState):
        Engine.from_state({"format": "nope"})
    with pytest.raises(InvalidState):
        Engine.from_state([])
    s = Engine(seed=0).state()
    s["slots"] = {"default": {"models": {"actions": ["a"]}}}
    with pytest.raises(InvalidState):
        Engine.from_state(s)


@pytest.mark.parametrize("policy", ["auto", "epsilon_greedy", "linucb", "lin_ts"])
def test_learning_beats_random(policy):
    eng = Engine(policy=policy, seed=0)
    rewards, best = simulate(eng, 600, seed=2)
    # random play gets 0.2 + 0.6/3 = 0.4 on average and picks the best action 1/3 of the time
    assert rewards[-300:].mean() > 0.6
    assert best[-300:].mean() > 0.75


def test_thompson_learns_the_best_arm_without_context():
    eng = Engine(policy="thompson", seed=0)
    rng = np.random.default_rng(0)
    picks = []
    for t in range(500):
        dec = eng.rank({"x": 1}, ["a", "b", "c"], now=float(t))
        p = {"a": 0.2, "b": 0.5, "c": 0.3}[dec.action]
        eng.reward(dec.event_id, float(rng.random() < p), now=float(t))
        picks.append(dec.action)
    assert picks[-200:].count("b") / 200 > 0.7


def test_drift_detector_fires_and_policy_recovers():
    eng = Engine(seed=0)
    no_drift = Engine(seed=0, drift_detection=False)
    _, best = simulate(eng, 2400, seed=4, shift_at=1200)
    _, best_nd = simulate(no_drift, 2400, seed=4, shift_at=1200)
    assert eng.drift_resets() >= 1
    assert best[1100:1200].mean() > 0.8  # learned before the shift
    assert best[-400:].mean() > 0.8  # and re-learned after it
    assert best[1200:1800].mean() > best_nd[1200:1800].mean()


def test_no_false_drift_alarm_on_a_stationary_stream():
    eng = Engine(seed=0)
    simulate(eng, 2000, seed=5)
    assert eng.drift_resets() == 0


def test_propensities_sum_to_one_and_match_logged_probability():
    for policy in POLICIES:
        eng = Engine(policy=policy, seed=0)
        simulate(eng, 100, seed=1)
        probs = eng.policy_probabilities({"device": "mobile", "scroll_depth": 0.5}, ACTIONS)
        assert set(probs) == set(ACTIONS)
        assert math.isclose(sum(probs.values()), 1.0, rel_tol=1e-9)
        assert all(p > 0 for p in probs.values())


def test_epsilon_greedy_propensity_is_exact():
    eng = Engine(policy="epsilon_greedy", seed=0, epsilon=0.3, max_pending=10)
    simulate(eng, 200, seed=1)
    ctx = {"device": "mobile", "scroll_depth": 0.5}
    expected = eng.policy_probabilities(ctx, ACTIONS)
    counts = dict.fromkeys(ACTIONS, 0)
    n = 3000
    for _ in range(n):  # rank without reward does not change the model
        dec = eng.rank(ctx, ACTIONS, now=1000.0)
        assert math.isclose(dec.probability, expected[dec.action], rel_tol=1e-12)
        counts[dec.action] += 1
    assert sorted(expected.values()) == pytest.approx([0.1, 0.1, 0.8])
    for a, p in expected.items():
        assert abs(counts[a] / n - p) < 0.03


def test_default_action_and_slots():
    eng = Engine(seed=0, holdout=0.5)
    seen_holdout = False
    for t in range(50):
        dec = eng.rank({"x": 1.0}, ["a", "default", "b"], slot="hero", now=float(t))
        assert dec.slot == "hero"
        if dec.holdout:
            seen_holdout = True
            assert dec.action == "default" and dec.reason == "holdout: default"
        eng.reward(dec.event_id, 0.0, now=float(t))
    assert seen_holdout
    dec = eng.rank({"x": 1.0}, ["a", "b"], slot="footer", now=60.0)
    assert set(eng.state()["slots"]) == {"hero", "footer"}
    assert eng.stats("footer")["actions"].keys() == {"a", "b"}
    assert dec.slot == "footer"


def test_max_slots():
    eng = Engine(seed=0, max_slots=2)
    eng.rank({}, ["a"], slot="s1", now=0.0)
    eng.rank({}, ["a"], slot="s2", now=0.0)
    before = as_json(eng)
    with pytest.raises(InvalidSlot):
        eng.rank({}, ["a"], slot="s3", now=0.0)
    with pytest.raises(InvalidSlot):
        eng.rank({}, ["a"], slot="", now=0.0)
    assert as_json(eng) == before


def test_reward_errors_and_expiry():
    eng = Engine(seed=0, attribution_window_s=10.0, max_pending=3)
    dec = eng.rank({"x": 1.0}, ["a", "b"], now=0.0)
    before = as_json(eng)
    with pytest.raises(UnknownEvent):
        eng.reward("nope", 1.0, now=1.0)
    with pytest.raises(ExpiredEvent, match="attribution window"):
        eng.reward(dec.event_id, 1.0, now=11.0)
    for bad in [float("nan"), float("inf"), "1", None, [1.0]]:
        with pytest.raises(InvalidReward):
            eng.reward(dec.event_id, bad, now=1.0)  # type: ignore[arg-type]
    assert as_json(eng) == before
    eng.reward(dec.event_id, np.float64(1.0), now=1.0)
    with pytest.raises(UnknownEvent, match="already rewarded"):
        eng.reward(dec.event_id, 1.0, now=2.0)
    # bounded pending: the oldest is evicted and reported as expired
    ids = [eng.rank({"x": 1.0}, ["a", "b"], now=3.0).event_id for _ in range(4)]
    assert len(eng.state()["pending"]) == 3
    with pytest.raises(ExpiredEvent):
        eng.reward(ids[0], 1.0, now=4.0)
    eng.reward(ids[-1], 1.0, now=4.0)
    # expiry by time happens on the next successful call
    eng.rank({"x": 1.0}, ["a", "b"], now=100.0)
    assert len(eng.state()["pending"]) == 1
    with pytest.raises(ExpiredEvent):
        eng.reward(ids[1], 1.0, now=100.0)


def test_default_reward_learns_from_unrewarded_events():
    eng = Engine(seed=0, default_reward=0.0, attribution_window_s=5.0)
    eng.rank({"x": 1.0}, ["a", "b"], now=0.0)
    eng.rank({"x": 1.0}, ["a", "b"], now=10.0)  # expires the first one, learns reward 0
    total = sum(a["n"] for a in eng.stats()["actions"].values())
    assert total == 1.0


BAD_CONTEXTS = [
    {"x": float("nan")},
    {"x": float("inf")},
    {"x": -float("inf")},
    {"x": None},
    {"x": [1, 2]},
    {"x": {"nested": 1}},
    {"x": b"bytes"},
    {"": 1.0},
    {3: 1.0},
    {"k" * 500: 1.0},
    {"s": "v" * 10_000},
    {f"f{i}": 1.0 for i in range(300)},
    "not a mapping",
    None,
]


BAD_ACTIONS = [
    [],
    {},
    ["a", "a"],
    "abc",
    b"abc",
    ["a", 3],
    ["a", ""],
    ["a", None],
    [f"a{i}" for i in range(100)],
    {"a": {"price": float("nan")}},
    {"a": "not a mapping"},
    42,
    None,
]


@pytest.mark.parametrize(
    ("context", "actions", "error"),
    [(c, ACTIONS, InvalidContext) for c in BAD_CONTEXTS]
    + [({"x": 1.0}, a, InvalidActions) for a in BAD_ACTIONS],
)
def test_bad_rank_input_rejected_without_state_change(context, actions, error):
    eng = Engine(seed=0)
    simulate(eng, 20, seed=0)
    before = as_json(eng)
    with pytest.raises(error):
        eng.rank(context, actions, now=50.0)
    assert as_json(eng) == before


def test_bad_now_rejected():
    eng = Engine(seed=0)
    before = as_json(eng)
    with pytest.raises(InvalidParameter):
        eng.rank({"x": 1.0}, ACTIONS, now=float("nan"))
    assert as_json(eng) == before


def test_every_error_is_a_value_error():
    for exc in (InvalidContext, InvalidActions, UnknownEvent, InvalidState, ExpiredEvent):
        assert issubclass(exc, MicroadjustError) and issubclass(exc, ValueError)


def test_numpy_scalars_accepted():
    eng = Engine(seed=0)
    dec = eng.rank(
        {"a": np.float64(1.5), "b": np.int64(3), "c": np.bool_(True), "d": np.float32(0.5)},
        ACTIONS,
        now=0.0,
    )
    json.dumps(eng.state(), allow_nan=False)
    eng.reward(dec.event_id, np.float32(1.0), now=1.0)


def test_state_and_memory_stay_bounded():
    eng = Engine(seed=0, log_size=50, max_pending=20, max_actions=8, dim=32)
    rng = np.random.default_rng(0)
    for t in range(400):
        acts = [f"a{int(i)}" for i in rng.choice(30, size=4, replace=False)]
        ctx = {"v": str(rng.integers(1_000_000)), "n": float(rng.random())}
        dec = eng.rank(ctx, acts, now=float(t))
        if t % 3:
            eng.reward(dec.event_id, 1.0, now=float(t))
    s = eng.state()
    assert len(s["log"]) <= 50 and len(s["pending"]) <= 20
    assert len(s["slots"]["default"]["models"]["actions"]) <= 8
    assert len(json.dumps(s)) < 2_000_000


def test_import_does_not_load_sklearn_or_scipy():
    code = "import sys, microadjust; print('sklearn' in sys.modules or 'scipy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_rank_cascade_ranks_every_item_with_one_decision_per_position():
    eng = Engine(seed=0)
    items = ["a", "b", "c", "d"]
    ranking = eng.rank_cascade({"device": "mobile"}, items, slot="list", now=0.0)
    assert sorted(ranking.order) == items
    assert [d.action for d in ranking.decisions] == ranking.order[:3]
    assert all(d.slot == "list" for d in ranking.decisions)
    # position i was drawn among the items left, so its probability is at least uniform-ish
    assert ranking.decisions[-1].probability > 0 and len(eng.state()["pending"]) == 3
    for d in ranking.decisions:
        eng.reward(d.event_id, 1.0, now=1.0)


def test_rank_cascade_is_the_same_as_ranking_what_is_left():
    by_cascade, by_hand = Engine(seed=3), Engine(seed=3)
    context = {"device": "desktop", "n": 0.5}
    for t in range(20):
        ranking = by_cascade.rank_cascade(context, ACTIONS, now=float(t))
        left, decisions = list(ACTIONS), []
        while len(left) > 1:
            decisions.append(by_hand.rank(context, left, now=float(t)))
            left.remove(decisions[-1].action)
        assert ranking.decisions == decisions
        assert ranking.order == [d.action for d in decisions] + left
        for a, b in zip(ranking.decisions, decisions, strict=True):
            by_cascade.reward(a.event_id, float(a.action == "eco"), now=float(t))
            by_hand.reward(b.event_id, float(b.action == "eco"), now=float(t))
    assert as_json(by_cascade) == as_json(by_hand)


def test_rank_cascade_of_one_item_decides_nothing():
    eng = Engine(seed=0)
    before = as_json(eng)
    ranking = eng.rank_cascade({"x": 1.0}, ["solo"], now=0.0)
    assert ranking.order == ["solo"] and ranking.decisions == []
    assert as_json(eng) == before


def test_rank_cascade_keeps_item_features():
    eng = Engine(seed=0)
    items = {"a": {"price": 1.0}, "b": {"price": 2.0}, "c": {"price": 3.0}}
    ranking = eng.rank_cascade({"x": 1.0}, items, now=0.0)
    assert sorted(ranking.order) == ["a", "b", "c"]
    eng.reward(ranking.decisions[0].event_id, 1.0, now=1.0)
    assert eng.log()[0]["actions"] == items  # the first position was offered every item


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda e: e.rank_cascade({"x": float("nan")}, ["a", "b"]), InvalidContext),
        (lambda e: e.rank_cascade({"x": 1.0}, ["a", "a"]), InvalidActions),
        (lambda e: e.rank_cascade({"x": 1.0}, []), InvalidActions),
        (lambda e: e.rank_cascade({"x": 1.0}, ["a", "b"], slot=""), InvalidSlot),
        (lambda e: e.rank_cascade({"x": 1.0}, ["a", "b"], now=float("inf")), InvalidParameter),
    ],
)
def test_a_rejected_rank_cascade_changes_nothing(call, error):
    eng = Engine(seed=0)
    simulate(eng, 20, seed=0)
    before = as_json(eng)
    with pytest.raises(error):
        call(eng)
    assert as_json(eng) == before
