"""The published priors document (protocol sections 5-6), as pure functions: its privacy header
and its body, built from the decayed sum of released increments (:mod:`.release`).

Building a document is post-processing of released noisy values: the clamping (``0 <= reward
<= shown``) and the listing threshold cost no privacy, and a document can be rebuilt any
number of times from the same increments without drawing new noise.

>>> rules = Rules(max_shown=4, period_s=86_400, rho_per_release=2.0, half_life_days=3.0)
>>> privacy = rules.header("shop", SiteDeclaration(key="k" * 8, slots={"cta": ["a"]}), 6.0)
>>> privacy["privacy"]["rho_per_period"], privacy["privacy"]["sigma_release"]
(2.0, 4.0)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from .models import SiteDeclaration
from .release import DEFAULT_DELTA, Released, epsilon_of, release_sigma

__all__ = ["Rules", "empty_document", "priors_document"]

CELL_THRESHOLD_SIGMAS = 3.0  # a cell's variant is listed once its noisy shown reaches this


@dataclass(frozen=True, slots=True)
class Rules:
    """What the priors document tells browsers about uploads and about the noise."""

    max_shown: int
    period_s: int
    rho_per_release: float
    half_life_days: float

    def sigma_release(self, declaration: SiteDeclaration) -> float:
        return release_sigma(
            max_shown=self.max_shown, slots=len(declaration.slots), rho=self.rho_per_release
        )

    def header(self, site: str, declaration: SiteDeclaration, sigma: float) -> dict:
        """The document's header; ``sigma`` is the noise of each published count."""
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
                "mechanism": "central-gaussian-zcdp-increments",
                "rho_per_period": self.rho_per_release,
                "epsilon_per_period": round(epsilon_of(self.rho_per_release), 4),
                "delta": DEFAULT_DELTA,
                "sigma": round(sigma, 4),
                "sigma_release": round(self.sigma_release(declaration), 4),
            },
        }


def empty_document(site: str, declaration: SiteDeclaration, rules: Rules) -> dict:
    """Version 0: nothing published yet, but the upload rules are there for the browser."""
    return {
        **rules.header(site, declaration, rules.sigma_release(declaration)),
        "version": 0,
        "published_at": None,
        "slots": {},
    }


def priors_document(
    site: str,
    declaration: SiteDeclaration,
    released: Released,
    rules: Rules,
    *,
    version: int,
    published_at: float,
) -> dict:
    """The clamped priors of every declared slot, cell and variant, from released sums.

    A cell other than ``*`` is listed only for variants whose noisy ``shown`` reaches ``3
    sigma``, which keeps the body small and leaves out cells where the noise is all there is.
    A (slot, cell, variant) declared after every release has no counts: 0. A cell whose
    counts hold local-mode uploads carries its own ``sigma`` (the central noise and the
    devices'), larger than the header's.
    """
    sigma = released.sigma
    slots = {}
    for slot, variants in declaration.slots.items():
        released_cells = released.counts.get(slot, {})
        cells: dict[str, dict[str, dict[str, float]]] = {}
        for cell in declaration.cell_ids():
            cell_sigma = released.sigma_of(slot, cell)
            own = {"sigma": round(cell_sigma, 4)} if cell_sigma > sigma else {}
            entries = {}
            for variant in variants:
                shown, reward = released_cells.get(cell, {}).get(variant, (0.0, 0.0))
                shown = max(shown, 0.0)
                reward = min(max(reward, 0.0), shown)
                if cell == "*" or shown >= CELL_THRESHOLD_SIGMAS * cell_sigma:
                    entries[variant] = {"shown": round(shown, 2), "reward": round(reward, 2)}
                    entries[variant].update(own)
            if entries:
                cells[cell] = entries
        slots[slot] = {"variants": list(variants), "cells": cells}
    stamp = datetime.fromtimestamp(published_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    header = rules.header(site, declaration, sigma)
    return {**header, "version": version, "published_at": stamp, "slots": slots}
