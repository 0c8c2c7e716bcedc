"""Off-policy evaluation from logged decisions, and lift against the holdout.

A logged record is a mapping with at least ``context``, ``actions`` (ids, or a mapping id ->
features), ``action`` (the one shown), ``propensity`` (the probability it had) and ``reward``;
``Engine.log()`` returns exactly such records (plus ``slot``, ``holdout`` and ``t``).

A *target policy* is a callable ``policy(context, actions) -> {action: probability}`` (or a
sequence of probabilities aligned with the actions), e.g. ``Engine.policy_probabilities``.

* :func:`ips`: inverse propensity scoring, unbiased, high variance.
* :func:`snips`: self-normalized IPS, slightly biased, much lower variance.
* :func:`doubly_robust`: a reward model's prediction corrected by IPS on its residual.
* :func:`lift`: mean reward of non-holdout minus holdout decisions (Welch interval).

Intervals are normal approximations at level ``confidence``.

>>> logs = [{"context": {}, "actions": ["a", "b"], "action": a, "propensity": 0.5, "reward": r}
...         for a, r in [("a", 1.0), ("b", 0.0)] * 50]
>>> ips(logs, lambda c, acts: {"a": 1.0, "b": 0.0}).value
1.0
>>> round(snips(logs, lambda c, acts: [0.5, 0.5]).value, 3)
0.5
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from .errors import InvalidParameter

__all__ = ["Estimate", "LiftEstimate", "ips", "snips", "doubly_robust", "lift"]

TargetPolicy = Callable[[Mapping[str, Any], Any], Mapping[str, float] | Sequence[float]]
RewardModel = Callable[[Mapping[str, Any], str], float]


@dataclass(frozen=True, slots=True)
class Estimate:
    """A policy value estimate with a normal-approximation confidence interval."""

    value: float
    stderr: float
    low: float
    high: float
    n: int
    method: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class LiftEstimate:
    """Difference of mean reward between treated and holdout decisions."""

    lift: float
    relative: float | None
    low: float
    high: float
    treatment_mean: float
    holdout_mean: float
    n_treatment: int
    n_holdout: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _z(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise InvalidParameter(f"confidence must be in (0, 1), got {confidence!r}")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def _names(actions: Any) -> list[str]:
    return list(actions.keys()) if isinstance(actions, Mapping) else list(actions)


def _target_probs(policy: TargetPolicy, rec: Mapping[str, Any]) -> dict[str, float]:
    names = _names(rec["actions"])
    out = policy(rec["context"], rec["actions"])
    if isinstance(out, Mapping):
        probs = {a: float(out.get(a, 0.0)) for a in names}
    else:
        values = list(out)
        if len(values) != len(names):
            raise InvalidParameter(
                f"target policy returned {len(values)} probabilities for {len(names)} actions"
            )
        probs = {a: float(p) for a, p in zip(names, values, strict=True)}
    return probs


def _prepare(
    records: Iterable[Mapping[str, Any]], policy: TargetPolicy
) -> tuple[list[Mapping[str, Any]], np.ndarray, np.ndarray, list[dict[str, float]]]:
    recs = [r for r in records if r.get("reward") is not None]
    if not recs:
        raise InvalidParameter("no logged records with a reward to evaluate")
    w = np.empty(len(recs))
    r = np.empty(len(recs))
    probs = []
    for i, rec in enumerate(recs):
        p = float(rec["propensity"])
        if not 0 < p <= 1:
            raise InvalidParameter(f"record {i} has propensity {p!r}, expected (0, 1]")
        tp = _target_probs(policy, rec)
        probs.append(tp)
        w[i] = tp.get(rec["action"], 0.0) / p
        r[i] = float(rec["reward"])
    return recs, w, r, probs


def _estimate(terms: np.ndarray, method: str, confidence: float) -> Estimate:
    n = terms.shape[0]
    value = float(terms.mean())
    stderr = float(terms.std(ddof=1) / math.sqrt(n)) if n > 1 else math.inf
    z = _z(confidence)
    return Estimate(value, stderr, value - z * stderr, value + z * stderr, n, method)


def ips(
    records: Iterable[Mapping[str, Any]], policy: TargetPolicy, *, confidence: float = 0.95
) -> Estimate:
    """Inverse propensity scoring estimate of ``policy``'s mean reward."""
    _, w, r, _ = _prepare(records, policy)
    return _estimate(w * r, "ips", confidence)


def snips(
    records: Iterable[Mapping[str, Any]], policy: TargetPolicy, *, confidence: float = 0.95
) -> Estimate:
    """Self-normalized IPS estimate (delta-method interval)."""
    _, w, r, _ = _prepare(records, policy)
    total = w.sum()
    if total <= 0:
        raise InvalidParameter("the target policy never picks a logged action: no overlap")
    value = float((w * r).sum() / total)
    stderr = float(math.sqrt(((w * (r - value)) ** 2).sum()) / total)
    z = _z(confidence)
    return Estimate(value, stderr, value - z * stderr, value + z * stderr, len(w), "snips")


def mean_reward_model(records: Iterable[Mapping[str, Any]]) -> RewardModel:
    """A simple reward model: each action's mean logged reward (global mean if unseen)."""
    sums: dict[str, list[float]] = {}
    total, count = 0.0, 0
    for rec in records:
        if rec.get("reward") is None:
            continue
        s = sums.setdefault(rec["action"], [0.0, 0.0])
        s[0] += float(rec["reward"])
        s[1] += 1.0
        total += float(rec["reward"])
        count += 1
    overall = total / count if count else 0.0
    means = {a: (s[0] + overall) / (s[1] + 1.0) for a, s in sums.items()}
    return lambda context, action: means.get(action, overall)


def doubly_robust(
    records: Iterable[Mapping[str, Any]],
    policy: TargetPolicy,
    reward_model: RewardModel | None = None,
    *,
    confidence: float = 0.95,
) -> Estimate:
    """Doubly robust estimate; ``reward_model(context, action)`` defaults to per-action means."""
    recs, w, r, probs = _prepare(records, policy)
    model = reward_model if reward_model is not None else mean_reward_model(recs)
    terms = np.empty(len(recs))
    for i, rec in enumerate(recs):
        ctx = rec["context"]
        direct = sum(p * float(model(ctx, a)) for a, p in probs[i].items() if p > 0)
        terms[i] = direct + w[i] * (r[i] - float(model(ctx, rec["action"])))
    return _estimate(terms, "doubly_robust", confidence)


def lift(records: Iterable[Mapping[str, Any]], *, confidence: float = 0.95) -> LiftEstimate:
    """Mean reward of treated minus holdout decisions, with a Welch confidence interval."""
    treat: list[float] = []
    hold: list[float] = []
    for rec in records:
        if rec.get("reward") is None:
            continue
        (hold if rec.get("holdout") else treat).append(float(rec["reward"]))
    if len(treat) < 2 or len(hold) < 2:
        raise InvalidParameter(
            f"lift needs at least 2 rewarded decisions in each group, got {len(treat)} treated "
            f"and {len(hold)} holdout"
        )
    t, h = np.array(treat), np.array(hold)
    diff = float(t.mean() - h.mean())
    se = math.sqrt(t.var(ddof=1) / t.size + h.var(ddof=1) / h.size)
    z = _z(confidence)
    rel = diff / float(h.mean()) if h.mean() != 0 else None
    return LiftEstimate(
        diff, rel, diff - z * se, diff + z * se, float(t.mean()), float(h.mean()), t.size, h.size
    )
