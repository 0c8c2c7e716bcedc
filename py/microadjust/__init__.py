"""microadjust: on-device contextual bandits for content personalization.

>>> from microadjust import Engine
>>> eng = Engine(policy="auto", seed=0)
>>> dec = eng.rank({"device": "mobile"}, ["a", "b"], now=0.0)
>>> eng.reward(dec.event_id, 1.0, now=1.0)
"""

from .engine import DEFAULTS, Decision, Engine
from .errors import (
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
from .evaluation import Estimate, LiftEstimate, doubly_robust, ips, lift, snips
from .priors import merge_stats
from .triggers import Trigger, parse_trigger

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
