"""Bandit policies over per-action models, each returning an exact choice distribution.

Every slot keeps, for every action, a ridge-regression model in the hashed feature space
(``ArmModels``: inverse Gram matrix updated by Sherman-Morrison, rank-1, never inverted per
step; a fresh inverse is computed only every ``refresh_every`` updates of an action and after
a drift reset) and Beta-Bernoulli counts. Policies turn the models' predictions into a
probability vector over the offered actions; the engine then samples the action from that
vector with its seeded generator, so the logged propensity is *exactly* the probability with
which the action was drawn:

* ``epsilon_greedy``: ``epsilon / K`` everywhere plus ``1 - epsilon`` on the best mean
  (ties share it). Exact.
* ``linucb``: ``floor / K`` everywhere plus ``1 - floor`` on the best upper confidence bound
  ``mean + alpha * sigma * sqrt(x' A^-1 x)``. The explicit floor makes the propensity exact
  and positive.
* ``lin_ts`` and ``thompson``: Thompson sampling by probability matching. ``mc_samples``
  posterior draws of every action's score (for ``lin_ts`` the score ``x' theta`` of a Gaussian
  posterior is itself Gaussian, so a draw costs one normal per action; for ``thompson`` a Beta
  draw) give the share of draws each action wins; the action is drawn from that share mixed
  with ``floor / K``. Drawing from the empirical share is distributionally the same as taking
  the argmax of one posterior draw, so this *is* Thompson sampling, and the logged propensity
  is the exact probability of the draw given the Monte-Carlo sample (an unbiased estimate of
  the ideal Thompson propensity).

>>> m = ArmModels(dim=3, l2=1.0)
>>> m.add_action("a"), m.add_action("b")
(0, 1)
>>> x = np.array([1.0, 0.5, 0.0])
>>> for _ in range(20):
...     _ = m.update(0, x, 1.0)
...     _ = m.update(1, x, 0.0)
>>> mean, std = m.predict([0, 1], np.broadcast_to(x, (2, 3)))
>>> bool(mean[0] > 0.9 and mean[1] == 0.0)
True
>>> greedy_probabilities(mean, epsilon=0.1).round(3).tolist()
[0.95, 0.05]
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = [
    "POLICIES",
    "ArmModels",
    "greedy_probabilities",
    "ucb_probabilities",
    "sample_share_probabilities",
    "sym_to_list",
    "sym_from_list",
]

POLICIES = ("auto", "epsilon_greedy", "thompson", "linucb", "lin_ts")
FOLD_EVERY = 32  # buffered rows are folded into the Gram matrix (one product) this often


def greedy_probabilities(scores: np.ndarray, epsilon: float) -> np.ndarray:
    """``epsilon / K`` on every action plus ``1 - epsilon`` shared by the best scores."""
    values = scores.tolist()
    k = len(values)
    top = max(values) - 1e-12
    best = [v >= top for v in values]
    share = (1.0 - epsilon) / sum(best)
    base = epsilon / k
    return np.array([base + share if b else base for b in best])


def ucb_probabilities(mean: np.ndarray, std: np.ndarray, alpha: float, floor: float) -> np.ndarray:
    """Greedy on the upper confidence bound ``mean + alpha * std``, with an explicit floor."""
    return greedy_probabilities(mean + alpha * std, floor)


def sample_share_probabilities(draws: np.ndarray, floor: float) -> np.ndarray:
    """Share of rows of ``draws`` (shape ``(M, K)``) each column wins, mixed with a floor."""
    m, k = draws.shape
    wins = np.bincount(draws.argmax(axis=1), minlength=k) / m
    return floor / k + (1.0 - floor) * wins


def _row(values: list[float], dim: int) -> np.ndarray:
    a = np.array(values, dtype=np.float64).reshape(dim)
    if not np.isfinite(a).all():
        raise ValueError("non-finite values")
    return a


def sym_to_list(m: np.ndarray) -> list[list[float]]:
    """Upper triangle of a symmetric matrix, row by row (half the size of the full matrix)."""
    return [m[i, i:].tolist() for i in range(m.shape[0])]


def sym_from_list(rows: list[list[float]], dim: int) -> np.ndarray:
    """Inverse of :func:`sym_to_list`."""
    if len(rows) != dim:
        raise ValueError(f"expected {dim} rows, got {len(rows)}")
    m = np.zeros((dim, dim))
    for i, row in enumerate(rows):
        if len(row) != dim - i:
            raise ValueError(f"row {i} has {len(row)} values, expected {dim - i}")
        m[i, i:] = row
    iu = np.triu_indices(dim, 1)
    m[(iu[1], iu[0])] = m[iu]
    if not np.isfinite(m).all():
        raise ValueError("matrix has non-finite values")
    return m


class ArmModels:
    """Per-action ridge regressions and Beta-Bernoulli counts for one slot.

    For action ``k``: ``A_k = l2 * I + P_k + G_k`` and ``b_k = p_k + g_k`` where ``G_k, g_k``
    are the (optionally discounted) Gram matrix and ``X'y`` of this visitor's data and
    ``P_k, p_k`` the installed prior; ``theta_k = A_k^-1 b_k``. ``A_k^-1`` is kept up to date
    by Sherman-Morrison (with discount ``gamma``: ``A <- gamma A + x x'``).
    """

    def __init__(self, dim: int, l2: float = 1.0, discount: float = 1.0, refresh_every: int = 64):
        self.dim = dim
        self.l2 = float(l2)
        self.discount = float(discount)
        self.refresh_every = int(refresh_every)
        self.actions: list[str] = []
        self.index: dict[str, int] = {}
        d = dim
        self.A_inv = np.zeros((0, d, d))
        self.b = np.zeros((0, d))
        self.theta = np.zeros((0, d))
        self.G = np.zeros((0, d, d))
        self.rows: list[list[np.ndarray]] = []  # per action: x rows not yet folded into G
        self.g = np.zeros((0, d))
        self.P = np.zeros((0, d, d))  # prior Gram (already weighted)
        self.p = np.zeros((0, d))
        # per action scalars: own n, reward sum, reward square sum, successes, failures,
        # prior successes, prior failures, updates since refresh, last use (step)
        self.scalars = np.zeros((0, 9))

    # -- actions ------------------------------------------------------------------

    def add_action(self, name: str) -> int:
        """Append a fresh model for ``name`` (prior-free) and return its index."""
        d = self.dim
        k = len(self.actions)
        self.actions.append(name)
        self.index[name] = k
        eye = np.eye(d)
        self.A_inv = np.concatenate([self.A_inv, (eye / self.l2)[None]])
        self.b = np.concatenate([self.b, np.zeros((1, d))])
        self.theta = np.concatenate([self.theta, np.zeros((1, d))])
        self.G = np.concatenate([self.G, np.zeros((1, d, d))])
        self.rows.append([])
        self.g = np.concatenate([self.g, np.zeros((1, d))])
        self.P = np.concatenate([self.P, np.zeros((1, d, d))])
        self.p = np.concatenate([self.p, np.zeros((1, d))])
        self.scalars = np.concatenate([self.scalars, np.zeros((1, 9))])
        return k

    def remove_action(self, k: int) -> None:
        """Drop the model of action index ``k`` (indices above shift down)."""
        del self.actions[k]
        del self.rows[k]
        for name in ("A_inv", "b", "theta", "G", "g", "P", "p", "scalars"):
            setattr(self, name, np.delete(getattr(self, name), k, axis=0))
        self.index = {a: i for i, a in enumerate(self.actions)}

    # -- prediction -----------------------------------------------------------------

    def predict(self, idx: list[int], X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and ``sqrt(x' A^-1 x)`` for actions ``idx`` with feature rows ``X``."""
        if idx == list(range(len(self.actions))):
            A_inv, theta = self.A_inv, self.theta
        else:
            A_inv, theta = self.A_inv[idx], self.theta[idx]
        mean = np.einsum("kd,kd->k", X, theta)
        u = np.matmul(A_inv, X[:, :, None])[:, :, 0]
        var = np.einsum("kd,kd->k", u, X)
        return mean, np.sqrt(np.maximum(var, 0.0))

    def beta_params(self, idx: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Beta posterior parameters (uniform Beta(1, 1) base) for actions ``idx``."""
        s = self.scalars[idx]
        return 1.0 + s[:, 3] + s[:, 5], 1.0 + s[:, 4] + s[:, 6]

    # -- learning -------------------------------------------------------------------

    def update(self, k: int, x: np.ndarray, r: float) -> float:
        """Learn reward ``r`` for action ``k`` with features ``x``; return the residual."""
        A_inv = self.A_inv[k]
        resid = r - float(x @ self.theta[k])
        gamma = self.discount
        s = self.scalars[k]
        if gamma != 1.0:
            A_inv /= gamma
            self.b[k] *= gamma
            self.g[k] *= gamma
            s[0:5] *= gamma
        u = A_inv @ x
        v = u * (1.0 / math.sqrt(1.0 + x @ u))  # outer(v, v) is exactly symmetric
        A_inv -= np.outer(v, v)
        rx = r * x
        self.b[k] += rx
        self.rows[k].append(x)  # folded into G (one matrix product) at the next refresh
        self.g[k] += rx
        rc = min(max(r, 0.0), 1.0)
        s[0] += 1.0
        s[1] += r
        s[2] += r * r
        s[3] += rc
        s[4] += 1.0 - rc
        s[7] += 1.0
        if s[7] >= self.refresh_every:
            self.refresh(k)
        else:
            if len(self.rows[k]) >= FOLD_EVERY:
                self.fold(k)
            self.theta[k] = A_inv @ self.b[k]
        return resid

    def gram(self, k: int) -> np.ndarray:
        """This visitor's Gram matrix of action ``k`` including rows not yet folded in."""
        rows = self.rows[k]
        if not rows:
            return self.G[k].copy()
        B = np.array(rows)
        if self.discount != 1.0:
            m = len(rows)
            w = self.discount ** np.arange(m - 1, -1, -1, dtype=np.float64)
            return self.discount**m * self.G[k] + (B * w[:, None]).T @ B
        return self.G[k] + B.T @ B

    def fold(self, k: int) -> None:
        """Fold the buffered rows of action ``k`` into ``G_k``."""
        if self.rows[k]:
            G = self.gram(k)
            self.G[k] = (G + G.T) * 0.5
            self.rows[k] = []

    def refresh(self, k: int) -> None:
        """Recompute ``A_k^-1`` and ``theta_k`` exactly from ``l2 I + P_k + G_k``."""
        self.fold(k)
        A = self.P[k] + self.G[k]
        A[np.diag_indices(self.dim)] += self.l2
        inv = np.linalg.inv(A)
        self.A_inv[k] = (inv + inv.T) * 0.5
        self.b[k] = self.p[k] + self.g[k]
        self.theta[k] = self.A_inv[k] @ self.b[k]
        self.scalars[k, 7] = 0.0

    def forget(self, k: int, keep: float) -> None:
        """Scale this visitor's own statistics of action ``k`` by ``keep`` (drift reset)."""
        self.fold(k)
        self.G[k] *= keep
        self.g[k] *= keep
        self.scalars[k, 0:5] *= keep
        self.refresh(k)

    def set_prior(
        self, k: int, P: np.ndarray, p: np.ndarray, successes: float, failures: float
    ) -> None:
        """Install (already weighted) prior statistics for action ``k``."""
        self.P[k] = P
        self.p[k] = p
        self.scalars[k, 5] = successes
        self.scalars[k, 6] = failures
        self.refresh(k)

    # -- serialization ----------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        has_prior = [bool(self.P[k].any() or self.p[k].any()) for k in range(len(self.actions))]
        return {
            "actions": list(self.actions),
            "A_inv": [sym_to_list(m) for m in self.A_inv],
            "b": self.b.tolist(),
            "G": [sym_to_list(m) for m in self.G],
            "rows": [[r.tolist() for r in rows] for rows in self.rows],
            "g": self.g.tolist(),
            "P": [sym_to_list(m) if h else None for m, h in zip(self.P, has_prior, strict=True)],
            "p": self.p.tolist(),
            "scalars": self.scalars.tolist(),
        }

    @classmethod
    def from_dict(
        cls, d: dict[str, Any], dim: int, l2: float, discount: float, refresh_every: int
    ) -> ArmModels:
        m = cls(dim, l2, discount, refresh_every)
        m.actions = [str(a) for a in d["actions"]]
        m.index = {a: i for i, a in enumerate(m.actions)}
        k = len(m.actions)
        if len(m.index) != k:
            raise ValueError("duplicate actions")

        def mats(rows: list[Any]) -> np.ndarray:
            if len(rows) != k:
                raise ValueError("wrong number of matrices")
            return np.array([sym_from_list(r, dim) for r in rows]).reshape(k, dim, dim)

        def vecs(rows: list[Any], width: int) -> np.ndarray:
            a = np.array(rows, dtype=np.float64).reshape(k, width)
            if not np.isfinite(a).all():
                raise ValueError("non-finite values")
            return a

        m.A_inv = mats(d["A_inv"])
        m.b = vecs(d["b"], dim)
        m.G = mats(d["G"])
        if len(d["rows"]) != k:
            raise ValueError("wrong number of row buffers")
        m.rows = [[_row(r, dim) for r in rows] for rows in d["rows"]]
        m.g = vecs(d["g"], dim)
        if len(d["P"]) != k:
            raise ValueError("wrong number of prior matrices")
        m.P = np.array(
            [np.zeros((dim, dim)) if r is None else sym_from_list(r, dim) for r in d["P"]]
        ).reshape(k, dim, dim)
        m.p = vecs(d["p"], dim)
        m.scalars = vecs(d["scalars"], 9)
        m.theta = np.einsum("kde,ke->kd", m.A_inv, m.b) if k else np.zeros((0, dim))
        for i in range(k):  # same operation as in update(), so identical bits
            m.theta[i] = m.A_inv[i] @ m.b[i]
        return m
