"""``python -m microadjust.server --sites sites.json``: the sync API alone (no static bundle)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING

from .cli import add_sync_arguments, settings_from_args

if TYPE_CHECKING:
    from starlette.applications import Starlette

ARGV_ENV = "MICROADJUST_SERVER_ARGV"  # how each worker process gets the parent's options


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m microadjust.server", description="The microadjust sync API."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8001, help="port (default 8001)")
    parser.add_argument(
        "--workers", type=int, default=1,
        help="server processes sharing the port (default 1); with several, use --database-url "
        "so that they share uploads, priors and rate limits",
    )  # fmt: skip
    add_sync_arguments(parser)
    return parser


def app_from_environment() -> Starlette:
    """The app of one worker process, built from the options the parent was started with."""
    from .api import create_app

    return create_app(settings_from_args(parser().parse_args(json.loads(os.environ[ARGV_ENV]))))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    options = parser()
    args = options.parse_args(argv)
    try:
        settings = settings_from_args(args)
    except ValueError as exc:
        options.error(str(exc))
    if args.workers < 1:
        options.error(f"--workers must be >= 1, got {args.workers}")
    from .serving import serve

    print(
        f"sync API on http://{args.host}:{args.port}/ ({settings.storage_label}, "
        f"{args.workers} worker{'s' if args.workers > 1 else ''})",
        flush=True,
    )
    if args.workers == 1:
        from .api import create_app

        app = create_app(settings)
    else:
        os.environ[ARGV_ENV] = json.dumps(argv)
        app = "microadjust.server.__main__:app_from_environment"
    serve(app, host=args.host, port=args.port, limits=settings.limits, workers=args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
