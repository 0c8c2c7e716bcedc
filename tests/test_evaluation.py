"""Off-policy estimators against the true value on a synthetic problem, and lift."""

from __future__ import annotations

import numpy as np
import pytest

from microadjust import Engine, InvalidParameter, doubly_robust, ips, lift, snips

ACTIONS = ["a", "b", "c"]


def true_rate(ctx, action):
    seg = ctx["seg"]
    return {
        ("x", "a"): 0.7, ("x", "b"): 0.2, ("x", "c"): 0.4,
        ("y", "a"): 0.1, ("y", "b"): 0.6, ("y", "c"): 0.3,
    }[(seg, action)]  # fmt: skip


def target(ctx, actions):
    """A deterministic good policy: 'a' for segment x, 'b' for y."""
    return {"a": 1.0, "b": 0.0, "c": 0.0} if ctx["seg"] == "x" else [0.0, 1.0, 0.0]


def logged(n: int, seed: int):
    rng = np.random.default_rng(seed)
    logging_p = np.array([0.5, 0.3, 0.2])
    out = []
    for _ in range(n):
        ctx = {"seg": "x" if rng.random() < 0.5 else "y"}
        k = int(rng.choice(3, p=logging_p))
        a = ACTIONS[k]
        r = float(rng.random() < true_rate(ctx, a))
        out.append({"context": ctx, "actions": ACTIONS, "action": a,
                    "propensity": float(logging_p[k]), "reward": r})  # fmt: skip
    return out


TRUE_VALUE = 0.5 * 0.7 + 0.5 * 0.6


@pytest.mark.parametrize("estimator", [ips, snips, doubly_robust])
def test_estimators_cover_the_true_value(estimator):
    covered = 0
    for seed in range(20):
        est = estimator(logged(2000, seed), target)
        covered += est.low <= TRUE_VALUE <= est.high
        assert abs(est.value - TRUE_VALUE) < 0.08
        assert est.n == 2000
    assert covered >= 16  # a 95% interval covers the truth in most of 20 runs


def test_doubly_robust_with_a_good_model_has_lower_variance():
    recs = logged(2000, 0)
    plain = ips(recs, target)
    dr = doubly_robust(recs, target, reward_model=true_rate)
    assert dr.stderr < plain.stderr
    assert abs(dr.value - TRUE_VALUE) < 0.03


def test_estimator_errors():
    with pytest.raises(InvalidParameter):
        ips([], target)
    with pytest.raises(InvalidParameter, match="propensity"):
        ips([{"context": {"seg": "x"}, "actions": ACTIONS, "action": "a", "propensity": 0.0,
              "reward": 1.0}], target)  # fmt: skip
    with pytest.raises(InvalidParameter, match="probabilities for 3 actions"):
        ips(logged(10, 0), lambda c, a: [1.0])


def test_lift_with_confidence_interval():
    rng = np.random.default_rng(0)
    recs = [{"holdout": True, "reward": float(rng.random() < 0.1)} for _ in range(3000)]
    recs += [{"holdout": False, "reward": float(rng.random() < 0.15)} for _ in range(3000)]
    est = lift(recs)
    assert est.low < 0.05 < est.high and est.low > 0
    assert est.relative == pytest.approx(est.lift / est.holdout_mean)
    with pytest.raises(InvalidParameter):
        lift(recs[:1])


def test_engine_log_evaluate_and_lift():
    eng = Engine(seed=0, holdout=0.2, log_size=2000)
    rng = np.random.default_rng(1)
    for t in range(1500):
        ctx = {"seg": "x" if rng.random() < 0.5 else "y"}
        dec = eng.rank(ctx, ["default", "a", "b"], now=float(t))
        rate = {"default": 0.2, "a": 0.7 if ctx["seg"] == "x" else 0.1,
                "b": 0.6 if ctx["seg"] == "y" else 0.2}[dec.action]  # fmt: skip
        eng.reward(dec.event_id, float(rng.random() < rate), now=float(t))
    log = eng.log()
    assert len(log) == 1500 and {"context", "actions", "action", "propensity"} <= set(log[0])
    assert all(0 < r["propensity"] <= 1 for r in log)
    always_default = eng.evaluate(lambda c, a: {"default": 1.0}, method="snips")
    assert always_default.low - 0.05 < 0.2 < always_default.high + 0.05
    current = eng.evaluate()  # the engine's own current policy, doubly robust
    assert current.value > 0.5
    up = eng.lift()
    assert up.n_holdout > 200 and up.lift > 0.2 and up.low > 0
