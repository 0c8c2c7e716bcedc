// microadjust worker: boots Pyodide from the site's own origin, installs the engine wheel and
// talks to Python through one call, WorkerSession.handle_json(text, fromHost): every page
// message, and this host's own messages (checkpoint, sync_upload, sync_result, packages_loaded).
// Replies of the types in HOST are for this worker; every other reply goes to the page.
// The protocol, host messages and replies included, is written down in one place:
// py/microadjust/browser/protocol.py.
'use strict';

const PROTOCOL = 1;
// written by build/bundle.py: the lock file's "derived" entries (file name, sha256 of the
// precompiled stdlib and numpy, and of the runtime script), so numpy's download starts at once
const DERIVED = /*DERIVED*/null;
const SAVE_DELAY_MS = 250;
let session = null; // the Python WorkerSession, once booted
let plan = { packages: [], upload_interval_ms: null }; // what Python asks of this host at boot
const pending = []; // page messages that arrive while the engine boots
let saveTimer = 0;
let aheadTimer = 0;
// Boot steps as performance marks in the worker's own timeline, once each (bench/boot.py
// reads them).
const marked = new Set();
const mark = (step) => marked.has(step) || (marked.add(step), performance.mark(`microadjust:worker:${step}`));
mark('script');

self.onmessage = ({ data }) => {
  if (data && data.type === 'init') boot(data).catch(fatal);
  else if (session) handle(data);
  else pending.push(data);
};

function fatal(error) {
  postMessage({ v: PROTOCOL, type: 'error', fatal: true, message: String(error && error.message || error) });
  self.close();
}

// The worker's stdlib and numpy, trimmed and precompiled by build/precompile.py (PyScript keeps
// the official ones): what boot needs, and what only the lazy packages need, added with them.
const STDLIB = 'python_stdlib-engine.zip';
const LAZY_STDLIB = 'python_stdlib-lazy.zip';
const LAZY_STDLIB_PATH = '/lib/python312-lazy.zip'; // the path its bytecode was compiled for

async function boot(init) {
  const started = performance.now();
  mark('init');
  const base = init.assets.pyodide;
  const archives = Promise.all([fetchDerived(base, 'numpy'), download(init.assets.wheel)]); // while Python starts
  archives.catch(() => {}); // a failure is reported where it is awaited, below
  const libraries = archives.then(([numpy]) => compileLibraries(numpy)).catch(() => []); // meanwhile
  const persist = init.persist !== false;
  const stored = persist ? store('get') : null; // read while Python starts
  const priors = fetchPriors(init.config && init.config.sync); // meanwhile, while Python boots
  const runtimeScript = base + DERIVED.runtime.file_name; // build/pyodide_glue.py
  loadRuntimeScript(runtimeScript);
  importScripts(base + 'pyodide.js');
  mark('pyodide-js');
  const pyodide = await loadPyodide({
    indexURL: base,
    stdLibURL: base + STDLIB,
    stdout: () => {},
    stderr: (line) => console.debug('[microadjust]', line),
  });
  mark('python');
  const site = install(pyodide, await archives);
  const path = (name) => pyodide.PATH.normalize(`${site}/${name}`); // as Python's dlopen names it
  pyodide._module.compiledDynlibs = new Map((await libraries).map(([name, module]) => [path(name), module]));
  mark('installed');
  const fetched = await priors; // before the session exists: page messages wait in pending
  const saved = await stored;
  session = pyodide.pyimport('microadjust.browser.session').WorkerSession();
  mark('imported');
  await handle({
    v: PROTOCOL, type: 'init', config: init.config, context: init.context,
    state: saved ? JSON.parse(saved) : null, boot_ms: Math.round(performance.now() - started),
    persist, gpc: init.gpc === true, automated: init.automated === true, priors: fetched,
    explain: init.explain === true, ahead: init.ahead,
  });
  mark('ready');
  delete pyodide._module.compiledDynlibs; // those not loaded by now load from their files, if ever
  for (const message of pending.splice(0)) handle(message); // Python takes them in order
  if (!saved) compileRuntimeAgain(runtimeScript); // a first visit (or no state kept)
  if (plan.upload_interval_ms) startUploads(plan.upload_interval_ms);
  if (plan.packages.length) {
    const loading = pyodide.loadPackage(plan.packages, { messageCallback: () => {} });
    // meanwhile, what only importing them needs: the rest of the stdlib and of numpy
    const stdlib = download(base + LAZY_STDLIB);
    const numpy = fetchDerived(base, 'numpy-lazy');
    await loading;
    pyodide.FS.writeFile(LAZY_STDLIB_PATH, await stdlib);
    pyodide.pyimport('sys').path.append(LAZY_STDLIB_PATH);
    install(pyodide, [await numpy]); // numpy's subpackages beside the rest of numpy
    host('packages_loaded', { packages: plan.packages });
  }
}

// The runtime script (pyodide.asm.js, derived: build/pyodide_glue.py) as a module script, not
// through importScripts: Chromium keeps no compiled code for a dedicated worker's classic
// scripts, and does for its modules (from the third load on: about 40 ms of a warm boot).
// loadPyodide finds _createPyodideModule defined, so it loads no pyodide.asm.js of its own, and
// waits for the module meanwhile; a browser that cannot import() in a worker gets the script
// the classic way.
function loadRuntimeScript(url) {
  const loaded = import(url).catch(() => importScripts(url));
  self._createPyodideModule = async (settings) => {
    await loaded; // the module replaces this stand-in with Pyodide's own function
    return self._createPyodideModule(settings);
  };
}

// The runtime script loaded once more, in a throwaway worker (compile.js), so that Chromium writes
// its code cache during this page view rather than during the next one. Only ever a gain: a
// browser that cannot start it, or where it fails, compiles the runtime next time as before.
// Its errors stop here (preventDefault): uncaught, they would reach the page as this worker's.
// It starts a while after the first decisions, not while a slow phone's page applies them.
const COMPILE_AGAIN_AFTER_MS = 2000;

function compileRuntimeAgain(url) {
  mark('compile-again');
  setTimeout(() => {
    try {
      const compiler = new Worker(new URL('compile.js', self.location.href));
      const finish = (step) => { mark(step); compiler.terminate(); };
      compiler.onmessage = ({ data: loaded }) => finish(loaded ? 'compiled-again' : 'compile-again-failed');
      compiler.onerror = (event) => { event.preventDefault(); finish('compile-again-failed'); };
      compiler.postMessage(url);
    } catch { /* no workers inside workers here: nothing is lost */ }
  }, COMPILE_AGAIN_AFTER_MS);
}

// The precompiled numpy and the engine wheel are unpacked into site-packages as they are, no
// micropip, no resolution at boot. A derived file is checked against its sha256 in the lock.
function fetchDerived(base, role) {
  return download(base + DERIVED[role].file_name, DERIVED[role].sha256);
}

async function download(url, sha256) {
  const integrity = sha256 && 'sha256-' + btoa(String.fromCharCode(...sha256.match(/../g).map((h) => parseInt(h, 16))));
  const response = await fetch(url, integrity ? { integrity } : {});
  if (!response.ok) throw new Error(`${url} answered HTTP ${response.status}`);
  return new Uint8Array(await response.arrayBuffer());
}

// Unpacks the archives into site-packages; returns its path.
function install(pyodide, archives) {
  const site = pyodide.runPython('import sysconfig; sysconfig.get_path("purelib")');
  for (const archive of archives) unpack(pyodide.FS, archive, site);
  pyodide.loadedPackages.numpy = 'default channel'; // scikit-learn, loaded later, depends on it
  // Forget what the import system listed of site-packages before. (Not
  // importlib.invalidate_caches(): it imports importlib.metadata, 45 ms of a warm boot.)
  pyodide.runPython(`import sys; sys.path_importer_cache.pop(${JSON.stringify(site)}, None)`);
  return site;
}

// The archives are stored (uncompressed) zips, written by build/precompile.py and checked on
// download: each file is written into Pyodide's file system straight from the downloaded bytes.
// (pyodide.unpackArchive extracts with Python's zipfile, several times slower at boot.)
function unpack(FS, archive, directory) {
  const made = new Set();
  for (const [name, data] of files(archive)) {
    const folder = `${directory}/${name}`.replace(/\/[^/]*$/, '');
    if (!made.has(folder)) { FS.mkdirTree(folder); made.add(folder); }
    FS.writeFile(`${directory}/${name}`, data);
  }
}

// Each file of a stored zip: [its path in the archive, its bytes (a view, not a copy)].
function* files(archive) {
  const view = new DataView(archive.buffer, archive.byteOffset, archive.byteLength);
  const at = (offset, bytes) => (bytes === 2 ? view.getUint16(offset, true) : view.getUint32(offset, true));
  let end = archive.length - 22; // the end of the central directory record, after any comment
  while (end >= 0 && at(end, 4) !== 0x06054b50) end--;
  if (end < 0) throw new Error('an archive is not a zip file');
  const names = new TextDecoder();
  for (let entry = at(end + 16, 4), left = at(end + 10, 2); left > 0; left--) {
    const nameLength = at(entry + 28, 2);
    const name = names.decode(archive.subarray(entry + 46, entry + 46 + nameLength));
    const [method, size, local] = [at(entry + 10, 2), at(entry + 20, 4), at(entry + 42, 4)];
    entry += 46 + nameLength + at(entry + 30, 2) + at(entry + 32, 2);
    if (name.endsWith('/')) continue;
    if (method !== 0 || name.startsWith('/') || name.split('/').includes('..')) {
      throw new Error(`${name} in an archive is compressed or points outside it`);
    }
    const start = local + 30 + at(local + 26, 2) + at(local + 28, 2);
    yield [name, archive.subarray(start, start + size)];
  }
}

// numpy's shared libraries compiled off this thread (WebAssembly.compile) while Python starts;
// Python's import then instantiates them instead of compiling each file on this thread
// (build/pyodide_glue.py, compiledDynlibs: 11-40 ms a page view, traced). One that fails to compile
// here is left out, and is compiled from its file as before.
async function compileLibraries(archive) {
  const libraries = [...files(archive)].filter(([name]) => name.endsWith('.so'));
  const compiled = await Promise.all(libraries.map(([, data]) => WebAssembly.compile(data).catch(() => null)));
  return libraries.map(([name], i) => [name, compiled[i]]).filter(([, module]) => module);
}

// The one seam: a message to Python (synchronously, so Python sees messages in arrival order),
// then its replies acted on (host) or posted (page), in order.
async function handle(message, fromHost = false) {
  const replies = JSON.parse(session.handle_json(JSON.stringify(message), fromHost));
  for (const reply of replies) {
    if (Object.hasOwn(HOST, reply.type)) await HOST[reply.type](reply);
    else postMessage(reply);
    if (reply.type === 'decisions') mark('decided');
  }
}

function host(type, fields = {}) {
  return handle({ v: PROTOCOL, type, ...fields }, true);
}

// What Python asks of this host (protocol.py, "Worker → host").
const HOST = {
  plan(reply) { plan = reply; },
  ahead_due() { // in a task of its own: the decisions just made reach the page first
    if (!aheadTimer) aheadTimer = setTimeout(() => { aheadTimer = 0; host('decide_ahead'); }, 0);
  },
  unsaved() { if (!saveTimer) saveTimer = setTimeout(save, SAVE_DELAY_MS); },
  save(reply) { return store('put', JSON.stringify(reply.state)); },
  erase() {
    clearTimeout(saveTimer);
    saveTimer = 0;
    return eraseDatabase();
  },
  upload(batch) { send(batch); }, // in the background: replies after it need not wait
};

function save() {
  clearTimeout(saveTimer);
  saveTimer = 0;
  return host('checkpoint'); // Python replies 'save', or nothing (unchanged, or not allowed)
}

// The engine's state lives in IndexedDB, one record, written only from this worker. When
// IndexedDB fails (it throws, or a request or transaction errors), the engine runs on without
// keeping state: one warning to the page, and no further attempt in this page view.
let storageFailed = false;

function store(operation, value) {
  if (storageFailed) return Promise.resolve(null);
  return new Promise((resolve, reject) => {
    const open = indexedDB.open('microadjust', 1);
    open.onupgradeneeded = () => open.result.createObjectStore('state');
    open.onerror = () => reject(open.error);
    open.onsuccess = () => {
      const db = open.result;
      try {
        const tx = db.transaction('state', operation === 'get' ? 'readonly' : 'readwrite');
        const objects = tx.objectStore('state');
        const request = operation === 'get' ? objects.get('engine') : objects.put(value, 'engine');
        tx.oncomplete = () => { db.close(); resolve(request.result ?? null); };
        tx.onerror = tx.onabort = () => { db.close(); reject(tx.error || request.error); };
      } catch (error) {
        db.close();
        reject(error);
      }
    };
  }).catch((error) => {
    if (!storageFailed) {
      storageFailed = true;
      const reason = String(error && error.message || error || 'unknown error');
      postMessage({ v: PROTOCOL, type: 'error', message: `IndexedDB failed (${reason}); the engine runs without keeping its state on this device.` });
    }
    return null;
  });
}

// forget() and withdrawn consent: the database goes, not only its record, so no trace is left.
function eraseDatabase() {
  return new Promise((resolve) => {
    try {
      const request = indexedDB.deleteDatabase('microadjust');
      request.onsuccess = request.onerror = request.onblocked = () => resolve(null);
    } catch {
      resolve(null); // IndexedDB is unusable here: there is nothing to delete
    }
  });
}

// --- the optional sync server: priors down at boot, noisy aggregates up now and then ----------
// What is sent, and when, is decided in Python (microadjust.browser.sync); here only fetch().
const SYNC_TIMEOUT_MS = 5000;

async function fetchPriors(sync) {
  if (!sync || typeof sync.site !== 'string') return null;
  const url = `${String(sync.url || '').replace(/\/+$/, '')}/v1/sites/${encodeURIComponent(sync.site)}/priors`;
  try { // the HTTP cache revalidates with the ETag; the engine's state keeps the last prior
    const response = await fetch(url, { credentials: 'omit', signal: AbortSignal.timeout(SYNC_TIMEOUT_MS) });
    return response.ok ? await response.json() : null;
  } catch {
    return null; // no server, offline or slow: the engine starts from what it has
  }
}

// Python says, each time, whether anything may be sent (consent can change). It also offers a
// batch at once when the page is hidden (an 'events' batch with a 'hidden' event).
function startUploads(intervalMs) {
  const offer = () => { if (!sending) host('sync_upload'); };
  setTimeout(offer, Math.min(intervalMs, 5000)); // a batch left by an earlier visit
  setInterval(offer, intervalMs);
}

let sending = false;
async function send(batch) {
  if (sending) return; // the same batch is on its way
  sending = true;
  try {
    await save(); // the batch is stored before it is sent, so a retry carries the same batch id
    let status = 0;
    try { // keepalive: the request outlives a page that is being closed
      const response = await fetch(batch.url, {
        method: 'POST', body: batch.body, credentials: 'omit', keepalive: true,
        headers: { 'Content-Type': 'application/json', 'X-Microadjust-Key': batch.key },
        signal: AbortSignal.timeout(SYNC_TIMEOUT_MS),
      });
      status = response.status;
    } catch { /* offline: the same batch is sent again next time */ }
    await host('sync_result', { batch_id: batch.batch_id, status });
  } finally {
    sending = false;
  }
}
