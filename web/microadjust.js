/*! microadjust — on-device personalization. The page side: observe, batch, apply.
 * Add <script src="/microadjust/microadjust.js" defer></script>; mark slots with data-ma-slot.
 * Python runs only in the worker; this file never blocks the main thread.
 * Page ⇄ worker messages: py/microadjust/protocol.py. */
(() => {
  'use strict';
  const PROTOCOL = 1;
  const ASSETS = /*ASSETS*/null; // written by build/bundle.py: content-named worker, wheel, pyodide
  const FLUSH_MS = 1000;
  const script = document.currentScript;
  const base = new URL('.', script ? script.src : location.href);
  const asset = (path) => new URL(path, base).href;
  const config = readConfig();

  const slots = new Map(); // name -> {element, variants: Map(name -> template | null)}
  const shown = new Map(); // slot name -> last decision applied
  const events = []; // behaviour observed since the last flush
  const writes = []; // DOM writes waiting for the next animation frame
  let worker = null;
  let failed = false;
  let settle;
  const ready = new Promise((resolve, reject) => { settle = { resolve, reject }; });
  ready.catch(() => {}); // a failed boot is reported once, as a warning, never as an exception

  function readConfig() {
    const element = document.querySelector('script[type="application/json"][data-microadjust]');
    let parsed = {};
    try {
      parsed = element ? JSON.parse(element.textContent) : {};
    } catch (error) {
      console.warn('microadjust: ignoring the configuration script, it is not valid JSON:', error.message);
    }
    const debug = /(^|[?&])microadjust=debug(&|$)/.test(location.search);
    return { bootTimeoutMs: 30000, ...parsed, debug: debug || parsed.debug === true };
  }

  function warn(message) {
    if (failed) return;
    failed = true;
    console.warn(`microadjust: ${message}; the page keeps its default content.`);
    if (worker) worker.terminate();
    settle.reject(new Error(message));
  }

  // --- context and behaviour, observed passively --------------------------------------------
  function context() {
    const width = innerWidth;
    const touch = matchMedia('(pointer: coarse)').matches;
    const now = new Date();
    return {
      device: width < 768 ? 'mobile' : width < 1100 && touch ? 'tablet' : 'desktop',
      viewport_w: width, viewport_h: innerHeight, touch,
      hour: now.getHours(), weekday: now.getDay(),
      language: (navigator.language || '').slice(0, 2),
      referrer: referrerClass(document.referrer),
      page: document.body.dataset.maPage || 'other',
    };
  }

  function referrerClass(referrer) {
    if (!referrer) return 'direct';
    const host = new URL(referrer).hostname;
    if (host === location.hostname) return 'internal';
    if (/(^|\.)(google|bing|duckduckgo|yahoo|ecosia|baidu|yandex)\./.test(host)) return 'search';
    if (/(^|\.)(facebook|instagram|t|x|twitter|linkedin|reddit|pinterest|tiktok|youtube)\./.test(host)) return 'social';
    return 'other';
  }

  const record = (kind, detail) => events.push({ kind, t: Math.round(performance.now()), ...detail });

  function observe() {
    let maxDepth = -1;
    let scrollQueued = false;
    addEventListener('scroll', () => {
      if (scrollQueued) return;
      scrollQueued = true;
      requestAnimationFrame(() => {
        scrollQueued = false;
        const root = document.documentElement;
        const depth = Math.min(1, (scrollY + innerHeight) / Math.max(root.scrollHeight, 1));
        if (depth > maxDepth + 0.05 || depth === 1 && maxDepth < 1) {
          maxDepth = depth;
          record('scroll', { depth: Math.round(depth * 100) / 100 });
        }
      });
    }, { passive: true });
    addEventListener('click', (event) => {
      const slot = event.target.closest && event.target.closest('[data-ma-slot]');
      record('click', slot ? { slot: slot.dataset.maSlot } : {});
      const decision = slot && shown.get(slot.dataset.maSlot);
      if (decision && !decision.rewarded) {
        decision.rewarded = true;
        send({ type: 'reward', slot: decision.slot, value: 1 });
      }
    }, { capture: true, passive: true });
    document.addEventListener('visibilitychange', () => {
      record(document.hidden ? 'hidden' : 'visible', {});
      if (document.hidden) flush();
    });
    const seen = new IntersectionObserver((entries) => {
      for (const entry of entries) {
        record(entry.isIntersecting ? 'slot_in' : 'slot_out', { slot: entry.target.dataset.maSlot });
      }
    }, { threshold: 0.5 });
    for (const { element } of slots.values()) seen.observe(element);
    setInterval(flush, FLUSH_MS);
  }

  function flush() {
    if (events.length) send({ type: 'events', events: events.splice(0) });
  }

  function send(message) {
    if (worker && !failed) worker.postMessage({ v: PROTOCOL, ...message });
  }

  // --- slots: read once, decide in the worker, write in one animation frame -------------------
  function scanSlots() {
    for (const element of document.querySelectorAll('[data-ma-slot]')) {
      const name = element.dataset.maSlot;
      if (!name || slots.has(name)) {
        console.warn(`microadjust: ignoring a slot with ${name ? 'a duplicate' : 'an empty'} name:`, element);
        continue;
      }
      const variants = new Map([['default', null]]);
      for (const template of element.querySelectorAll(':scope > template')) {
        const variant = template.dataset.maVariant;
        if (variant && variant !== 'default') variants.set(variant, template);
        else console.warn('microadjust: a variant template needs a data-ma-variant name:', template);
      }
      slots.set(name, { element, variants });
    }
  }

  function requestDecisions() {
    const wanted = [...slots].filter(([, slot]) => slot.variants.size > 1)
      .map(([name, slot]) => ({ slot: name, variants: [...slot.variants.keys()] }));
    if (wanted.length) send({ type: 'decide', context: context(), slots: wanted });
  }

  function schedule(write) {
    if (!writes.length) requestAnimationFrame(applyWrites);
    writes.push(write);
  }

  function applyWrites() {
    for (const write of writes.splice(0)) write();
  }

  function apply(decision) {
    const slot = slots.get(decision.slot);
    if (!slot || !slot.variants.has(decision.variant)) return;
    schedule(() => {
      const { element } = slot;
      if (!slot.defaultNodes) slot.defaultNodes = [...element.childNodes].filter((n) => n.nodeName !== 'TEMPLATE');
      const template = slot.variants.get(decision.variant);
      const nodes = template ? [...template.content.cloneNode(true).childNodes] : slot.defaultNodes;
      for (const node of [...element.childNodes]) if (node.nodeName !== 'TEMPLATE') node.remove();
      element.prepend(...nodes);
      element.dataset.maApplied = decision.variant;
      shown.set(decision.slot, decision);
      const { slot: name, variant, probability, event_id, reason } = decision;
      document.dispatchEvent(new CustomEvent('microadjust:decision', {
        detail: { slot: name, variant, probability, event_id, reason },
      }));
    });
  }

  // --- the worker ---------------------------------------------------------------------------
  function onMessage({ data }) {
    if (!data || data.v !== PROTOCOL) return warn(`the worker speaks protocol ${data && data.v}, expected ${PROTOCOL}`);
    if (data.type === 'ready') {
      settle.resolve({ engine: data.engine, restored: data.restored, boot_ms: data.boot_ms });
      requestDecisions();
    } else if (data.type === 'decisions') {
      data.decisions.forEach(apply);
    } else if (data.type === 'error') {
      if (data.fatal) warn(`the engine could not start (${data.message})`);
      else console.warn('microadjust:', data.message);
    }
  }

  function start() {
    performance.mark('microadjust:start');
    if (!ASSETS) return warn('this is the unbuilt loader; serve dist/microadjust/microadjust.js');
    if (typeof Worker !== 'function' || typeof WebAssembly !== 'object') return warn('this browser has no Web Worker or WebAssembly');
    scanSlots();
    if (config.debug) document.head.append(Object.assign(document.createElement('script'), { src: asset(ASSETS.debug) }));
    try {
      worker = new Worker(asset(ASSETS.worker));
    } catch (error) {
      return warn(`the worker could not be created (${error.message})`);
    }
    worker.onmessage = onMessage;
    worker.onerror = (event) => { event.preventDefault(); warn(`the worker failed (${event.message || 'load error'})`); };
    const timer = setTimeout(() => warn(`the engine did not start within ${config.bootTimeoutMs / 1000} s`), config.bootTimeoutMs);
    ready.then(() => clearTimeout(timer), () => clearTimeout(timer));
    const { debug, bootTimeoutMs, ...engineConfig } = config;
    worker.postMessage({
      v: PROTOCOL, type: 'init', config: engineConfig, context: context(),
      assets: { pyodide: asset(ASSETS.pyodide), wheel: asset(ASSETS.wheel) },
    });
    observe();
  }

  window.microadjust = Object.freeze({ version: '0.1.0', ready, decisions: shown });
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start, { once: true });
  else start();
})();
