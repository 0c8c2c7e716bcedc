"""Build ``dist/`` when missing or stale, then serve the demo at / and the bundle at /microadjust/.

python serve.py                      # http://127.0.0.1:8000
python serve.py --port 8080 --host 127.0.0.1
python serve.py --sync --sites sites.json --admin-token ADMIN-TOKEN   # + the sync API
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description="Build and serve microadjust and its demo.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--no-build", action="store_true", help="serve dist/ as it is")
    parser.add_argument(
        "--sync", action="store_true", help="also serve the sync API (priors, uploads, /report)"
    )
    try:
        from microadjust.server.cli import add_sync_arguments, settings_from_args

        add_sync_arguments(parser)
    except ImportError:
        settings_from_args = None
    args = parser.parse_args()

    try:
        import uvicorn

        from microadjust.server.static import StaticBundle
    except ImportError as error:
        print(
            f"serve.py: {error.name} is not installed. Set up first:\n"
            "  python3 -m venv .venv && .venv/bin/pip install -e '.[server]'\n"
            "then run: .venv/bin/python serve.py",
            file=sys.stderr,
        )
        return 2
    if not args.no_build:
        built = subprocess.run([sys.executable, str(ROOT / "build" / "bundle.py")], check=False)
        if built.returncode != 0:
            return built.returncode
    if not (ROOT / "dist" / "index.html").exists():
        print("serve.py: dist/ is empty; run without --no-build", file=sys.stderr)
        return 2
    app = StaticBundle(ROOT / "dist")
    if args.sync:
        from microadjust.server.api import create_app

        try:
            settings = settings_from_args(args)
        except ValueError as error:
            parser.error(str(error))
        app = create_app(settings, static=app)
        print(f"sync API at http://{args.host}:{args.port}/v1/ ({settings.storage_label})")
    print(f"serving the demo at http://{args.host}:{args.port}/", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
