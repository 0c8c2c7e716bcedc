"""Command-line options of the sync server, shared by ``serve.py --sync`` and
``python -m microadjust.server`` (the API alone, e.g. behind a CDN that serves the bundle)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from .config import Site, SyncSettings
from .limits import add_limit_arguments, limits_from_args

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
        "--site", action="append", default=[], metavar="NAME=KEY",
        help="a site allowed to sync, with its upload key (repeatable)",
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
    group.add_argument("--min-events", type=int, default=20, help="minimum events per upload")
    group.add_argument("--max-body", type=int, default=64 * 1024, help="max upload bytes")
    group.add_argument(
        "--rate", type=float, default=5.0,
        help="sustained priors requests/s per client, per instance (default 5)",
    )  # fmt: skip
    group.add_argument("--burst", type=int, default=60, help="burst of priors requests per client")
    group.add_argument(
        "--half-life-days", type=float, default=30.0, help="decay of old contributions"
    )
    group.add_argument(
        "--publish-interval", type=float, default=60.0,
        help="seconds between automatic publications of a changed prior",
    )  # fmt: skip
    add_limit_arguments(parser)


def settings_from_args(args: argparse.Namespace) -> SyncSettings:
    """Settings from parsed options (ValueError with a message on a bad value)."""
    sites = [Site.parse(text, args.min_events) for text in args.site]
    return SyncSettings(
        sites={site.name: site for site in sites},
        admin_token=args.admin_token,
        origins=tuple(args.allow_origin),
        data_dir=args.data_dir,
        database_url=args.database_url,
        max_body_bytes=args.max_body,
        rate_per_s=args.rate,
        rate_burst=args.burst,
        half_life_days=args.half_life_days,
        publish_interval_s=args.publish_interval,
        limits=limits_from_args(args),
    )
