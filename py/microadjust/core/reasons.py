"""The short human-readable reason of a decision (``Decision.reason``).

>>> explain([0.1, 0.9], 1, default=0, forced=None, holdout=False, score=0.82, spread=0.05)
'exploit: score 0.82 ± 0.05'
>>> explain([0.5, 0.5], 1, default=0, forced=None, holdout=False, score=0.0, spread=1.0)
'explore'
"""

from __future__ import annotations

__all__ = ["explain"]


def explain(
    probs: list[float],
    k: int,
    *,
    default: int,
    forced: str | None,
    holdout: bool,
    score: float,
    spread: float,
) -> str:
    """Why action ``k`` was shown, given the policy's ``probs`` (before guardrails).

    ``forced`` is the guardrail's reason when one constrained the choice; ``score`` and
    ``spread`` are the chosen action's predicted reward and its uncertainty.
    """
    top = max(probs)
    if holdout:
        return "holdout: default"
    if forced is not None and (forced.startswith("cooldown") or k == default):
        return forced
    if probs[k] >= top - 1e-12 and top > 1.0 / len(probs) + 1e-12:
        return f"exploit: score {score:.3g} ± {spread:.2g}"
    return "explore"
