// Boot the worker's runtime under Node as web/worker.js does, then run a Python file that times
// the engine's import and init (bench/import_time.py writes it and reads what it prints).
//
//   node bench/import_time.cjs RUNTIME_DIR HOST_DIR SCRIPT.py STDLIB_ZIP ARCHIVE... [--importtime]
//
// The stdlib is the worker's trimmed zip; each ARCHIVE (precompiled numpy, the engine wheel) is
// unpacked into site-packages before the timed steps, as worker.js does.
// WebAssembly compilation and instantiation after Python is up (numpy's shared libraries, loaded
// on import) are timed: globalThis.wasmTiming.ms and .count, read by the script through `js`,
// as is globalThis.cpuMs().
// --importtime sets PYTHONPROFILEIMPORTTIME, whose table goes to stderr.
'use strict';
const fs = require('fs');
const path = require('path');
const { performance } = require('perf_hooks');

const wasmTiming = { ms: 0, count: 0, on: false };
globalThis.wasmTiming = wasmTiming;
// the process's CPU time in ms (all its threads): less disturbed by the machine's load than
// wall time, which also counts the time spent waiting for a core
globalThis.cpuMs = () => {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1000;
};

// Emscripten loads a shared library at dlopen with new WebAssembly.Module, then Instance.
function timed(Original) {
  return new Proxy(Original, {
    construct(target, args) {
      const start = performance.now();
      try {
        return Reflect.construct(target, args);
      } finally {
        if (wasmTiming.on) {
          wasmTiming.ms += performance.now() - start;
          if (target === Module) wasmTiming.count += 1;
        }
      }
    },
  });
}
const [Module, Instance] = [WebAssembly.Module, WebAssembly.Instance];
WebAssembly.Module = timed(Module);
WebAssembly.Instance = timed(Instance);

async function main() {
  const args = process.argv.slice(2);
  const [runtime, host, script, stdlib, ...archives] = args.filter((arg) => !arg.startsWith('--'));
  const indexURL = path.resolve(runtime) + path.sep;
  const { loadPyodide } = require(path.join(indexURL, 'pyodide.js'));
  const pyodide = await loadPyodide({
    indexURL,
    stdLibURL: path.join(indexURL, stdlib),
    env: args.includes('--importtime') ? { PYTHONPROFILEIMPORTTIME: '1' } : {},
    stdout: (line) => process.stdout.write(line + '\n'),
    stderr: (line) => process.stderr.write(line + '\n'),
  });
  const site = pyodide.runPython('import sysconfig; sysconfig.get_path("purelib")');
  for (const archive of archives) {
    pyodide.unpackArchive(new Uint8Array(fs.readFileSync(archive)), 'zip', { extractDir: site });
  }
  pyodide.runPython(`import sys; sys.path_importer_cache.pop(${JSON.stringify(site)}, None)`); // as worker.js
  pyodide.mountNodeFS('/host', path.resolve(host));
  wasmTiming.on = true;
  const code = fs.readFileSync(path.resolve(host, script), 'utf8');
  await pyodide.runPythonAsync(code, { filename: `/host/${script}` });
}

main().catch((error) => {
  process.stderr.write(String((error && error.stack) || error) + '\n');
  process.exit(1);
});
