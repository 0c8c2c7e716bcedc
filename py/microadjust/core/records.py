"""Typed records of the engine: decisions, rankings, pending decisions and log records.

``Decision`` and ``Ranking`` are what ``Engine.rank`` and ``Engine.rank_cascade`` return.
``AheadDecision`` is what ``Engine.rank_ahead`` returns: a decision for a later page view, kept
by its caller until ``Engine.adopt`` makes it pending (it was shown).
``PendingDecision`` is a decision waiting for its reward; once rewarded (or expired with a
default reward) it becomes a ``LogRecord`` in the bounded log used for off-policy evaluation.
The log's ``event_id`` lets a reader (the sync client) remember how far it has read.

>>> rec = LogRecord("ab-1", "cta", "b", 3.0, 0.5, False, 1.0, {"device": "mobile"}, ["a", "b"])
>>> LogRecord.from_state(StateReader(rec.to_state(), "log[0]")) == rec
True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .state import StateReader, json_features

if TYPE_CHECKING:
    from .why import Why  # imported by the engine only with explain=True

__all__ = ["Decision", "Ranking", "AheadDecision", "PendingDecision", "LogRecord"]

#: Offered actions as given to ``rank``: ids, or id -> that action's features.
Actions = list[str] | dict[str, dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Decision:
    """What ``Engine.rank`` chose, with the exact probability it had of being chosen."""

    action: str
    probability: float
    event_id: str
    slot: str = "default"
    reason: str = ""
    holdout: bool = False
    why: Why | None = None  # only with rank(..., explain=True)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable view."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Ranking:
    """What ``Engine.rank_cascade`` chose: the items top first, one decision per position.

    Position ``i`` was drawn from the items left after positions ``0 .. i-1``; the last item
    takes the last position without a draw, so ``len(decisions) == len(order) - 1``.
    """

    order: list[str]
    decisions: list[Decision]


@dataclass(frozen=True, slots=True)
class AheadDecision:
    """A decision drawn now for a later page view, with what it was drawn from.

    It is not pending: nothing waits for its reward, and an unused one teaches nothing, until
    ``Engine.adopt`` says it is shown. ``t`` is when it was drawn.
    """

    decision: Decision
    x: tuple[float, ...]  # the chosen action's feature vector, learned from once rewarded
    context: dict[str, Any]
    actions: Actions
    t: float

    @property
    def action(self) -> str:
        return self.decision.action

    def to_state(self) -> dict[str, Any]:
        return {
            **self.decision.to_dict(),
            "x": list(self.x),
            "context": json_features(self.context),
            "actions": _json_actions(self.actions),
            "t": self.t,
        }

    @classmethod
    def from_state(cls, state: StateReader, dim: int) -> AheadDecision:
        decision = Decision(
            state["action"].str(),
            state["probability"].float(),
            state["event_id"].str(),
            state["slot"].str(),
            state["reason"].str(),
            state["holdout"].bool(),
        )
        context = dict(state["context"].mapping())
        x = tuple(state["x"].floats(dim).tolist())
        return cls(decision, x, context, _read_actions(state["actions"]), state["t"].float())


def _json_actions(actions: Actions) -> list[str] | dict[str, dict[str, Any]]:
    if isinstance(actions, Mapping):
        return {a: json_features(f) for a, f in actions.items()}
    return list(actions)


def _read_actions(state: StateReader) -> Actions:
    if isinstance(state.value, Mapping):
        return {a: dict(f.mapping()) for a, f in state.items()}
    return [a.str() for a in state.list()]


@dataclass(slots=True)
class PendingDecision:
    """A decision waiting for its reward: what to learn from, and what to log.

    ``context`` and ``actions`` are kept (as shallow copies, converted to plain JSON when
    saved) only when the engine keeps a log.
    """

    event_id: str
    slot: str
    action: str
    x: np.ndarray  # the chosen action's feature vector
    t: float
    propensity: float
    holdout: bool
    context: dict[str, Any] | None = None
    actions: Actions | None = None

    def to_state(self) -> dict[str, Any]:
        """JSON view, without ``event_id`` (the engine saves ``[event_id, record]`` pairs)."""
        out: dict[str, Any] = {
            "slot": self.slot,
            "action": self.action,
            "x": self.x.tolist(),
            "t": self.t,
            "propensity": self.propensity,
            "holdout": self.holdout,
        }
        if self.context is not None:
            out["context"] = json_features(self.context)
            out["actions"] = _json_actions(self.actions)
        return out

    @classmethod
    def from_state(cls, event_id: str, state: StateReader, dim: int) -> PendingDecision:
        context = state.get("context")
        return cls(
            event_id,
            state["slot"].str(),
            state["action"].str(),
            state["x"].floats(dim),
            state["t"].float(),
            state["propensity"].float(),
            state["holdout"].bool(),
            None if context is None else dict(context.mapping()),
            None if context is None else _read_actions(state["actions"]),
        )


@dataclass(slots=True)
class LogRecord:
    """A rewarded decision, as off-policy evaluation needs it.

    ``event_id`` is ``None`` only for records logged by engines older than state version 2.
    """

    event_id: str | None
    slot: str
    action: str
    t: float
    propensity: float
    holdout: bool
    reward: float
    context: dict[str, Any]
    actions: Actions

    @classmethod
    def rewarded(cls, pending: PendingDecision, reward: float) -> LogRecord:
        """The log record of ``pending`` once it earned ``reward``."""
        return cls(
            pending.event_id,
            pending.slot,
            pending.action,
            pending.t,
            pending.propensity,
            pending.holdout,
            reward,
            pending.context or {},
            pending.actions or [],
        )

    def to_state(self) -> dict[str, Any]:
        """JSON view (also what ``Engine.log()`` returns for each record)."""
        return {
            "event_id": self.event_id,
            "slot": self.slot,
            "action": self.action,
            "t": self.t,
            "propensity": self.propensity,
            "holdout": self.holdout,
            "context": json_features(self.context),
            "actions": _json_actions(self.actions),
            "reward": self.reward,
        }

    @classmethod
    def from_state(cls, state: StateReader) -> LogRecord:
        event_id = state["event_id"]
        return cls(
            None if event_id.value is None else event_id.str(),
            state["slot"].str(),
            state["action"].str(),
            state["t"].float(),
            state["propensity"].float(),
            state["holdout"].bool(),
            state["reward"].float(),
            dict(state["context"].mapping()),
            _read_actions(state["actions"]),
        )
