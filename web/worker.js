// microadjust worker: boots Pyodide from the site's own origin, installs the engine wheel and
// talks to Python through one call, WorkerSession.handle_json(text, fromHost): every page
// message, and this host's own messages (checkpoint, sync_upload, sync_result, packages_loaded).
// Replies of the types in HOST are for this worker; every other reply goes to the page.
// The protocol, host messages and replies included, is written down in one place:
// py/microadjust/browser/protocol.py.
'use strict';

const PROTOCOL = 1;
const SAVE_DELAY_MS = 250;
let session = null; // the Python WorkerSession, once booted
let plan = { packages: [], upload_interval_ms: null }; // what Python asks of this host at boot
const pending = []; // page messages that arrive while the engine boots
let saveTimer = 0;

self.onmessage = ({ data }) => {
  if (data && data.type === 'init') boot(data).catch(fatal);
  else if (session) handle(data);
  else pending.push(data);
};

function fatal(error) {
  postMessage({ v: PROTOCOL, type: 'error', fatal: true, message: String(error && error.message || error) });
  self.close();
}

// The worker's stdlib, trimmed and precompiled by build/precompile.py (PyScript keeps the
// official one): what boot needs, and what only the lazy packages need, added with them.
const STDLIB = 'python_stdlib-engine.zip';
const LAZY_STDLIB = 'python_stdlib-lazy.zip';
const LAZY_STDLIB_PATH = '/lib/python312-lazy.zip'; // the path its bytecode was compiled for

async function boot(init) {
  const started = performance.now();
  const base = init.assets.pyodide;
  const archives = fetchArchives(base, init.assets.wheel); // downloaded while Python starts
  archives.catch(() => {}); // a failure is reported where it is awaited, below
  const persist = init.persist !== false;
  const stored = persist ? store('get') : null; // read while Python starts
  const priors = fetchPriors(init.config && init.config.sync); // meanwhile, while Python boots
  importScripts(base + 'pyodide.js');
  const pyodide = await loadPyodide({
    indexURL: base,
    stdLibURL: base + STDLIB,
    stdout: () => {},
    stderr: (line) => console.debug('[microadjust]', line),
  });
  install(pyodide, await archives);
  const fetched = await priors; // before the session exists: page messages wait in pending
  const saved = await stored;
  session = pyodide.pyimport('microadjust.browser.session').WorkerSession();
  await handle({
    v: PROTOCOL, type: 'init', config: init.config, context: init.context,
    state: saved ? JSON.parse(saved) : null, boot_ms: Math.round(performance.now() - started),
    persist, gpc: init.gpc === true, priors: fetched, explain: init.explain === true,
  });
  for (const message of pending.splice(0)) handle(message); // Python takes them in order
  if (plan.upload_interval_ms) startUploads(plan.upload_interval_ms);
  if (plan.packages.length) {
    const loading = pyodide.loadPackage(plan.packages, { messageCallback: () => {} });
    const stdlib = download(base + LAZY_STDLIB); // meanwhile: only importing them needs it
    await loading;
    pyodide.FS.writeFile(LAZY_STDLIB_PATH, await stdlib);
    pyodide.pyimport('sys').path.append(LAZY_STDLIB_PATH);
    host('packages_loaded', { packages: plan.packages });
  }
}

// The precompiled numpy (the lock file's "derived" entries name it, with its sha256) and the
// engine wheel: unpacked into site-packages as they are, no micropip, no resolution at boot.
function fetchArchives(base, wheel) {
  const numpy = download(base + 'pyodide-lock.json')
    .then((lock) => JSON.parse(new TextDecoder().decode(lock)).derived.numpy)
    .then((entry) => download(base + entry.file_name, entry.sha256));
  return Promise.all([numpy, download(wheel)]);
}

async function download(url, sha256) {
  const integrity = sha256 && 'sha256-' + btoa(String.fromCharCode(...sha256.match(/../g).map((h) => parseInt(h, 16))));
  const response = await fetch(url, integrity ? { integrity } : {});
  if (!response.ok) throw new Error(`${url} answered HTTP ${response.status}`);
  return new Uint8Array(await response.arrayBuffer());
}

function install(pyodide, archives) {
  const site = pyodide.runPython('import sysconfig; sysconfig.get_path("purelib")');
  for (const archive of archives) pyodide.unpackArchive(archive, 'wheel', { extractDir: site });
  pyodide.loadedPackages.numpy = 'default channel'; // scikit-learn, loaded later, depends on it
  pyodide.runPython('import importlib; importlib.invalidate_caches()');
}

// The one seam: a message to Python (synchronously, so Python sees messages in arrival order),
// then its replies acted on (host) or posted (page), in order.
async function handle(message, fromHost = false) {
  const replies = JSON.parse(session.handle_json(JSON.stringify(message), fromHost));
  for (const reply of replies) {
    if (Object.hasOwn(HOST, reply.type)) await HOST[reply.type](reply);
    else postMessage(reply);
  }
}

function host(type, fields = {}) {
  return handle({ v: PROTOCOL, type, ...fields }, true);
}

// What Python asks of this host (protocol.py, "Worker → host").
const HOST = {
  plan(reply) { plan = reply; },
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

// The engine's state lives in IndexedDB, one record, written only from this worker.
function store(operation, value) {
  return new Promise((resolve) => {
    const open = indexedDB.open('microadjust', 1);
    open.onupgradeneeded = () => open.result.createObjectStore('state');
    open.onerror = () => resolve(null);
    open.onsuccess = () => {
      const db = open.result;
      const tx = db.transaction('state', operation === 'get' ? 'readonly' : 'readwrite');
      const objects = tx.objectStore('state');
      const request = operation === 'get' ? objects.get('engine') : objects.put(value, 'engine');
      tx.oncomplete = () => { db.close(); resolve(request.result ?? null); };
      tx.onerror = () => { db.close(); resolve(null); };
    };
  });
}

// forget() and withdrawn consent: the database goes, not only its record, so no trace is left.
function eraseDatabase() {
  return new Promise((resolve) => {
    const request = indexedDB.deleteDatabase('microadjust');
    request.onsuccess = request.onerror = request.onblocked = () => resolve(null);
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
