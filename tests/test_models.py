"""Per-action models (Sherman-Morrison) and the policies' choice distributions."""

from __future__ import annotations

import numpy as np
import pytest

from microadjust.core.policies import (
    ArmModels,
    greedy_probabilities,
    sample_share_probabilities,
    sym_from_list,
    sym_to_list,
    ucb_probabilities,
)


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
    assert m.theta[0, 0] == 0.0 and m.scalars[0, 0] == 0.0
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
    d = m.to_dict()
    m2 = ArmModels.from_dict(d, 4, 1.0, 1.0, 64)
    assert m2.to_dict() == d
    np.testing.assert_array_equal(m2.theta, m.theta)


def test_sym_list_round_trip():
    a = np.random.default_rng(0).normal(size=(5, 5))
    a = a + a.T
    assert np.array_equal(sym_from_list(sym_to_list(a), 5), a)
    with pytest.raises(ValueError):
        sym_from_list([[1.0]], 2)


def test_greedy_and_ucb_probabilities():
    p = greedy_probabilities(np.array([0.1, 0.5, 0.5]), epsilon=0.3)
    assert p.sum() == pytest.approx(1.0)
    assert p[0] == pytest.approx(0.1) and p[1] == p[2] == pytest.approx(0.45)
    p = ucb_probabilities(np.array([0.5, 0.4]), np.array([0.0, 1.0]), alpha=1.0, floor=0.02)
    assert p.tolist() == pytest.approx([0.01, 0.99])


def test_sample_share_probabilities_sum_to_one_with_floor():
    draws = np.random.default_rng(0).normal(size=(64, 4)) + np.array([0, 0, 3, 0])
    p = sample_share_probabilities(draws, floor=0.04)
    assert p.sum() == pytest.approx(1.0)
    assert (p >= 0.01).all() and p.argmax() == 2
