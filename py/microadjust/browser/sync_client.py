"""The worker's side of the optional sync server: priors down, noisy aggregates up.

Pure Python (it runs in the browser worker under Pyodide and, for tests, on CPython); the
worker's JavaScript only does ``fetch()`` and hands the JSON over. The worker ⇄ server
protocol (version 1) is:

* ``GET {url}/v1/sites/{site}/priors`` → ``{"site", "version", "slots": {slot: stats},
  "upload": {"min_events"}}`` where ``stats`` is the engine's statistics format
  (:mod:`microadjust.core.priors`); :meth:`SyncClient.apply_priors` installs each slot's stats as
  the engine's ``"site"`` prior.
* ``POST {url}/v1/sites/{site}/uploads`` with header ``X-Microadjust-Key`` and the body from
  :meth:`SyncClient.next_upload`: ``{"v": 1, "batch_id", "events", "schema", "privacy",
  "slots"}`` (``schema`` is the engine's statistics schema, so the server builds priors in the
  same feature space).
  Every statistic in it is clipped and noised on the device (:mod:`microadjust.browser.privacy`).
  The batch is kept, byte for byte, until the server acknowledges it
  (:meth:`SyncClient.acknowledged`), so a retry carries the same ``batch_id`` and the server
  counts it once.

Uploads happen only when the site enables them (``config.sync.upload: true``), the visitor
consented (the loader's consent: granted, or not required by the site), Global Privacy Control
is off, and at least ``min_events`` decisions with a known outcome were made since the last
upload.

>>> client = SyncClient()
>>> client.configure({"site": "shop", "key": "k", "upload": True}, gpc=True, consent=True)
>>> client.upload_blocked()
'Global Privacy Control is on'
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.errors import InvalidParameter, InvalidPrior, InvalidSlot
from .privacy import DEFAULT_DELTA, DEFAULT_EPSILON, Accumulator

__all__ = ["SyncConfig", "SyncClient", "UPLOAD_VERSION"]

UPLOAD_VERSION = 1
DEFAULT_MIN_EVENTS = 20
MAX_ATTEMPTS = 50  # a batch the server keeps refusing is dropped after this many tries


@dataclass(frozen=True, slots=True)
class SyncConfig:
    """``config.sync`` of the page: where the server is and what the site allows."""

    site: str
    url: str = ""  # the sync server's base URL; "" is this site's own origin
    key: str = ""
    upload: bool = False  # the site enables contributions
    epsilon: float = DEFAULT_EPSILON
    delta: float = DEFAULT_DELTA
    min_events: int = DEFAULT_MIN_EVENTS
    interval_s: float = 60.0  # how often the worker tries to upload
    prior_weight: float = 1.0  # weight of the site prior in the engine

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> SyncConfig:
        """Validate ``config.sync``; :class:`InvalidParameter` names the bad field."""
        if not isinstance(raw, Mapping):
            raise InvalidParameter(f"config.sync must be an object, got {type(raw).__name__}")
        unknown = sorted(set(raw) - set(cls.__dataclass_fields__))
        if unknown:
            raise InvalidParameter(f"config.sync: unknown field(s) {unknown}")
        if not isinstance(raw.get("site"), str) or not raw["site"]:
            raise InvalidParameter("config.sync.site must be a non-empty string")
        for field in ("url", "key"):
            if not isinstance(raw.get(field, ""), str):
                raise InvalidParameter(f"config.sync.{field} must be a string")
        if not isinstance(raw.get("upload", False), bool):
            raise InvalidParameter("config.sync.upload must be true or false")
        checks = {
            "epsilon": lambda v: 0 < v <= 1,
            "delta": lambda v: 0 < v < 1e-3,
            "interval_s": lambda v: v >= 1,
            "prior_weight": lambda v: v >= 0,
        }
        for field, ok in checks.items():
            v = raw.get(field, cls.__dataclass_fields__[field].default)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise InvalidParameter(f"config.sync.{field} must be a number, got {v!r}")
            if not ok(v):
                raise InvalidParameter(f"config.sync.{field} = {v!r} is out of range")
        n = raw.get("min_events", DEFAULT_MIN_EVENTS)
        if type(n) is not int or n < 1:
            raise InvalidParameter(f"config.sync.min_events must be an int >= 1, got {n!r}")
        return cls(**{k: raw[k] for k in raw})

    def endpoint(self, what: str) -> str:
        """URL of ``priors`` or ``uploads`` for this site."""
        return f"{self.url.rstrip('/')}/v1/sites/{self.site}/{what}"


class SyncClient:
    """Sync state of one device: config, consent, the upload watermark and the pending batch."""

    def __init__(self) -> None:
        self.config: SyncConfig | None = None
        self.gpc = False
        self.consent = False
        self.server_min_events = 0
        self.priors_version: int | None = None
        self.watermark: list[Any] | None = None  # fingerprint of the last uploaded log record
        self.pending: dict[str, Any] | None = None  # the batch waiting for acknowledgement
        self.attempts = 0
        self.uploaded = 0  # batches acknowledged on this device

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
        signal and consent (the loader's: granted, or not required by the site and no GPC),
        and restore the state saved on this device."""
        self.config = None if raw is None else SyncConfig.parse(raw)
        self.gpc = gpc is True
        self.consent = consent is True
        if isinstance(saved, Mapping):
            self.watermark = saved.get("watermark")
            pending = saved.get("pending")
            self.pending = pending if isinstance(pending, Mapping) else None
            self.attempts = int(saved.get("attempts", 0))
            self.uploaded = int(saved.get("uploaded", 0))
        if self.upload_blocked() is not None:
            self.pending = None  # e.g. consent withdrawn: a batch built earlier is never sent

    def set_consent(self, granted: bool) -> None:
        """Consent granted or withdrawn; a withdrawn consent drops the unsent batch."""
        self.consent = granted is True
        if self.upload_blocked() is not None:
            self.pending = None

    def state(self) -> dict[str, Any]:
        """What to persist on the device (inside the worker's checkpoint)."""
        return {
            "watermark": self.watermark,
            "pending": self.pending,
            "attempts": self.attempts,
            "uploaded": self.uploaded,
        }

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

    def apply_priors(self, engine: Any, priors: Any) -> list[str]:
        """Install the server's per-slot priors as the engine's ``"site"`` priors.

        Returns the messages of slots that could not be used (their old prior stays).
        """
        if not isinstance(priors, Mapping) or not isinstance(priors.get("slots"), Mapping):
            return ["the server's priors lack a 'slots' object"]
        weight = 1.0 if self.config is None else self.config.prior_weight
        problems = []
        for slot, stats in priors["slots"].items():
            try:
                engine.set_prior(slot, stats, weight, level="site")
            except (InvalidPrior, InvalidSlot) as error:
                problems.append(f"site prior of slot {slot!r} not used: {error}")
        version = priors.get("version")
        self.priors_version = version if type(version) is int else None
        upload = priors.get("upload")
        if isinstance(upload, Mapping) and type(upload.get("min_events")) is int:
            self.server_min_events = upload["min_events"]
        return problems

    # -- aggregates up ---------------------------------------------------------------------

    def next_upload(
        self, engine: Any, rng: np.random.Generator | None = None
    ) -> dict[str, Any] | None:
        """The batch to POST now (the pending one again, or a new one), or None."""
        if self.upload_blocked() is not None:
            return None
        if self.pending is not None:
            self.attempts += 1
            if self.attempts <= MAX_ATTEMPTS:
                return self.pending
            self.pending = None
        records = self._new_records(engine.log())
        min_events = max(self.config.min_events, self.server_min_events)
        if len(records) < min_events:
            return None
        acc = self._accumulate(engine, records)
        rng = rng or np.random.default_rng(secrets.randbits(128))
        released = acc.release(rng, self.config.epsilon, self.config.delta)
        self.pending = {
            "v": UPLOAD_VERSION,
            "batch_id": secrets.token_hex(16),
            "events": acc.events,
            "schema": engine.schema(),
            **released,
        }
        self.attempts = 1
        self.watermark = _fingerprint(records[-1])
        return self.pending

    def acknowledged(self, batch_id: str) -> bool:
        """The server stored ``batch_id``: forget the pending batch. False if it is not ours."""
        if self.pending is None or self.pending.get("batch_id") != batch_id:
            return False
        self.pending = None
        self.attempts = 0
        self.uploaded += 1
        return True

    def rejected(self, batch_id: str) -> bool:
        """The server refused ``batch_id`` for good (a 4xx): drop it, never resend it."""
        if self.pending is None or self.pending.get("batch_id") != batch_id:
            return False
        self.pending = None
        self.attempts = 0
        return True

    def _new_records(self, log: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if self.watermark is None:
            return log
        for i in range(len(log) - 1, -1, -1):
            if _fingerprint(log[i]) == self.watermark:
                return log[i + 1 :]
        return log  # the watermark rolled out of the bounded log: everything in it is new

    def _accumulate(self, engine: Any, records: list[dict[str, Any]]) -> Accumulator:
        """Clipped sums of ``records``, with importance weights of the current policy."""
        acc = Accumulator()
        for rec in records:
            for name in rec["actions"]:
                acc.declare(rec["slot"], name)
            probs = engine.policy_probabilities(rec["context"], rec["actions"], slot=rec["slot"])
            weight = probs.get(rec["action"], 0.0) / max(rec["propensity"], 1e-12)
            acc.add(
                rec["slot"],
                rec["action"],
                rec["reward"],
                weight=weight,
                holdout=bool(rec.get("holdout")),
            )
        return acc


def _fingerprint(record: Mapping[str, Any]) -> list[Any]:
    return [record["slot"], record["action"], record["t"], record["propensity"], record["reward"]]
