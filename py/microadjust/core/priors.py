"""Additive sufficient statistics and hierarchical priors.

``Engine.stats(slot)`` returns, and ``Engine.set_prior(slot, stats, ...)`` accepts, one JSON
object per slot::

    {
      "schema": {"format": "microadjust.stats", "version": 1,
                 "features": {"version": 1, "dim": 64, "hash": "crc32-signed",
                              "bias_index": 0, "numeric_scaling": "maxabs",
                              "interactions": "ca"}},
      "slot": "hero",
      "actions": {
        "<action id>": {
          "n": 12.0,              # number of rewarded decisions (discounted if discount < 1)
          "reward_sum": 3.0,      # sum of rewards
          "reward_sq_sum": 3.0,   # sum of squared rewards
          "successes": 3.0,       # sum of rewards clipped to [0, 1]   (Beta-Bernoulli)
          "failures": 9.0,        # sum of 1 - clipped rewards          (Beta-Bernoulli)
          "xtx": [[...], ...],    # dim x dim Gram matrix X'X of the hashed features (full)
          "xty": [...]            # dim vector X'y
        }, ...
      }
    }

Every number is additive: statistics of two groups of visitors (with the same ``schema``)
merge by summing elementwise (:func:`merge_stats`, which can decay the older one). A prior is
rejected (:class:`~microadjust.core.errors.InvalidPrior`) when its ``schema`` differs from the
engine's, or when it is malformed (shapes, non-finite values, negative counts).

Priors are hierarchical and progressive: a slot can hold a ``"site"`` prior (e.g. merged by the
sync server from all visitors) and a ``"segment"`` prior (the visitor's micro-segment); the
model of an action is ``l2 I + sum of weighted priors + this visitor's data``. A prior with
``n`` observations and weight ``w`` counts as ``w * min(n, prior_strength)`` observations, so
early decisions follow the crowd and the visitor's own data soon dominates.

>>> a = {"schema": SCHEMA_EXAMPLE, "slot": "s", "actions": {"x": empty_action_stats(2)}}
>>> a["actions"]["x"]["n"] = 2.0
>>> merge_stats(a, a, decay=0.5)["actions"]["x"]["n"]
3.0
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from .errors import InvalidPrior

__all__ = [
    "STATS_FORMAT",
    "STATS_VERSION",
    "PRIOR_LEVELS",
    "make_schema",
    "empty_action_stats",
    "merge_stats",
    "parse_stats",
    "ParsedActionStats",
]

STATS_FORMAT = "microadjust.stats"
STATS_VERSION = 1
PRIOR_LEVELS = ("site", "segment")
_SCALARS = ("n", "reward_sum", "reward_sq_sum", "successes", "failures")


def make_schema(feature_schema: Mapping[str, Any]) -> dict[str, Any]:
    """The ``schema`` field for statistics in the feature space ``feature_schema``."""
    return {"format": STATS_FORMAT, "version": STATS_VERSION, "features": dict(feature_schema)}


SCHEMA_EXAMPLE = make_schema({"version": 1, "dim": 2})


def empty_action_stats(dim: int) -> dict[str, Any]:
    """Statistics of an action with no data."""
    return {
        **{k: 0.0 for k in _SCALARS},
        "xtx": [[0.0] * dim for _ in range(dim)],
        "xty": [0.0] * dim,
    }


ParsedActionStats = tuple[np.ndarray, np.ndarray, dict[str, float]]


def parse_stats(
    stats: object, schema: Mapping[str, Any] | None = None
) -> dict[str, ParsedActionStats]:
    """Validate ``stats``; return ``{action: (xtx, xty, scalars)}`` or raise InvalidPrior."""
    if not isinstance(stats, Mapping):
        raise InvalidPrior(f"statistics must be a mapping, got {type(stats).__name__}")
    got = stats.get("schema")
    if not isinstance(got, Mapping) or got.get("format") != STATS_FORMAT:
        raise InvalidPrior(f"statistics lack a {STATS_FORMAT!r} schema")
    if got.get("version") != STATS_VERSION:
        raise InvalidPrior(f"statistics version {got.get('version')!r}, expected {STATS_VERSION}")
    if schema is not None and dict(got) != dict(schema):
        raise InvalidPrior(
            f"incompatible feature space: statistics have schema {dict(got)!r}, the engine "
            f"uses {dict(schema)!r}"
        )
    features = got.get("features")
    dim = features.get("dim") if isinstance(features, Mapping) else None
    if type(dim) is not int or dim < 1:
        raise InvalidPrior(f"schema has no valid feature dimension: {dim!r}")
    actions = stats.get("actions")
    if not isinstance(actions, Mapping):
        raise InvalidPrior("statistics lack an 'actions' mapping")
    out: dict[str, ParsedActionStats] = {}
    for name, a in actions.items():
        if type(name) is not str or not name:
            raise InvalidPrior(f"action id {name!r} is not a non-empty string")
        if not isinstance(a, Mapping):
            raise InvalidPrior(f"statistics of action {name!r} must be a mapping")
        scalars: dict[str, float] = {}
        for key in _SCALARS:
            v = a.get(key)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise InvalidPrior(f"{name!r}.{key} = {v!r} is not a finite number")
            if key != "reward_sum" and v < 0:
                raise InvalidPrior(f"{name!r}.{key} = {v!r} is negative")
            scalars[key] = float(v)
        try:
            xtx = np.array(a.get("xtx"), dtype=np.float64)
            xty = np.array(a.get("xty"), dtype=np.float64)
        except (TypeError, ValueError):
            raise InvalidPrior(f"{name!r}.xtx / xty must be numeric arrays") from None
        if xtx.shape != (dim, dim) or xty.shape != (dim,):
            raise InvalidPrior(
                f"{name!r}: xtx must be {dim}x{dim} and xty of length {dim}, got shapes "
                f"{xtx.shape} and {xty.shape}"
            )
        if not (np.isfinite(xtx).all() and np.isfinite(xty).all()):
            raise InvalidPrior(f"{name!r}: xtx / xty contain non-finite values")
        if (np.diag(xtx) < 0).any() or not np.allclose(xtx, xtx.T, rtol=1e-6, atol=1e-9):
            raise InvalidPrior(f"{name!r}: xtx is not a symmetric Gram matrix")
        out[name] = ((xtx + xtx.T) * 0.5, xty, scalars)
    return out


def merge_stats(a: Mapping[str, Any], b: Mapping[str, Any], decay: float = 1.0) -> dict[str, Any]:
    """Elementwise sum ``decay * a + b`` of two statistics objects with the same schema.

    ``a`` is the older one (e.g. the server's running total), ``b`` the newer; actions present
    in only one of them are kept. Raises :class:`InvalidPrior` if the schemas differ.
    """
    if not (isinstance(decay, int | float) and math.isfinite(decay) and decay >= 0):
        raise InvalidPrior(f"decay must be a finite number >= 0, got {decay!r}")
    pa = parse_stats(a)
    pb = parse_stats(b, a["schema"])
    out: dict[str, Any] = {"schema": copy.deepcopy(dict(a["schema"]))}
    if "slot" in b or "slot" in a:
        out["slot"] = b.get("slot", a.get("slot"))
    actions: dict[str, Any] = {}
    for name in list(pa) + [n for n in pb if n not in pa]:
        xtx = np.zeros_like(next(iter((pa | pb).values()))[0])
        xty = np.zeros(xtx.shape[0])
        scalars = dict.fromkeys(_SCALARS, 0.0)
        if name in pa:
            xtx = xtx + decay * pa[name][0]
            xty = xty + decay * pa[name][1]
            for k in _SCALARS:
                scalars[k] += decay * pa[name][2][k]
        if name in pb:
            xtx = xtx + pb[name][0]
            xty = xty + pb[name][1]
            for k in _SCALARS:
                scalars[k] += pb[name][2][k]
        actions[name] = {**scalars, "xtx": xtx.tolist(), "xty": xty.tolist()}
    out["actions"] = actions
    return out


def prior_scale(n: float, weight: float, strength: float) -> float:
    """Multiplier applied to a prior with ``n`` observations (caps it at ``strength``)."""
    return weight * (1.0 if n <= strength else strength / n)
