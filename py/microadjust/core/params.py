"""Engine parameters: every one with its default, and their validation.

>>> check_params("auto", {"epsilon": 0.1})["epsilon"]
0.1
>>> check_params("auto", {"dim": 1})
Traceback (most recent call last):
...
microadjust.core.errors.InvalidParameter: dim must be an int in [2, 4096], got 1
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .errors import InvalidParameter
from .policies import policy_names

__all__ = ["DEFAULTS", "check_params", "is_finite_number", "as_float"]

#: Every parameter ``Engine(**params)`` accepts, with its default.
DEFAULTS: dict[str, Any] = {
    # featurization
    "dim": 64,  # hashed feature dimension per action model (bias included)
    "interactions": True,  # context x action-feature interactions
    "scaling": "rms",  # online scaling of numbers: "rms" (clipped to +-3) or "maxabs"
    "max_features": 256,  # most entries in one context (or one action's features)
    "max_actions": 64,  # most actions per rank call, and action models kept per slot
    "max_slots": 32,
    # models and policies
    "l2": 1.0,  # ridge regularization
    "alpha": 0.5,  # exploration scale (LinUCB bonus / lin_ts posterior width), x noise std
    "epsilon": 0.05,  # epsilon_greedy exploration
    "explore_floor": 0.005,  # explicit floor mixed into linucb / lin_ts / thompson
    "mc_samples": 64,  # Monte-Carlo posterior draws for the Thompson policies
    "discount": 1.0,  # forgetting factor per update of an action (1 = none)
    "refresh_every": 256,  # exact re-inversion of an action's model every N updates
    # drift
    "drift_detection": True,
    "drift_delta": 0.1,
    "drift_threshold": 20.0,
    "drift_min_samples": 20,
    "drift_direction": "down",  # "down": react when rewards fall below what the model expects
    "drift_explore": 0.0,  # exploration floor right after a drift alarm (decays per decision)
    "drift_explore_decay": 0.995,
    "drift_keep": 0.0,  # share of the visitor's own statistics kept after a drift alarm
    # priors
    "prior_strength": 20.0,  # a full-weight prior counts as at most this many observations
    # guardrails
    "holdout": 0.0,
    "max_adjustments_per_session": None,
    "max_adjustments_per_slot": None,
    "cooldown_s": 0.0,
    "min_confidence": 0.0,
    "session_timeout_s": 1800.0,
    # events and logs
    "attribution_window_s": 1800.0,
    "max_pending": 256,
    "default_reward": None,  # reward learned for events that expire unrewarded (None: none)
    "log_size": 256,  # bounded log of rewarded decisions, for off-policy evaluation
}

_INT_PARAMS = {
    "dim": (2, 4096),
    "max_features": (1, 100_000),
    "max_actions": (1, 10_000),
    "max_slots": (1, 10_000),
    "mc_samples": (1, 100_000),
    "refresh_every": (1, 1_000_000),
    "drift_min_samples": (1, 1_000_000),
    "max_pending": (1, 1_000_000),
    "log_size": (0, 1_000_000),
}
_OPTIONAL_INT = ("max_adjustments_per_session", "max_adjustments_per_slot")
_UNIT = {
    "epsilon",
    "explore_floor",
    "holdout",
    "min_confidence",
    "drift_keep",
    "drift_explore",
    "drift_explore_decay",
}
_POSITIVE = {"l2", "discount", "drift_threshold", "session_timeout_s", "attribution_window_s"}
_NONNEG = {"alpha", "drift_delta", "prior_strength", "cooldown_s"}


def check_params(policy: object, params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` over :data:`DEFAULTS`, validated; :class:`InvalidParameter` names a bad one."""
    if policy not in policy_names():
        raise InvalidParameter(f"unknown policy {policy!r}; expected one of {policy_names()}")
    unknown = sorted(set(params) - set(DEFAULTS))
    if unknown:
        raise InvalidParameter(f"unknown parameter(s) {unknown}; accepted: {sorted(DEFAULTS)}")
    out = dict(DEFAULTS)
    out.update(params)
    for name, value in out.items():
        if name in _INT_PARAMS:
            lo, hi = _INT_PARAMS[name]
            if type(value) is not int or not lo <= value <= hi:
                raise InvalidParameter(f"{name} must be an int in [{lo}, {hi}], got {value!r}")
        elif name in _OPTIONAL_INT:
            if value is not None and (type(value) is not int or value < 0):
                raise InvalidParameter(f"{name} must be None or an int >= 0, got {value!r}")
        elif name in ("interactions", "drift_detection"):
            if type(value) is not bool:
                raise InvalidParameter(f"{name} must be a bool, got {value!r}")
        elif name == "scaling":
            if value not in ("rms", "maxabs"):
                raise InvalidParameter(f"scaling must be 'rms' or 'maxabs', got {value!r}")
        elif name == "drift_direction":
            if value not in ("both", "up", "down"):
                raise InvalidParameter(
                    f"drift_direction must be 'both', 'up' or 'down', got {value!r}"
                )
        elif name == "default_reward":
            if value is not None and not is_finite_number(value):
                raise InvalidParameter(f"default_reward must be None or finite, got {value!r}")
            out[name] = None if value is None else float(value)
        else:
            if not is_finite_number(value):
                raise InvalidParameter(f"{name} must be a finite number, got {value!r}")
            value = out[name] = float(value)
            if name in _UNIT and not 0 <= value <= 1:
                raise InvalidParameter(f"{name} must be in [0, 1], got {value!r}")
            if name in _POSITIVE and not value > 0:
                raise InvalidParameter(f"{name} must be > 0, got {value!r}")
            if name in _NONNEG and value < 0:
                raise InvalidParameter(f"{name} must be >= 0, got {value!r}")
            if name == "discount" and value > 1:
                raise InvalidParameter(f"discount must be in (0, 1], got {value!r}")
    if out["holdout"] >= 1:
        raise InvalidParameter("holdout must be < 1")
    return out


def is_finite_number(value: object) -> bool:
    """A real number (not a bool) that is neither infinite nor nan."""
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def as_float(value: object) -> float | None:
    """``value`` as a float if it is a real number (bool, int, float, numpy scalar)."""
    if isinstance(value, int | float) or (
        hasattr(value, "dtype") and hasattr(value, "__float__") and not isinstance(value, str)
    ):
        try:
            return float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return None
    return None
