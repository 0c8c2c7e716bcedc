"""Operational limits of the sync server: timeouts, concurrency, rate limits, trusted proxies.

One frozen record (:class:`ServingLimits`, ``SyncSettings.limits``) and its command-line options,
shared by ``serve.py`` and ``python -m microadjust.server``. Each default is chosen so that an
honest browser never meets it and a hostile one gives up its connection or its quota quickly.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
from dataclasses import dataclass

__all__ = ["RateRule", "ServingLimits", "add_limit_arguments", "limits_from_args"]


@dataclass(frozen=True, slots=True)
class RateRule:
    """A token bucket: ``per_s`` requests a second sustained, ``burst`` at once."""

    per_s: float
    burst: int

    def __post_init__(self) -> None:
        if not (math.isfinite(self.per_s) and self.per_s > 0) or self.burst < 1:
            raise ValueError(f"a rate limit needs per_s > 0 and burst >= 1, got {self}")

    @classmethod
    def parse(cls, text: str) -> RateRule:
        """``"RATE/BURST"`` as given on the command line, e.g. ``"0.5/20"``."""
        rate, sep, burst = text.partition("/")
        try:
            if not sep:
                raise ValueError
            return cls(float(rate), int(burst))
        except ValueError:
            raise ValueError(
                f"{text!r}: expected RATE/BURST, e.g. 0.5/20 (requests a second, then the burst)"
            ) from None


@dataclass(frozen=True, slots=True)
class ServingLimits:
    """Limits that keep one client from stalling, flooding or impersonating others."""

    header_timeout_s: float = 10.0  # a request line and headers must arrive within this
    body_timeout_s: float = 10.0  # a request body must arrive within this (408 after)
    keep_alive_s: int = 5  # an idle keep-alive connection is closed after this
    max_concurrency: int = 2000  # connections + requests in flight per process; 503 beyond
    backlog: int = 2048  # connections waiting to be accepted
    upload_per_ip: RateRule = RateRule(1.0, 60)  # an IP's uploads, across all instances
    upload_per_key: RateRule = RateRule(500.0, 5000)  # a site's uploads (its key is public)
    admin_per_ip: RateRule = RateRule(5.0, 100)  # admin API and /report, failed logins included
    trusted_proxies: tuple[str, ...] = ()  # CIDRs whose X-Forwarded-For is believed
    health_every_s: float = 1.0  # /v1/health writes to the store at most this often

    def __post_init__(self) -> None:
        if not (math.isfinite(self.health_every_s) and self.health_every_s >= 0):
            raise ValueError(f"health_every_s must be >= 0 seconds, got {self.health_every_s!r}")
        for name in ("header_timeout_s", "body_timeout_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number of seconds > 0, got {value!r}")
        for name in ("keep_alive_s", "max_concurrency", "backlog"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        for cidr in self.trusted_proxies:
            try:
                ipaddress.ip_network(cidr)
            except ValueError:
                raise ValueError(
                    f"trusted proxy {cidr!r} is not an address or network (CIDR), "
                    "e.g. 10.0.0.0/8 or 127.0.0.1"
                ) from None


def _rate_rule(text: str) -> RateRule:
    try:
        return RateRule.parse(text)
    except ValueError as exc:  # argparse shows an ArgumentTypeError's message as it is
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_limit_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the serving limits' options to ``parser``."""
    d = ServingLimits()
    group = parser.add_argument_group(
        "serving limits",
        "Timeouts and limits that keep slow or hostile clients from stalling the server. "
        "Rate limits are shared by all instances when --database-url is set.",
    )
    numbers: list[tuple[str, type, float, str, str]] = [
        ("--header-timeout", float, d.header_timeout_s, "S",
         "seconds for a request line and headers to arrive"),
        ("--body-timeout", float, d.body_timeout_s, "S",
         "seconds for a request body to arrive; 408 after"),
        ("--keep-alive", int, d.keep_alive_s, "S",
         "seconds an idle keep-alive connection stays open"),
        ("--max-concurrency", int, d.max_concurrency, "N",
         "connections and requests in flight per process; beyond, 503"),
        ("--backlog", int, d.backlog, "N", "connections queued before accept"),
        ("--health-every", float, d.health_every_s, "S",
         "/v1/health writes to the store at most once per S seconds per process; "
         "probes in between get the last answer"),
    ]  # fmt: skip
    for option, kind, default, metavar, help_text in numbers:
        group.add_argument(
            option, type=kind, default=default, metavar=metavar,
            help=f"{help_text} (default {default:g})",
        )  # fmt: skip
    for option, name, rule in (
        ("--upload-rate-ip", "uploads per client IP", d.upload_per_ip),
        ("--upload-rate-key", "uploads per site (upload key)", d.upload_per_key),
        ("--admin-rate-ip", "admin API and /report requests per client IP", d.admin_per_ip),
    ):
        group.add_argument(
            option, type=_rate_rule, default=rule, metavar="RATE/BURST",
            help=f"{name}: requests a second, then the burst (default {rule.per_s:g}/{rule.burst})",
        )  # fmt: skip
    group.add_argument(
        "--trusted-proxy", action="append", default=[], metavar="CIDR",
        help="a reverse proxy (address or network) whose X-Forwarded-For is believed; repeatable. "
        "Only when the direct peer is trusted is the header's right-most untrusted address "
        "taken as the client (default: none, the header is ignored)",
    )  # fmt: skip


def limits_from_args(args: argparse.Namespace) -> ServingLimits:
    """Limits from parsed options (ValueError with a message on a bad value)."""
    return ServingLimits(
        header_timeout_s=args.header_timeout,
        body_timeout_s=args.body_timeout,
        keep_alive_s=args.keep_alive,
        max_concurrency=args.max_concurrency,
        backlog=args.backlog,
        upload_per_ip=args.upload_rate_ip,
        upload_per_key=args.upload_rate_key,
        admin_per_ip=args.admin_rate_ip,
        trusted_proxies=tuple(args.trusted_proxy),
        health_every_s=args.health_every,
    )
