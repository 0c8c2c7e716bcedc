"""microadjust: on-device contextual bandits for content personalization.

>>> from microadjust import Engine
>>> eng = Engine(policy="auto", seed=0)
>>> dec = eng.rank({"device": "mobile"}, ["a", "b"], now=0.0)
>>> eng.reward(dec.event_id, 1.0, now=1.0)

The package has three layers, each in its own folder:

| folder | layer | runs |
| --- | --- | --- |
| ``core/`` | the engine: features, policies, drift, priors, guardrails, evaluation | everywhere |
| ``browser/`` | the worker session, page protocol, signals, triggers, sync client | in the worker |
| ``server/`` | the optional sync server (never shipped to browsers) | on the site's server |

Imports only run downwards: ``server`` and ``browser`` use ``core``; ``core`` uses neither.
Off-policy evaluation (``ips``, ``lift``, …) is imported on first use: the worker's boot never
needs it.
"""

from typing import TYPE_CHECKING, Any

from .browser.triggers import Trigger, parse_trigger
from .core.engine import DEFAULTS, Decision, Engine
from .core.errors import (
    ExpiredEvent,
    InvalidActions,
    InvalidContext,
    InvalidParameter,
    InvalidPrior,
    InvalidReward,
    InvalidSlot,
    InvalidState,
    InvalidTrigger,
    MicroadjustError,
    UnknownEvent,
    UnknownSignal,
)
from .core.priors import merge_stats

if TYPE_CHECKING:
    from .core.evaluation import Estimate, LiftEstimate, doubly_robust, ips, lift, snips

_EVALUATION = frozenset({"Estimate", "LiftEstimate", "doubly_robust", "ips", "lift", "snips"})


def __getattr__(name: str) -> Any:
    """The names of :mod:`microadjust.core.evaluation`, imported when first asked for."""
    if name in _EVALUATION:
        from .core import evaluation

        return getattr(evaluation, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__version__ = "0.1.0"

__all__ = [
    "DEFAULTS",
    "Decision",
    "Engine",
    "Estimate",
    "ExpiredEvent",
    "InvalidActions",
    "InvalidContext",
    "InvalidParameter",
    "InvalidPrior",
    "InvalidReward",
    "InvalidSlot",
    "InvalidState",
    "InvalidTrigger",
    "LiftEstimate",
    "MicroadjustError",
    "Trigger",
    "UnknownEvent",
    "UnknownSignal",
    "__version__",
    "doubly_robust",
    "ips",
    "lift",
    "merge_stats",
    "parse_trigger",
    "snips",
]
