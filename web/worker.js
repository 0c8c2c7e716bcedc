// microadjust worker: boots Pyodide from the site's own origin, installs the engine wheel and
// hands every page message to the Python handler microadjust.browser.session.WorkerSession.
// The message protocol is documented in one place: py/microadjust/protocol.py.
'use strict';

const PROTOCOL = 1;
const SAVE_DELAY_MS = 250;
let session = null; // the Python WorkerSession, once booted
let persist = true; // false when the page says nothing may be stored on this device
const pending = []; // page messages that arrive while the engine boots
let saveTimer = 0;

self.onmessage = ({ data }) => {
  if (data && data.type === 'init') boot(data).catch(fatal);
  else if (data && data.type === 'consent') setPersist(data.granted);
  else if (session) handle(data);
  else pending.push(data);
};

// Persistence follows the visitor's choice: consent given, or not required and no GPC.
async function setPersist(granted) {
  persist = granted;
  clearTimeout(saveTimer);
  saveTimer = 0;
  if (!session) return;
  session.sync_consent(granted);
  await store(granted ? 'put' : 'delete', granted ? session.checkpoint() : undefined);
}

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
  persist = init.persist !== false;
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
  session = pyodide.pyimport('microadjust.browser.session').WorkerSession();
  const saved = await stored;
  handle({
    v: PROTOCOL, type: 'init', config: init.config, context: init.context,
    state: saved ? JSON.parse(saved) : null, boot_ms: Math.round(performance.now() - started),
    persist, gpc: init.gpc === true, priors: await priors,
  });
  for (const message of pending.splice(0)) handle(message);
  startUploads();
  const lazy = session.lazy_packages().toJs();
  if (lazy.length) {
    const loading = pyodide.loadPackage(lazy, { messageCallback: () => {} });
    const stdlib = download(base + LAZY_STDLIB); // meanwhile: only importing them needs it
    await loading;
    pyodide.FS.writeFile(LAZY_STDLIB_PATH, await stdlib);
    pyodide.pyimport('sys').path.append(LAZY_STDLIB_PATH);
    handle({ v: PROTOCOL, type: 'packages_loaded', packages: lazy });
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

function handle(message) {
  const replies = JSON.parse(session.handle_json(JSON.stringify(message)));
  if (message.type === 'forget') return setPersist(false).then(() => replies.forEach((r) => postMessage(r)));
  replies.forEach((reply) => postMessage(reply));
  if (persist && session.dirty && !saveTimer) saveTimer = setTimeout(save, SAVE_DELAY_MS);
}

async function save() {
  saveTimer = 0;
  if (persist) await store('put', session.checkpoint());
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
      const request = operation === 'get' ? objects.get('engine')
        : operation === 'put' ? objects.put(value, 'engine') : objects.delete('engine');
      tx.oncomplete = () => { db.close(); resolve(request.result ?? null); };
      tx.onerror = () => { db.close(); resolve(null); };
    };
  });
}

// --- the optional sync server: priors down at boot, noisy aggregates up now and then ----------
// What is sent, and when, is decided in Python (microadjust.browser.sync_client); here only fetch().
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

function startUploads() { // Python says, each time, whether anything may be sent (consent can change)
  const plan = JSON.parse(session.sync_plan());
  if (!plan) return;
  setTimeout(upload, Math.min(plan.interval_ms, 5000)); // a batch left by an earlier visit
  setInterval(upload, plan.interval_ms);
}

let uploading = false;
async function upload() {
  if (uploading || !persist) return;
  const body = session.sync_upload();
  if (body === 'null') return;
  uploading = true;
  try {
    clearTimeout(saveTimer);
    await save(); // the batch and its watermark are stored before they are sent
    const plan = JSON.parse(session.sync_plan());
    let status = 0;
    try {
      const response = await fetch(plan.uploads_url, {
        method: 'POST', body, credentials: 'omit', keepalive: true,
        headers: { 'Content-Type': 'application/json', 'X-Microadjust-Key': plan.key },
        signal: AbortSignal.timeout(SYNC_TIMEOUT_MS),
      });
      status = response.status;
    } catch { /* offline: the same batch is sent again next time */ }
    for (const reply of JSON.parse(session.sync_result(JSON.parse(body).batch_id, status))) postMessage(reply);
    if (session.dirty) await save();
  } finally {
    uploading = false;
  }
}
