"""Derive the files the worker boots from: trimmed, and compiled to bytecode by Pyodide itself.

Python in Pyodide spends most of its start-up compiling ``.py`` files: the stdlib's, numpy's and
the engine's. The build does that work once, with the bundled Pyodide running under Node
(build/pyodide_node.cjs), so the bytecode is in exactly the runtime's format. Docstrings of the
stdlib and numpy are blanked (see ``compile_sources``):

- ``python_stdlib.zip``: the official one without the modules listed in ``STDLIB_UNUSED``, each
  ``.py`` replaced by its ``.pyc``, in two zips: what boot needs, and what only the packages
  loaded after the first decision (scikit-learn) need;
- the numpy wheel: without ``NUMPY_UNUSED`` (typing stubs, C headers, test extensions), ``.py``
  replaced by ``.pyc``, renamed with a build tag so it is never mistaken for the official file;
  ``numpy/random/__init__.py`` is build/numpy_random_init.py, which loads the bit generators
  and the legacy API the engine does not use on first use; two modules are edited so that
  ``import numpy`` loads neither a test extension nor numpy's typing aliases (``NUMPY_EDITS``);
  the subpackages only scikit-learn and scipy reach (``NUMPY_LAZY``) go to a second archive,
  unpacked beside the rest with the lazy packages;
- the engine wheel: its ``.py`` files kept (tracebacks show the engine's source lines), with
  ``__pycache__`` bytecode beside them.

Bytecode is written with ``UNCHECKED_HASH`` invalidation (no timestamps) under a fixed hash seed,
and archives list their entries sorted with a fixed date, so the same inputs give the same bytes.
Archives are written *stored* (uncompressed): Python imports from them without inflating, and
the server's brotli and gzip twins compress the whole archive better than zip does file by file.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import io
import json
import re
import shutil
import subprocess
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
NODE_RUNNER = HERE / "pyodide_node.cjs"
# What neither the engine, the worker nor scikit-learn (segments) imports, and no module they
# import needs: developer tools, network clients and servers, XML, legacy formats, and every
# codec but Unicode's, Latin-1 and the few Python itself asks for. tests/test_trim.py runs
# the engine, the worker's messages and the segments path on the result. PyScript pages keep
# the official python_stdlib.zip: they run the site's own code, which may want any module.
STDLIB_UNUSED = re.compile(
    r"^(__hello__|antigravity|this|pdb|bdb|doctest|cProfile|profile|pstats|trace|tracemalloc"
    r"|tabnanny|pyclbr|modulefinder|zipapp|compileall|symtable|timeit|cmd|rlcompleter"
    r"|webbrowser|ftplib|imaplib|nntplib|poplib|smtplib|telnetlib|socketserver|mailbox"
    r"|mailcap|mimetypes|cgi|cgitb|aifc|sunau|wave|sndhdr|imghdr|chunk|uu|xdrlib|pipes|crypt"
    r"|pty|tty|getpass|_pyio|_pydatetime|pickletools|optparse|configparser|plistlib|shelve"
    r"|filecmp|sched|netrc|nturl2path|graphlib|colorsys|stringprep|wsgiref|xml"
    r"|xmlrpc|http|tomllib|zoneinfo|__phello__|ctypes/macholib)(\.py$|/)"
    r"|^encodings/(?!(__init__|aliases|ascii|charmap|cp437|cp1252|latin_1"
    r"|raw_unicode_escape|undefined|unicode_escape|utf_8|utf_8_sig|utf_16(_be|_le)?"
    r"|utf_32(_be|_le)?|base64_codec|hex_codec|zlib_codec)\.py$)"
)
# Imported only by scikit-learn (segments), after the first decision: a second zip the worker
# adds to sys.path with the lazy packages. loadPackage itself needs tarfile, so tarfile stays
# at boot. A package stays in one zip: a package's modules are found only beside its __init__.
STDLIB_LAZY = re.compile(r"^(multiprocessing|unittest|html)/|^(pydoc|argparse|difflib)\.py$")
# numpy's own test extensions (but _multiarray_tests, below), typing stubs, C headers, static
# libraries and Cython declarations. f2py stays: numpy's __all__ names it, so
# `from numpy import *` (scipy's array API layer does it) imports it.
NUMPY_UNUSED = re.compile(
    r"^numpy/(_pyinstaller/|_core/include/|_core/lib/|random/lib/|random/_examples/"
    r"|conftest\.py$|_core/_(rational_tests|operand_flag_tests"
    r"|struct_ufunc_tests|umath_tests)\.)|\.(pyi|pxd|pyx|h|c|a)$|/py\.typed$"
)
# Subpackages numpy imports only on first use (numpy/__init__.py's __getattr__) and the engine
# never uses: scikit-learn and scipy (segments) reach them, and `from numpy import *` imports
# them all. web/worker.js unpacks them into site-packages with the lazy packages.
# _multiarray_tests too: only numpy.testing imports it, once its docstring is left out.
NUMPY_LAZY = re.compile(
    r"^numpy/(fft|polynomial|ma|testing|f2py)/|^numpy/linalg/lapack_lite\."
    r"|^numpy/_core/_multiarray_tests\."
)
# numpy.random's own __init__ (numpy 2.0.2), which build/numpy_random_init.py replaces: checked,
# so a numpy upgrade cannot silently ship a stale replacement
NUMPY_RANDOM_INIT = "numpy/random/__init__.py"
NUMPY_RANDOM_INIT_SHA256 = "f354e19dec60e6e98de566700f94d1cb335cd98a7e775e01e940bb3418152a1f"
NUMPY_TEST_EXTENSION = "numpy._core._multiarray_tests"
BUILD_TAG = "1pyc"  # a wheel build tag: the derived numpy wheel's name says it is not official
SITE_PACKAGES = "/lib/python3.12/site-packages/"
STDLIB_ZIP = "/lib/python312.zip/"  # where Pyodide puts the stdlib zip it is given
STDLIB_LAZY_ZIP = "/lib/python312-lazy.zip/"  # where web/worker.js puts the lazy one
FIXED_DATE = (1980, 1, 1, 0, 0, 0)


class CompileError(RuntimeError):
    """Compiling with Pyodide under Node failed; the message carries Node's output."""


def derived_name(official_name: str) -> str:
    """``numpy-2.0.2-cp312-….whl`` becomes ``numpy-2.0.2-1pyc-cp312-….whl``."""
    name, version, rest = official_name.split("-", 2)
    return f"{name}-{version}-{BUILD_TAG}-{rest}"


def derived_lazy_name(official_name: str) -> str:
    """``numpy-2.0.2-cp312-….whl`` becomes ``numpy-2.0.2-1pyc-lazy.zip`` (files, no wheel)."""
    name, version, _ = official_name.split("-", 2)
    return f"{name}-{version}-{BUILD_TAG}-lazy.zip"


def derive_stdlib(official: bytes, runtime: Path) -> tuple[bytes, bytes]:
    """The stdlib for boot and the part only the lazy packages import, as sourceless bytecode."""
    files = _read_zip(official, drop=STDLIB_UNUSED.search)
    lazy = {path: data for path, data in files.items() if STDLIB_LAZY.search(path)}
    boot = {path: data for path, data in files.items() if path not in lazy}
    return _sourceless_zip(boot, runtime, STDLIB_ZIP), _sourceless_zip(
        lazy, runtime, STDLIB_LAZY_ZIP
    )


def derive_numpy(official: bytes, runtime: Path) -> tuple[bytes, bytes]:
    """The numpy wheel without build tools and stubs, its modules as sourceless bytecode: what
    the engine imports, and the subpackages only the lazy packages import."""
    files = _read_zip(official, drop=NUMPY_UNUSED.search)
    if hashlib.sha256(files[NUMPY_RANDOM_INIT]).hexdigest() != NUMPY_RANDOM_INIT_SHA256:
        raise CompileError(
            f"{NUMPY_RANDOM_INIT} is not numpy 2.0.2's: review build/numpy_random_init.py"
            " against the new one, then update NUMPY_RANDOM_INIT_SHA256"
        )
    files[NUMPY_RANDOM_INIT] = (HERE / "numpy_random_init.py").read_bytes()
    for path, (official_sha256, edit) in NUMPY_EDITS.items():
        if hashlib.sha256(files[path]).hexdigest() != official_sha256:
            raise CompileError(
                f"{path} is not numpy 2.0.2's: check that {edit.__name__} still applies to"
                " the new one, then update its sha256 in NUMPY_EDITS"
            )
        files[path] = edit(files[path])
    lazy = {path: data for path, data in files.items() if NUMPY_LAZY.search(path)}
    boot = {path: data for path, data in files.items() if path not in lazy}
    return _sourceless_zip(boot, runtime, SITE_PACKAGES), _sourceless_zip(
        lazy, runtime, SITE_PACKAGES
    )


def without_test_docstring(source: bytes) -> bytes:
    """numpy's ``_add_newdocs.py`` without its call documenting a function of the test
    extension ``_multiarray_tests``: that call imports the extension, a WebAssembly library
    loaded at every ``import numpy`` for nothing the engine runs. The call's lines become blank,
    so every other line keeps its number."""
    calls = [
        node
        for node in ast.parse(source).body
        if isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Call)
        and node.value.args
        and isinstance(node.value.args[0], ast.Constant)
        and node.value.args[0].value == NUMPY_TEST_EXTENSION
    ]
    if len(calls) != 1:
        raise CompileError(
            f"expected one add_newdoc call for {NUMPY_TEST_EXTENSION}, found {len(calls)}"
        )
    lines = source.splitlines(keepends=True)
    first, last = calls[0].lineno - 1, calls[0].end_lineno
    lines[first:last] = [b"\n"] * (last - first)
    return b"".join(lines)


def without_typing_aliases(source: bytes) -> bytes:
    """numpy.linalg's ``_linalg.py`` naming ``ndarray`` where it named ``numpy._typing``'s
    ``NDArray``: it uses it only in the annotations of its result tuples (``EigResult``...),
    and importing ``numpy._typing``, about 15 ms under Node, is then left to code that asks
    for it. ``NDArray[Any]`` becomes ``ndarray[Any]``: both are aliases of ``ndarray``."""
    typing_import = b"from numpy._typing import NDArray\n"
    if source.count(typing_import) != 1:
        raise CompileError(f"expected one {typing_import!r} in numpy/linalg/_linalg.py")
    return source.replace(typing_import, b"from numpy._core import ndarray as NDArray\n")


# numpy 2.0.2's modules the derived numpy edits, with their official sha256, checked first so
# that a numpy upgrade cannot ship a stale edit; each edit keeps every line's number
NUMPY_EDITS: dict[str, tuple[str, Callable[[bytes], bytes]]] = {
    "numpy/_core/_add_newdocs.py": (
        "25e0da1af12df3f7207e97d3b9fd33f72dd43f474f02322cd89633a4630bc477",
        without_test_docstring,
    ),
    "numpy/linalg/_linalg.py": (
        "ad8bf394d57b99955b65cb23952312fe27cd0ad725fd68b407d5f259a7600749",
        without_typing_aliases,
    ),
}


def add_bytecode(wheel: bytes, runtime: Path) -> bytes:
    """A pure-Python wheel with ``__pycache__`` bytecode beside each module, sources kept."""
    files = _read_zip(wheel, drop=lambda name: False)
    compiled = compile_sources(runtime, files, SITE_PACKAGES, blank_docstrings=False)
    for path, data in compiled.items():
        folder, _, module = path.rpartition("/")
        cached = f"{folder}/__pycache__/{module[: -len('.pyc')]}.cpython-312.pyc"
        files[cached.lstrip("/")] = data
    return stored_zip(_with_record(files))


@contextmanager
def node_runtime(files: Mapping[str, bytes]) -> Iterator[Path]:
    """The official runtime files (pyodide.js, the wasm, the stdlib, the lock) in a directory."""
    with tempfile.TemporaryDirectory(prefix="microadjust-pyodide-") as tmp:
        for name, data in files.items():
            (Path(tmp) / name).write_bytes(data)
        yield Path(tmp)


def compile_sources(
    runtime: Path, files: dict[str, bytes], prefix: str, blank_docstrings: bool
) -> dict[str, bytes]:
    """``{path.pyc: bytecode}`` for each ``.py`` in ``files``, compiled by Pyodide under Node.

    ``prefix`` is where the files live at run time; tracebacks name ``prefix + path``.
    ``blank_docstrings`` makes each docstring ``""``: the stdlib's and numpy's are a third of
    their bytecode and nothing in a worker reads them. (Compiling with ``optimize=2``, as
    ``python -OO`` would, makes them None instead, and numpy's import then fails unless the
    interpreter itself runs with -OO.) The engine keeps its docstrings.
    """
    sources = sorted(path for path in files if path.endswith(".py"))
    if shutil.which("node") is None:
        raise CompileError("node is not installed; install Node.js (apt-get install -y nodejs)")
    with tempfile.TemporaryDirectory(prefix="microadjust-pyc-") as tmp:
        host = Path(tmp)
        for path in sources:
            (host / "src" / path).parent.mkdir(parents=True, exist_ok=True)
            (host / "src" / path).write_bytes(files[path])
        (host / "job.json").write_text(
            json.dumps({"files": sources, "prefix": prefix, "blank_docstrings": blank_docstrings})
        )
        (host / "compile.py").write_text(COMPILE_SCRIPT)
        result = subprocess.run(
            ["node", str(NODE_RUNNER), str(runtime), str(host), "compile.py"],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise CompileError(
                f"compiling {len(sources)} modules with Pyodide under Node failed:"
                f" {(result.stderr or result.stdout).strip()[-2000:]}"
            )
        return {f"{path}c": (host / "out" / f"{path}c").read_bytes() for path in sources}


# Runs inside Pyodide: compiles every listed file with the runtime's own compiler and writes
# it as py_compile does with UNCHECKED_HASH. Blanking a docstring keeps it a str (code that
# reads __doc__, such as numpy's add_docstring, still gets one) and keeps line numbers.
COMPILE_SCRIPT = """\
import ast, importlib.util, json, os
from importlib._bootstrap_external import _code_to_hash_pyc

def blank_docstrings(tree):
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \\
                    and isinstance(first.value.value, str):
                first.value.value = ""
    return tree

job = json.load(open("/host/job.json"))
for path in job["files"]:
    source = open(f"/host/src/{path}", "rb").read()
    tree = ast.parse(source, filename=job["prefix"] + path)
    if job["blank_docstrings"]:
        tree = blank_docstrings(tree)
    code = compile(tree, job["prefix"] + path, "exec", dont_inherit=True)
    data = _code_to_hash_pyc(code, importlib.util.source_hash(source), checked=False)
    os.makedirs(os.path.dirname(f"/host/out/{path}"), exist_ok=True)
    with open(f"/host/out/{path}c", "wb") as out:
        out.write(data)
"""


def stored_zip(files: dict[str, bytes]) -> bytes:
    """A zip of ``files``, entries sorted, fixed dates and modes, not compressed."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for path in sorted(files):
            info = zipfile.ZipInfo(path, date_time=FIXED_DATE)
            info.external_attr = 0o644 << 16
            archive.writestr(info, files[path])
    return buffer.getvalue()


def _read_zip(data: bytes, drop: Callable[[str], object]) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {
            info.filename: archive.read(info)
            for info in archive.infolist()
            if not info.is_dir() and not drop(info.filename)
        }


def _sourceless_zip(files: dict[str, bytes], runtime: Path, prefix: str) -> bytes:
    """Each ``.py`` replaced by its ``.pyc`` (Python imports a lone ``.pyc`` without source)."""
    compiled = compile_sources(runtime, files, prefix, blank_docstrings=True)
    kept = {path: data for path, data in files.items() if not path.endswith(".py")}
    return stored_zip(_with_record(kept | compiled))


def _with_record(files: dict[str, bytes]) -> dict[str, bytes]:
    """The wheel's RECORD rewritten to list exactly its files."""
    record = next((p for p in files if p.endswith(".dist-info/RECORD")), None)
    if record is None:
        return files
    lines = [
        f"{path},sha256={_urlsafe_sha256(files[path])},{len(files[path])}"
        for path in sorted(files)
        if path != record
    ]
    return files | {record: ("\n".join([*lines, f"{record},,"]) + "\n").encode()}


def _urlsafe_sha256(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
