// Boot the worker's runtime under Node as web/worker.js does, then run a Python file that times
// the engine's import and init (bench/import_time.py writes it and reads what it prints).
//
//   node bench/import_time.cjs RUNTIME_DIR HOST_DIR SCRIPT.py STDLIB_ZIP ARCHIVE... [--importtime]
//
// The stdlib is the worker's trimmed zip; each ARCHIVE (precompiled numpy, the engine wheel) is
// written into site-packages straight from its stored zip entries, as worker.js unpack() does.
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

function unpack(FS, archive, directory) {
  const view = new DataView(archive.buffer, archive.byteOffset, archive.byteLength);
  const at = (offset, bytes) => (bytes === 2 ? view.getUint16(offset, true) : view.getUint32(offset, true));
  let end = archive.length - 22;
  while (end >= 0 && at(end, 4) !== 0x06054b50) end--;
  if (end < 0) throw new Error('an archive is not a zip file');
  const names = new TextDecoder();
  for (let entry = at(end + 16, 4), left = at(end + 10, 2); left > 0; left--) {
    const nameLength = at(entry + 28, 2);
    const name = names.decode(archive.subarray(entry + 46, entry + 46 + nameLength));
    const [method, size, local] = [at(entry + 10, 2), at(entry + 20, 4), at(entry + 42, 4)];
    entry += 46 + nameLength + at(entry + 30, 2) + at(entry + 32, 2);
    if (name.endsWith('/')) continue;
    if (method !== 0) throw new Error(`${name} is compressed; expected a stored zip`);
    FS.mkdirTree(`${directory}/${name}`.replace(/\/[^/]*$/, ''));
    const start = local + 30 + at(local + 26, 2) + at(local + 28, 2);
    FS.writeFile(`${directory}/${name}`, archive.subarray(start, start + size));
  }
}

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
  for (const archive of archives) unpack(pyodide.FS, new Uint8Array(fs.readFileSync(archive)), site);
  pyodide.runPython('import importlib; importlib.invalidate_caches()');
  pyodide.mountNodeFS('/host', path.resolve(host));
  wasmTiming.on = true;
  const code = fs.readFileSync(path.resolve(host, script), 'utf8');
  await pyodide.runPythonAsync(code, { filename: `/host/${script}` });
}

main().catch((error) => {
  process.stderr.write(String((error && error.stack) || error) + '\n');
  process.exit(1);
});
