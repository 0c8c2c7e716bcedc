"""Settings of the sync server: sites and their upload keys, the admin token, limits, storage."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from .limits import ServingLimits

SITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True, slots=True)
class Site:
    """A site allowed to sync: its public upload key and its minimum events per upload."""

    name: str
    key: str
    min_events: int = 20

    @classmethod
    def parse(cls, text: str, min_events: int = 20) -> Site:
        """``"name=key"`` (as given on the command line)."""
        name, sep, key = text.partition("=")
        if not sep or not SITE_NAME.match(name) or len(key) < 8:
            raise ValueError(
                f"--site {text!r}: expected NAME=KEY, NAME of letters, digits, '_', '.', '-' "
                "and KEY of at least 8 characters"
            )
        return cls(name, key, min_events)


@dataclass(frozen=True, slots=True)
class SyncSettings:
    """Everything the sync API is configured with (see ``serve.py --help``)."""

    sites: dict[str, Site] = field(default_factory=dict)
    admin_token: str | None = None
    origins: tuple[str, ...] = ()  # CORS: only these origins may call the API from a page
    data_dir: Path = Path("data")  # SQLite lives here unless database_url is set
    database_url: str | None = None  # postgresql://... to share one store between instances
    max_body_bytes: int = 64 * 1024
    rate_per_s: float = 5.0  # sustained requests per second per client (per instance)
    rate_burst: int = 60
    half_life_days: float = 30.0  # priors: older contributions decay with this half-life
    publish_interval_s: float = 60.0  # a changed prior is re-published at most this often
    cache_max_age_s: int = 300  # Cache-Control max-age of the priors
    shrinkage: float = 1.0  # prior precision of non-bias coefficients, per observation
    limits: ServingLimits = field(default_factory=ServingLimits)  # timeouts, rates, proxies

    def __post_init__(self) -> None:
        if self.admin_token is not None and len(self.admin_token) < 16:
            raise ValueError("the admin token must have at least 16 characters")
        for name, value in (
            ("rate_per_s", self.rate_per_s),
            ("half_life_days", self.half_life_days),
            ("shrinkage", self.shrinkage),
        ):
            if not (math.isfinite(value) or value == math.inf) or value <= 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
        for origin in self.origins:
            if not re.match(r"^https?://[^/\s]+$", origin):
                raise ValueError(f"origin {origin!r} must look like https://host[:port]")

    @property
    def storage_label(self) -> str:
        return "postgresql" if self.database_url else "sqlite"
