"""Guardrails: holdout, adjustment caps, cooldowns and a minimum confidence.

They act on the policy's probability vector over the offered actions and return another
probability vector, so the engine can still log the exact propensity of what it shows:

* **holdout** (fraction ``h``): with probability ``h`` the decision shows the default action
  and is marked ``holdout=True`` (for measuring lift). The logged propensity is the mixture
  ``h * [a is default] + (1 - h) * q(a)``.
* **caps**: at most ``max_adjustments_per_session`` decisions showing a non-default action
  per session (a session ends after ``session_timeout_s`` without a decision), and at most
  ``max_adjustments_per_slot`` per slot and session; past a cap, the default is shown.
* **cooldown** (``cooldown_s``): after a slot's shown action changes, the slot keeps showing
  it for ``cooldown_s`` seconds (no flicker); repeats during a cooldown do not count as new
  adjustments.
* **minimum confidence** (``min_confidence``): probability mass on an action whose posterior
  probability of beating the default is below the threshold moves to the default, except
  the policy's uniform exploration share (``explore_floor`` or ``epsilon``), which keeps
  gathering the evidence needed to become confident.

Regularization (the ridge ``l2`` and the capped prior weight) lives in the models.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from .state import StateReader

__all__ = ["Guardrails", "beat_probability"]


def beat_probability(mean: np.ndarray, std: np.ndarray, default: int) -> np.ndarray:
    """Normal-approximation probability that each action's reward exceeds the default's."""
    diff = mean - mean[default]
    scale = np.sqrt(std**2 + std[default] ** 2) + 1e-12
    z = diff / scale
    conf = 0.5 * (1.0 + np.array([math.erf(v / math.sqrt(2.0)) for v in z]))
    conf[default] = 1.0
    return conf


class Guardrails:
    """Session and slot bookkeeping for the guardrails (see the module docstring)."""

    def __init__(
        self,
        holdout: float = 0.0,
        max_adjustments_per_session: int | None = None,
        max_adjustments_per_slot: int | None = None,
        cooldown_s: float = 0.0,
        min_confidence: float = 0.0,
        session_timeout_s: float = 1800.0,
    ):
        self.holdout = float(holdout)
        self.max_session = max_adjustments_per_session
        self.max_slot = max_adjustments_per_slot
        self.cooldown_s = float(cooldown_s)
        self.min_confidence = float(min_confidence)
        self.session_timeout_s = float(session_timeout_s)
        self.session = 0
        self.last_seen: float | None = None
        self.session_adjustments = 0
        self.slot_adjustments: dict[str, int] = {}
        self.shown: dict[str, list[Any]] = {}  # slot -> [action, time it started showing]

    def roll_session(self, now: float) -> None:
        """Start a new session if the previous decision is older than the timeout."""
        if self.last_seen is not None and now - self.last_seen > self.session_timeout_s:
            self.session += 1
            self.session_adjustments = 0
            self.slot_adjustments = {}
        self.last_seen = now if self.last_seen is None else max(self.last_seen, now)

    def constrain(
        self,
        probs: np.ndarray,
        actions: list[str],
        default: int,
        slot: str,
        now: float,
        confidence: np.ndarray | None,
        explore: float = 0.0,
    ) -> tuple[np.ndarray, str | None]:
        """Return the constrained probabilities and, if a rule forced them, its reason."""
        shown = self.shown.get(slot)
        if (
            self.cooldown_s > 0
            and shown is not None
            and now - shown[1] < self.cooldown_s
            and shown[0] in actions
        ):
            q = np.zeros_like(probs)
            q[actions.index(shown[0])] = 1.0
            return q, f"cooldown: keep {shown[0]}"
        if (self.max_session is not None and self.session_adjustments >= self.max_session) or (
            self.max_slot is not None and self.slot_adjustments.get(slot, 0) >= self.max_slot
        ):
            forced = np.zeros_like(probs)
            forced[default] = 1.0
            return forced, "cap reached: default"
        if self.min_confidence > 0 and confidence is not None:
            weak = confidence < self.min_confidence
            weak[default] = False
            if weak.any():
                # keep the uniform exploration share (to gather evidence), move the rest
                q = np.where(weak, np.minimum(probs, explore / len(probs)), probs)
                q[default] += probs.sum() - q.sum()
                return q, "not confident yet: default"
        return probs, None

    def record(self, slot: str, action: str, is_default: bool, repeat: bool, now: float) -> None:
        """Account for a decision that showed ``action`` in ``slot``."""
        if not is_default and not repeat:
            self.session_adjustments += 1
            self.slot_adjustments[slot] = self.slot_adjustments.get(slot, 0) + 1
        shown = self.shown.get(slot)
        if shown is None or shown[0] != action:
            self.shown[slot] = [action, now]

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Guardrails:
        """The guardrails configured by the engine's validated parameters."""
        return cls(
            holdout=params["holdout"],
            max_adjustments_per_session=params["max_adjustments_per_session"],
            max_adjustments_per_slot=params["max_adjustments_per_slot"],
            cooldown_s=params["cooldown_s"],
            min_confidence=params["min_confidence"],
            session_timeout_s=params["session_timeout_s"],
        )

    def to_state(self) -> dict[str, Any]:
        return {
            "session": self.session,
            "last_seen": self.last_seen,
            "session_adjustments": self.session_adjustments,
            "slot_adjustments": dict(self.slot_adjustments),
            "shown": {k: list(v) for k, v in self.shown.items()},
        }

    @classmethod
    def from_state(cls, state: StateReader, params: Mapping[str, Any]) -> Guardrails:
        """The guardrails configured by ``params`` with the bookkeeping of :meth:`to_state`."""
        guard = cls.from_params(params)
        guard.session = state["session"].int()
        guard.last_seen = state["last_seen"].float(optional=True)
        guard.session_adjustments = state["session_adjustments"].int()
        guard.slot_adjustments = {k: v.int() for k, v in state["slot_adjustments"].items()}
        guard.shown = {}
        for k, v in state["shown"].items():
            action, since = v.list(2)
            guard.shown[k] = [action.str(), since.float()]
        return guard
