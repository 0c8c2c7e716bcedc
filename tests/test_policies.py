"""Policies as objects: the registry, each policy's choice distribution, the engine's lookup."""

from __future__ import annotations

import numpy as np
import pytest

from microadjust import Engine, InvalidParameter
from microadjust.core.models import ArmModels
from microadjust.core.policies import (
    AUTO_PARAMS,
    POLICIES,
    EpsilonGreedy,
    LinTS,
    LinUCB,
    Policy,
    Scores,
    Thompson,
    greedy_probabilities,
    policy_names,
    sample_share_probabilities,
)


def test_registry_maps_each_name_to_its_class():
    assert {
        "epsilon_greedy": EpsilonGreedy,
        "thompson": Thompson,
        "linucb": LinUCB,
        "lin_ts": LinTS,
    } == POLICIES
    assert all(cls.name == name and issubclass(cls, Policy) for name, cls in POLICIES.items())
    assert policy_names() == ("auto", "epsilon_greedy", "thompson", "linucb", "lin_ts")


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_engine_builds_the_registered_policy_from_its_parameters(name):
    eng = Engine(policy=name, seed=0, epsilon=0.2, alpha=0.7, mc_samples=16)
    policy = eng._policy
    assert type(policy) is POLICIES[name]
    expected = {"epsilon": 0.2, "alpha": 0.7, "mc_samples": 16}
    for field in ("epsilon", "alpha", "mc_samples"):
        if hasattr(policy, field):
            assert getattr(policy, field) == expected[field]


def test_auto_is_linucb_with_forgetting():
    eng = Engine(policy="auto", seed=0)
    assert type(eng._policy) is LinUCB and eng.resolved_policy == "linucb"
    assert AUTO_PARAMS == {"discount": 0.9993} and eng.params["discount"] == 0.9993
    assert Engine(policy="auto", seed=0, discount=1.0).params["discount"] == 1.0


def test_unknown_policy_names_the_accepted_ones():
    with pytest.raises(InvalidParameter, match=r"unknown policy 'ucb'; expected one of \('auto'"):
        Engine(policy="ucb")


def test_greedy_probabilities_share_ties():
    p = greedy_probabilities(np.array([0.1, 0.5, 0.5]), epsilon=0.3)
    assert p.sum() == pytest.approx(1.0)
    assert p[0] == pytest.approx(0.1) and p[1] == p[2] == pytest.approx(0.45)


def test_linucb_adds_the_scaled_uncertainty_bonus():
    scores = Scores(np.array([0.5, 0.4]), np.array([0.0, 1.0]), sigma=0.5)
    # 0.4 + 0.5 * 0.5 * 1.0 = 0.65 beats 0.5; with alpha 0.1 the bonus is too small
    assert LinUCB(alpha=0.5).probabilities(scores, 0.02, None).tolist() == pytest.approx(
        [0.01, 0.99]
    )
    assert LinUCB(alpha=0.1).probabilities(scores, 0.02, None).tolist() == pytest.approx(
        [0.99, 0.01]
    )


def test_epsilon_greedy_explores_at_least_the_floor():
    scores = Scores(np.array([1.0, 0.0]), np.zeros(2), sigma=1.0)
    policy = EpsilonGreedy(epsilon=0.1)
    assert policy.probabilities(scores, 0.0, None).tolist() == pytest.approx([0.95, 0.05])
    assert policy.probabilities(scores, 0.4, None).tolist() == pytest.approx([0.8, 0.2])
    assert policy.uniform_share(0.005) == 0.1
    assert LinUCB().uniform_share(0.005) == 0.005


def test_sample_share_probabilities_sum_to_one_with_floor():
    draws = np.random.default_rng(0).normal(size=(64, 4)) + np.array([0, 0, 3, 0])
    p = sample_share_probabilities(draws, floor=0.04)
    assert p.sum() == pytest.approx(1.0)
    assert (p >= 0.01).all() and p.argmax() == 2


def test_lin_ts_uses_mc_samples_draws_from_the_generator():
    scores = Scores(np.array([0.0, 0.0, 0.0]), np.ones(3), sigma=1.0)
    rng = np.random.default_rng(3)
    p = LinTS(alpha=1.0, mc_samples=8).probabilities(scores, 0.0, rng)
    assert p.sum() == pytest.approx(1.0) and set((p * 8).round(9)) <= set(range(9))
    same = np.random.default_rng(3)
    draws = same.standard_normal((8, 3))
    assert p.tolist() == sample_share_probabilities(draws, 0.0).tolist()


def test_thompson_scores_the_beta_posterior_of_clipped_rewards():
    m = ArmModels(2)
    m.add_action("good"), m.add_action("bad")
    x = np.array([1.0, 0.0])
    for _ in range(30):
        m.update(0, x, 1.0)
        m.update(1, x, 0.0)
    policy = Thompson(mc_samples=64)
    scores = policy.score(m, [0, 1], np.ones((2, 2)), sigma=0.5)
    assert scores.beta_a.tolist() == [31.0, 1.0] and scores.beta_b.tolist() == [1.0, 31.0]
    assert scores.mean[0] == pytest.approx(31 / 32)
    p = policy.probabilities(scores, 0.1, np.random.default_rng(0))
    assert p.tolist() == pytest.approx([0.95, 0.05])


def test_a_policy_must_say_how_it_decides():
    with pytest.raises(TypeError, match="abstract"):
        Policy()
