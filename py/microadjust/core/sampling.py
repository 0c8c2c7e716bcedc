"""Drawing the shown action from a probability vector, with its exact propensity.

One uniform number decides the action (inverse-CDF sampling), after one more for the holdout
when a holdout is configured, so a restored engine with the same generator state draws the
same actions. The holdout mixes "show the default" with probability ``holdout`` into the
policy's vector; the propensity is that mixture's probability of the shown action.

>>> import numpy as np
>>> rng = np.random.Generator(np.random.PCG64(0))
>>> draw([0.25, 0.75], rng, default=0, holdout=0.0)
Draw(index=1, propensity=0.75, holdout=False)
>>> inverse_cdf([0.0, 0.5, 0.5], 0.0)
1
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Draw", "draw", "inverse_cdf"]


@dataclass(slots=True)
class Draw:
    """The drawn index, the exact probability it had, and whether it is a holdout decision."""

    index: int
    propensity: float
    holdout: bool


def inverse_cdf(probs: list[float], u: float) -> int:
    """The index where the cumulative sum of ``probs`` passes ``u * sum(probs)``, ``u`` in [0, 1).

    A zero-probability index is never returned, whatever rounding does to the sums.
    """
    target = u * math.fsum(probs)
    k = 0
    acc = probs[0]
    last = len(probs) - 1
    while (acc <= target or probs[k] <= 0) and k < last:
        k += 1
        acc += probs[k]
    while probs[k] <= 0:  # numerical edge: never pick a zero-probability action
        k -= 1
    return k


def draw(probs: list[float], rng: np.random.Generator, default: int, holdout: float) -> Draw:
    """Draw an index from ``probs``, showing ``default`` instead with probability ``holdout``."""
    is_holdout = bool(holdout > 0 and rng.random() < holdout)
    k = default if is_holdout else inverse_cdf(probs, rng.random())
    propensity = (holdout if k == default else 0.0) + (1.0 - holdout) * probs[k]
    return Draw(k, min(max(propensity, 1e-12), 1.0), is_holdout)
