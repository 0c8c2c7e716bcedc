"""Exception types raised by microadjust.

Every error derives from :class:`MicroadjustError`, itself a ``ValueError``, so callers
can catch one type. A call that raises one of these leaves the engine's state exactly
as it was before the call.
"""

from __future__ import annotations

__all__ = [
    "MicroadjustError",
    "InvalidParameter",
    "InvalidContext",
    "InvalidActions",
    "InvalidSlot",
    "InvalidReward",
    "UnknownEvent",
    "ExpiredEvent",
    "InvalidTrigger",
    "UnknownSignal",
    "InvalidState",
    "InvalidPrior",
]


class MicroadjustError(ValueError):
    """Base class of every error raised by microadjust."""


class InvalidParameter(MicroadjustError):
    """A constructor or method parameter is out of range or of the wrong type."""


class InvalidContext(MicroadjustError):
    """A context (or an action's features) has a bad key, value, type or size."""


class InvalidActions(MicroadjustError):
    """The actions of a ``rank`` call are empty, duplicated, malformed or too many."""


class InvalidSlot(MicroadjustError):
    """A slot name is malformed, or too many slots are in use."""


class InvalidReward(MicroadjustError):
    """A reward value is not a finite number."""


class UnknownEvent(MicroadjustError):
    """A reward refers to an event id the engine does not know (or already rewarded)."""


class ExpiredEvent(UnknownEvent):
    """A reward arrived after the event's attribution window (or after it was evicted)."""


class InvalidTrigger(MicroadjustError):
    """A trigger expression does not parse, or compares values of incompatible types.

    ``position`` is the 0-based offset of the offending token in the expression and
    ``token`` its text (both ``None`` when the error is not tied to one token).
    """

    def __init__(self, message: str, position: int | None = None, token: str | None = None):
        super().__init__(message)
        self.position = position
        self.token = token


class UnknownSignal(InvalidTrigger, KeyError):
    """A trigger refers to a signal absent from the mapping it is evaluated against."""

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0])


class InvalidState(MicroadjustError):
    """A serialized state (or statistics) is malformed or from an incompatible version."""


class InvalidPrior(InvalidState):
    """Prior statistics are malformed or use an incompatible feature space (schema)."""
