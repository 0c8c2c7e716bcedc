"""The worker's derived pyodide.asm.js links exactly as the official one does.

Both runtime scripts boot the built runtime under Node, load numpy's shared libraries (two at
``import numpy``, five more for numpy.random, then numpy.linalg's code runs) and report every
global offset table entry's value and, for each function table slot, whether it holds a
function and how many parameters it takes. The derived glue must give the same symbols the
same addresses and the same slots.
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
const [runtime, runtimeScript, numpyWheel] = process.argv.slice(2);
(async () => {
  require(path.join(runtime, runtimeScript));
  const { loadPyodide } = require(path.join(runtime, 'pyodide.js'));
  const pyodide = await loadPyodide({
    indexURL: runtime + path.sep, stdLibURL: path.join(runtime, 'python_stdlib-engine.zip'),
  });
  const site = pyodide.runPython('import sysconfig; sysconfig.get_path("purelib")');
  pyodide.unpackArchive(new Uint8Array(fs.readFileSync(numpyWheel)), 'wheel', { extractDir: site });
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
  process.stdout.write(JSON.stringify({ got, table }));
})().catch((error) => { process.stderr.write(String(error.stack || error)); process.exit(1); });
"""


@pytest.fixture(scope="module")
def pyodide_dir(built: Path) -> Path:
    if shutil.which("node") is None:
        pytest.fail("node is missing: the build and this test run Pyodide under Node")
    return next((built / "microadjust").glob("pyodide-*"))


def linking(pyodide_dir: Path, runtime_script: str, tmp_path: Path) -> dict:
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
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def test_the_derived_glue_links_numpy_exactly_as_the_official_one(pyodide_dir, tmp_path):
    official = linking(pyodide_dir, "pyodide.asm.js", tmp_path)
    derived = linking(pyodide_dir, pyodide_glue.DERIVED_NAME, tmp_path)
    assert len(official["got"]) > 10_000 and 0 not in official["got"].values()
    assert derived["got"] == official["got"]
    assert derived["table"] == official["table"]


def test_the_derived_glue_is_the_official_file_with_the_replacements(pyodide_dir):
    official = (pyodide_dir / "pyodide.asm.js").read_bytes()
    derived = (pyodide_dir / pyodide_glue.DERIVED_NAME).read_bytes()
    assert derived == pyodide_glue.derive_glue(official) != official
    [(old, new)] = pyodide_glue.REPLACEMENTS
    assert derived.decode().replace(new, old) == official.decode()


def test_a_different_official_file_is_refused():
    with pytest.raises(pyodide_glue.GlueError, match="is not Pyodide 0.27.7's"):
        pyodide_glue.derive_glue(b"var reportUndefinedSymbols=()=>{};")
