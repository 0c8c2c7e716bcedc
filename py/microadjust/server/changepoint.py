"""Where the site changed: a publication forgets the increments before a significant change.

A long memory (the half-life) keeps the published noise low while the site is steady, but after
visitors' preferences change it keeps recommending yesterday's variants for days. Released
increments are stored noisy counts and a prior may be any function of them (post-processing
costs no privacy), so before summing, each publication asks whether its latest increments
differ from the earlier ones more than sampling and noise explain, and if so keeps only the
increments since the change.

The test, for the split before the latest ``m`` increments: per (slot, cell, variant) with
enough exposures on both sides (cells only: the ``*`` cell's rate of a variant also moves when
the engines change which visitors see it, with no change in any cell), ``z = (rate_after -
rate_before) / sqrt(var_after + var_before)``, each variance the noisy rate's
(:func:`~microadjust.core.noisy_rates.rate_variance`, ``p`` pooled over both sides); without a
change ``sum z^2`` is about chi-squared with one degree of freedom per term. Splits before each
of the latest ``MAX_SPLITS`` increments are tested together at level ``ALPHA`` (Bonferroni); the
most significant one wins.

>>> def inc(seq, rate):
...     counts = {"cta": {"device=mobile": {"a": [1000.0, 1000.0 * rate], "b": [1000.0, 50.0]}}}
...     return Increment(seq, seq * 3600.0, (seq + 1) * 3600.0, 2.0, counts)
>>> steady = [inc(i, 0.05) for i in range(10)]
>>> len(since_last_change(steady, now=36_000.0, half_life_days=3.0))
10
>>> changed = steady + [inc(i, 0.10) for i in range(10, 14)]
>>> len(since_last_change(changed, now=50_400.0, half_life_days=3.0))
4
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np

from ..browser.site_priors import SITE_CELL  # every cell together: not tested
from ..core.noisy_rates import rate_variance
from .release import Increment, decay_weight

__all__ = ["ALPHA", "MAX_SPLITS", "since_last_change"]

ALPHA = 1e-3  # chance that a steady site loses its memory at one publication
MAX_SPLITS = 120  # the latest six days at 20 publications a day
MIN_SIGMAS = 3.0  # a side counts for a term once its noisy exposures reach 3 noise sds


def since_last_change(
    increments: Sequence[Increment], *, now: float, half_life_days: float
) -> list[Increment]:
    """The released increments (in release order) from the last significant change on."""
    positions = [k for k, i in enumerate(increments) if i.counts is not None]
    released = [increments[k] for k in positions]
    if len(released) < 2:
        return list(increments)
    index: dict[tuple[str, str, str], int] = {}
    flat = [_flatten(i, index) for i in reversed(released)]  # newest first
    # after_counts[m - 1]: the weighted sum of the latest m increments (m <= MAX_SPLITS + 1),
    # after_noise[m - 1] the variance of each of its rows' numbers
    counts, noise = np.zeros((len(index), 2)), np.zeros(len(index))
    after_counts, after_noise = [], []
    for k, (increment, (rows, values, local)) in enumerate(
        zip(reversed(released), flat, strict=True)
    ):
        weight = decay_weight(increment, now, half_life_days)
        np.add.at(counts, rows, weight * values)
        noise += (weight * increment.sigma) ** 2
        np.add.at(noise, rows, weight * weight * local)
        if k <= MAX_SPLITS or k == len(released) - 1:
            after_counts.append(counts.copy())
            after_noise.append(noise.copy())
    total, total_noise = after_counts[-1], after_noise[-1]
    splits = range(1, min(len(released) - 1, MAX_SPLITS) + 1)
    critical = NormalDist().inv_cdf(1.0 - ALPHA / len(splits))
    best, best_score = 0, critical
    for m in splits:
        after, before = after_counts[m - 1], total - after_counts[m - 1]
        score = _change_score(after, before, after_noise[m - 1], total_noise - after_noise[m - 1])
        if score > best_score:
            best, best_score = m, score
    if not best:
        return list(increments)
    return list(increments[positions[-best] :])


def _flatten(
    increment: Increment, index: dict[tuple[str, str, str], int]
) -> tuple[list[int], np.ndarray, np.ndarray]:
    """An increment's (slot, cell, variant) counts but ``*``'s as rows of ``index`` (new keys
    added), their (shown, reward) pairs and the local-mode noise variance they carry."""
    rows, values, local = [], [], []
    for slot, cells in increment.counts.items():  # type: ignore[union-attr]
        local_of_slot = increment.local_noise.get(slot, {})
        for cell, variants in cells.items():
            if cell == SITE_CELL:
                continue
            for variant, pair in variants.items():
                rows.append(index.setdefault((slot, cell, variant), len(index)))
                values.append(pair)
                local.append(local_of_slot.get(cell, 0.0))
    return rows, np.asarray(values, dtype=float).reshape(-1, 2), np.asarray(local, dtype=float)


def _change_score(
    after: np.ndarray, before: np.ndarray, var_a: np.ndarray, var_b: np.ndarray
) -> float:
    """How many standard normal deviates ``sum z^2`` lies above its no-change distribution
    (the Wilson-Hilferty transform of chi-squared); -inf without a comparable term."""
    n_a, n_b = after[:, 0], before[:, 0]
    usable = (n_a >= MIN_SIGMAS * np.sqrt(var_a)) & (n_b >= MIN_SIGMAS * np.sqrt(var_b))
    usable &= (n_a > 0) & (n_b > 0)
    terms = int(usable.sum())
    if not terms:
        return -math.inf
    n_a, n_b, var_a, var_b = n_a[usable], n_b[usable], var_a[usable], var_b[usable]
    r_a, r_b = after[usable, 1], before[usable, 1]
    p = np.clip((r_a + r_b) / (n_a + n_b), 1e-3, 0.5)
    variance = rate_variance(p, n_a, var_a) + rate_variance(p, n_b, var_b)
    q = float(np.sum((np.clip(r_a / n_a, 0, 1) - np.clip(r_b / n_b, 0, 1)) ** 2 / variance))
    scale = 2.0 / (9.0 * terms)
    return ((q / terms) ** (1 / 3) - (1 - scale)) / math.sqrt(scale)
