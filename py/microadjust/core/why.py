"""Why a decision: the terms that made the chosen action's score, and the action it beat.

A linear model's score of action ``k`` is ``x · theta_k``: one term per index of the hashed
vector. The largest terms by magnitude are what drove the choice (Azure Personalizer calls
this feature importance, for one visitor). Each term is named by the features that hash to
its index (:meth:`~microadjust.core.features.Featurizer.sources`). The context-free
``thompson`` policy scores no features, so it gives only the runner-up.

Computed only when asked (``Engine.rank(..., explain=True)``): the page's debug panel asks.

>>> x, theta = np.array([1.0, 2.0, 0.5]), np.array([0.1, -0.3, 0.2])
>>> [(t.feature, round(t.contribution, 2)) for t in top_terms(x, theta, {0: ["(bias)"],
...  1: ["dwell_s"], 2: ["device=mobile"]}, 2)]
[('dwell_s', -0.6), ('(bias)', 0.1)]
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["Term", "RunnerUp", "Why", "top_terms", "why"]

TOP_TERMS = 3


@dataclass(frozen=True, slots=True)
class Term:
    """One term of the score: ``contribution`` is weight × feature value (signed)."""

    feature: str
    contribution: float


@dataclass(frozen=True, slots=True)
class RunnerUp:
    """The best of the other offered actions, by the same predicted score."""

    action: str
    score: float


@dataclass(frozen=True, slots=True)
class Why:
    """The chosen action's predicted score, its largest terms and the runner-up."""

    score: float
    terms: list[Term]
    runner_up: RunnerUp | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable view (what the worker sends the debug panel)."""
        return asdict(self)


def top_terms(
    x: np.ndarray, theta: np.ndarray, sources: dict[int, list[str]], count: int = TOP_TERMS
) -> list[Term]:
    """The ``count`` largest nonzero terms ``x[i] * theta[i]`` by magnitude, named by source."""
    terms = x * theta
    order = np.argsort(-np.abs(terms), kind="stable")[:count]
    return [
        Term(" | ".join(sources.get(int(i), [f"#{int(i)}"])), float(terms[i]))
        for i in order
        if terms[i] != 0.0
    ]


def why(
    names: list[str],
    k: int,
    mean: np.ndarray,
    terms: list[Term],
) -> Why:
    """The explanation of choosing ``names[k]`` among ``names`` scored ``mean``."""
    others = [j for j in range(len(names)) if j != k]
    best = max(others, key=lambda j: mean[j], default=None)
    runner_up = None if best is None else RunnerUp(names[best], float(mean[best]))
    return Why(float(mean[k]), terms, runner_up)
