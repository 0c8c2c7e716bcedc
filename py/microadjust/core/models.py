"""Per-action model storage of one slot: ridge regressions and Beta-Bernoulli counts.

For action ``k``: ``A_k = l2 * I + P_k + G_k`` and ``b_k = p_k + g_k`` where ``G_k, g_k`` are
the (optionally discounted) Gram matrix and ``X'y`` of this visitor's data and ``P_k, p_k`` the
installed prior; ``theta_k = A_k^-1 b_k``. ``A_k^-1`` is kept up to date by Sherman-Morrison
(rank-1, never inverted per step; with discount ``gamma``: ``A <- gamma A + x x'``); a fresh
inverse is computed only every ``refresh_every`` updates of an action and after a drift reset.

The per-action counters live in one ``(K, 9)`` array (one row per action, so adding, evicting
and saving an action stays one numpy call); its columns are named by :class:`ModelScalars`'
fields and the ``N``, ``REWARD_SUM``, ... constants below, never by bare numbers.

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
>>> m.scalars_of(0).n, m.scalars_of(0).successes
(20.0, 20.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from .state import StateReader, sym_to_list

__all__ = ["ArmModels", "ModelScalars", "FOLD_EVERY"]

FOLD_EVERY = 32  # buffered rows are folded into the Gram matrix (one product) this often


@dataclass(frozen=True, slots=True)
class ModelScalars:
    """The counters of one action's model (one row of ``ArmModels.scalars``)."""

    n: float = 0.0  # this visitor's rewarded decisions (discounted)
    reward_sum: float = 0.0
    reward_sq_sum: float = 0.0
    successes: float = 0.0  # sum of rewards clipped to [0, 1]
    failures: float = 0.0  # sum of 1 - clipped rewards
    prior_successes: float = 0.0  # from the installed priors (already weighted)
    prior_failures: float = 0.0
    since_refresh: float = 0.0  # updates since the last exact re-inversion
    last_used: float = 0.0  # engine decision counter when the action was last chosen


COLUMNS = tuple(f.name for f in fields(ModelScalars))
(N, REWARD_SUM, REWARD_SQ_SUM, SUCCESSES, FAILURES, PRIOR_SUCCESSES, PRIOR_FAILURES,
 SINCE_REFRESH, LAST_USED) = range(len(COLUMNS))  # fmt: skip
OWN = slice(N, FAILURES + 1)  # this visitor's own statistics (discounted, forgotten on drift)
_ARRAYS = ("A_inv", "b", "theta", "G", "g", "P", "p", "scalars")


class ArmModels:
    """Per-action ridge regressions and Beta-Bernoulli counts for one slot (see module docs)."""

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
        self.scalars = np.zeros((0, len(COLUMNS)))  # columns: ModelScalars' fields

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
        self.scalars = np.concatenate([self.scalars, np.zeros((1, len(COLUMNS)))])
        return k

    def remove_action(self, k: int) -> None:
        """Drop the model of action index ``k`` (indices above shift down)."""
        del self.actions[k]
        del self.rows[k]
        for name in _ARRAYS:
            setattr(self, name, np.delete(getattr(self, name), k, axis=0))
        self.index = {a: i for i, a in enumerate(self.actions)}

    def copy_action(self, source: ArmModels, j: int, k: int) -> None:
        """Copy action ``j`` of ``source`` into action ``k`` of these models."""
        for name in _ARRAYS:
            getattr(self, name)[k] = getattr(source, name)[j]
        self.rows[k] = list(source.rows[j])

    def least_recently_used(self, count: int, keep: set[str]) -> list[int]:
        """Indices of the ``count`` least recently chosen actions not in ``keep``."""
        last_used = self.scalars[:, LAST_USED]
        candidates = sorted((last_used[k], k) for k, a in enumerate(self.actions) if a not in keep)
        return [k for _, k in candidates[:count]]

    def touch(self, k: int, step: float) -> None:
        """Mark action ``k`` as chosen at decision ``step`` (for eviction)."""
        self.scalars[k, LAST_USED] = step

    def scalars_of(self, k: int) -> ModelScalars:
        """The counters of action ``k`` as a typed record."""
        return ModelScalars(*self.scalars[k].tolist())

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
        return (
            1.0 + s[:, SUCCESSES] + s[:, PRIOR_SUCCESSES],
            1.0 + s[:, FAILURES] + s[:, PRIOR_FAILURES],
        )

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
            s[OWN] *= gamma
        u = A_inv @ x
        v = u * (1.0 / math.sqrt(1.0 + x @ u))  # v v' is exactly symmetric
        A_inv -= v[:, None] * v[None, :]  # np.outer(v, v) without its Python wrapper
        rx = r * x
        self.b[k] += rx
        self.rows[k].append(x)  # folded into G (one matrix product) at the next refresh
        self.g[k] += rx
        rc = min(max(r, 0.0), 1.0)
        s[N] += 1.0
        s[REWARD_SUM] += r
        s[REWARD_SQ_SUM] += r * r
        s[SUCCESSES] += rc
        s[FAILURES] += 1.0 - rc
        s[SINCE_REFRESH] += 1.0
        if s[SINCE_REFRESH] >= self.refresh_every:
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
        self.scalars[k, SINCE_REFRESH] = 0.0

    def forget(self, k: int, keep: float) -> None:
        """Scale this visitor's own statistics of action ``k`` by ``keep`` (drift reset)."""
        self.fold(k)
        self.G[k] *= keep
        self.g[k] *= keep
        self.scalars[k, OWN] *= keep
        self.refresh(k)

    def set_prior(
        self, k: int, P: np.ndarray, p: np.ndarray, successes: float, failures: float
    ) -> None:
        """Install (already weighted) prior statistics for action ``k``."""
        self.P[k] = P
        self.p[k] = p
        self.scalars[k, PRIOR_SUCCESSES] = successes
        self.scalars[k, PRIOR_FAILURES] = failures
        self.refresh(k)

    # -- serialization ----------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """JSON view: symmetric matrices as upper triangles, an absent prior as ``None``."""
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
    def from_state(
        cls, state: StateReader, dim: int, l2: float, discount: float, refresh_every: int
    ) -> ArmModels:
        """Inverse of :meth:`to_state` (bit-exact); raises ``InvalidState`` naming the path."""
        m = cls(dim, l2, discount, refresh_every)
        m.actions = [a.str() for a in state["actions"].list()]
        m.index = {a: i for i, a in enumerate(m.actions)}
        k = len(m.actions)
        if len(m.index) != k:
            raise state["actions"].error("a list of distinct action ids")

        def mats(key: str, optional: bool = False) -> np.ndarray:
            out = np.zeros((k, dim, dim))  # filled in place: no stacked copy
            for i, r in enumerate(state[key].list(k)):
                if not (optional and r.value is None):
                    out[i] = r.symmetric(dim)
            return out

        m.A_inv = mats("A_inv")
        m.b = state["b"].floats(k, dim)
        m.G = mats("G")
        m.rows = [[r.floats(dim) for r in rows.list()] for rows in state["rows"].list(k)]
        m.g = state["g"].floats(k, dim)
        m.P = mats("P", optional=True)
        m.p = state["p"].floats(k, dim)
        m.scalars = state["scalars"].floats(k, len(COLUMNS))
        m.theta = np.zeros((k, dim))
        for i in range(k):  # same operation as in update(), so identical bits
            m.theta[i] = m.A_inv[i] @ m.b[i]
        return m
