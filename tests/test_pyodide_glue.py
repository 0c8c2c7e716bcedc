"""The worker's derived pyodide.asm.js links exactly as the official one does.

Both runtime scripts boot the built runtime under Node, load numpy's shared libraries (two at
``import numpy``, five more for numpy.random, then numpy.linalg's code runs) and report every
global offset table entry's value and, for each function table slot, whether it holds a
function and how many parameters it takes. The derived glue must give the same symbols the
same addresses and the same slots, also when it is handed numpy's libraries compiled ahead
(``compiledDynlibs``, as web/worker.js hands them), and then compile none of them itself.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("pyodide_glue", ROOT / "build" / "pyodide_glue.py")
pyodide_glue = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pyodide_glue)

# Boots RUNTIME_DIR with RUNTIME_SCRIPT, unpacks NUMPY_WHEEL, runs numpy, prints the linking.
LINKING = """
const path = require('path');
const fs = require('fs');
const [runtime, runtimeScript, numpyWheel, ahead] = process.argv.slice(2);
const compiledHere = []; // the byte sizes of the libraries compiled synchronously
const NativeModule = WebAssembly.Module;
WebAssembly.Module = new Proxy(NativeModule, {
  construct(target, args) {
    if (args[0].byteLength > 20000) compiledHere.push(args[0].byteLength); // not Pyodide's stubs
    return Reflect.construct(target, args);
  },
});
(async () => {
  require(path.join(runtime, runtimeScript));
  const { loadPyodide } = require(path.join(runtime, 'pyodide.js'));
  const pyodide = await loadPyodide({
    indexURL: runtime + path.sep, stdLibURL: path.join(runtime, 'python_stdlib-engine.zip'),
  });
  const site = pyodide.runPython('import sysconfig; sysconfig.get_path("purelib")');
  pyodide.unpackArchive(new Uint8Array(fs.readFileSync(numpyWheel)), 'wheel', { extractDir: site });
  if (ahead === 'ahead') { // every library of the wheel, compiled off the thread
    const libraries = new Map();
    const find = (folder) => pyodide.FS.readdir(folder).filter((name) => !name.startsWith('.'))
      .forEach((name) => {
        const file = pyodide.PATH.normalize(`${folder}/${name}`);
        if (pyodide.FS.isDir(pyodide.FS.stat(file).mode)) find(file);
        else if (name.endsWith('.so')) libraries.set(file, pyodide.FS.readFile(file));
      });
    find(`${site}/numpy`);
    for (const [file, bytes] of libraries) libraries.set(file, await WebAssembly.compile(bytes));
    pyodide._module.compiledDynlibs = libraries;
  }
  pyodide.runPython(`import sys; sys.path_importer_cache.pop(${JSON.stringify(site)}, None)`);
  pyodide.runPython(`
import numpy, numpy.random
assert numpy.random.default_rng(1).normal(size=3).shape == (3,)
assert numpy.allclose(numpy.linalg.inv(2 * numpy.eye(3)), 0.5 * numpy.eye(3))
`);
  const { GOT, wasmTable } = pyodide._module;
  const got = Object.fromEntries(Object.entries(GOT).map(([name, entry]) => [name, entry.value]));
  const table = [];
  for (let slot = 0; slot < wasmTable.length; slot++) {
    const func = wasmTable.get(slot);
    table.push(func ? func.length : -1);
  }
  process.stdout.write(JSON.stringify({ got, table, compiledHere }));
})().catch((error) => { process.stderr.write(String(error.stack || error)); process.exit(1); });
"""


@pytest.fixture(scope="module")
def pyodide_dir(built: Path) -> Path:
    if shutil.which("node") is None:
        pytest.fail("node is missing: the build and this test run Pyodide under Node")
    return next((built / "microadjust").glob("pyodide-*"))


def linking(pyodide_dir: Path, runtime_script: str, tmp_path: Path, *, ahead: bool = False) -> dict:
    lock = json.loads((pyodide_dir / "pyodide-lock.json").read_text())
    script = tmp_path / "linking.cjs"
    script.write_text(LINKING)
    result = subprocess.run(
        [
            "node",
            str(script),
            str(pyodide_dir),
            runtime_script,
            str(pyodide_dir / lock["derived"]["numpy"]["file_name"]),
            "ahead" if ahead else "",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def official(pyodide_dir, tmp_path_factory) -> dict:
    return linking(pyodide_dir, "pyodide.asm.js", tmp_path_factory.mktemp("official"))


def test_the_derived_glue_links_numpy_exactly_as_the_official_one(official, pyodide_dir, tmp_path):
    derived = linking(pyodide_dir, pyodide_glue.DERIVED_NAME, tmp_path)
    assert len(official["got"]) > 10_000 and 0 not in official["got"].values()
    assert derived["got"] == official["got"]
    assert derived["table"] == official["table"]
    assert len(derived["compiledHere"]) == len(official["compiledHere"]) == 7


def test_libraries_compiled_ahead_are_linked_the_same_and_not_compiled_again(
    official, pyodide_dir, tmp_path
):
    ahead = linking(pyodide_dir, pyodide_glue.DERIVED_NAME, tmp_path, ahead=True)
    assert ahead["got"] == official["got"]
    assert ahead["table"] == official["table"]
    assert ahead["compiledHere"] == []


def test_the_derived_glue_is_the_official_file_with_the_replacements(pyodide_dir):
    official = (pyodide_dir / "pyodide.asm.js").read_bytes()
    derived = (pyodide_dir / pyodide_glue.DERIVED_NAME).read_bytes()
    assert derived == pyodide_glue.derive_glue(official) != official
    text = derived.decode()
    for old, new in pyodide_glue.REPLACEMENTS:
        text = text.replace(new, old)
    assert text == official.decode()


def test_a_different_official_file_is_refused():
    with pytest.raises(pyodide_glue.GlueError, match="is not Pyodide 0.27.7's"):
        pyodide_glue.derive_glue(b"var reportUndefinedSymbols=()=>{};")
