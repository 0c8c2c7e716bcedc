// Boot the worker's runtime under Node as web/worker.js does, then run a Python file that times
// the engine's import and init (bench/import_time.py writes it and reads what it prints).
//
//   node bench/import_time.cjs RUNTIME_DIR HOST_DIR SCRIPT.py STDLIB_ZIP RUNTIME_SCRIPT ARCHIVE...
//        [--importtime]
//
// The runtime boots as build/pyodide_node.cjs boots it (the worker's trimmed stdlib and runtime
// script, each ARCHIVE unpacked into site-packages) before the timed steps.
// WebAssembly compilation and instantiation after Python is up (numpy's shared libraries, loaded
// on import) are timed: globalThis.wasmTiming.ms and .count, read by the script through `js`,
// as is globalThis.cpuMs().
// --importtime sets PYTHONPROFILEIMPORTTIME, whose table goes to stderr.
'use strict';
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

const { runScript, fail } = require('../build/pyodide_node.cjs');
const args = process.argv.slice(2);
const [runtime, host, script, stdlib, runtimeScript, ...archives] = args.filter((arg) => !arg.startsWith('--'));
runScript({
  runtime, host, script, stdlib, runtimeScript, archives,
  env: args.includes('--importtime') ? { PYTHONPROFILEIMPORTTIME: '1' } : {},
  beforeScript: () => { wasmTiming.on = true; },
}).catch(fail);
