"""Central differential privacy of the published priors (protocol sections 5-6), as pure
functions: the noise scale, the zCDP budget, and the priors document itself.

One visitor, in one contribution period, moves the vector of everything published for a site
by at most ``sensitivity`` in L2 norm: ``visitor_norm(max_shown)`` per declared slot (its cell
and the ``*`` cell), and robust capping and decay only shrink that. Gaussian noise of standard
deviation ``sigma`` on every published number then costs ``rho = sensitivity**2 / (2 sigma**2)``
in zero-concentrated DP (Bun & Steinke 2016), and rho adds up over publications.

>>> round(noise_sigma(max_shown=4, slots=1, rho=0.05), 2)
25.3
>>> Budget(day=3, spent=0.95).spend(today=3, rho=0.05, rho_per_day=1.0)
Budget(day=3, spent=1.0)
>>> Budget(day=3, spent=1.0).spend(today=3, rho=0.05, rho_per_day=1.0) is None
True
>>> Budget(day=3, spent=1.0).spend(today=4, rho=0.05, rho_per_day=1.0)
Budget(day=4, spent=0.05)

A day's counts stay in every later publication, decayed by ``0.5 ** (days / half_life)``: a
publication ``k`` days later moves by that factor less, so it costs ``4 ** (-k / half_life)``
of its rho. Over its whole life, one visitor's contribution of one period costs:

>>> round(period_rho(rho_per_day=1.0, half_life_days=30.0), 1)
22.1
>>> round(period_rho(rho_per_day=1.0, half_life_days=7.0), 2)
5.57
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from .aggregate import SlotSums, visitor_norm
from .models import SiteDeclaration

__all__ = [
    "Budget",
    "Rules",
    "noise_sigma",
    "period_rho",
    "epsilon_of",
    "empty_document",
    "priors_document",
]

CELL_THRESHOLD_SIGMAS = 3.0  # a cell's variant is listed once its noisy shown reaches this
BUDGET_SLACK = 1e-9  # float sums of rho must not refuse the last publication of a day


def noise_sigma(*, max_shown: int, slots: int, rho: float) -> float:
    """The Gaussian noise that makes one publication ``rho``-zCDP for one visitor-period."""
    sensitivity = visitor_norm(max_shown) * math.sqrt(max(slots, 1))
    return sensitivity / math.sqrt(2.0 * rho)


def period_rho(*, rho_per_day: float, half_life_days: float) -> float:
    """The zCDP one visitor-period costs over every publication that will ever include it:
    ``rho_per_day`` on its own day, ``rho_per_day * 4 ** (-k / half_life_days)`` ``k`` days
    later (its counts decayed by ``2 ** (-k / half_life_days)``). Infinite without decay."""
    if not math.isfinite(half_life_days):
        return math.inf
    return rho_per_day / (1.0 - 4.0 ** (-1.0 / half_life_days))


def epsilon_of(rho: float, delta: float = 1e-5) -> float:
    """The (epsilon, delta)-DP that rho-zCDP implies (Bun & Steinke 2016, Prop. 1.3).

    >>> round(epsilon_of(1.0), 2)
    7.79
    """
    return rho + 2.0 * math.sqrt(rho * math.log(1.0 / delta))


@dataclass(frozen=True, slots=True)
class Budget:
    """The zCDP a site spent on the UTC day ``day``."""

    day: int
    spent: float

    def spend(self, *, today: int, rho: float, rho_per_day: float) -> Budget | None:
        """The budget after one more publication today, or None when today's is spent."""
        spent = self.spent if today == self.day else 0.0
        if spent + rho > rho_per_day + BUDGET_SLACK:
            return None
        return Budget(today, spent + rho)


@dataclass(frozen=True, slots=True)
class Rules:
    """What the priors document tells browsers about uploads and about the noise."""

    max_shown: int
    period_s: int
    rho_per_publication: float
    rho_per_day: float
    half_life_days: float

    def header(self, site: str, declaration: SiteDeclaration) -> dict:
        sigma = noise_sigma(
            max_shown=self.max_shown, slots=len(declaration.slots), rho=self.rho_per_publication
        )
        lifetime = period_rho(rho_per_day=self.rho_per_day, half_life_days=self.half_life_days)
        return {
            "v": 2,
            "site": site,
            "cells": {key: list(values) for key, values in declaration.cells.items()},
            "upload": {
                "max_shown": self.max_shown,
                "period_s": self.period_s,
                "default_mode": "aggregate",
                "modes": ["aggregate", "local"],
            },
            "privacy": {
                "mechanism": "central-gaussian-zcdp",
                "rho_per_publication": self.rho_per_publication,
                "rho_per_day": self.rho_per_day,
                "rho_per_period": round(lifetime, 4) if math.isfinite(lifetime) else None,
                "sigma": round(sigma, 4),
            },
        }


def empty_document(site: str, declaration: SiteDeclaration, rules: Rules) -> dict:
    """Version 0: nothing published yet, but the upload rules are there for the browser."""
    return {
        **rules.header(site, declaration),
        "version": 0,
        "published_at": None,
        "slots": {},
    }


def priors_document(
    site: str,
    declaration: SiteDeclaration,
    totals: dict[str, SlotSums],
    rules: Rules,
    *,
    version: int,
    published_at: float,
    rng: np.random.Generator,
) -> dict:
    """The noisy, clamped priors of every declared slot, cell and variant.

    Every declared (slot, cell, variant) gets noise, data or not. A cell other than ``*`` is
    then listed only for variants whose noisy ``shown`` reaches ``3 sigma`` (deciding on a
    noisy value is post-processing: it costs no privacy), which keeps the body small and
    leaves out cells where the noise is all there is.
    """
    header = rules.header(site, declaration)
    sigma = header["privacy"]["sigma"]
    cell_ids = declaration.cell_ids()
    slots = {}
    for slot, variants in declaration.slots.items():
        sums = totals.get(slot, SlotSums()).with_star()
        exact = np.array(
            [
                [sums.variants.get(cell, {}).get(variant, (0.0, 0.0)) for variant in variants]
                for cell in cell_ids
            ],
            dtype=float,
        )  # cells x variants x (shown, reward)
        noisy = exact + rng.normal(0.0, sigma, exact.shape)
        shown = np.maximum(noisy[..., 0], 0.0)
        reward = np.clip(noisy[..., 1], 0.0, shown)
        cells: dict[str, dict[str, dict[str, float]]] = {}
        for i, cell in enumerate(cell_ids):
            entries = {
                variant: {
                    "shown": round(float(shown[i, j]), 2),
                    "reward": round(float(reward[i, j]), 2),
                }
                for j, variant in enumerate(variants)
                if cell == "*" or shown[i, j] >= CELL_THRESHOLD_SIGMAS * sigma
            }
            if entries:
                cells[cell] = entries
        slots[slot] = {"variants": list(variants), "cells": cells}
    stamp = datetime.fromtimestamp(published_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {**header, "version": version, "published_at": stamp, "slots": slots}
