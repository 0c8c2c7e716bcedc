"""Command-line options of the sync server, shared by ``serve.py --sync`` and
``python -m microadjust.server`` (the API alone, e.g. behind a CDN that serves the bundle)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from .config import SyncSettings, load_sites, parse_site_option
from .limits import add_limit_arguments, limits_from_args

DEFAULT = SyncSettings()  # the one copy of the defaults: the options show them

__all__ = ["add_sync_arguments", "settings_from_args"]


def add_sync_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the sync server's options to ``parser``."""
    group = parser.add_argument_group("sync server")
    group.add_argument(
        "--data-dir", type=Path, default=Path("data"),
        help="directory of the SQLite database (default ./data)",
    )  # fmt: skip
    group.add_argument(
        "--database-url", default=os.environ.get("MICROADJUST_DATABASE_URL"),
        help="postgresql://user@host/db: share one store between several server instances "
        "(default: SQLite in --data-dir; env MICROADJUST_DATABASE_URL)",
    )  # fmt: skip
    group.add_argument(
        "--sites", type=Path, metavar="FILE",
        help="JSON file of declared sites: {name: {key, slots, cells}} (docs/sync-protocol.md)",
    )  # fmt: skip
    group.add_argument(
        "--site", action="append", default=[], metavar="NAME=KEY",
        help="a site with its upload key and no declared slots yet; declare them with "
        "PUT /v1/admin/sites/NAME (repeatable)",
    )  # fmt: skip
    group.add_argument(
        "--admin-token", default=os.environ.get("MICROADJUST_ADMIN_TOKEN"),
        help="token for the admin API and /report (env MICROADJUST_ADMIN_TOKEN; "
        "no token: admin disabled)",
    )  # fmt: skip
    group.add_argument(
        "--allow-origin", action="append", default=[], metavar="ORIGIN",
        help="an origin whose pages may call the API cross-origin (CORS; repeatable)",
    )  # fmt: skip
    group.add_argument("--max-body", type=int, default=16 * 1024, help="max upload bytes")
    group.add_argument(
        "--max-shown", type=int, default=DEFAULT.max_shown,
        help="exposures (and reward units) one visitor contributes per slot and period",
    )  # fmt: skip
    group.add_argument(
        "--bucket-cap", type=float, default=8.0,
        help="visitors' worth one source (IP) may weigh per slot and increment ('inf': no cap)",
    )  # fmt: skip
    group.add_argument(
        "--rho-per-release", type=float, default=DEFAULT.rho_per_release,
        help="zCDP of one visitor-period over everything ever published: each upload is "
        "noised once, in one released increment (docs/sync-protocol.md section 5)",
    )  # fmt: skip
    group.add_argument(
        "--upload-budget", type=int, default=DEFAULT.upload_budget, metavar="N",
        help="uploads a site may store a day (per period), from all addresses together, shared "
        f"by all instances; beyond, 429 (default {DEFAULT.upload_budget:,})",
    )  # fmt: skip
    group.add_argument("--keep-versions", type=int, default=50,
                       help="published prior versions kept")  # fmt: skip
    group.add_argument(
        "--rate", type=float, default=5.0,
        help="sustained priors requests/s per client, per instance (default 5)",
    )  # fmt: skip
    group.add_argument("--burst", type=int, default=60, help="burst of priors requests per client")
    group.add_argument(
        "--half-life-days", type=float, default=DEFAULT.half_life_days,
        help="decay of old increments in the published sums (costs no privacy: the noise of "
        "a sum grows as the root of its squared weights)",
    )  # fmt: skip
    group.add_argument(
        "--publish-interval", type=float, default=DEFAULT.publish_interval_s,
        help="seconds between automatic publications of a changed prior, each releasing one "
        "increment (fewer, larger increments: less noise in the sums, staler priors)",
    )  # fmt: skip
    add_limit_arguments(parser)


def settings_from_args(args: argparse.Namespace) -> SyncSettings:
    """Settings from parsed options (ValueError with a message on a bad value)."""
    sites = load_sites(args.sites) if args.sites else {}
    for text in args.site:
        name, declaration = parse_site_option(text)
        sites.setdefault(name, declaration)
    return SyncSettings(
        sites=sites,
        admin_token=args.admin_token,
        origins=tuple(args.allow_origin),
        data_dir=args.data_dir,
        database_url=args.database_url,
        max_body_bytes=args.max_body,
        rate_per_s=args.rate,
        rate_burst=args.burst,
        half_life_days=args.half_life_days,
        publish_interval_s=args.publish_interval,
        max_shown=args.max_shown,
        bucket_cap=args.bucket_cap,
        upload_budget=args.upload_budget,
        rho_per_release=args.rho_per_release,
        keep_versions=args.keep_versions,
        limits=limits_from_args(args),
    )
