"""Per-action models: Sherman-Morrison against direct ridge, named counters, saved state."""

from __future__ import annotations

import numpy as np
import pytest

from microadjust.core.errors import InvalidState
from microadjust.core.models import ArmModels, ModelScalars
from microadjust.core.state import StateReader, sym_to_list


def ridge(X: np.ndarray, y: np.ndarray, l2: float, w: np.ndarray | None = None):
    w = np.ones(len(y)) if w is None else w
    A = l2 * np.eye(X.shape[1]) + (X * w[:, None]).T @ X
    return np.linalg.solve(A, (X * w[:, None]).T @ y), np.linalg.inv(A)


@pytest.mark.parametrize("refresh_every", [1, 7, 1000])
def test_sherman_morrison_matches_direct_ridge(refresh_every):
    rng = np.random.default_rng(0)
    d, n = 6, 150
    X = rng.normal(size=(n, d))
    y = X @ rng.normal(size=d) + 0.1 * rng.normal(size=n)
    m = ArmModels(d, l2=2.0, refresh_every=refresh_every)
    m.add_action("a")
    for x, r in zip(X, y, strict=True):
        m.update(0, x, float(r))
    theta, A_inv = ridge(X, y, 2.0)
    np.testing.assert_allclose(m.theta[0], theta, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(m.A_inv[0], A_inv, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(m.gram(0), X.T @ X, rtol=1e-10)
    assert np.array_equal(m.A_inv[0], m.A_inv[0].T)  # exactly symmetric
    mean, std = m.predict([0], X[:1])
    assert mean[0] == pytest.approx(X[0] @ theta)
    assert std[0] == pytest.approx(np.sqrt(X[0] @ A_inv @ X[0]))


def test_discount_matches_weighted_ridge():
    rng = np.random.default_rng(1)
    d, n, gamma = 4, 80, 0.95
    X = rng.normal(size=(n, d))
    y = rng.normal(size=n)
    m = ArmModels(d, l2=1.0, discount=gamma, refresh_every=1_000_000)
    m.add_action("a")
    for x, r in zip(X, y, strict=True):
        m.update(0, x, float(r))
    w = gamma ** np.arange(n - 1, -1, -1)
    # without refresh the l2 prior decays too: A = gamma^n l2 I + sum w x x'
    A = gamma**n * np.eye(d) + (X * w[:, None]).T @ X
    np.testing.assert_allclose(m.theta[0], np.linalg.solve(A, (X * w[:, None]).T @ y), rtol=1e-7)
    np.testing.assert_allclose(m.gram(0), (X * w[:, None]).T @ X, rtol=1e-10)
    m.refresh(0)  # refresh restores the full l2 prior
    A = np.eye(d) + (X * w[:, None]).T @ X
    np.testing.assert_allclose(m.theta[0], np.linalg.solve(A, (X * w[:, None]).T @ y), rtol=1e-7)


def test_forget_and_prior():
    m = ArmModels(3, l2=1.0)
    m.add_action("a")
    x = np.array([1.0, 0.0, 0.0])
    for _ in range(50):
        m.update(0, x, 1.0)
    assert m.theta[0, 0] > 0.9
    m.forget(0, 0.0)
    assert m.theta[0, 0] == 0.0 and m.scalars_of(0).n == 0.0
    m.set_prior(0, 10 * np.outer(x, x), 10 * x * 0.5, 5.0, 5.0)
    assert m.theta[0, 0] == pytest.approx(5.0 / 11.0)


def test_remove_action_and_serialization_round_trip():
    m = ArmModels(4, l2=1.0)
    for a in "abc":
        m.add_action(a)
    rng = np.random.default_rng(0)
    for _ in range(30):
        m.update(int(rng.integers(3)), rng.normal(size=4), float(rng.random()))
    m.remove_action(1)
    assert m.actions == ["a", "c"] and m.index == {"a": 0, "c": 1}
    d = m.to_state()
    m2 = ArmModels.from_state(StateReader(d, "models"), 4, 1.0, 1.0, 64)
    assert m2.to_state() == d
    np.testing.assert_array_equal(m2.theta, m.theta)


def test_sym_list_round_trip():
    a = np.random.default_rng(0).normal(size=(5, 5))
    a = a + a.T
    assert np.array_equal(StateReader(sym_to_list(a), "m").symmetric(5), a)
    with pytest.raises(
        InvalidState, match=r"^m: expected a list of 2 items, got a list of 1 items$"
    ):
        StateReader([[1.0]], "m").symmetric(2)
    with pytest.raises(InvalidState, match=r"^m\[1\]: expected a list of 1 floats, got None$"):
        StateReader([[1.0, 2.0], None], "m").symmetric(2)


def test_counters_are_named():
    m = ArmModels(2, l2=1.0)
    m.add_action("a")
    m.update(0, np.array([1.0, 0.0]), 2.0)
    m.update(0, np.array([1.0, 0.0]), 0.0)
    m.set_prior(0, np.zeros((2, 2)), np.zeros(2), 3.0, 4.0)
    m.touch(0, 7.0)
    assert m.scalars_of(0) == ModelScalars(
        n=2.0,
        reward_sum=2.0,
        reward_sq_sum=4.0,
        successes=1.0,
        failures=1.0,
        prior_successes=3.0,
        prior_failures=4.0,
        since_refresh=0.0,  # set_prior refreshed the model
        last_used=7.0,
    )
    assert [a.tolist() for a in m.beta_params([0])] == [[5.0], [6.0]]


def test_least_recently_used_skips_the_kept_actions():
    m = ArmModels(2)
    for step, a in enumerate("abcd"):
        m.touch(m.add_action(a), float(4 - step))  # d is the oldest
    assert m.least_recently_used(2, keep={"d"}) == [2, 1]


def test_saved_models_with_a_wrong_shape_name_the_path():
    m = ArmModels(3)
    m.add_action("a")
    state = m.to_state()
    state["b"] = [[0.0, 0.0]]
    with pytest.raises(InvalidState, match=r"^models\.b: expected a list of 1 x 3 floats"):
        ArmModels.from_state(StateReader(state, "models"), 3, 1.0, 1.0, 64)
