"""Drift detection: a Page-Hinkley test on standardized prediction residuals.

The engine feeds it ``(reward - predicted reward) / sigma`` for every rewarded decision of a
slot. While the model is right the residuals average zero; when the visitor's interest
shifts, the residuals of the action the model exploits turn persistently negative (the
default ``direction="down"``: rewards fall short of what the model expects) and the
cumulative sum crosses ``threshold``: the engine then forgets most of what it learned about
this visitor in that slot (keeping its priors) and re-learns.

>>> ph = PageHinkley(delta=0.1, threshold=5.0, min_samples=10)
>>> any(ph.update(0.0) for _ in range(100))
False
>>> [ph.update(-1.0) for _ in range(10)].index(True)
5
"""

from __future__ import annotations

from typing import Any

from .state import StateReader

__all__ = ["PageHinkley"]

_FIELDS = ("delta", "threshold", "min_samples", "direction", "n", "mean", "up", "up_min",
           "down", "down_max", "alarms")  # fmt: skip


class PageHinkley:
    """Page-Hinkley change detector.

    ``delta`` is the magnitude of change tolerated, ``threshold`` the alarm level,
    ``min_samples`` how many values to see before raising any alarm, ``direction``
    which changes to detect (``"both"``, ``"up"`` for increases, ``"down"`` for decreases).
    ``update(x)`` returns ``True`` on an alarm, after which the detector restarts.
    """

    __slots__ = _FIELDS

    def __init__(
        self,
        delta: float = 0.1,
        threshold: float = 8.0,
        min_samples: int = 20,
        direction: str = "both",
    ):
        if direction not in ("both", "up", "down"):
            raise ValueError(f"direction must be 'both', 'up' or 'down', got {direction!r}")
        self.direction = direction
        self.delta = float(delta)
        self.threshold = float(threshold)
        self.min_samples = int(min_samples)
        self.alarms = 0
        self.reset()

    def reset(self) -> None:
        """Forget the values seen so far (not the alarm count)."""
        self.n = 0
        self.mean = 0.0
        self.up = 0.0
        self.up_min = 0.0
        self.down = 0.0
        self.down_max = 0.0

    def update(self, x: float) -> bool:
        """Add one value; return ``True`` if a change is detected."""
        self.n += 1
        self.mean += (x - self.mean) / self.n
        self.up += x - self.mean - self.delta
        self.up_min = min(self.up_min, self.up)
        self.down += x - self.mean + self.delta
        self.down_max = max(self.down_max, self.down)
        if self.n < self.min_samples:
            return False
        up = self.direction != "down" and self.up - self.up_min > self.threshold
        down = self.direction != "up" and self.down_max - self.down > self.threshold
        if up or down:
            self.alarms += 1
            self.reset()
            return True
        return False

    def to_state(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in _FIELDS}

    @classmethod
    def from_state(cls, state: StateReader) -> PageHinkley:
        ph = cls(
            state["delta"].float(),
            state["threshold"].float(),
            state["min_samples"].int(),
            state["direction"].choice(("both", "up", "down")),
        )
        for k in _FIELDS:
            kind = type(getattr(ph, k))
            if kind is float:
                setattr(ph, k, state[k].float())
            elif kind is int:
                setattr(ph, k, state[k].int())
        return ph
