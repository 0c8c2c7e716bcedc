"""Settings of the sync server: declared sites, the admin token, bounds, privacy, storage."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from ..browser.privacy import DEFAULT_MAX_SHOWN
from .limits import RateRule, ServingLimits
from .models import SiteDeclaration

SITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

__all__ = ["SITE_NAME", "SyncSettings", "load_sites", "parse_site_option"]


def load_sites(path: Path) -> dict[str, SiteDeclaration]:
    """The sites file (``{"shop": {"key", "slots", "cells"}}``); ValueError saying what is wrong."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"--sites {path}: cannot read a JSON object: {exc}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"--sites {path}: expected an object of sites, got {type(raw).__name__}")
    sites = {}
    for name, body in raw.items():
        if not SITE_NAME.match(name):
            raise ValueError(f"--sites {path}: site name {name!r} must match {SITE_NAME.pattern}")
        try:
            sites[name] = SiteDeclaration.model_validate(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in (name, *first["loc"]))
            raise ValueError(f"--sites {path}: {where}: {first['msg']}") from None
    return sites


def parse_site_option(text: str) -> tuple[str, SiteDeclaration]:
    """``--site NAME=KEY``: a site with no declared slots yet (declare them with the admin API)."""
    name, sep, key = text.partition("=")
    if not sep or not SITE_NAME.match(name) or len(key) < 8:
        raise ValueError(
            f"--site {text!r}: expected NAME=KEY, NAME of letters, digits, '_', '.', '-' "
            "and KEY of at least 8 characters"
        )
    return name, SiteDeclaration(key=key)


@dataclass(frozen=True, slots=True)
class SyncSettings:
    """Everything the sync API is configured with (see ``serve.py --help``)."""

    sites: Mapping[str, SiteDeclaration] = field(default_factory=dict)
    admin_token: str | None = None
    origins: tuple[str, ...] = ()  # CORS: only these origins may call the API from a page
    data_dir: Path = Path("data")  # SQLite lives here unless database_url is set
    database_url: str | None = None  # postgresql://... to share one store between instances
    max_body_bytes: int = 16 * 1024
    rate_per_s: float = 5.0  # sustained requests per second per client (per instance)
    rate_burst: int = 60
    # the per-visitor contribution bound (protocol section 2): 2 halves the release noise of 4
    # at the same rho: more lift in 10 of 11 paired fleet runs (README, "Fleet learning")
    max_shown: int = DEFAULT_MAX_SHOWN
    period_s: int = 86_400
    # uploads a site may store per period, whatever their addresses (a token bucket refilled
    # over the period, shared by all instances): far above an honest busy site (README,
    # "Serving limits"), far below what the per-site rate alone lets through (43 million a day)
    upload_budget: int = 1_000_000
    # aggregation and publication (protocol section 5)
    # Each upload is released once, in the increment of the publication after it arrives
    # (release.py): one visitor-period costs rho_per_release over its whole life, whatever
    # the half-life and the publication cadence. 8 (epsilon 27 at delta 1e-5, against 53 for
    # the re-noised cumulative counts before) and 20 increments a day measured best for the
    # privacy in bench/fleet.py (README, "Fleet learning"): 4 reached 0.53 of the central
    # engine's lift on segments, 16 1.15; 8 or 48 a day did worse than 20.
    half_life_days: float = 3.0  # priors: older increments decay with this half-life
    bucket_cap: float = 8.0  # one source bucket counts for at most this many visitors an increment
    rho_per_release: float = 8.0  # zCDP of one visitor-period, over everything ever published
    # an increment is released (and a changed prior published) at most this often
    publish_interval_s: float = 4_320.0
    keep_versions: int = 50  # published versions kept (the one served is always kept)
    # serving
    cache_max_age_s: int = 60  # Cache-Control max-age of the priors
    stale_while_revalidate_s: int = 600
    refresh_s: float = 1.0  # how stale an instance's in-memory prior may be (shared stores)
    limits: ServingLimits = field(default_factory=ServingLimits)  # timeouts, rates, proxies

    def __post_init__(self) -> None:
        if self.admin_token is not None and len(self.admin_token) < 16:
            raise ValueError("the admin token must have at least 16 characters")
        for name in ("rate_per_s", "half_life_days", "bucket_cap", "rho_per_release"):
            value = getattr(self, name)
            if not (math.isfinite(value) or value == math.inf) or value <= 0:
                raise ValueError(f"{name} must be > 0 (inf allowed), got {value!r}")
        for name in ("max_shown", "period_s", "upload_budget", "keep_versions", "max_body_bytes"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        for name in self.sites:
            if not SITE_NAME.match(name):
                raise ValueError(f"site name {name!r} must match {SITE_NAME.pattern}")
        for origin in self.origins:
            if not re.match(r"^https?://[^/\s]+$", origin):
                raise ValueError(f"origin {origin!r} must look like https://host[:port]")

    @property
    def upload_budget_rule(self) -> RateRule:
        """The site's budget as a token bucket: a whole period's worth at once, then refilled
        evenly, so any one period stores at most twice the budget and a busy hour never
        meets it."""
        return RateRule(self.upload_budget / self.period_s, self.upload_budget)

    @property
    def storage_label(self) -> str:
        return "postgresql" if self.database_url else "sqlite"
