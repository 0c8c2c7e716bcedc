"""The worker's trimmed, precompiled runtime still runs everything the engine needs.

The built stdlib zips, numpy wheel and engine wheel are loaded into the bundled Pyodide (booted
from the worker's derived runtime script) under Node the way web/worker.js loads them
(unpacked, no micropip); a script then imports every engine module and drives a worker session
through boot, decisions of every policy and the segments path, which loads scikit-learn, the
lazy stdlib and the rest of numpy. A module trimmed, or left for later, by mistake fails it
with ImportError.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("precompile", ROOT / "build" / "precompile.py")
precompile = importlib.util.module_from_spec(spec)
spec.loader.exec_module(precompile)

# Runs inside Pyodide. Bytecode is never written, so a module that imports from a .pyc proves
# the build shipped that .pyc.
SCENARIO = """
import sys
sys.dont_write_bytecode = True
import importlib, importlib.resources, importlib.util, json, pkgutil, shutil
import pyodide_js
import microadjust, microadjust.browser.session, numpy

engine = [m.name for m in pkgutil.walk_packages(microadjust.__path__, "microadjust.")]
for name in engine:
    importlib.import_module(name)
compiled = {
    "numpy": numpy.__spec__.origin,
    "json": sys.modules["json"].__spec__.origin,
    "engine": importlib.util.cache_from_source(sys.modules["microadjust.core.engine"].__file__),
}
assert all(path.endswith(".pyc") for path in compiled.values()), compiled
assert not importlib.resources.files("numpy").joinpath("__init__.pyi").is_file()  # trimmed
assert importlib.util.find_spec("xml") is None  # trimmed
assert json.dumps.__doc__ == "" and numpy.linalg.solve.__doc__ == ""  # blanked, still str

from microadjust import Engine
for policy in ("auto", "epsilon_greedy", "thompson", "linucb", "lin_ts"):
    engine_ = Engine(policy=policy, seed=1)
    for i in range(20):
        chosen = engine_.rank(context={"device": "mobile", "x": i / 20}, actions=["a", "b", "c"])
        engine_.reward(chosen.event_id, float(i % 2))
    Engine.from_state(engine_.state())
assert importlib.util.find_spec("numpy.fft") is None  # in the lazy numpy, not yet unpacked
# build/precompile.py's NUMPY_EDITS: neither the test extension nor the typing aliases load
assert not {"numpy._core._multiarray_tests", "numpy._typing"} & set(sys.modules)
assert numpy.linalg.eig(numpy.eye(2)).eigenvalues.tolist() == [1.0, 1.0]
legacy = {"numpy.random.mtrand", "numpy.random._mt19937", "numpy.random._philox"}
assert not legacy & set(sys.modules), legacy & set(sys.modules)  # build/numpy_random_init.py

from microadjust.browser.session import WorkerSession
session = WorkerSession()
def handle(message, from_host=False):
    replies = json.loads(session.handle_json(json.dumps({"v": 1, **message}), from_host))
    assert not [r for r in replies if r["type"] == "error"], replies
    return replies
init = handle({"type": "init", "config": {"seed": 7, "segments": {"n": 2}, "log_size": 64},
        "context": {"device": "mobile"}})
for i in range(6):
    handle({"type": "events", "events": [{"kind": "scroll", "t": 1000 * i,
            "depth": 0.9 if i % 2 else 0.1}], "t": 1000 * i})
    handle({"type": "decide", "slots": [{"slot": f"s{i}", "variants": ["default", "b"]}],
            "t": 1000 * i})
assert importlib.util.find_spec("unittest") is None  # in the lazy zip, not yet added

lazy = next(r for r in init if r["type"] == "plan")["packages"]
await pyodide_js.loadPackage(lazy)
shutil.copy("/host/python_stdlib-lazy.zip", "/lib/python312-lazy.zip")  # as the worker does
sys.path.append("/lib/python312-lazy.zip")
import sysconfig, zipfile
zipfile.ZipFile("/host/numpy-lazy.zip").extractall(sysconfig.get_path("purelib"))
importlib.invalidate_caches()
handle({"type": "packages_loaded", "packages": lazy}, from_host=True)
decided = handle({"type": "decide", "slots": [{"slot": "after", "variants": ["default", "b"]},
        {"slot": "cards", "items": ["a", "b", "c"]}]})
assert session.segments.segmenter.centers is not None
import numpy.fft, numpy.testing, numpy.f2py, numpy.linalg.lapack_lite, numpy._typing
import numpy._core._multiarray_tests
from microadjust.browser.segments import dbscan_segments
dbscan_segments([{"a": float(i % 3)} for i in range(30)], ["a"], eps=0.5, min_samples=3)
import pickle  # numpy.random still offers all it did, each part loaded on first use
legacy_rng = pickle.loads(pickle.dumps(numpy.random.RandomState(0)))
assert legacy_rng.rand() == numpy.random.RandomState(0).rand() and numpy.random.mtrand._rand
from numpy.random import MT19937, Philox, SFC64
names = {}
exec("from numpy.random import *", names)
assert {"RandomState", "rand", "seed", "MT19937", "Generator", "default_rng"} <= set(names)
assert [r["type"] for r in decided][-2:] == ["ahead_due", "unsaved"]
ahead = handle({"type": "decide_ahead"}, from_host=True)
assert [r["type"] for r in ahead] == ["save", "ahead"]  # the next view's, made ahead
print("trimmed runtime OK:", len(engine), "engine modules")
"""


@pytest.fixture(scope="module")
def pyodide_dir(built: Path) -> Path:
    if shutil.which("node") is None:
        pytest.fail("node is missing: the build and this test run Pyodide under Node")
    return next((built / "microadjust").glob("pyodide-*"))


def test_the_trimmed_runtime_runs_the_engine_the_worker_and_segments(pyodide_dir, tmp_path):
    lock = json.loads((pyodide_dir / "pyodide-lock.json").read_text())
    numpy = pyodide_dir / lock["derived"]["numpy"]["file_name"]
    [engine] = (pyodide_dir.parent).glob("app-*/microadjust-*.whl")
    shutil.copy(pyodide_dir / "python_stdlib-lazy.zip", tmp_path)
    shutil.copy(
        pyodide_dir / lock["derived"]["numpy-lazy"]["file_name"], tmp_path / "numpy-lazy.zip"
    )
    (tmp_path / "scenario.py").write_text(SCENARIO)
    result = subprocess.run(
        [
            "node",
            str(ROOT / "build" / "pyodide_node.cjs"),
            str(pyodide_dir),
            str(tmp_path),
            "scenario.py",
            "--stdlib=python_stdlib-engine.zip",
            f"--runtime-script={lock['derived']['runtime']['file_name']}",
            str(numpy),
            str(engine),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "trimmed runtime OK" in result.stdout


def test_the_lock_records_each_derived_file_and_its_official_source(pyodide_dir):
    lock = json.loads((pyodide_dir / "pyodide-lock.json").read_text())
    assert set(lock["derived"]) == {"stdlib", "stdlib-lazy", "numpy", "numpy-lazy", "runtime"}
    for record in lock["derived"].values():
        data = (pyodide_dir / record["file_name"]).read_bytes()
        assert record["sha256"] == precompile.hashlib.sha256(data).hexdigest()
        official = (pyodide_dir / record["from"]).read_bytes()  # shipped too, for PyScript
        assert record["from_sha256"] == precompile.hashlib.sha256(official).hexdigest()
        for twin in (".br", ".gz"):
            assert (pyodide_dir / (record["file_name"] + twin)).exists()
    numpy = lock["derived"]["numpy"]
    assert "-1pyc-" in numpy["file_name"]
    assert lock["packages"]["numpy"]["sha256"] == numpy["from_sha256"]  # the official entry


def test_bytecode_is_reproducible(pyodide_dir):
    # a set literal compiles to a frozenset constant, whose order follows the hash seed
    files = {"pkg/__init__.py": b"def f(x):\n    return x in {'a', 'b', 'c', 'd', 'e'}\n"}
    first = precompile.compile_sources(pyodide_dir, files, "/site/", blank_docstrings=True)
    again = precompile.compile_sources(pyodide_dir, files, "/site/", blank_docstrings=True)
    assert first == again and list(first) == ["pkg/__init__.pyc"]
    assert precompile.stored_zip(first) == precompile.stored_zip(dict(reversed(first.items())))


@pytest.mark.parametrize(
    ("path", "trimmed"),
    [
        ("xml/dom/minidom.py", True),
        ("encodings/cp1251.py", True),
        ("pdb.py", True),
        ("encodings/utf_8.py", False),
        ("encodings/__init__.py", False),
        ("ntpath.py", False),  # pathlib imports it on every platform
        ("email/parser.py", False),  # importlib.metadata needs it
        ("trace_back.py", False),
    ],
)
def test_the_stdlib_trim_list(path, trimmed):
    assert bool(precompile.STDLIB_UNUSED.search(path)) is trimmed


@pytest.mark.parametrize(
    ("path", "trimmed"),
    [
        ("numpy/f2py/__init__.py", False),  # `from numpy import *` imports it (lazily, below)
        ("numpy/__init__.pyi", True),
        ("numpy/_core/include/numpy/ndarraytypes.h", True),
        ("numpy/_core/_umath_tests.cpython-312-wasm32-emscripten.so", True),
        ("numpy/_core/_multiarray_tests.cpython-312-wasm32-emscripten.so", False),  # lazy
        ("numpy/_core/_multiarray_umath.cpython-312-wasm32-emscripten.so", False),
        ("numpy/testing/__init__.py", False),  # scikit-learn reaches numpy.testing
        ("numpy/typing/__init__.py", False),
    ],
)
def test_the_numpy_trim_list(path, trimmed):
    assert bool(precompile.NUMPY_UNUSED.search(path)) is trimmed


def test_derived_wheels_carry_a_build_tag():
    official = "numpy-2.0.2-cp312-cp312-pyodide_2024_0_wasm32.whl"
    assert (
        precompile.derived_name(official)
        == "numpy-2.0.2-1pyc-cp312-cp312-pyodide_2024_0_wasm32.whl"
    )


@pytest.mark.parametrize(
    ("path", "lazy"),
    [
        ("numpy/fft/_pocketfft_umath.cpython-312-wasm32-emscripten.so", True),
        ("numpy/f2py/__init__.py", True),
        ("numpy/ma/core.py", True),
        ("numpy/linalg/lapack_lite.cpython-312-wasm32-emscripten.so", True),
        ("numpy/linalg/_umath_linalg.cpython-312-wasm32-emscripten.so", False),  # np.linalg.inv
        ("numpy/_core/_multiarray_tests.cpython-312-wasm32-emscripten.so", True),  # NUMPY_EDITS
        ("numpy/random/_generator.cpython-312-wasm32-emscripten.so", False),  # the engine's rng
        ("numpy/__init__.py", False),
    ],
)
def test_the_numpy_lazy_list(path, lazy):
    assert bool(precompile.NUMPY_LAZY.search(path)) is lazy


def test_the_numpy_edits_keep_every_line_and_change_only_their_own(pyodide_dir):
    lock = json.loads((pyodide_dir / "pyodide-lock.json").read_text())
    official = precompile._read_zip(
        (pyodide_dir / lock["packages"]["numpy"]["file_name"]).read_bytes(),
        drop=lambda path: path not in precompile.NUMPY_EDITS,
    )
    for path, (_, edit) in precompile.NUMPY_EDITS.items():
        before, after = official[path].splitlines(), edit(official[path]).splitlines()
        changed = [i for i, (old, new) in enumerate(zip(before, after, strict=True)) if old != new]
        assert 0 < len(changed) <= 30, path  # one statement each
    docs = precompile.without_test_docstring(official["numpy/_core/_add_newdocs.py"])
    assert b"_multiarray_tests" not in docs and docs.count(b"add_newdoc(") > 100
    linalg = precompile.without_typing_aliases(official["numpy/linalg/_linalg.py"])
    assert b"numpy._typing" not in linalg and b"NDArray[Any]" in linalg


def test_an_edit_that_no_longer_applies_fails_the_build():
    with pytest.raises(precompile.CompileError, match="expected one"):
        precompile.without_typing_aliases(b"from numpy._typing import ArrayLike\n")
    with pytest.raises(precompile.CompileError, match="found 0"):
        precompile.without_test_docstring(b"add_newdoc('numpy._core.multiarray', 'x', 'doc')\n")
