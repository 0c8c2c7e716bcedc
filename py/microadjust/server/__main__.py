"""``python -m microadjust.server --sites sites.json``: the sync API alone (no static bundle)."""

from __future__ import annotations

import argparse
import sys

from .cli import add_sync_arguments, settings_from_args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The microadjust sync API.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8001, help="port (default 8001)")
    add_sync_arguments(parser)
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    import uvicorn

    from .api import create_app

    print(f"sync API on http://{args.host}:{args.port}/ ({settings.storage_label})", flush=True)
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
