"""The arithmetic of the sync server: merge noisy uploads, build priors, estimate the report.

One aggregate per site and slot, a JSON object::

    {"schema": {...},                                   # the engine's statistics schema
     "prior":  {"actions": {a: {"n", "reward_sum"}}, "noise_var"},   # decayed with a half-life
     "report": {"actions": {a: {"n", "reward_sum"}}, "holdout": {"n", "reward"},
                "ope": {"w", "wr"}, "noise_var", "ips_clip"}}        # cumulative

``noise_var`` is the variance of the local-DP noise summed into each number (the sum of the
uploads' ``sigma**2``), so the report's intervals include it.

A published prior is, per action, a context-free ridge prior in the engine's statistics
format: ``n`` observations whose mean reward is ``reward_sum / n`` on the bias feature, and
precision ``shrinkage * n`` on every other coefficient (they are shrunk towards 0 until the
visitor's own data says otherwise). Noisy counts are clamped: ``n >= 0``,
``0 <= reward_sum <= n``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["SchemaConflict", "merge", "prior_stats", "slot_report"]

Z95 = 1.959963984540054


class SchemaConflict(ValueError):
    """An upload's feature space differs from the one the slot's aggregate is in."""


def merge(
    data: Mapping[str, Any] | None,
    schema: Mapping[str, Any],
    upload: Mapping[str, Any],
    sigma: float,
    ips_clip: float,
    decay: float,
) -> dict[str, Any]:
    """``data`` (or an empty aggregate) with one upload's slot added; the prior part decayed."""
    if data is None:
        data = {
            "schema": dict(schema),
            "prior": {"actions": {}, "noise_var": 0.0},
            "report": {
                "actions": {},
                "holdout": {"n": 0.0, "reward": 0.0},
                "ope": {"w": 0.0, "wr": 0.0},
                "noise_var": 0.0,
                "ips_clip": ips_clip,
            },
        }
    elif dict(data["schema"]) != dict(schema):
        raise SchemaConflict(
            f"the slot's statistics use schema {data['schema']!r}, the upload {dict(schema)!r}"
        )
    prior, report = data["prior"], data["report"]
    for sums in prior["actions"].values():
        sums["n"] *= decay
        sums["reward_sum"] *= decay
    prior["noise_var"] = prior["noise_var"] * decay * decay + sigma * sigma
    for action, sums in upload["actions"].items():
        for part in (prior, report):
            total = part["actions"].setdefault(action, {"n": 0.0, "reward_sum": 0.0})
            total["n"] += sums["n"]
            total["reward_sum"] += sums["reward_sum"]
    report["holdout"]["n"] += upload["holdout"]["n"]
    report["holdout"]["reward"] += upload["holdout"]["reward"]
    report["ope"]["w"] += upload["ope"]["w"]
    report["ope"]["wr"] += upload["ope"]["wr"]
    report["noise_var"] += sigma * sigma
    return dict(data)


def prior_stats(data: Mapping[str, Any], slot: str, shrinkage: float) -> dict[str, Any] | None:
    """The slot's published prior in the engine's statistics format (None: nothing usable)."""
    schema = data["schema"]
    features = schema.get("features", {})
    dim = int(features.get("dim", 0))
    bias = int(features.get("bias_index", 0))
    actions = {}
    for action, sums in data["prior"]["actions"].items():
        n = max(float(sums["n"]), 0.0)
        if n < 1.0:
            continue
        r = min(max(float(sums["reward_sum"]), 0.0), n)
        xtx = [[0.0] * dim for _ in range(dim)]
        for i in range(dim):
            xtx[i][i] = shrinkage * n
        xtx[bias][bias] = n
        xty = [0.0] * dim
        xty[bias] = r
        actions[action] = {
            "n": n,
            "reward_sum": r,
            "reward_sq_sum": r,
            "successes": r,
            "failures": n - r,
            "xtx": xtx,
            "xty": xty,
        }
    if not actions:
        return None
    return {"schema": dict(schema), "slot": slot, "actions": actions}


def _rate(reward: float, n: float, noise_var: float) -> dict[str, float | None]:
    """Mean reward with a normal 95% interval including the local-DP noise (delta method)."""
    if n < 1.0:
        return {"n": max(n, 0.0), "rate": None, "low": None, "high": None, "se": None}
    p = min(max(reward / n, 0.0), 1.0)
    var = (p * (1 - p) * n + noise_var * (1 + p * p)) / (n * n)
    se = math.sqrt(var)
    return {"n": n, "rate": p, "low": p - Z95 * se, "high": p + Z95 * se, "se": se}


def slot_report(data: Mapping[str, Any], uploads: int) -> dict[str, Any]:
    """Per-variant decisions and reward rates, lift against the holdout, off-policy values."""
    rep = data["report"]
    v = float(rep["noise_var"])
    names = list(rep["actions"])
    default = "default" if "default" in names else (names[0] if names else None)
    hold_n, hold_r = rep["holdout"]["n"], rep["holdout"]["reward"]
    variants = {}
    total_n = total_r = 0.0
    for name, sums in rep["actions"].items():
        n, r = float(sums["n"]), float(sums["reward_sum"])
        total_n += n
        total_r += r
        if name == default:  # holdout decisions always show the default: count them apart
            n, r = n - hold_n, r - hold_r
        variants[name] = _rate(r, n, v * (2 if name == default else 1))
    treated = _rate(total_r - hold_r, total_n - hold_n, 2 * v)
    holdout = _rate(hold_r, hold_n, v)
    lift = None
    if treated["rate"] is not None and holdout["rate"] is not None:
        diff = treated["rate"] - holdout["rate"]
        se = math.hypot(treated["se"], holdout["se"])
        lift = {"value": diff, "low": diff - Z95 * se, "high": diff + Z95 * se}
    scale = float(rep.get("ips_clip", 10.0))
    w, wr = float(rep["ope"]["w"]), float(rep["ope"]["wr"])
    ope = None
    if total_n >= 1.0 and w > 0:
        ips = scale * wr / total_n
        ips_se = math.sqrt(scale * scale * (max(wr, 0.0) + v)) / total_n
        snips = min(max(wr / w, 0.0), 1.0)
        snips_se = math.sqrt(snips * (1 - snips) / max(w * scale, 1.0) + v * (1 + snips**2) / w**2)
        ope = {
            "ips": {"value": ips, "low": ips - Z95 * ips_se, "high": ips + Z95 * ips_se},
            "snips": {
                "value": snips,
                "low": snips - Z95 * snips_se,
                "high": snips + Z95 * snips_se,
            },
        }
    return {
        "uploads": uploads,
        "decisions": max(total_n, 0.0),
        "variants": variants,
        "treated": treated,
        "holdout": holdout,
        "lift": lift,
        "current_policy": ope,
        "noise_sd_per_sum": math.sqrt(v),
    }
