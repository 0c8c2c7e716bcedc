"""Robust aggregation of uploads (protocol section 5), as pure functions.

The server keeps, per site, UTC day, slot and source bucket, the sum of that bucket's uploads
(:class:`SlotSums`; the admin's report reads them). A source bucket is a keyed hash of the
client address, so one attacker behind one address lands in one bucket however many uploads it
sends. Aggregation scales each bucket down to at most ``bucket_cap`` visitors' worth, measured
in L2 norm, then sums the buckets (over every day for the report; per
released increment for publication, :mod:`.release`).

Why a fixed cap in visitor units, not a multiple of the median bucket: scaling a vector down
onto an L2 ball is a projection, so it never increases how far one visitor moves the result
(the central noise stays calibrated); a median-relative cap would let one visitor move the
median and with it every capped bucket.

>>> one = SlotUpload(cell="device=mobile", variants={"a": Counts(shown=4, reward=4)})
>>> SlotSums.from_upload(one).norm() == visitor_norm(4)  # the most one visitor can weigh
True
>>> day = SlotSums()
>>> for _ in range(100):  # 100 forged uploads from one source on one day
...     day.add(SlotSums.from_upload(one))
>>> rows = [BucketRow(day=0, slot="cta", bucket=7, sums=day)]
>>> totals = robust_totals(rows, bucket_cap=2.0, max_shown=4)
>>> [round(x, 6) for x in totals["cta"].variants["device=mobile"]["a"]]  # two visitors' worth
[8.0, 8.0]
"""

from __future__ import annotations

import gc
import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from .models import Counts, SlotUpload  # noqa: F401 (Counts: the doctest)

__all__ = [
    "SlotSums",
    "BucketRow",
    "visitor_norm",
    "upload_sums",
    "parse_bucket_rows",
    "robust_totals",
    "restrict",
]


def visitor_norm(max_shown: int) -> float:
    """The largest L2 norm of one visitor's slot vector: ``max_shown`` exposures and as many
    reward units on one variant, counted in its cell and again in the ``*`` cell."""
    return 2.0 * max_shown


_NONE = (0.0, 0.0)  # the counts of a cell that has none


def _add_pair(into: list[float], counts: list[float], scale: float) -> None:
    into[0] += scale * counts[0]
    into[1] += scale * counts[1]


@dataclass(slots=True)
class SlotSums:
    """One slot's ``[shown, reward]`` sums per cell and variant, and the holdout's per cell.

    ``noise``: per cell, the variance of the noise that local-mode devices put on each of its
    numbers (every declared variant's, zeros included), so that what is published says how
    noisy it is. Independent uploads add their variances; a scaled sum scales it by the
    square.
    """

    variants: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    holdout: dict[str, list[float]] = field(default_factory=dict)
    noise: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_upload(cls, entry: SlotUpload) -> SlotSums:
        pair = lambda c: [float(c.shown), float(c.reward)]  # noqa: E731
        return cls(
            {entry.cell: {v: pair(c) for v, c in entry.variants.items()}},
            {entry.cell: pair(entry.holdout)},
        )

    def add(self, other: SlotSums, scale: float = 1.0) -> None:
        for cell, variants in other.variants.items():
            mine = self.variants.setdefault(cell, {})
            for variant, counts in variants.items():
                _add_pair(mine.setdefault(variant, [0.0, 0.0]), counts, scale)
        for cell, counts in other.holdout.items():
            _add_pair(self.holdout.setdefault(cell, [0.0, 0.0]), counts, scale)
        for cell, variance in other.noise.items():
            self.noise[cell] = self.noise.get(cell, 0.0) + scale * scale * variance

    def with_star(self) -> SlotSums:
        """These sums plus the ``*`` cell, the sum over cells (a ``*`` upload is its own cell).

        The ``*`` cell's noise is the sum of every cell's: each upload's noise is its own."""
        out = SlotSums()
        out.add(self)
        star = SlotSums({"*": {}}, {"*": [0.0, 0.0]})
        for cell, variants in self.variants.items():
            if cell != "*":
                holdout = self.holdout.get(cell, [0.0, 0.0])
                noise = {"*": self.noise[cell]} if cell in self.noise else {}
                star.add(SlotSums({"*": variants}, {"*": holdout}, noise))
        out.add(star)
        return out

    def norm(self) -> float:
        """L2 norm of every count, each non-``*`` cell counted again in the ``*`` cell.

        The norm of :meth:`with_star`'s counts, bit for bit (the same additions in the same
        order), without building it: robust aggregation takes the norm of every bucket-day of
        every publication, and the copies were most of its cost.
        """
        if all(cell == "*" for cell in self.variants):  # no * cell to add: the counts as they are
            return self._squares_root(self.variants.values(), self.holdout.values())
        star: dict[str, list[float]] = {}  # the * cell the other cells add up to
        star_holdout = [0.0, 0.0]
        for cell, variants in self.variants.items():
            if cell != "*":
                for variant, (shown, reward) in variants.items():
                    pair = star.get(variant)
                    if pair is None:
                        star[variant] = [0.0 + shown, 0.0 + reward]
                    else:
                        pair[0] += shown
                        pair[1] += reward
                shown, reward = self.holdout.get(cell, _NONE)
                star_holdout = [star_holdout[0] + shown, star_holdout[1] + reward]
        return self._squares_root(
            self._cells_with_star(star), self._holdout_with_star(star_holdout)
        )

    def _cells_with_star(
        self, star: dict[str, list[float]]
    ) -> Iterator[Mapping[str, Sequence[float]]]:
        """:meth:`with_star`'s cells in its order: the * cell where it was, else last."""
        for cell, variants in self.variants.items():
            if cell != "*":
                yield variants
                continue
            merged = {v: [s + star[v][0], r + star[v][1]] if v in star else [s, r]
                      for v, (s, r) in variants.items()}  # fmt: skip
            merged.update((v, pair) for v, pair in star.items() if v not in variants)
            yield merged
        if "*" not in self.variants:
            yield star

    def _holdout_with_star(self, star: list[float]) -> list[Sequence[float]]:
        pairs = [star] if "*" not in self.holdout else []
        holdout = [
            (s + star[0], r + star[1]) if cell == "*" else (s, r)
            for cell, (s, r) in self.holdout.items()
        ]
        return holdout + pairs

    @staticmethod
    def _squares_root(
        cells: Iterable[Mapping[str, Sequence[float]]], holdout: Iterable[Sequence[float]]
    ) -> float:
        squares = sum(s * s + r * r for v in cells for s, r in v.values())
        squares += sum(s * s + r * r for s, r in holdout)
        return math.sqrt(squares)

    def to_json(self) -> str:
        data: dict = {"variants": self.variants, "holdout": self.holdout}
        if self.noise:  # sums of aggregate-mode uploads only stay as they always were
            data["noise"] = self.noise
        return json.dumps(data, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> SlotSums:
        data = json.loads(text)
        return cls(data["variants"], data["holdout"], data.get("noise", {}))


@contextmanager
def _collector_paused() -> Iterator[None]:
    """No cyclic garbage collection inside (process-wide: keep it short). It resumes after
    only if it was running, so a collector turned off on purpose stays off."""
    running = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if running:
            gc.enable()


def upload_sums(entry: SlotUpload, max_shown: int, noise_sd: float = 0.0) -> SlotSums:
    """One upload's sums (``noise_sd``: the device's noise on each number, local mode), scaled
    down to one visitor's norm at most.

    An aggregate-mode upload never exceeds it (its counts are bounded); a local-mode upload
    carries noise that may reach ``6 sigma`` per number, so without this one upload could weigh
    as much as hundreds of visitors. Scaled, it weighs at most one, noise included, which is
    also the inverse-noise weighting it deserves next to exact uploads.

    The noise left on each number is ``noise_sd`` unscaled, and once noise much larger than
    the radius is projected onto it, the radius shared evenly by the numbers of the norm:
    ``min(noise_sd**2, radius**2 / numbers)`` in variance (exact in expectation at either end;
    the realized scale would overstate it, as ``1 / chi2`` does on average).

    >>> loud = SlotUpload(cell="*", variants={"a": Counts(shown=-900.0, reward=1500.0)})
    >>> round(upload_sums(loud, 4).norm(), 6) == visitor_norm(4)
    True
    """
    sums = SlotSums.from_upload(entry)
    norm, radius = sums.norm(), visitor_norm(max_shown)
    if norm > radius:
        scaled = SlotSums()
        scaled.add(sums, radius / norm)
        sums = scaled
    if noise_sd > 0:
        numbers = 2 * (len(entry.variants) + 1) * (1 if entry.cell == "*" else 2)  # norm's
        sums.noise[entry.cell] = min(noise_sd**2, radius**2 / numbers)
    return sums


@dataclass(frozen=True, slots=True)
class BucketRow:
    """The sum of one source bucket's uploads to one slot on one UTC day."""

    day: int
    slot: str
    bucket: int
    sums: SlotSums


def parse_bucket_rows(stored: Iterable[tuple[int, str, int, str]]) -> list[BucketRow]:
    """Bucket rows from their stored form (day, slot, bucket, :meth:`SlotSums.to_json`).

    The admin's report parses every bucket-day. Each row is a few dozen new
    containers, so the cyclic garbage collector ran every few rows and walked all the rows
    parsed so far: 70% of the parse (bench/publication_cost.py). It is paused meanwhile:
    parsed JSON has no cycles, so there is nothing for it to find.
    """
    with _collector_paused():
        return [BucketRow(int(d), s, int(b), SlotSums.from_json(j)) for d, s, b, j in stored]


def robust_totals(
    rows: Iterable[BucketRow], *, bucket_cap: float, max_shown: int
) -> dict[str, SlotSums]:
    """Per slot, the sum of the rows, each capped to ``bucket_cap`` visitors. (Decay is the
    release's job, over released increments: :func:`.release.decayed_sum`.)"""
    cap = bucket_cap * visitor_norm(max_shown)
    totals: dict[str, SlotSums] = {}
    for row in rows:
        norm = row.sums.norm()
        totals.setdefault(row.slot, SlotSums()).add(row.sums, 1.0 if norm <= cap else cap / norm)
    return totals


def restrict(
    totals: Mapping[str, SlotSums], slots: Mapping[str, list[str]], cells: set[str]
) -> dict[str, SlotSums]:
    """Only declared slots, variants and cells (a declaration may shrink after uploads)."""
    out: dict[str, SlotSums] = {}
    for slot, variants in slots.items():
        sums = totals.get(slot, SlotSums())
        out[slot] = SlotSums(
            {
                cell: {v: c for v, c in vs.items() if v in variants}
                for cell, vs in sums.variants.items()
                if cell in cells
            },
            {cell: c for cell, c in sums.holdout.items() if cell in cells},
            {cell: v for cell, v in sums.noise.items() if cell in cells},
        )
    return out
