"""What every build module shares: the paths, the one error type, the log and the dist/ writer."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DIST = ROOT / "dist"
CACHE = Path(os.environ.get("MICROADJUST_CACHE", Path.home() / ".cache" / "microadjust"))

COMPRESSIBLE = {".js", ".mjs", ".json", ".wasm", ".html", ".css", ".svg", ".txt"}


class BuildError(RuntimeError):
    """A build step failed; the message says which file and what to do."""


def log(message: str) -> None:
    print(f"[build] {message}", flush=True)


def write(path: Path, data: bytes) -> None:
    """Write a file and, for text-like types, a gzip twin the server can send as is."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if path.suffix in COMPRESSIBLE and len(data) > 1024:
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(data, 9, mtime=0))
