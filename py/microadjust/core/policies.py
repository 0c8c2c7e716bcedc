"""Bandit policies: one small class each, turning model scores into an exact choice distribution.

A policy never picks an action itself. :meth:`Policy.probabilities` returns a probability
vector over the offered actions; the engine samples from it with its seeded generator, so the
logged propensity is *exactly* the probability with which the action was drawn. ``floor`` is
the share spread uniformly on top (``explore_floor``, raised for a while after a drift alarm),
which keeps every propensity positive.

* :class:`EpsilonGreedy`: ``max(epsilon, floor) / K`` everywhere plus the rest on the best
  mean (ties share it).
* :class:`LinUCB`: greedy on the upper confidence bound ``mean + alpha * sigma * std``.
* :class:`LinTS` and :class:`Thompson`: Thompson sampling by probability matching.
  ``mc_samples`` posterior draws of every action's score (for ``lin_ts`` the score
  ``x' theta`` of a Gaussian posterior is itself Gaussian, so a draw costs one normal per
  action; for ``thompson`` a Beta draw of the context-free click rate) give the share of draws
  each action wins; the action is drawn from that share mixed with ``floor / K``. Drawing
  from the empirical share is distributionally the same as taking the argmax of one posterior
  draw, so this *is* Thompson sampling, and the logged propensity is the exact probability
  of the draw given the Monte-Carlo sample.

The engine looks policies up by name in :data:`POLICIES`; ``"auto"`` is :data:`AUTO_POLICY`
with :data:`AUTO_PARAMS` as defaults.

>>> scores = Scores(mean=np.array([0.1, 0.5]), std=np.array([1.0, 0.0]), sigma=0.5)
>>> EpsilonGreedy(epsilon=0.1).probabilities(scores, 0.0, None).round(3).tolist()
[0.05, 0.95]
>>> LinUCB(alpha=1.0).probabilities(scores, 0.0, None).tolist()  # 0.1 + 0.5 beats 0.5
[1.0, 0.0]
>>> sorted(POLICIES)
['epsilon_greedy', 'lin_ts', 'linucb', 'thompson']
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import numpy as np

from .models import ArmModels

__all__ = [
    "AUTO_PARAMS",
    "AUTO_POLICY",
    "POLICIES",
    "EpsilonGreedy",
    "LinTS",
    "LinUCB",
    "Policy",
    "Scores",
    "Thompson",
    "greedy_probabilities",
    "policy_names",
    "sample_share_probabilities",
]


def greedy_probabilities(scores: np.ndarray, epsilon: float) -> np.ndarray:
    """``epsilon / K`` on every action plus ``1 - epsilon`` shared by the best scores."""
    values = scores.tolist()
    k = len(values)
    top = max(values) - 1e-12
    best = [v >= top for v in values]
    share = (1.0 - epsilon) / sum(best)
    base = epsilon / k
    return np.array([base + share if b else base for b in best])


def sample_share_probabilities(draws: np.ndarray, floor: float) -> np.ndarray:
    """Share of rows of ``draws`` (shape ``(M, K)``) each column wins, mixed with a floor."""
    m, k = draws.shape
    wins = np.bincount(draws.argmax(axis=1), minlength=k) / m
    return floor / k + (1.0 - floor) * wins


@dataclass(slots=True)
class Scores:
    """What the models say about the offered actions (in offer order).

    ``mean`` is the expected reward, ``std`` its uncertainty in units of the reward noise
    ``sigma`` (the slot's running reward standard deviation); ``beta_a``, ``beta_b`` are the
    Beta-Bernoulli posterior parameters, present only for the context-free ``thompson``.
    """

    mean: np.ndarray
    std: np.ndarray
    sigma: float
    beta_a: np.ndarray | None = None
    beta_b: np.ndarray | None = None


@dataclass(frozen=True, slots=True)
class Policy(ABC):
    """Base class: :meth:`probabilities` is the one thing a policy decides.

    A subclass declares its parameters as dataclass fields named like the engine's
    parameters (:data:`~microadjust.core.params.DEFAULTS`), so the engine builds it with
    :meth:`from_params`.
    """

    name: ClassVar[str]

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Policy:
        """The policy configured from the engine's validated parameters."""
        return cls(**{f.name: params[f.name] for f in fields(cls)})

    def score(self, models: ArmModels, idx: list[int], X: np.ndarray, sigma: float) -> Scores:
        """The models' scores of actions ``idx`` with feature rows ``X`` (ridge regression)."""
        mean, std = models.predict(idx, X)
        return Scores(mean, std, sigma)

    @abstractmethod
    def probabilities(
        self, scores: Scores, floor: float, rng: np.random.Generator | None
    ) -> np.ndarray:
        """The exact probability of choosing each action, given ``scores``."""

    def uniform_share(self, explore_floor: float) -> float:
        """The share this policy spreads uniformly (kept by the minimum-confidence guardrail)."""
        return explore_floor


@dataclass(frozen=True, slots=True)
class EpsilonGreedy(Policy):
    """Best mean with probability ``1 - epsilon``, uniform otherwise.

    >>> s = Scores(np.array([0.2, 0.2, 0.1]), np.zeros(3), 1.0)
    >>> EpsilonGreedy(epsilon=0.3).probabilities(s, 0.0, None).round(2).tolist()
    [0.45, 0.45, 0.1]
    """

    name: ClassVar[str] = "epsilon_greedy"
    epsilon: float = 0.05

    def probabilities(
        self, scores: Scores, floor: float, rng: np.random.Generator | None
    ) -> np.ndarray:
        return greedy_probabilities(scores.mean, max(self.epsilon, floor))

    def uniform_share(self, explore_floor: float) -> float:
        return self.epsilon


@dataclass(frozen=True, slots=True)
class LinUCB(Policy):
    """Greedy on the upper confidence bound ``mean + alpha * sigma * std``, with a floor.

    >>> s = Scores(np.array([0.5, 0.4]), np.array([0.0, 1.0]), 1.0)
    >>> LinUCB(alpha=0.5).probabilities(s, 0.1, None).round(2).tolist()
    [0.05, 0.95]
    """

    name: ClassVar[str] = "linucb"
    alpha: float = 0.5

    def probabilities(
        self, scores: Scores, floor: float, rng: np.random.Generator | None
    ) -> np.ndarray:
        return greedy_probabilities(scores.mean + (self.alpha * scores.sigma) * scores.std, floor)


@dataclass(frozen=True, slots=True)
class LinTS(Policy):
    """Linear Thompson sampling: the share of Gaussian posterior draws each action wins.

    >>> s = Scores(np.array([1.0, 0.0]), np.array([0.1, 0.1]), 1.0)
    >>> rng = np.random.default_rng(0)
    >>> LinTS(alpha=0.5, mc_samples=64).probabilities(s, 0.0, rng).tolist()
    [1.0, 0.0]
    """

    name: ClassVar[str] = "lin_ts"
    alpha: float = 0.5
    mc_samples: int = 64

    def probabilities(
        self, scores: Scores, floor: float, rng: np.random.Generator | None
    ) -> np.ndarray:
        width = (self.alpha * scores.sigma) * scores.std
        draws = scores.mean + width * rng.standard_normal((self.mc_samples, len(scores.mean)))
        return sample_share_probabilities(draws, floor)


@dataclass(frozen=True, slots=True)
class Thompson(Policy):
    """Context-free Beta-Bernoulli Thompson sampling on rewards clipped to [0, 1].

    >>> m = ArmModels(dim=2)
    >>> m.add_action("a"), m.add_action("b")
    (0, 1)
    >>> s = Thompson().score(m, [0, 1], np.ones((2, 2)), 0.5)
    >>> s.mean.tolist(), s.beta_a.tolist()
    ([0.5, 0.5], [1.0, 1.0])
    """

    name: ClassVar[str] = "thompson"
    mc_samples: int = 64

    def score(self, models: ArmModels, idx: list[int], X: np.ndarray, sigma: float) -> Scores:
        a, b = models.beta_params(idx)
        mean = a / (a + b)
        std = np.sqrt(a * b / ((a + b) ** 2 * (a + b + 1))) / max(sigma, 1e-12)
        return Scores(mean, std, sigma, a, b)

    def probabilities(
        self, scores: Scores, floor: float, rng: np.random.Generator | None
    ) -> np.ndarray:
        draws = rng.beta(scores.beta_a, scores.beta_b, size=(self.mc_samples, len(scores.mean)))
        return sample_share_probabilities(draws, floor)


#: The policies by name; ``Engine(policy=name)`` looks them up here.
POLICIES: dict[str, type[Policy]] = {
    cls.name: cls for cls in (EpsilonGreedy, Thompson, LinUCB, LinTS)
}
AUTO_POLICY = "linucb"
#: Parameters ``policy="auto"`` uses unless given explicitly: LinUCB with mild forgetting
#: (an effective memory of a few thousand updates per action) on top of drift detection.
AUTO_PARAMS: dict[str, Any] = {"discount": 0.9993}


def policy_names() -> tuple[str, ...]:
    """Every name ``Engine(policy=...)`` accepts."""
    return ("auto", *POLICIES)
