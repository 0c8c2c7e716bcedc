"""The sync server's priors document (protocol v2, section 6), read and turned into engine priors.

The server publishes, per declared slot and context cell, each variant's ``shown`` exposures and
``reward`` units, with central differential-privacy noise of standard deviation ``sigma`` (an
entry holding local-mode uploads has its own, larger ``sigma``: the devices' noise too). The
browser computes its own cell from its context (:func:`cell_of`; it is never sent with an
identifier) and installs, for a slot on the page, the random-effects estimate of its cell's
rates as two priors on the engine's bias, which the engine adds up:

* its ``"site"`` prior: each variant's site rate (the ``*`` cell), worth as much as the cells'
  spread leaves it (:meth:`PriorsDocument.spread`, :meth:`PriorsDocument.site_stats`): where
  cells differ no more than their noise, the whole site's evidence; where they differ, little;
* its ``"segment"`` prior: its own cell's rates (:meth:`PriorsDocument.stats`).

A count is worth what its noise leaves of it: a published rate ``reward / shown`` with noise
``sigma`` on both counts has the variance of ``n_eff`` clean exposures
(:func:`effective_exposures`), so a thin cell weighs little and a noiseless one counts in full.
Each variant of each prior then counts as at most ``cap`` observations (``SyncConfig``'s
``site_prior_n`` and ``segment_prior_n``, tuned with ``bench/fleet.py``); the engine's other
coefficients get precision ``shrinkage * n``, i.e. they start at 0 until the visitor's own data
moves them.

Why not a linear model over the cells: with central noise every cell is thin, and a model with
a coefficient per device, referrer, ... gave each visitor's engine a wide uncertainty on all of
them, which its UCB bonus turned into exploring variants the whole site had already ruled out,
visitor after visitor (``bench/fleet.py``, README).

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
from ..core.noisy_rates import rate_variance
from .privacy import DEFAULT_MAX_SHOWN

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
    """A variant's published exposures and reward units in one cell, and the standard
    deviation of the noise on each (the document's ``sigma``, or the entry's own where
    local-mode devices added theirs)."""

    shown: float
    reward: float
    noise_sd: float = 0.0


def effective_exposures(counts: Counts, base_rate: float) -> float:
    """How many clean exposures the noisy rate ``reward / shown`` is worth.

    ``n_eff`` clean exposures have the binomial variance alone (:func:`rate_variance`).
    ``base_rate`` (the site's rate) stands in for ``p``, which is itself noisy in a thin cell.
    """
    if counts.shown <= 0:
        return 0.0
    noise_var = counts.noise_sd**2
    return _binomial(base_rate) / rate_variance(_clamped(base_rate), counts.shown, noise_var)


UNPUBLISHED = Counts(0.0, 0.0)  # a declared variant the document has no counts for


@dataclass(frozen=True, slots=True)
class PriorsDocument:
    """A validated priors document: declared cells, upload rules, per-slot per-cell counts."""

    site: str
    version: int
    cells: dict[str, list[str]]
    max_shown: int
    period_s: float
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
        max_shown = upload.get("max_shown", DEFAULT_MAX_SHOWN)
        if type(max_shown) is not int or max_shown < 1:
            raise InvalidPrior(f"priors.upload.max_shown must be an int >= 1, got {max_shown!r}")
        period_s = _number(upload.get("period_s", 86_400.0), "priors.upload.period_s")
        privacy = raw.get("privacy", {})
        if not isinstance(privacy, Mapping):
            raise InvalidPrior(f"priors.privacy must be an object, got {type(privacy).__name__}")
        noise_sd = _noise(privacy.get("sigma", 0.0), "priors.privacy.sigma")
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
                    own = c.get("sigma")
                    sd = noise_sd if own is None else _noise(own, f"{at}.sigma")
                    counts[slot][cell][variant] = Counts(shown, reward, sd)
            variants[slot] = list(declared)
        return cls(
            site,
            version,
            {k: list(v) for k, v in cells.items()},
            max_shown,
            period_s,
            variants,
            counts,
        )

    def cell_of(self, context: Mapping[str, Any]) -> str:
        """The visitor's cell under this site's declared cells."""
        return cell_of(self.cells, context)

    def spread(self, slot: str) -> float:
        """How much a variant's true click rate varies between cells beyond the noise (its
        variance ``tau**2``): the DerSimonian-Laird estimate over every (cell, variant) of
        ``slot``, each cell's rate against its variant's site rate (one mean per variant),
        weighted by the exposures its noise leaves it. 0 when the cells differ no more than
        their noise explains: the site's rates then hold in every cell. Memoized per
        document."""
        key = ("spread", slot)
        if key not in self._stats_cache:
            self._stats_cache[key] = self._spread(slot)  # type: ignore[assignment]
        return self._stats_cache[key]  # type: ignore[return-value]

    def _spread(self, slot: str) -> float:
        published = self.counts.get(slot, {})
        star = published.get(SITE_CELL, {})
        base_rate = _rate(star)
        binomial = _binomial(base_rate)
        q, terms, weights = 0.0, 0, {}  # variant -> (sum of weights, sum of squared weights)
        for cell, per_variant in published.items():
            for variant, c in per_variant.items():
                site = star.get(variant)
                if cell == SITE_CELL or site is None or site.shown <= 0 or c.shown <= 0:
                    continue
                weight = effective_exposures(c, base_rate) / binomial
                if weight <= 0:
                    continue
                q += weight * (c.reward / c.shown - site.reward / site.shown) ** 2
                total, squares = weights.get(variant, (0.0, 0.0))
                weights[variant] = (total + weight, squares + weight * weight)
                terms += 1
        scale = sum(total - squares / total for total, squares in weights.values())
        if terms <= len(weights) or scale <= 0:
            return 0.0
        return max(0.0, (q - (terms - len(weights))) / scale)

    def site_stats(
        self,
        slot: str,
        schema: Mapping[str, Any],
        strength: float,
        shrinkage: float,
        *,
        cap: float,
        floor: float = 0.0,
    ) -> tuple[dict[str, Any], float] | None:
        """What the site's rates say about any one cell: the ``"site"`` prior (None: none).

        A variant's site rate is worth ``n`` exposures *of one cell* with ``1 / n = tau**2 /
        (p (1 - p)) + 1 / n_site``: cells that differ (:meth:`spread`) make it worth little,
        cells that do not make it worth everything the site measured. ``floor`` observations
        of the site's overall rate keep a variant the noise leaves nearly unknown from looking
        promising to every visitor at once (and every variant declared but unpublished
        starts there). A variant whose rate is worth less than one exposure counts as none:
        under the floor its noise, the same for every visitor, would still tilt them all one
        way (local-mode counts did, in ``bench/fleet.py``). Each variant counts as at most
        ``cap`` observations.
        """
        key = ("site", slot, strength, shrinkage, cap, floor, repr(sorted(schema.items())))
        if key not in self._stats_cache:
            self._stats_cache[key] = self._site_stats(
                slot, schema, (strength, shrinkage, cap), floor
            )
        return self._stats_cache[key]

    def _site_stats(
        self,
        slot: str,
        schema: Mapping[str, Any],
        trust: tuple[float, float, float],
        floor: float,
    ) -> tuple[dict[str, Any], float] | None:
        star = self.counts.get(slot, {}).get(SITE_CELL, {})
        if not star:
            return None
        base_rate, tau2 = _rate(star), self.spread(slot)
        binomial = _binomial(base_rate)
        wanted: dict[str, tuple[float, float]] = {}
        for variant in self.variants.get(slot, []):
            c = star.get(variant, UNPUBLISHED)
            n = effective_exposures(c, base_rate)
            n = 1.0 / (tau2 / binomial + 1.0 / n) if n > 0 else 0.0
            n = n if n >= 1.0 else 0.0  # its noise would only tilt every visitor alike
            rate = c.reward / c.shown if n > 0 else base_rate
            if n + floor > 0:
                wanted[variant] = (n + floor, (n * rate + floor * base_rate) / (n + floor))
        return _bias_prior(slot, wanted, schema, trust)

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
        """``cell``'s own published rates: its ``"segment"`` prior (None: none).

        Each variant counts as the exposures its noise leaves it (:func:`effective_exposures`),
        at most ``cap``. Added to the site prior on the engine's bias, it makes the
        random-effects estimate of the cell's rate: its own data where it has some, the
        site's where it is thin. Memoized: every visitor of a cell installs the same object.
        """
        key = (slot, cell, strength, shrinkage, cap, repr(sorted(schema.items())))
        if key not in self._stats_cache:
            self._stats_cache[key] = self._stats(slot, cell, schema, (strength, shrinkage, cap))
        return self._stats_cache[key]

    def _stats(
        self, slot: str, cell: str, schema: Mapping[str, Any], trust: tuple[float, float, float]
    ) -> tuple[dict[str, Any], float] | None:
        per_variant = self.counts.get(slot, {}).get(cell)
        if not per_variant:
            return None
        base_rate = _rate(self.counts[slot].get(SITE_CELL, per_variant))
        wanted = {
            v: (effective_exposures(c, base_rate), c.reward / c.shown)
            for v, c in per_variant.items()
            if c.shown > 0
        }
        return _bias_prior(slot, wanted, schema, trust)


def _bias_prior(
    slot: str,
    wanted: Mapping[str, tuple[float, float]],
    schema: Mapping[str, Any],
    trust: tuple[float, float, float],
) -> tuple[dict[str, Any], float] | None:
    """Engine statistics in which each variant counts as ``n`` observations of ``rate`` on
    the bias (``wanted``: variant -> (n, rate)), and the ``set_prior`` weight.

    ``n`` is capped at ``cap`` per variant (a thin variant keeps its uncertainty, so the
    engine explores it); below 1 observation a variant is left out. The other coefficients
    get precision ``shrinkage * n``: they start at 0 until the visitor's own data moves them.
    The engine counts a prior of ``n`` observations and weight ``w`` as ``w * min(n,
    strength)`` (``strength``: its ``prior_strength``), so the statistics are divided by
    ``w = max(1, largest n / strength)``.
    """
    strength, shrinkage, cap = trust
    capped = {v: (min(n, cap), rate) for v, (n, rate) in wanted.items() if min(n, cap) >= 1.0}
    if not capped:
        return None
    weight = max(1.0, max(n for n, _ in capped.values()) / max(strength, 1e-9))
    features = schema["features"]
    dim, bias = int(features["dim"]), int(features.get("bias_index", 0))
    actions = {}
    for variant, (n_eff, rate) in capped.items():
        n = n_eff / weight
        xtx = np.eye(dim) * (shrinkage * n)
        xtx[bias, bias] = n
        xty = np.zeros(dim)
        xty[bias] = n * rate
        actions[variant] = _action_stats(xtx, xty, n, n * rate)
    return {"schema": dict(schema), "slot": slot, "actions": actions}, weight


def _clamped(rate: float) -> float:
    """A click rate kept in [0.001, 0.5], where the variance formulas hold."""
    return min(max(rate, 1e-3), 0.5)


def _binomial(rate: float) -> float:
    """The variance of one click at ``rate``."""
    p = _clamped(rate)
    return p * (1 - p)


def _rate(per_variant: Mapping[str, Counts]) -> float:
    """The click rate over all variants of a cell (0.05 when it has no exposures)."""
    shown = sum(c.shown for c in per_variant.values())
    return sum(c.reward for c in per_variant.values()) / shown if shown > 0 else 0.05


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


def _noise(value: Any, where: str) -> float:
    """A noise standard deviation: a finite number >= 0."""
    sd = _number(value, where)
    if sd < 0:
        raise InvalidPrior(f"{where} must be >= 0, got {value!r}")
    return sd


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidPrior(f"{where} must be a finite number, got {value!r}")
    return float(value)
