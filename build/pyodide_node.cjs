// Run a Python file in a Pyodide runtime directory under Node, the way the worker boots it.
//
//   node build/pyodide_node.cjs RUNTIME_DIR HOST_DIR SCRIPT.py [--stdlib=ZIP]
//        [--runtime-script=JS] [ARCHIVE.whl ...]
//
// HOST_DIR is mounted at /host. --stdlib names the stdlib zip in RUNTIME_DIR (default: the
// official python_stdlib.zip), --runtime-script the runtime script (default: the official
// pyodide.asm.js; the worker's is derived by build/pyodide_glue.py). Each ARCHIVE is unpacked
// into site-packages first and marked loaded, as web/worker.js does, without micropip. SCRIPT.py (a path inside HOST_DIR) runs
// with top-level await allowed. The hash seed is fixed, so what a script compiles is
// reproducible.
'use strict';
const fs = require('fs');
const path = require('path');

/** Boot the runtime as the worker does, then run ``script`` (a path inside ``host``).
 * ``env`` adds to Python's environment; ``beforeScript`` runs once everything is unpacked.
 * ``runtimeScript``, when given, is loaded in place of pyodide.asm.js (loadPyodide then finds
 * Pyodide's factory defined and loads no script of its own). */
async function runScript({ runtime, host, script, stdlib, runtimeScript, archives, env = {}, beforeScript = () => {} }) {
  const indexURL = path.resolve(runtime) + path.sep;
  if (runtimeScript) require(path.join(indexURL, runtimeScript));
  const { loadPyodide } = require(path.join(indexURL, 'pyodide.js'));
  const pyodide = await loadPyodide({
    indexURL,
    stdLibURL: stdlib ? path.join(indexURL, stdlib) : undefined,
    env: { PYTHONHASHSEED: '0', ...env },
    stdout: (line) => process.stdout.write(line + '\n'),
    stderr: (line) => process.stderr.write(line + '\n'),
  });
  const site = pyodide.runPython('import sysconfig; sysconfig.get_path("purelib")');
  for (const archive of archives) {
    pyodide.unpackArchive(new Uint8Array(fs.readFileSync(archive)), 'wheel', { extractDir: site });
    pyodide.loadedPackages[path.basename(archive).split('-')[0]] = 'default channel';
  }
  pyodide.runPython(`import sys; sys.path_importer_cache.pop(${JSON.stringify(site)}, None)`); // as the worker does
  pyodide.mountNodeFS('/host', path.resolve(host));
  beforeScript();
  const code = fs.readFileSync(path.resolve(host, script), 'utf8');
  await pyodide.runPythonAsync(code, { filename: `/host/${script}` });
}

function fail(error) {
  process.stderr.write(String((error && error.stack) || error) + '\n');
  process.exit(1);
}

if (require.main === module) {
  const [runtime, host, script, ...rest] = process.argv.slice(2);
  const option = (name) => rest.filter((arg) => arg.startsWith(`--${name}=`)).map((arg) => arg.slice(name.length + 3))[0];
  const archives = rest.filter((arg) => !arg.startsWith('--'));
  runScript({ runtime, host, script, stdlib: option('stdlib'), runtimeScript: option('runtime-script'), archives }).catch(fail);
}

module.exports = { runScript, fail };
