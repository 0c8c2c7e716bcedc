"""The sync server's priors document (protocol v2, section 6), read and turned into engine priors.

The server publishes, per declared slot and context cell, each variant's ``shown`` exposures and
``reward`` units, with central differential-privacy noise of standard deviation ``sigma``. The
browser computes its own cell from its context (:func:`cell_of`; it is never sent with an
identifier) and installs, for a slot on the page:

* as the engine's ``"site"`` prior, the ``*`` cell on the bias plus every published cell on its
  own features: a linear model over the cells, what a central engine would fit on those
  features, so even a visitor whose own cell is thin starts from a contextual prior
  (:meth:`PriorsDocument.site_stats`);
* as its ``"segment"`` prior, its own cell on the bias (:meth:`PriorsDocument.stats`).

A count is worth what its noise leaves of it: a published rate ``reward / shown`` with noise
``sigma`` on both counts has the variance of ``n_eff`` clean exposures
(:func:`effective_exposures`), so a thin cell weighs little and a noiseless one counts in full.
Each prior then counts as at most ``cap`` observations (``SyncConfig``'s ``site_prior_n`` and
``segment_prior_n``, tuned with ``bench/fleet.py``); coefficients no cell informs get precision
``shrinkage * n``, i.e. they start at 0 until the visitor's own data moves them.

>>> cells = {"device": ["desktop", "mobile"], "returning": ["false", "true"]}
>>> cell_of(cells, {"device": "mobile", "returning": True, "hour": 3})
'device=mobile,returning=true'
>>> cell_of(cells, {"device": "watch"})
'device=other,returning=other'
>>> cell_of({}, {"device": "mobile"})
'*'
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core.errors import InvalidPrior

__all__ = ["PRIORS_VERSION", "SITE_CELL", "Counts", "PriorsDocument", "cell_of"]

PRIORS_VERSION = 2
SITE_CELL = "*"
OTHER = "other"


def cell_of(cells: Mapping[str, list[str]], context: Mapping[str, Any]) -> str:
    """The visitor's cell id: ``key=value`` per declared key, in declaration order."""
    if not cells:
        return SITE_CELL
    parts = []
    for key, values in cells.items():
        raw = context.get(key)
        value = ("true" if raw else "false") if isinstance(raw, bool) else str(raw)
        parts.append(f"{key}={value if raw is not None and value in values else OTHER}")
    return ",".join(parts)


@dataclass(frozen=True, slots=True)
class Counts:
    """A variant's published exposures and reward units in one cell."""

    shown: float
    reward: float


def effective_exposures(counts: Counts, noise_sd: float, base_rate: float) -> float:
    """How many clean exposures the noisy rate ``reward / shown`` is worth.

    The rate's variance is about ``p (1 - p) / n + noise_sd**2 (1 + p**2) / n**2`` (the delta
    method, noise on both counts); ``n_eff`` exposures without noise have the first term alone.
    ``base_rate`` (the site's rate) stands in for ``p``, which is itself noisy in a thin cell.
    """
    n = counts.shown
    if n <= 0:
        return 0.0
    p = min(max(base_rate, 1e-3), 0.5)
    binomial = p * (1 - p) / n
    return n * binomial / (binomial + noise_sd**2 * (1 + p * p) / (n * n))


@dataclass(frozen=True, slots=True)
class PriorsDocument:
    """A validated priors document: declared cells, upload rules, per-slot per-cell counts."""

    site: str
    version: int
    cells: dict[str, list[str]]
    max_shown: int
    period_s: float
    noise_sd: float
    variants: dict[str, list[str]]  # slot -> declared variants
    counts: dict[str, dict[str, dict[str, Counts]]]  # slot -> cell -> variant -> counts
    _stats_cache: dict[tuple[Any, ...], dict[str, Any] | None] = field(
        default_factory=dict, compare=False, repr=False
    )

    @classmethod
    def parse(cls, raw: Any) -> PriorsDocument:
        """Validate a priors document; :class:`InvalidPrior` says what is wrong and where."""
        if not isinstance(raw, Mapping):
            raise InvalidPrior(f"priors document must be an object, got {type(raw).__name__}")
        if raw.get("v") != PRIORS_VERSION:
            raise InvalidPrior(
                f"priors document version {raw.get('v')!r}, expected {PRIORS_VERSION}"
            )
        site, version = raw.get("site"), raw.get("version")
        if not isinstance(site, str) or not site:
            raise InvalidPrior(f"priors.site must be a non-empty string, got {site!r}")
        if type(version) is not int or version < 0:
            raise InvalidPrior(f"priors.version must be an int >= 0, got {version!r}")
        cells = raw.get("cells", {})
        if not isinstance(cells, Mapping) or not all(
            isinstance(values, list) and all(isinstance(v, str) for v in values)
            for values in cells.values()
        ):
            raise InvalidPrior("priors.cells must map each context key to a list of strings")
        upload = raw.get("upload", {})
        if not isinstance(upload, Mapping):
            raise InvalidPrior(f"priors.upload must be an object, got {type(upload).__name__}")
        max_shown = upload.get("max_shown", 4)
        if type(max_shown) is not int or max_shown < 1:
            raise InvalidPrior(f"priors.upload.max_shown must be an int >= 1, got {max_shown!r}")
        period_s = _number(upload.get("period_s", 86_400.0), "priors.upload.period_s")
        privacy = raw.get("privacy", {})
        if not isinstance(privacy, Mapping):
            raise InvalidPrior(f"priors.privacy must be an object, got {type(privacy).__name__}")
        noise_sd = _number(privacy.get("sigma", 0.0), "priors.privacy.sigma")
        if period_s <= 0:
            raise InvalidPrior(f"priors.upload.period_s must be > 0, got {period_s!r}")
        slots = raw.get("slots")
        if not isinstance(slots, Mapping):
            raise InvalidPrior("priors document lacks a 'slots' object")
        variants: dict[str, list[str]] = {}
        counts: dict[str, dict[str, dict[str, Counts]]] = {}
        for slot, entry in slots.items():
            where = f"priors.slots.{slot}"
            if not isinstance(entry, Mapping):
                raise InvalidPrior(f"{where} must be an object")
            declared = entry.get("variants")
            if not isinstance(declared, list) or not all(
                isinstance(v, str) and v for v in declared
            ):
                raise InvalidPrior(f"{where}.variants must be a list of variant ids")
            by_cell = entry.get("cells", {})
            if not isinstance(by_cell, Mapping):
                raise InvalidPrior(f"{where}.cells must be an object")
            counts[slot] = {}
            for cell, per_variant in by_cell.items():
                if not isinstance(per_variant, Mapping):
                    raise InvalidPrior(f"{where}.cells.{cell} must be an object")
                counts[slot][cell] = {}
                for variant, c in per_variant.items():
                    at = f"{where}.cells.{cell}.{variant}"
                    if variant not in declared:
                        raise InvalidPrior(f"{at}: {variant!r} is not a declared variant")
                    if not isinstance(c, Mapping):
                        raise InvalidPrior(f"{at} must be an object with 'shown' and 'reward'")
                    shown = _number(c.get("shown"), f"{at}.shown")
                    reward = _number(c.get("reward"), f"{at}.reward")
                    if not 0 <= reward <= shown:
                        raise InvalidPrior(
                            f"{at}: expected 0 <= reward <= shown, got reward={reward!r}, "
                            f"shown={shown!r}"
                        )
                    counts[slot][cell][variant] = Counts(shown, reward)
            variants[slot] = list(declared)
        return cls(
            site,
            version,
            {k: list(v) for k, v in cells.items()},
            max_shown,
            period_s,
            noise_sd,
            variants,
            counts,
        )

    def cell_of(self, context: Mapping[str, Any]) -> str:
        """The visitor's cell under this site's declared cells."""
        return cell_of(self.cells, context)

    def site_stats(
        self, slot: str, engine: Any, shrinkage: float, *, cap: float, floor: float = 0.0
    ) -> tuple[dict[str, Any], float] | None:
        """The site prior of ``slot``: the ``*`` cell on the bias, and each published cell on
        its own features, as a linear model.

        A cell ``c`` adds ``n_c x_c x_c'`` and ``n_c rate_c x_c`` to a variant's statistics,
        ``x_c`` being the engine's feature vector of the cell's context values and ``n_c`` the
        exposures its noise leaves it (:func:`effective_exposures`); ``*`` adds the same on the
        bias alone. That is the ridge regression a central engine would fit on those features,
        so the visitor's engine starts from a *contextual* prior that borrows strength across
        cells (a thin cell leans on its device's, its referrer's, ...). A variant counts as
        ``n_* min(1, cap / max n_*)`` observations (thin variants stay thin, so the engine
        explores them), plus ``floor`` observations of the site's overall rate: a variant the
        noise leaves nearly unknown is then believed average rather than promising, so every
        visitor does not rush to explore it between two publications. Dimensions no cell
        touches get precision ``shrinkage * n``. Memoized per document and engine configuration.
        """
        key = ("site", slot, shrinkage, cap, floor, _featurization(engine))
        if key not in self._stats_cache:
            self._stats_cache[key] = self._site_stats(slot, engine, shrinkage, cap, floor)
        return self._stats_cache[key]

    def _site_stats(
        self, slot: str, engine: Any, shrinkage: float, cap: float, floor: float
    ) -> tuple[dict[str, Any], float] | None:
        published = self.counts.get(slot, {})
        star = published.get(SITE_CELL, {})
        if cap <= 0 or not star:
            return None
        base_rate = _rate(star)
        schema = engine.schema()
        dim = int(schema["features"]["dim"])
        bias = int(schema["features"].get("bias_index", 0))
        grams: dict[str, list[Any]] = {}
        for cell, per_variant in published.items():
            x = self._features(cell, engine) if cell != SITE_CELL else np.eye(dim)[bias]
            for variant, c in per_variant.items():
                n = effective_exposures(c, self.noise_sd, base_rate)
                if n <= 0:
                    continue
                gram = grams.setdefault(variant, [np.zeros((dim, dim)), np.zeros(dim), 0.0, 0.0])
                gram[0] += n * np.outer(x, x)
                gram[1] += n * (c.reward / c.shown) * x
                if cell == SITE_CELL:
                    gram[2], gram[3] = n, n * c.reward / c.shown
        grams = {v: g for v, g in grams.items() if g[2] >= 1.0 or floor > 0}
        for variant in self.variants.get(slot, []) if floor > 0 else []:
            grams.setdefault(variant, [np.zeros((dim, dim)), np.zeros(dim), 0.0, 0.0])
        if not grams:
            return None
        strength = float(engine.params["prior_strength"])
        most = max(g[2] for g in grams.values())
        shrink = min(1.0, cap / most) if most > 0 else 1.0  # one factor: thin ones stay thin
        weight = max(1.0, (most * shrink + floor) / max(strength, 1e-9))
        actions = {}
        for variant, (xtx, xty, n, r) in grams.items():
            n, r = shrink * n + floor, shrink * r + floor * base_rate
            xtx, xty = shrink * xtx, shrink * xty
            xtx[bias, bias] += floor
            xty[bias] += floor * base_rate
            untouched = np.diag(xtx) <= 0
            xtx = xtx + np.diag(np.where(untouched, shrinkage * n, 0.0))
            actions[variant] = _action_stats(xtx / weight, xty / weight, n / weight, r / weight)
        return {"schema": schema, "slot": slot, "actions": actions}, weight

    def _features(self, cell: str, engine: Any) -> np.ndarray:
        """The engine's feature vector of a cell's context values, through its public API: a
        scratch engine with the same featurization learns one reward of 1 for that context,
        and its statistics' ``xty`` is the vector."""
        key = ("x", cell, _featurization(engine))
        if key not in self._stats_cache:
            context: dict[str, Any] = {}
            if cell != SITE_CELL:
                context = dict(part.split("=", 1) for part in cell.split(","))
            params = {**engine.params, "discount": 1.0, "holdout": 0.0}
            scratch = type(engine)("linucb", seed=0, **params)
            decision = scratch.rank(context, ["x"], slot="cell", now=0.0)
            scratch.reward(decision.event_id, 1.0, now=0.0)
            xty = scratch.stats("cell")["actions"]["x"]["xty"]
            self._stats_cache[key] = np.asarray(xty, dtype=float)
        return self._stats_cache[key]

    def stats(
        self,
        slot: str,
        cell: str,
        schema: Mapping[str, Any],
        strength: float,
        shrinkage: float,
        *,
        cap: float,
    ) -> tuple[dict[str, Any], float] | None:
        """``cell`` of ``slot`` as engine statistics and the ``set_prior`` weight (None: none).

        Each variant is to count as ``n_eff min(1, cap / max n_eff)`` observations of its
        published rate: the best-supported variant as at most ``cap``, the others in
        proportion, so a thin variant keeps its uncertainty (and the engine explores it).
        The engine counts a prior of ``n`` observations and weight ``w`` as ``w * min(n,
        strength)`` (``strength``: its ``prior_strength``), so the statistics are divided by
        ``w = max(1, largest n / strength)``. Memoized: every visitor of a cell installs the
        same object.
        """
        key = (slot, cell, strength, shrinkage, cap, repr(sorted(schema.items())))
        if key not in self._stats_cache:
            trust = (strength, shrinkage, cap)
            self._stats_cache[key] = self._stats(slot, cell, schema, trust)
        return self._stats_cache[key]

    def _stats(
        self, slot: str, cell: str, schema: Mapping[str, Any], trust: tuple[float, float, float]
    ) -> tuple[dict[str, Any], float] | None:
        strength, shrinkage, cap = trust
        per_variant = self.counts.get(slot, {}).get(cell)
        if not per_variant or cap <= 0:
            return None
        base_rate = _rate(self.counts[slot].get(SITE_CELL, per_variant))
        wanted = {
            v: (effective_exposures(c, self.noise_sd, base_rate), c.reward / c.shown)
            for v, c in per_variant.items()
            if c.shown > 0
        }
        shrink = min(1.0, cap / max((n for n, _ in wanted.values()), default=1.0))
        wanted = {v: (n * shrink, rate) for v, (n, rate) in wanted.items()}
        wanted = {v: (n, rate) for v, (n, rate) in wanted.items() if n >= 1.0}
        if not wanted:
            return None
        weight = max(1.0, max(n for n, _ in wanted.values()) / max(strength, 1e-9))
        features = schema["features"]
        dim, bias = int(features["dim"]), int(features.get("bias_index", 0))
        actions = {}
        for variant, (n_eff, rate) in wanted.items():
            n = n_eff / weight
            xtx = np.eye(dim) * (shrinkage * n)
            xtx[bias, bias] = n
            xty = np.zeros(dim)
            xty[bias] = n * rate
            actions[variant] = _action_stats(xtx, xty, n, n * rate)
        return {"schema": dict(schema), "slot": slot, "actions": actions}, weight


def _rate(per_variant: Mapping[str, Counts]) -> float:
    """The click rate over all variants of a cell (0.05 when it has no exposures)."""
    shown = sum(c.shown for c in per_variant.values())
    return sum(c.reward for c in per_variant.values()) / shown if shown > 0 else 0.05


def _featurization(engine: Any) -> tuple[Any, ...]:
    """What a prior built for ``engine`` depends on: its feature space and prior strength."""
    features = engine.schema()["features"]
    return (*sorted(features.items()), engine.params["prior_strength"])


def _action_stats(xtx: np.ndarray, xty: np.ndarray, n: float, r: float) -> dict[str, Any]:
    """One variant's entry in the engine's statistics format."""
    return {
        "n": n,
        "reward_sum": r,
        "reward_sq_sum": r,
        "successes": r,
        "failures": max(n - r, 0.0),
        "xtx": xtx,
        "xty": xty,
    }


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidPrior(f"{where} must be a finite number, got {value!r}")
    return float(value)
