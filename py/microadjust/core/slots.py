"""What the engine keeps for one slot: models, priors, reward noise, drift detector.

>>> from microadjust.core.drift import PageHinkley
>>> slot = SlotState(ArmModels(dim=2), PageHinkley())
>>> slot.learn_noise(1.0); slot.learn_noise(0.0)
>>> round(slot.sigma(), 3)
0.5
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from .drift import PageHinkley
from .errors import InvalidState
from .models import ArmModels
from .priors import PRIOR_LEVELS
from .state import StateReader, sym_to_list

__all__ = ["SlotState", "Prior", "PriorStats"]


class PriorStats(NamedTuple):
    """One action's prior statistics, already weighted: Gram, ``X'y``, Beta counts."""

    P: np.ndarray
    p: np.ndarray
    successes: float
    failures: float


@dataclass(slots=True)
class Prior:
    """One installed prior level of a slot (``"site"`` or ``"segment"``)."""

    weight: float
    actions: dict[str, PriorStats]

    def to_state(self) -> dict[str, Any]:
        return {
            "weight": self.weight,
            "actions": {
                a: [sym_to_list(s.P), s.p.tolist(), s.successes, s.failures]
                for a, s in self.actions.items()
            },
        }

    @classmethod
    def from_state(cls, state: StateReader, dim: int) -> Prior:
        actions = {}
        for a, entry in state["actions"].items():
            P, p, s, f = entry.list(4)
            actions[a] = PriorStats(P.symmetric(dim), p.floats(dim), s.float(), f.float())
        return cls(state["weight"].float(), actions)


class SlotState:
    """Models, priors, reward noise (Welford), drift detector and exploration boost of a slot."""

    __slots__ = ("models", "priors", "noise", "drift", "drift_resets", "boost")

    def __init__(self, models: ArmModels, drift: PageHinkley):
        self.models = models
        self.priors: dict[str, Prior] = {}  # level -> prior
        self.noise = [0.0, 0.0, 0.0]  # Welford n, mean, M2 of rewards
        self.drift = drift
        self.drift_resets = 0
        self.boost = 0.0  # extra exploration after a drift alarm, decays per decision

    def sigma(self) -> float:
        """Reward noise standard deviation (shrunk towards 0.5 while few rewards are seen)."""
        n, _, m2 = self.noise
        return math.sqrt((m2 + 2 * 0.25) / (n + 2))

    def learn_noise(self, value: float) -> None:
        """Add one reward to the running noise estimate."""
        n, mu, m2 = self.noise
        n += 1.0
        delta = value - mu
        mu += delta / n
        m2 += delta * (value - mu)
        self.noise = [n, mu, m2]

    def combined_prior(self, action: str) -> PriorStats:
        """The sum of every installed level's prior of ``action`` (zeros where none)."""
        d = self.models.dim
        P, p, s, f = np.zeros((d, d)), np.zeros(d), 0.0, 0.0
        for level in PRIOR_LEVELS:
            pr = self.priors.get(level)
            if pr is not None and action in pr.actions:
                lp = pr.actions[action]
                P, p, s, f = P + lp.P, p + lp.p, s + lp.successes, f + lp.failures
        return PriorStats(P, p, s, f)

    def install_priors(self, k: int) -> None:
        """Give action index ``k`` the combined prior of its action."""
        self.models.set_prior(k, *self.combined_prior(self.models.actions[k]))

    def to_state(self) -> dict[str, Any]:
        return {
            "models": self.models.to_state(),
            "priors": {level: pr.to_state() for level, pr in self.priors.items()},
            "noise": list(self.noise),
            "drift": self.drift.to_state(),
            "drift_resets": self.drift_resets,
            "boost": self.boost,
        }

    @classmethod
    def from_state(cls, state: StateReader, params: dict[str, Any]) -> SlotState:
        """Inverse of :meth:`to_state` for an engine with ``params``."""
        dim = params["dim"]
        models = ArmModels.from_state(
            state["models"], dim, params["l2"], params["discount"], params["refresh_every"]
        )
        slot = cls(models, PageHinkley.from_state(state["drift"]))
        slot.noise = state["noise"].floats(3).tolist()
        slot.drift_resets = state["drift_resets"].int()
        slot.boost = state["boost"].float()
        priors = state["priors"]
        for level, pr in priors.items():
            if level not in PRIOR_LEVELS:
                raise InvalidState(
                    f"{priors.path}: expected prior levels in {list(PRIOR_LEVELS)}, got {level!r}"
                )
            slot.priors[level] = Prior.from_state(pr, dim)
        for k, a in enumerate(models.actions):  # derived, not saved
            P, p, _, _ = slot.combined_prior(a)
            models.P[k], models.p[k] = P, p
        return slot
