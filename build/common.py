"""What every build module shares: the paths, the one error type, the log and the dist/ writer."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DIST = ROOT / "dist"
CACHE = Path(os.environ.get("MICROADJUST_CACHE", Path.home() / ".cache" / "microadjust"))

COMPRESSIBLE = {".js", ".mjs", ".json", ".wasm", ".html", ".css", ".svg", ".txt"}


class BuildError(RuntimeError):
    """A build step failed; the message says which file and what to do."""


def log(message: str) -> None:
    print(f"[build] {message}", flush=True)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write(path: Path, data: bytes, compress: bool = False) -> None:
    """Write a file and, for text-like types or when asked, its compressed twins."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if (compress or path.suffix in COMPRESSIBLE) and len(data) > 1024:
        write_twins(path, data)


def write_twins(path: Path, data: bytes) -> None:
    """``.gz`` and ``.br`` beside the file, compressed once at build time, as hard as they go."""
    try:
        import brotli
    except ImportError:
        raise BuildError(
            "the build needs the brotli package for the .br twins: pip install brotli"
            " (it is in the [server] and [test] extras of pyproject.toml)"
        ) from None
    path.with_name(path.name + ".gz").write_bytes(gzip.compress(data, 9, mtime=0))
    cached = CACHE / "brotli" / f"{sha256(data)}.br"  # brotli at quality 11 takes a while
    if not cached.exists():
        cached.parent.mkdir(parents=True, exist_ok=True)
        cached.write_bytes(brotli.compress(data, quality=11, lgwin=24))
    shutil.copyfile(cached, path.with_name(path.name + ".br"))
