"""Per-visitor contribution bounds and the on-device noise of sync uploads (protocol v2).

This runs on the visitor's device (numpy only). Raw events, contexts and identifiers never leave
it: an upload holds, per slot, one context cell's exposure and reward counts (see
``docs/sync-protocol.md``).

**The unit is the visitor.** Per slot and per contribution period (``period_s``, a UTC day by
default) one device contributes, over *all* its uploads of the period, at most ``max_shown``
exposures (variants and holdout together) and at most ``max_shown`` reward units (each
decision's reward clipped to [0, 1]). :class:`ContributionBudget` enforces this across uploads
and keeps its running totals in the device's state. Two consequences, for any split of a
period's counts over uploads, variants and cells (all counts are non-negative, so a sum of
squares is at most the square of the sum):

* adding or removing one visitor moves the vector of everything it uploaded for a slot in a
  period by at most ``sqrt(2) * max_shown`` in L2 norm (exposures and rewards ``max_shown``
  each). The server's central noise (mode ``"aggregate"``) is calibrated from this;
* replacing one visitor's data by any other moves it by at most :func:`sensitivity`
  ``= 2 * max_shown``, the bound local noise must cover.

**Mode "aggregate"** (exact counts): the site's own server sees one visitor's minimized counts
(a cell, a handful of integers, no identifier) and adds Gaussian noise once to what it
publishes, each upload in exactly one released increment: readers of the priors get central
differential privacy (zCDP, ``rho_per_period`` for everything ever published about one
visitor-period, whatever the memory and cadence; the protocol's section 5 states it). It
does not protect against the server itself or a breach of its database: they see each upload's
exact small counts (but no identifier, no event, no context beyond the cell).

**Mode "local"**: the device adds ``N(0, sigma^2)`` to every number of every declared variant
of the slot and to the holdout (zeros included), ``sigma = sensitivity / sqrt(2 rho)`` with
``rho = (sqrt(ln(1/delta) + epsilon) - sqrt(ln(1/delta)))**2``. The Gaussian mechanism with
this ``sigma`` is ``rho``-zCDP, hence ``(epsilon, delta)``-DP (Bun & Steinke 2016, Prop. 1.3).
As noise is independent per upload and the bound holds over the concatenation of a period's
uploads, **everything one device uploads for a slot in one period is (epsilon, delta)-locally
differentially private** (``delta = 1e-5``), against anyone: the server, a breach, a reader.
``k`` slots compose to ``k rho``-zCDP; periods compose likewise. Not hidden in either mode:
that an upload happened, when, which slot and cell it is for.

Retries resend the same body (never a fresh draw), so they cost no privacy.

>>> round(local_sigma(1.0, max_shown=4), 1)
39.2
>>> budget = ContributionBudget()
>>> [budget.take_shown("cta", now=0.0, max_shown=2, period_s=10.0) for _ in range(3)]
[True, True, False]
>>> budget.take_shown("cta", now=10.0, max_shown=2, period_s=10.0)  # a new period
True
>>> budget.period_start  # periods are aligned: [10, 20), never [3, 13)
10.0
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core.errors import InvalidState

__all__ = [
    "DEFAULT_DELTA",
    "DEFAULT_EPSILON",
    "DEFAULT_MAX_SHOWN",
    "DEFAULT_PERIOD_S",
    "EPSILON_RANGE",
    "ContributionBudget",
    "local_noise",
    "local_range",
    "local_sigma",
    "sensitivity",
    "zcdp_rho",
]

DEFAULT_EPSILON = 1.0
DEFAULT_DELTA = 1e-5  # fixed by the protocol: the server checks local uploads against it
EPSILON_RANGE = (0.1, 10.0)
DEFAULT_MAX_SHOWN = 2  # one visitor's bound per slot and period (protocol section 2)
DEFAULT_PERIOD_S = 86_400.0
RANGE_SIGMAS = 6.0  # a local upload's numbers lie within [-6 sigma, max_shown + 6 sigma]


def sensitivity(max_shown: int) -> float:
    """L2 distance between any two contributions of one visitor to one slot in one period."""
    return 2.0 * max_shown


def zcdp_rho(epsilon: float, delta: float = DEFAULT_DELTA) -> float:
    """The zCDP ``rho`` whose (epsilon, delta)-DP conversion is exactly ``epsilon``."""
    lo, hi = EPSILON_RANGE
    if not lo <= epsilon <= hi:
        raise ValueError(f"epsilon must be in [{lo}, {hi}], got {epsilon!r}")
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    log_term = math.log(1.0 / delta)
    return (math.sqrt(log_term + epsilon) - math.sqrt(log_term)) ** 2


def local_sigma(epsilon: float, max_shown: int, delta: float = DEFAULT_DELTA) -> float:
    """Standard deviation of the device's noise on each number (mode ``"local"``)."""
    return sensitivity(max_shown) / math.sqrt(2.0 * zcdp_rho(epsilon, delta))


def local_range(epsilon: float, max_shown: int) -> tuple[float, float]:
    """Where every number of a local upload lies (noise beyond 6 sigma is clipped)."""
    t = RANGE_SIGMAS * local_sigma(epsilon, max_shown)
    return -t, max_shown + t


def local_noise(
    values: list[float], epsilon: float, max_shown: int, rng: np.random.Generator
) -> list[float]:
    """``values`` with the local mode's Gaussian noise, rounded to 2 digits, in range (clipped
    after rounding: a rounded bound could lie just outside it)."""
    lo, hi = local_range(epsilon, max_shown)
    noisy = np.asarray(values, dtype=float) + rng.normal(
        0.0, local_sigma(epsilon, max_shown), len(values)
    )
    return [float(v) for v in np.clip(np.round(noisy, 2), lo, hi)]


@dataclass
class ContributionBudget:
    """What this device has contributed in the current period, per slot."""

    period_start: float | None = None
    shown: dict[str, int] = field(default_factory=dict)
    reward: dict[str, float] = field(default_factory=dict)

    def take_shown(self, slot: str, *, now: float, max_shown: int, period_s: float) -> bool:
        """Count one exposure of ``slot`` if the period's bound allows it."""
        self._roll(now, period_s)
        if self.shown.get(slot, 0) >= max_shown:
            return False
        self.shown[slot] = self.shown.get(slot, 0) + 1
        return True

    def take_reward(
        self, slot: str, reward: float, *, now: float, max_shown: int, period_s: float
    ) -> float:
        """The part of ``reward`` (clipped to [0, 1]) the period's bound still allows."""
        self._roll(now, period_s)
        granted = min(min(max(reward, 0.0), 1.0), max_shown - self.reward.get(slot, 0.0))
        granted = max(granted, 0.0)
        self.reward[slot] = self.reward.get(slot, 0.0) + granted
        return granted

    def _roll(self, now: float, period_s: float) -> None:
        """Start a new period when the current one is over. Periods are aligned to multiples
        of ``period_s`` since the epoch (UTC days by default), the server's aggregation days, so
        one period's contribution lands in one day's totals and its bound holds there."""
        if self.period_start is None or now >= self.period_start + period_s:
            self.period_start = math.floor(now / period_s) * period_s
            self.shown, self.reward = {}, {}

    def to_state(self) -> dict[str, Any]:
        return {"period_start": self.period_start, "shown": self.shown, "reward": self.reward}

    @classmethod
    def from_state(cls, state: Any) -> ContributionBudget:
        """Restore; :class:`InvalidState` when the saved budget is malformed."""
        if not isinstance(state, Mapping):
            raise InvalidState(f"contribution budget must be an object, got {state!r}")
        try:
            start = state["period_start"]
            return cls(
                None if start is None else float(start),
                {str(k): int(v) for k, v in state["shown"].items()},
                {str(k): float(v) for k, v in state["reward"].items()},
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise InvalidState(f"contribution budget is malformed: {error!r}") from error
