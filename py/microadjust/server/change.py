"""Change detection on released increments: a slot or cell whose rates changed forgets its past.

The decayed sum of increments is a good prior while a site's click rates hold still; when
they change (a new campaign, a season), it keeps pointing at the old favourite for about a
half-life. The increments are released values, so any estimator over them is post-processing
and costs no privacy. For each slot and cell, every boundary between increments splits the
decayed sums into *before* and *after*; per variant, the difference of the two rates is
divided by its standard deviation (binomial, plus the known release noise on both counts, by
the delta method). The boundary where the largest such ``|z|`` over variants peaks, if it
exceeds ``threshold``, is the cell's change point: its published counts then sum only the
increments after it. Each cell on its own: the ``*`` cell's per-variant rates also move when
the mix of cells each variant is shown in moves (the visitors' engines steer it), which is no
change of any cell's rates (measured: letting ``*`` cut every cell of its slot cost the fleet
bench's no-noise path more than the shift).

The threshold is high (5 standard deviations) because many boundaries, cells and variants
are tested at every publication: a false alarm costs a cell its memory (a noisier prior),
a missed change costs the lift until the decay forgets.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .release import Increment, decay_weight

__all__ = ["CHANGE_Z", "change_points"]

CHANGE_Z = 5.0  # |z| of a rate difference that counts as a change
MIN_SHOWN_SIGMAS = 3.0  # a side with fewer (noisy) exposures than this many noise sds is not tested


def change_points(
    increments: Sequence[Increment],
    *,
    now: float,
    half_life_days: float,
    threshold: float = CHANGE_Z,
) -> dict[tuple[str, str], int]:
    """``(slot, cell) -> seq`` of the first increment to keep, for each cell that changed.

    >>> def inc(seq, rate):  # 1000 exposures of "a" per increment at ``rate``
    ...     return Increment(seq, seq, seq + 1, 1.0, {"cta": {"*": {"a": [1000.0, 1000.0 * rate]}}})
    >>> steady = [inc(k, 0.05) for k in range(6)]
    >>> change_points(steady, now=6, half_life_days=float("inf"))
    {}
    >>> shifted = steady[:3] + [inc(k, 0.09) for k in range(3, 6)]
    >>> change_points(shifted, now=6, half_life_days=float("inf"))
    {('cta', '*'): 3}
    """
    released = sorted((i for i in increments if i.counts is not None), key=lambda i: i.until)
    if len(released) < 2:
        return {}
    weights = np.array([decay_weight(i, now, half_life_days) for i in released])
    noise = (weights * np.array([i.sigma for i in released])) ** 2
    after_noise = np.cumsum(noise[::-1])[::-1]  # [b]: noise variance of increments b..m-1
    out: dict[tuple[str, str], int] = {}
    slots = sorted({slot for i in released for slot in i.counts})  # type: ignore[union-attr]
    for slot in slots:
        cells, counts = _table(released, slot)
        weighted = counts * weights[:, None, None, None]
        after = np.cumsum(weighted[::-1], axis=0)[::-1]  # [b]: sums of increments b..m-1
        before = after[0] - after  # sums of increments 0..b-1
        var_after = after_noise[:, None, None]
        var_before = after_noise[0] - var_after
        z = _rate_z(after[1:], before[1:], var_after[1:], var_before[1:])  # boundaries 1..m-1
        peak = np.max(np.abs(z), axis=2)  # boundary x cell
        best = np.argmax(peak, axis=0)
        for c, cell in enumerate(cells):
            if peak[best[c], c] > threshold:
                out[(slot, cell)] = released[int(best[c]) + 1].seq
    return out


def _table(released: Sequence[Increment], slot: str) -> tuple[list[str], np.ndarray]:
    """The slot's counts as an array: increment x cell x variant x (shown, reward)."""
    cells = sorted({c for i in released for c in i.counts.get(slot, {})})  # type: ignore[union-attr]
    variants = sorted(
        {v for i in released for vs in i.counts.get(slot, {}).values() for v in vs}  # type: ignore[union-attr]
    )
    table = np.zeros((len(released), len(cells), len(variants), 2))
    cell_index = {c: k for k, c in enumerate(cells)}
    variant_index = {v: k for k, v in enumerate(variants)}
    for n, increment in enumerate(released):
        for cell, by_variant in increment.counts.get(slot, {}).items():  # type: ignore[union-attr]
            for variant, pair in by_variant.items():
                table[n, cell_index[cell], variant_index[variant]] = pair
    return cells, table


def _rate_z(
    after: np.ndarray, before: np.ndarray, var_after: np.ndarray, var_before: np.ndarray
) -> np.ndarray:
    """Per boundary, cell and variant: (rate after - rate before) / its standard deviation;
    0 where either side has too few exposures to tell."""
    n_a, n_b = after[..., 0], before[..., 0]
    testable = (n_a > MIN_SHOWN_SIGMAS * np.sqrt(var_after)) & (
        n_b > MIN_SHOWN_SIGMAS * np.sqrt(var_before)
    )
    n_a, n_b = np.maximum(n_a, 1.0), np.maximum(n_b, 1.0)
    p_a = np.clip(after[..., 1] / n_a, 0.0, 1.0)
    p_b = np.clip(before[..., 1] / n_b, 0.0, 1.0)
    p = np.clip((after[..., 1] + before[..., 1]) / (n_a + n_b), 1e-3, 0.5)
    spread = p * (1 - p) * (1 / n_a + 1 / n_b) + (1 + p * p) * (
        var_after / n_a**2 + var_before / n_b**2
    )
    z = (p_a - p_b) / np.sqrt(spread)
    return np.where(testable, z, 0.0)
