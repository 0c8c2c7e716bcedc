"""The worker's side of the optional sync server (protocol v2, ``docs/sync-protocol.md``).

Pure Python: it runs in the browser worker under Pyodide and, for tests and ``bench/fleet.py``, on
CPython. The worker's JavaScript only does ``fetch()`` and hands the JSON over.

Hooks the session calls:

* :meth:`SyncClient.configure` at ``init`` (config, GPC, consent, the saved :meth:`to_state`);
  :meth:`SyncClient.set_consent` when consent changes; :meth:`SyncClient.forget` on ``forget``.
* :meth:`SyncClient.load_priors` with the fetched priors document (validated, then kept; a
  malformed one raises :class:`InvalidPrior` and the previous document stays).
* :meth:`SyncClient.install_priors` ``(engine, slot, context)`` before a slot's first decision
  on a page: the site's published cells become the engine's ``"site"`` prior (contextual, see
  :mod:`~microadjust.browser.site_priors`), the visitor's own cell (computed here, never sent
  with an identifier) its ``"segment"`` prior. Only slots on the page get priors; a slot whose
  priors of this version and cell are in the engine already is left alone.
* :meth:`SyncClient.record_shown` ``(event_id, slot, variant, variants=, holdout=, context=,
  now=)`` when the attribution rule says a decision was seen: its exposure is counted now
  (``variants``: those the page offers in the slot).
* :meth:`SyncClient.record_reward` ``(event_id, reward, now=)`` when a reward is attributed to a
  decision (a 0 when its window closes may be reported too; it only closes the decision). Only
  rewards of decisions whose exposure was counted are uploaded, so ``reward / shown`` summed over
  the fleet is unbiased: an open decision is never uploaded as a 0.
* :meth:`SyncClient.next_upload` ``(rng=None)`` on the upload timer and when the page is
  hidden (a visitor with a single seen decision uploads it): the body to
  POST (the pending one again, or a new one), or None; then :meth:`SyncClient.acknowledged` or
  :meth:`SyncClient.rejected` with the server's answer. A new batch is part of :meth:`to_state`
  and must be saved before it is sent, so a retry resends it byte for byte.

Per slot and period the device contributes at most ``max_shown`` exposures and reward units
(:class:`~microadjust.browser.privacy.ContributionBudget`); ``privacy`` states the guarantee of
each mode. One body holds one cell per slot; counts of another cell (the visitor's context
changed, e.g. ``returning``) wait for the next body.

>>> client = SyncClient()
>>> client.configure({"site": "shop", "key": "k", "upload": True}, gpc=True, consent=True)
>>> client.upload_blocked()
'Global Privacy Control is on'
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.errors import InvalidParameter, InvalidPrior, InvalidState
from .privacy import (
    DEFAULT_EPSILON,
    EPSILON_RANGE,
    ContributionBudget,
    local_noise,
)

if TYPE_CHECKING:  # imported where a document comes in: a site without priors never needs it
    from .site_priors import PriorsDocument

__all__ = ["MODES", "UPLOAD_VERSION", "SyncClient", "SyncConfig"]

UPLOAD_VERSION = 2
MODES = ("aggregate", "local")
MAX_ATTEMPTS = 50  # a batch the server keeps refusing is dropped after this many tries
HOLDOUT = ""  # the key of holdout decisions in the unsent counts


@dataclass(frozen=True, slots=True)
class SyncConfig:
    """``config.sync`` of the page: where the server is, what the site allows, prior trust.

    ``site_prior_n`` and ``segment_prior_n`` cap how many observations the site's and the
    visitor's cell's prior count as against the visitor's own decisions; ``site_floor_n``
    observations of the site's overall rate keep a variant the noise leaves unknown from
    looking promising to every visitor at once; ``shrinkage`` is the
    precision of the other coefficients per prior observation. Their defaults were tuned with
    ``bench/fleet.py`` (see the README).
    """

    site: str
    url: str = ""  # the sync server's base URL; "" is this site's own origin
    key: str = ""
    upload: bool = False  # the site enables contributions
    mode: str = "aggregate"  # "aggregate" (central DP on the server) or "local" (device noise)
    epsilon: float = DEFAULT_EPSILON  # local mode only
    interval_s: float = 60.0  # how often the worker tries to upload
    # tuned with bench/fleet.py (segments shape, 10,000 visitors, aggregate mode; README)
    site_prior_n: float = 1000.0
    segment_prior_n: float = 400.0
    site_floor_n: float = 50.0
    shrinkage: float = 1.0

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> SyncConfig:
        """Validate ``config.sync``; :class:`InvalidParameter` names the bad field."""
        if not isinstance(raw, Mapping):
            raise InvalidParameter(f"config.sync must be an object, got {type(raw).__name__}")
        unknown = sorted(set(raw) - set(cls.__dataclass_fields__))
        if unknown:
            raise InvalidParameter(
                f"config.sync: unknown field(s) {unknown}; "
                f"known: {sorted(cls.__dataclass_fields__)}"
            )
        if not isinstance(raw.get("site"), str) or not raw["site"]:
            raise InvalidParameter("config.sync.site must be a non-empty string")
        for name in ("url", "key"):
            if not isinstance(raw.get(name, ""), str):
                raise InvalidParameter(f"config.sync.{name} must be a string")
        if not isinstance(raw.get("upload", False), bool):
            raise InvalidParameter("config.sync.upload must be true or false")
        if raw.get("mode", "aggregate") not in MODES:
            raise InvalidParameter(
                f"config.sync.mode must be one of {MODES}, got {raw.get('mode')!r}"
            )
        lo, hi = EPSILON_RANGE
        checks = {
            "epsilon": (lambda v: lo <= v <= hi, f"in [{lo}, {hi}]"),
            "interval_s": (lambda v: v >= 1, ">= 1"),
            "site_prior_n": (lambda v: v >= 0, ">= 0"),
            "segment_prior_n": (lambda v: v >= 0, ">= 0"),
            "site_floor_n": (lambda v: v >= 0, ">= 0"),
            "shrinkage": (lambda v: v >= 0, ">= 0"),
        }
        for name, (ok, expected) in checks.items():
            v = raw.get(name, cls.__dataclass_fields__[name].default)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise InvalidParameter(f"config.sync.{name} must be a number, got {v!r}")
            if not ok(v):
                raise InvalidParameter(f"config.sync.{name} = {v!r}; expected {expected}")
        return cls(**{k: raw[k] for k in raw})

    def endpoint(self, what: str) -> str:
        """URL of ``priors`` or ``uploads`` for this site."""
        return f"{self.url.rstrip('/')}/v1/sites/{self.site}/{what}"


@dataclass(frozen=True, slots=True)
class Seen:
    """A decision whose exposure was counted and whose reward may still come."""

    slot: str
    variant: str  # HOLDOUT for a holdout decision
    cell: str
    t: float


class SyncClient:
    """Sync state of one device: config, consent, priors, the period's budget, unsent counts."""

    def __init__(self) -> None:
        self.config: SyncConfig | None = None
        self.gpc = False
        self.consent = False
        self.priors: PriorsDocument | None = None
        self.budget = ContributionBudget()
        self.open: dict[str, Seen] = {}  # event id -> a counted exposure awaiting its reward
        # slot -> cell -> variant (HOLDOUT for the holdout) -> [shown, reward] not yet uploaded
        self.unsent: dict[str, dict[str, dict[str, list[float]]]] = {}
        self.pending: dict[str, Any] | None = None  # the batch waiting for acknowledgement
        self.installed: dict[str, tuple[int, str]] = {}  # slot -> priors (version, cell) in use
        self.offered: dict[str, list[str]] = {}  # slot -> the variants its pages offered
        self.attempts = 0
        self.uploaded = 0  # batches acknowledged on this device

    @property
    def priors_version(self) -> int | None:
        return None if self.priors is None else self.priors.version

    # -- configuration and persistence -------------------------------------------------

    def configure(
        self,
        raw: Mapping[str, Any] | None,
        *,
        gpc: bool = False,
        consent: bool = False,
        saved: Any = None,
    ) -> None:
        """Set the page's ``config.sync`` (None: no sync), the visitor's Global Privacy Control
        signal and consent, and restore the state saved on this device (:meth:`to_state`)."""
        config = None if raw is None else SyncConfig.parse(raw)
        restored = None if saved is None else SyncClient.from_state(saved)
        self.config, self.gpc, self.consent = config, gpc is True, consent is True
        if restored is not None:
            self.budget, self.open, self.unsent = restored.budget, restored.open, restored.unsent
            self.pending, self.attempts = restored.pending, restored.attempts
            self.uploaded, self.installed = restored.uploaded, restored.installed
            self.offered = restored.offered
        if self.upload_blocked() is not None:
            self._drop_unsent()  # e.g. consent withdrawn: nothing built earlier is ever sent

    def set_consent(self, granted: bool) -> None:
        """Consent granted or withdrawn; a withdrawn consent drops every unsent count."""
        self.consent = granted is True
        if self.upload_blocked() is not None:
            self._drop_unsent()

    def forget(self) -> None:
        """The visitor erased this device's data. The period's budget stays: forgetting never
        lets one visitor contribute more than the bound."""
        self._drop_unsent()
        self.uploaded, self.installed = 0, {}

    def to_state(self) -> dict[str, Any]:
        """What to persist on the device (inside the worker's checkpoint); JSON-ready."""
        return {
            "budget": self.budget.to_state(),
            "open": {eid: [s.slot, s.variant, s.cell, s.t] for eid, s in self.open.items()},
            "unsent": self.unsent,
            "pending": self.pending,
            "attempts": self.attempts,
            "uploaded": self.uploaded,
            "installed": {slot: list(key) for slot, key in self.installed.items()},
            "offered": self.offered,
        }

    @classmethod
    def from_state(cls, state: Any) -> SyncClient:
        """A client (not configured) with :meth:`to_state`'s state; :class:`InvalidState`."""
        if not isinstance(state, Mapping):
            raise InvalidState(f"sync state must be an object, got {type(state).__name__}")
        client = cls()
        try:
            client.budget = ContributionBudget.from_state(state["budget"])
            client.open = {
                str(eid): Seen(str(slot), str(variant), str(cell), float(t))
                for eid, (slot, variant, cell, t) in state["open"].items()
            }
            client.unsent = {
                str(slot): {
                    str(cell): {str(v): [float(n), float(r)] for v, (n, r) in per.items()}
                    for cell, per in cells.items()
                }
                for slot, cells in state["unsent"].items()
            }
            pending = state["pending"]
            client.pending = dict(pending) if isinstance(pending, Mapping) else None
            client.attempts, client.uploaded = int(state["attempts"]), int(state["uploaded"])
            client.offered = {
                str(slot): [str(v) for v in names] for slot, names in state["offered"].items()
            }
            client.installed = {
                str(slot): (int(version), str(cell))
                for slot, (version, cell) in state["installed"].items()
            }
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise InvalidState(f"sync state is malformed: {error!r}") from error
        return client

    def describe(self) -> dict[str, Any] | None:
        """The config the worker needs for its fetches (None when sync is off)."""
        if self.config is None:
            return None
        return {
            "priors_url": self.config.endpoint("priors"),
            "uploads_url": self.config.endpoint("uploads"),
            "key": self.config.key,
            "interval_ms": int(self.config.interval_s * 1000),
            "upload": self.upload_blocked() is None,
        }

    def upload_blocked(self) -> str | None:
        """Why nothing may be uploaded, or None when uploads are allowed."""
        if self.config is None:
            return "sync is not configured"
        if not self.config.upload:
            return "the site does not enable uploads"
        if self.gpc:
            return "Global Privacy Control is on"
        if not self.consent:
            return "the visitor has not consented"
        return None

    # -- priors down ---------------------------------------------------------------------

    def load_priors(self, document: Any) -> PriorsDocument:
        """Validate and keep the server's priors document (a raw one or already parsed).

        A malformed document raises :class:`InvalidPrior` and the previous one stays.
        """
        from .site_priors import PriorsDocument

        parsed = (
            document if isinstance(document, PriorsDocument) else PriorsDocument.parse(document)
        )
        if self.config is not None and parsed.site != self.config.site:
            raise InvalidPrior(
                f"priors document is for site {parsed.site!r}, this page syncs {self.config.site!r}"
            )
        self.priors = parsed
        return parsed

    def install_priors(self, engine: Any, slot: str, context: Mapping[str, Any]) -> bool:
        """Install ``slot``'s site and cell priors in ``engine``; False when there are none.

        Each prior counts as ``min(n_eff, cap)`` observations (see
        :mod:`microadjust.browser.site_priors`). A level the document has nothing for is
        removed, so a cell prior from an earlier page never lingers. The engine's state keeps
        its priors, so a slot whose priors of this version and cell are installed already is
        left alone (the sync state records them; :meth:`forget` clears the record).
        """
        doc, config = self.priors, self.config
        if doc is None or config is None or slot not in doc.counts:
            return False
        cell = doc.cell_of(context)
        if self.installed.get(slot) == (doc.version, cell):
            return True
        schema, strength = engine.schema(), float(engine.params["prior_strength"])
        site = doc.site_stats(
            slot,
            schema,
            strength,
            config.shrinkage,
            cap=config.site_prior_n,
            floor=config.site_floor_n,
        )
        segment = None
        if cell != "*":
            segment = doc.stats(
                slot, cell, schema, strength, config.shrinkage, cap=config.segment_prior_n
            )
        if site is None and segment is None:
            return False
        fallback = (site or segment)[0]
        for level, prior in (("site", site), ("segment", segment)):
            stats, weight = prior if prior is not None else (fallback, 0.0)
            engine.set_prior(slot, stats, weight, level=level)
        self.installed[slot] = (doc.version, cell)
        return True

    # -- exposures now, rewards later ------------------------------------------------------

    def record_shown(
        self,
        event_id: str,
        slot: str,
        variant: str,
        *,
        variants: Sequence[str],
        holdout: bool,
        context: Mapping[str, Any],
        now: float,
    ) -> bool:
        """Count a seen decision's exposure (within the period's bound); True if counted.

        ``variants`` are those the page offers in ``slot``: local noise covers each of them
        (or the declared ones, once the priors list the slot), so an upload's keys never tell
        which one was shown. Without a priors document (version 0, before any publication,
        will do) nothing is counted: the device learns the site's cells and bounds from it.
        """
        doc = self.priors
        if self.upload_blocked() is not None or doc is None:
            return False
        declared = doc.variants.get(slot)
        if doc.version > 0 and (declared is None or (not holdout and variant not in declared)):
            return False  # a published version lists every declared slot: the server refuses
        key = HOLDOUT if holdout else variant
        if not self.budget.take_shown(
            slot, now=now, max_shown=doc.max_shown, period_s=doc.period_s
        ):
            return False
        self._prune_open(now, doc.period_s)
        cell = doc.cell_of(context)
        self.open[event_id] = Seen(slot, key, cell, now)
        self._counts(slot, cell, key)[0] += 1.0
        self.offered[slot] = list(dict.fromkeys([*self.offered.get(slot, []), *variants]))
        return True

    def record_reward(self, event_id: str, reward: float, *, now: float) -> bool:
        """Add a reward attributed to ``event_id`` if its exposure was counted; True if so."""
        seen = self.open.pop(event_id, None)
        doc = self.priors
        if seen is None or doc is None or self.upload_blocked() is not None:
            return False
        granted = self.budget.take_reward(
            seen.slot, float(reward), now=now, max_shown=doc.max_shown, period_s=doc.period_s
        )
        if granted > 0:
            self._counts(seen.slot, seen.cell, seen.variant)[1] += granted
        return True

    # -- uploads ------------------------------------------------------------------------------

    def next_upload(self, rng: np.random.Generator | None = None) -> dict[str, Any] | None:
        """The batch to POST now (the pending one again, or a new one), or None."""
        if self.upload_blocked() is not None:
            return None
        if self.pending is not None:
            self.attempts += 1
            if self.attempts <= MAX_ATTEMPTS:
                return self.pending
            self.pending = None
        if not self.unsent or self.priors is None:
            return None
        config = self.config
        rng = rng or np.random.default_rng(secrets.randbits(128))
        slots = {}
        for slot in list(self.unsent):
            cells = self.unsent[slot]
            cell = next(iter(cells))
            counts = cells.pop(cell)
            if not cells:
                del self.unsent[slot]
            slots[slot] = self._slot_body(slot, cell, counts, rng)
        privacy: dict[str, Any] = {"mode": config.mode}
        if config.mode == "local":
            privacy["epsilon"] = float(config.epsilon)
        self.pending = {
            "v": UPLOAD_VERSION,
            "batch_id": secrets.token_hex(16),
            "privacy": privacy,
            "slots": slots,
        }
        self.attempts = 1
        return self.pending

    def acknowledged(self, batch_id: str) -> bool:
        """The server stored ``batch_id``: forget the pending batch. False if it is not ours."""
        if self.pending is None or self.pending.get("batch_id") != batch_id:
            return False
        self.pending, self.attempts = None, 0
        self.uploaded += 1
        return True

    def rejected(self, batch_id: str) -> bool:
        """The server refused ``batch_id`` for good (a 4xx): drop it, never resend it."""
        if self.pending is None or self.pending.get("batch_id") != batch_id:
            return False
        self.pending, self.attempts = None, 0
        return True

    # -- helpers ------------------------------------------------------------------------------

    def _counts(self, slot: str, cell: str, key: str) -> list[float]:
        return self.unsent.setdefault(slot, {}).setdefault(cell, {}).setdefault(key, [0.0, 0.0])

    def _slot_body(
        self, slot: str, cell: str, counts: dict[str, list[float]], rng: np.random.Generator
    ) -> dict[str, Any]:
        """One slot's entry: exact counts (aggregate) or every declared number noised (local)."""
        config, doc = self.config, self.priors
        holdout = counts.pop(HOLDOUT, [0.0, 0.0])
        if config.mode == "local":
            names = doc.variants.get(slot) or self.offered.get(slot, [])
            flat = [x for v in names for x in counts.get(v, [0.0, 0.0])] + holdout
            noisy = local_noise(flat, config.epsilon, doc.max_shown, rng)
            variants = {
                v: {"shown": noisy[2 * i], "reward": noisy[2 * i + 1]} for i, v in enumerate(names)
            }
            holdout_body = {"shown": noisy[-2], "reward": noisy[-1]}
        else:
            variants = {v: _exact(n, r) for v, (n, r) in counts.items()}
            holdout_body = _exact(*holdout)
        return {"cell": cell, "variants": variants, "holdout": holdout_body}

    def _prune_open(self, now: float, period_s: float) -> None:
        """Decisions seen more than a period ago can no longer earn a reward worth keeping."""
        for eid in [eid for eid, s in self.open.items() if now - s.t > period_s]:
            del self.open[eid]

    def _drop_unsent(self) -> None:
        self.pending, self.attempts, self.unsent, self.open = None, 0, {}, {}


def _exact(shown: float, reward: float) -> dict[str, float | int]:
    """Aggregate-mode counts: an integer exposure count, a reward number."""
    return {"shown": int(shown), "reward": int(reward) if reward == int(reward) else reward}
