"""Continual release by increments (protocol section 5): every upload is noised exactly once.

At each publication the server aggregates only the uploads received since the previous release
(the *increment*: each upload scaled to one visitor's norm, each source bucket capped to
``bucket_cap`` visitors *within* the increment), adds Gaussian noise of standard deviation
``sigma_release`` to every declared (slot, cell, variant) count once, and stores that noisy
increment. A published prior is the decayed sum of the stored noisy increments: post-processing
of released values, which costs no privacy. Nothing is ever re-noised: a restart, a second
server instance on the same store or a re-publication reads the same stored increments.

**Why one visitor-period costs ``rho_release`` once over its lifetime.** In one contribution
period a visitor's counts are non-negative and bounded by ``Δ = 2 max_shown sqrt(slots)`` in
L2 norm (with its ``*`` cell). Spread over increments ``x_1 .. x_k`` (any split), the
concatenation of its per-increment vectors has ``sum ||x_i||^2 <= ||sum x_i||^2 <= Δ^2``
(non-negative numbers: a sum of squares is at most the square of the sum). Scaling an upload
onto a ball and capping a bucket are projections, which never increase how far one visitor
moves a vector, so the vector of *all* increments ever released moves by at most ``Δ``, and
Gaussian noise ``sigma_release = Δ / sqrt(2 rho_release)`` on every number of every increment
makes it ``rho_release``-zCDP (Bun & Steinke 2016): whatever the half-life and however often
the site publishes. Several periods of one visitor compose: ``k`` periods cost ``k
rho_release``. (Local-mode uploads carry their own noise and may be negative: each is scaled to
one visitor's norm, so ``u`` such uploads in one period cost at most ``u rho_release``.)

**Where the increment's sums come from.** The server does not read an increment's uploads
back when it releases it: as each upload is stored, its vector (scaled to one visitor's norm)
is added to the running sum of its (slot, source bucket) in the increment it belongs to
(storage, ``increment_sums``); a publication first cuts the open increment (later uploads go
to the next one) and releases :func:`capped_totals` of its bucket sums. The cap is applied to
the complete sum of a bucket, once, when the increment is released: the same numbers as
:func:`increment_totals` of its uploads (sums of vectors do not depend on when they were
added), so the argument above holds unchanged, and a publication reads at most ``slots x
4096`` bucket sums per increment however many uploads it holds. A purge rebuilds the sums of
the increments it sends back for re-release from the uploads that are left.

The published counts have noise ``sigma_release * sqrt(sum w_i^2)`` (``w_i`` the decay weight of
increment ``i``), which :func:`decayed_sum` reports: with increments a longer memory raises the
signal linearly in the weights but the noise only as the root of their squares. Local-mode
uploads bring their devices' noise too, on their own cell and ``*``: each increment keeps its
variance per (slot, cell) (``local_noise``), and the decayed sum adds it to the central one,
so that browsers weigh such a cell by all the noise in it.

>>> one = SlotUpload(cell="*", variants={"a": Counts(shown=4, reward=1)})
>>> totals = increment_totals([(7, {"cta": one}), (7, {"cta": one})], bucket_cap=1.0, max_shown=4)
>>> [round(x, 4) for x in totals["cta"].variants["*"]["a"]]  # one source: one visitor, norm 8
[7.7611, 1.9403]
>>> round(release_sigma(max_shown=4, slots=1, rho=2.0), 4)
4.0
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .aggregate import BucketRow, SlotSums, restrict, robust_totals, upload_sums, visitor_norm
from .models import Counts, SiteDeclaration, SlotUpload  # noqa: F401 (Counts: the doctest)

__all__ = [
    "DAY_S",
    "Increment",
    "Released",
    "Noised",
    "NoiseTable",
    "release_sigma",
    "epsilon_of",
    "capped_totals",
    "increment_totals",
    "noisy_increment",
    "decayed_sum",
]

DAY_S = 86_400.0
DEFAULT_DELTA = 1e-5

# slot -> cell -> variant -> [shown, reward]
CountsTable = dict[str, dict[str, dict[str, list[float]]]]
# slot -> cell -> variance of the devices' own noise on each number (local mode; others absent)
NoiseTable = dict[str, dict[str, float]]


def release_sigma(*, max_shown: int, slots: int, rho: float) -> float:
    """The Gaussian noise of one increment that makes every release about one visitor-period,
    all increments together, ``rho``-zCDP."""
    sensitivity = visitor_norm(max_shown) * math.sqrt(max(slots, 1))
    return sensitivity / math.sqrt(2.0 * rho)


def epsilon_of(rho: float, delta: float = DEFAULT_DELTA) -> float:
    """The (epsilon, delta)-DP that rho-zCDP implies (Bun & Steinke 2016, Prop. 1.3).

    >>> round(epsilon_of(1.0), 2)
    7.79
    """
    return rho + 2.0 * math.sqrt(rho * math.log(1.0 / delta))


@dataclass(frozen=True, slots=True)
class Increment:
    """One released increment: the noisy counts of the uploads received in ``(since, until]``.

    ``counts`` is None while the increment waits to be (re-)released (after a purge touched it).
    ``sigma`` is the central noise of every number, ``local_noise`` the variance local-mode
    devices added on top, per (slot, cell).
    """

    seq: int
    since: float
    until: float
    sigma: float
    counts: CountsTable | None
    local_noise: NoiseTable = field(default_factory=dict)

    def counts_json(self) -> str | None:
        if self.counts is None:
            return None
        return json.dumps(self.counts, separators=(",", ":"), allow_nan=False)

    def local_noise_json(self) -> str | None:
        if not self.local_noise:
            return None
        return json.dumps(self.local_noise, separators=(",", ":"), allow_nan=False)

    @staticmethod
    def parse_counts(text: str | None) -> CountsTable | None:
        return None if text is None else json.loads(text)

    @staticmethod
    def parse_local_noise(text: str | None) -> NoiseTable:
        return {} if text is None else json.loads(text)


@dataclass(frozen=True, slots=True)
class Noised:
    """What releasing an increment draws: its noisy counts and the noise in them."""

    counts: CountsTable
    sigma: float
    local_noise: NoiseTable


def increment_totals(
    uploads: Iterable[tuple[int, Mapping[str, SlotUpload]]], *, bucket_cap: float, max_shown: int
) -> dict[str, SlotSums]:
    """Per slot, the exact sum of one increment's uploads ``(source bucket, slots)``: each
    upload scaled to one visitor's norm, each bucket capped to ``bucket_cap`` visitors.

    The definition; the server keeps the per-bucket sums as uploads arrive (storage) and
    releases :func:`capped_totals` of them, the same numbers.
    """
    by_bucket: dict[tuple[str, int], SlotSums] = {}
    for bucket, slots in uploads:
        for slot, entry in slots.items():
            by_bucket.setdefault((slot, bucket), SlotSums()).add(upload_sums(entry, max_shown))
    rows = [BucketRow(0, slot, bucket, sums) for (slot, bucket), sums in by_bucket.items()]
    return capped_totals(rows, bucket_cap=bucket_cap, max_shown=max_shown)


def capped_totals(
    rows: Iterable[BucketRow], *, bucket_cap: float, max_shown: int
) -> dict[str, SlotSums]:
    """Per slot, the sum of one increment's per-(slot, source bucket) sums (``day`` unused),
    each bucket capped to ``bucket_cap`` visitors, added in (slot, bucket) order so that the
    result does not depend on the order the sums were stored in."""
    ordered = sorted(rows, key=lambda row: (row.slot, row.bucket))
    return robust_totals(ordered, bucket_cap=bucket_cap, max_shown=max_shown)


def noisy_increment(
    totals: Mapping[str, SlotSums],
    declaration: SiteDeclaration,
    *,
    sigma: float,
    rng: np.random.Generator,
) -> Noised:
    """Every declared (slot, cell, variant) of the increment with its noise, data or not, and
    the local-mode noise its declared cells already carry.

    Values stay as drawn (negative ones too): clamping a sum of increments is done once, on the
    published sum, so the stored increments stay unbiased.
    """
    cell_ids = declaration.cell_ids()
    restricted = restrict(totals, declaration.slots, set(cell_ids))
    out: CountsTable = {}
    local: NoiseTable = {}
    for slot, variants in declaration.slots.items():
        sums = restricted[slot].with_star()
        if sums.noise:
            local[slot] = {cell: round(variance, 4) for cell, variance in sums.noise.items()}
        exact = np.array(
            [
                [sums.variants.get(cell, {}).get(variant, (0.0, 0.0)) for variant in variants]
                for cell in cell_ids
            ],
            dtype=float,
        )  # cells x variants x (shown, reward)
        noisy = exact + rng.normal(0.0, sigma, exact.shape)
        out[slot] = {
            cell: {
                variant: [round(float(noisy[i, j, 0]), 4), round(float(noisy[i, j, 1]), 4)]
                for j, variant in enumerate(variants)
            }
            for i, cell in enumerate(cell_ids)
        }
    return Noised(out, sigma, local)


@dataclass(frozen=True, slots=True)
class Released:
    """The decayed sum of released increments, and the noise of every number in it."""

    counts: CountsTable
    sigma: float  # standard deviation of the central noise of each summed count
    increments: int
    local_noise: NoiseTable = field(default_factory=dict)  # decayed, as the counts

    def sigma_of(self, slot: str, cell: str) -> float:
        """All the noise of a (slot, cell)'s counts: the central and the devices'."""
        return math.sqrt(self.sigma**2 + self.local_noise.get(slot, {}).get(cell, 0.0))


def decay_weight(increment: Increment, now: float, half_life_days: float) -> float:
    """``2 ** (-age / half_life)``, the age measured from the end of the increment."""
    if not math.isfinite(half_life_days):
        return 1.0
    return 0.5 ** (max(now - increment.until, 0.0) / (half_life_days * DAY_S))


def decayed_sum(increments: Sequence[Increment], *, now: float, half_life_days: float) -> Released:
    """The published counts: ``sum_i w_i x_i``, noise ``sqrt(sum_i w_i^2 sigma_i^2)`` (and
    per (slot, cell) ``sum_i w_i^2`` times the devices' variance).

    >>> inc = lambda seq, x: Increment(seq, 0.0, 0.0, 2.0, {"cta": {"*": {"a": [x, 1.0]}}})
    >>> released = decayed_sum([inc(1, 10.0), inc(2, 20.0)], now=0.0, half_life_days=3.0)
    >>> released.counts, round(released.sigma, 4)
    ({'cta': {'*': {'a': [30.0, 2.0]}}}, 2.8284)
    """
    counts: CountsTable = {}
    local: NoiseTable = {}
    variance = 0.0
    used = 0
    for increment in increments:
        if increment.counts is None:
            continue
        weight = decay_weight(increment, now, half_life_days)
        variance += (weight * increment.sigma) ** 2
        used += 1
        for slot, cells in increment.local_noise.items():
            into = local.setdefault(slot, {})
            for cell, cell_variance in cells.items():
                into[cell] = into.get(cell, 0.0) + weight * weight * cell_variance
        for slot, cells in increment.counts.items():
            into_slot = counts.setdefault(slot, {})
            for cell, variants in cells.items():
                into_cell = into_slot.setdefault(cell, {})
                for variant, (shown, reward) in variants.items():
                    pair = into_cell.setdefault(variant, [0.0, 0.0])
                    pair[0] += weight * shown
                    pair[1] += weight * reward
    return Released(counts, math.sqrt(variance), used, local)
