"""Vendor ``@pyscript/core`` into the bundle, wired to the self-hosted Pyodide and engine wheel.

Called by ``build/bundle.py`` after the runtime and the engine wheel are written. It adds:

    microadjust/pyscript-<version>/   the files of @pyscript/core the page needs (content never
                                        changes for a version, so the server may cache them a year)
    microadjust/pyscript.js           stable entry module: adds core.css, imports core.js
    microadjust/pyscript.json         PyScript configuration: the same-origin Pyodide as
                                        interpreter, numpy and the content-named engine wheel

A page uses them with::

    <script type="module" src="/microadjust/pyscript.js"></script>
    <script type="py" worker config="/microadjust/pyscript.json" src="my_code.py"></script>

No request leaves the origin: the interpreter is ``pyodide.mjs`` from ``pyodide-<version>/``;
``packages`` go through micropip, which looks a requirement up in ``pyodide-lock.json`` first
and only falls back to PyPI for names missing there, so the build refuses an engine wheel
whose requirements the trimmed lock file does not cover.
"""

from __future__ import annotations

import json
import re
import shutil
import zipfile
from pathlib import Path

from common import CACHE, BuildError, log, write
from npm import NpmPackage

# The last @pyscript/core whose Python side runs on Pyodide 0.27 (its default is 0.27.7):
# from 0.6.72 on, pyscript/ffi.py imports pyodide.ffi.jsnull, new in Pyodide 0.28, and in a
# worker on 0.27.7 `from pyscript import document` then fails (seen with 0.7.31).
PYSCRIPT_VERSION = "0.6.66"
PYSCRIPT_NPM = NpmPackage(
    "@pyscript/core",
    PYSCRIPT_VERSION,
    "sha512-5bYUVdAryhvjJYbjLJnJS9D7pu0a92bA+K2tkztlXzxHE78jlvs7EMDc4/GN3IIJ5BZANj8x9LM7vteIKa1MNA==",
)
ENTRY = "dist/core.js"
STYLES = ["dist/core.css"]
# core.js imports its plugins at start; the <py-editor>, <py-terminal> and <py-game> plugins
# import CodeMirror, xterm.js and more (about 1 MB) only when the page has such an element.
# Shipped: what core.js and its chunks import statically, and what the core chunk imports
# lazily, except CodeMirror; not shipped: what the plugins import lazily.
STATIC_IMPORT = re.compile(r"""\bfrom\s*["']\./([\w.-]+\.js)["']""")
LAZY_IMPORT = re.compile(r"""\bimport\s*\(\s*["']\./([\w.-]+\.js)["']\s*\)""")
LEFT_OUT = re.compile(r"^codemirror")

ENTRY_MODULE = """\
/*! microadjust: PyScript {version} from this origin, configured for the bundled Pyodide.
 * <script type="module" src="/microadjust/pyscript.js"></script>
 * <script type="py" worker config="/microadjust/pyscript.json" src="..."></script> */
const css = document.createElement('link');
css.rel = 'stylesheet';
css.href = new URL('{directory}/core.css', import.meta.url).href;
document.head.append(css);
export * from './{directory}/core.js';
"""


def build_pyscript(bundle: Path, pyodide_dir: str) -> None:
    """Write ``pyscript-<version>/``, ``pyscript.js`` and ``pyscript.json`` into ``bundle``,
    configured for the Pyodide in ``bundle / pyodide_dir``."""
    directory = f"pyscript-{PYSCRIPT_VERSION}"
    files = read_core()
    for stale in bundle.glob("pyscript-*"):
        if stale.is_dir() and stale.name != directory:
            shutil.rmtree(stale)
    for name, data in files.items():
        write(bundle / directory / name, data)
    log_size = sum(len(data) for data in files.values())
    log(
        f"@pyscript/core {PYSCRIPT_VERSION}: {len(files)} files, {log_size:,} bytes, in"
        f" {directory}/ (left out: what <py-editor> and <py-terminal> load, CodeMirror, xterm.js)"
    )
    write(
        bundle / "pyscript.js",
        ENTRY_MODULE.format(version=PYSCRIPT_VERSION, directory=directory).encode(),
    )
    config = pyscript_config(bundle, pyodide_dir)
    write(bundle / "pyscript.json", (json.dumps(config, indent=2) + "\n").encode())
    log(f"pyscript.json: interpreter {config['interpreter']}, packages {config['packages']}")


def read_core() -> dict[str, bytes]:
    """core.js and the chunks it loads for a page without editor, terminal or game; the CSS."""
    with PYSCRIPT_NPM.files(CACHE) as read:
        files: dict[str, bytes] = {}
        todo = [Path(ENTRY).name]
        while todo:
            name = todo.pop()
            if name in files:
                continue
            files[name] = read(f"dist/{name}")  # as published (its source map is not shipped)
            text = files[name].decode()
            todo.extend(STATIC_IMPORT.findall(text))
            if name.startswith("core-"):
                todo.extend(n for n in LAZY_IMPORT.findall(text) if not LEFT_OUT.match(n))
        for path in STYLES:
            files[Path(path).name] = read(path)
    return dict(sorted(files.items()))


def pyscript_config(bundle: Path, pyodide_dir: str) -> dict:
    """PyScript settings: bundled Pyodide, numpy from its lock, the engine wheel by URL."""
    wheels = sorted(bundle.glob("app-*/*.whl"))
    if len(wheels) != 1:
        raise BuildError(
            f"expected one engine wheel in {bundle}/app-*/, found {len(wheels)};"
            " build_app() must run before build_pyscript()"
        )
    lock = json.loads((bundle / pyodide_dir / "pyodide-lock.json").read_bytes())
    requirements = wheel_requirements(wheels[0])
    off_lock = sorted(set(requirements) - set(lock["packages"]))
    if off_lock:
        raise BuildError(
            f"{wheels[0].name} requires {', '.join(off_lock)}, which the bundled"
            f" pyodide-lock.json lacks: micropip would look it up on PyPI, a request that"
            f" leaves the origin. Add it to PACKAGE_ROOTS in build/bundle.py"
        )
    wheel_url = "./" + wheels[0].relative_to(bundle).as_posix()
    return {
        # a URL to pyodide.mjs selects that Pyodide instead of the CDN's default version
        "interpreter": f"./{pyodide_dir}/pyodide.mjs",
        # the engine's requirements, named so micropip takes them from the lock file; the
        # wheel is installed from its same-origin URL
        "packages": [*requirements, wheel_url],
    }


def wheel_requirements(wheel: Path) -> list[str]:
    """The normalized names in a wheel's Requires-Dist (markers and versions dropped)."""
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        lines = archive.read(metadata).decode().splitlines()
    names = []
    for line in lines:
        if line.startswith("Requires-Dist:") and ";" not in line:
            name = re.match(r"[A-Za-z0-9._-]+", line.split(":", 1)[1].strip()).group(0)
            names.append(re.sub(r"[-_.]+", "-", name).lower())
    return names
