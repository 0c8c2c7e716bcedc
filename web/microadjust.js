/*! microadjust — on-device personalization. The page side: observe, batch, apply.
 * <script src="/microadjust/microadjust.js" defer></script>, then mark the page up:
 * data-ma-slot + <template data-ma-variant>, data-ma-rank + data-ma-item, data-ma-trigger,
 * data-ma-goal (+ data-ma-value). Python runs only in the worker; this file never blocks.
 * Page ⇄ worker messages: py/microadjust/browser/protocol.py. Markup and API: README.md. */
(() => {
  'use strict';
  const PROTOCOL = 1;
  const VERSION = /*VERSION*/null; // written by build/bundle.py, from pyproject.toml
  const ASSETS = /*ASSETS*/null; // written by build/bundle.py: content-named worker, wheel, pyodide
  const FLUSH_MS = 1000; // behaviour goes to the worker in batches, at most once a second
  const SEEN_MS = 1000; // an impression: at least half visible for a second
  const CACHE_KEY = 'microadjust:ahead'; // the worker's decisions for the next page view
  const RAGE = { clicks: 3, ms: 1000, px: 30 }; // rage_clicks: 3 clicks within 1 s and 30 px
  const SCROLL_BACK = { viewports: 0.5, ms: 500 }; // scroll_back: half a viewport up in 0.5 s
  const INTERACTIVE = 'a[href],button,input,select,textarea,label,summary,option,video,audio,' +
    '[contenteditable]:not([contenteditable=false]),[tabindex]:not([tabindex="-1"]),[onclick],' +
    '[role=button],[role=link],[role=checkbox],[role=menuitem],[role=tab],[role=switch],[data-ma-goal]';
  const HUMAN_INPUT = ['pointerdown', 'touchstart', 'keydown', 'wheel']; // trusted ones: a person
  const CONSENT_KEY = 'microadjust:consent';
  const HOSTS = '[data-ma-slot],[data-ma-rank]';
  const ATTRIBUTES = new Set(['maSlot', 'maRank', 'maItem', 'maVariant', 'maTrigger', 'maGoal',
    'maValue', 'maLive', 'maManual', 'maPage', 'maApplied', 'maSrc', 'maSrcset', 'maAlt',
    'maHref', 'maClass']);
  const PAGE_KEYS = ['debug', 'consent', 'boot_timeout_s', 'datalayer'];
  const DECIDE_BATCH = 50; // slots per 'decide' message (protocol.py MAX_SLOTS)
  const ORDER_SEPARATOR = '.'; // a ranking's order in a preview link: cards=b.a.c
  const MAX_MEASURES = 200; // dev-tools timings kept (microadjust:decide:*, :apply:*), then cleared

  const script = document.currentScript;
  const base = new URL('.', script ? script.src : location.href);
  const asset = (path) => new URL(path, base).href;
  const modes = readModes();
  const config = readConfig();
  const gpc = navigator.globalPrivacyControl === true;
  const saveData = Boolean(navigator.connection && navigator.connection.saveData); // data saver: start nothing
  let persist = storage('get', CONSENT_KEY) === 'granted' || (config.consent !== 'required' && !gpc);
  const cache = persist && !saveData ? readCache() : {}; // slot -> a decision made ahead, shown at most once

  /**
   * A slot (data-ma-slot) or ranking (data-ma-rank); register() sets every field. `decision` is on
   * screen, `waiting` held until out of view, `next` due next frame; `shown`: a variant or an order.
   * @typedef {{name: string, element: HTMLElement, isRank: boolean, trigger: ?string,
   *   live: boolean, manual: boolean, variants: Map<string, ?HTMLTemplateElement>,
   *   items: Map<string, HTMLElement>, decision: ?Decision, waiting: ?Decision, next: ?Decision,
   *   seenDecision: ?Decision, shown: string, ahead: ?Decision, inView: boolean,
   *   halfVisible: boolean, seenTimer: number, defaults: ?Object, replaced: boolean,
   *   classes: string[], preview: ?Decision}} Slot
   * @typedef {{slot: string, variant: string, probability: number, event_id: ?string,
   *   reason: string, holdout?: boolean, order?: string[], why?: Object, preview?: boolean,
   *   ahead?: boolean}} Decision
   */
  const slots = /** @type {Map<string, Slot>} */ (new Map());
  const slotOf = /** @type {WeakMap<Element, Slot>} */ (new WeakMap());
  const known = new WeakSet(); // elements already registered or warned about
  const events = []; // behaviour observed since the last flush
  const writes = []; // DOM writes waiting for the next animation frame
  const requests = new Map(); // request id -> resolve, for decide / forget / export
  const listeners = new Set(); // on('decision', fn)
  let worker = null;
  let failed = false;
  let maxSlots = Infinity; // the engine's limit (its 'ready' message): the first slots only
  let overLimit = false; // warned that the page has more slots than the engine takes
  let ignored = null; // the worker's word on why this page view learns nothing (automated)
  let nextId = 1;
  const asked = new Map(); // slot -> when its decision was requested (for microadjust:decide)
  const measures = new Set(); // names of the timings this page added
  let measured = 0;
  let aheadTaken = false; // start() took the decisions made ahead that the page shows
  let booted = 0; // when start() began: microadjust:boot runs from here to the engine ready
  let settle;
  const ready = new Promise((resolve, reject) => { settle = { resolve, reject }; });
  ready.catch(() => {}); // a failed boot is reported once, as a warning, never as an exception

  function readConfig() {
    const element = document.querySelector('script[type="application/json"][data-microadjust]');
    let parsed = {};
    try {
      parsed = element ? JSON.parse(element.textContent) : {};
      if (typeof parsed !== 'object' || Array.isArray(parsed) || !parsed) throw new Error('not an object');
    } catch (error) {
      console.warn('microadjust: ignoring the configuration, it is not a JSON object:', error.message, element);
      parsed = {};
    }
    if (modes.debug) parsed.debug = true;
    return { boot_timeout_s: 30, ...parsed };
  }

  /**
   * The page's modes from the URL: ?microadjust=debug,preview:cta=quiz,cards=b.a.c (comma-separated;
   * the parameter may also repeat). Each slot=variant after "preview:" is shown as is, never decided.
   * @returns {{debug: boolean, preview: Map<string, string>, bad: string[]}} bad: parts not understood
   */
  function readModes() {
    const found = { debug: false, preview: new Map(), bad: [] };
    const decode = (text) => { try { return decodeURIComponent(text.replace(/\+/g, ' ')); } catch { return text; } };
    for (const pair of location.search.slice(1).split('&')) {
      const at = pair.indexOf('=');
      if (at < 0 || decode(pair.slice(0, at)) !== 'microadjust') continue;
      for (const raw of pair.slice(at + 1).split(',')) {
        const part = raw.startsWith('preview:') ? raw.slice('preview:'.length) : raw;
        const entry = /^([^=]+)=([^=]+)$/.exec(part);
        if (raw === 'debug') found.debug = true;
        else if (entry && !found.preview.has(decode(entry[1]))) found.preview.set(decode(entry[1]), decode(entry[2]));
        else if (raw) found.bad.push(`"${decode(raw)}" (${entry ? 'slot named twice' : 'expected debug or preview:slot=variant'})`);
      }
    }
    return found;
  }

  function storage(operation, key, value) {
    try {
      if (operation === 'get') return localStorage.getItem(key);
      if (operation === 'set') localStorage.setItem(key, value);
      else localStorage.removeItem(key);
    } catch { /* storage disabled: nothing is kept */ }
    return null;
  }

  function readCache() {
    try {
      const entries = JSON.parse(storage('get', CACHE_KEY) || '{}');
      return entries && typeof entries === 'object' && !Array.isArray(entries) ? entries : {};
    } catch {
      return {}; // tampered, or from another version: ignored
    }
  }

  function warn(message, element) {
    console.warn(`microadjust: ${message}`, ...(element ? [element] : []));
  }

  function fail(message) {
    if (failed) return;
    failed = true;
    warn(`${message}; the page keeps its default content.`);
    if (worker) worker.terminate();
    settle.reject(new Error(message));
  }

  // --- context and behaviour, observed passively --------------------------------------------
  function context() {
    const width = innerWidth;
    const touch = matchMedia('(pointer: coarse)').matches;
    const now = new Date();
    const page = document.querySelector('[data-ma-page]');
    return {
      device: width < 768 ? 'mobile' : width < 1100 && touch ? 'tablet' : 'desktop',
      viewport_w: width, viewport_h: innerHeight, touch,
      hour: now.getHours(), weekday: now.getDay(),
      language: (navigator.language || '').slice(0, 2),
      referrer: referrerClass(document.referrer),
      page: page ? page.dataset.maPage : 'other',
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

  const now = () => Math.round(performance.now());
  const record = (kind, detail) => events.push({ kind, t: now(), ...detail });

  function flush() {
    const waiting = [...slots.values()].some((slot) => slot.trigger && !slot.decision);
    if (events.length || waiting) post({ type: 'events', events: events.splice(0), t: now() });
  }

  function post(message) {
    if (!worker || failed) return;
    if (message.type === 'decide') { // a round trip starts (microadjust:decide); a trigger's waits
      for (const { slot, trigger } of message.slots) if (!trigger) asked.set(slot, performance.now());
    }
    worker.postMessage({ v: PROTOCOL, ...message });
  }

  function send(message) { // behaviour first, so the worker knows what was shown and seen
    flush();
    post(message);
  }

  /** @returns {Promise<*>} the worker's answer */
  function request(message) {
    return ready.then(() => new Promise((resolve) => {
      const id = nextId++;
      requests.set(id, resolve);
      send({ ...message, id });
    }));
  }

  // --- markup: slots, rankings, goals -------------------------------------------------------
  function scan(root) {
    const added = [];
    const found = root.matches && root.matches(HOSTS) ? [root, ...root.querySelectorAll(HOSTS)] : root.querySelectorAll(HOSTS);
    for (const element of found) {
      if (known.has(element)) continue;
      known.add(element);
      const slot = register(element);
      if (slot) added.push(slot);
    }
    for (const goal of root.querySelectorAll ? root.querySelectorAll('[data-ma-goal]') : []) {
      if (known.has(goal)) continue;
      known.add(goal);
      if (!goal.closest(HOSTS)) warn('a data-ma-goal outside any slot or ranking is ignored:', goal);
      else if (goal.dataset.maValue !== undefined && !Number.isFinite(Number(goal.dataset.maValue))) {
        warn('data-ma-value must be a number; this goal counts 1:', goal);
      }
    }
    return added;
  }

  function checkAttributes(element) {
    for (const key of Object.keys(element.dataset)) {
      if (/^ma[A-Z]/.test(key) && !ATTRIBUTES.has(key)) warn(`unknown attribute data-${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)} is ignored:`, element);
    }
  }

  /** @param {HTMLElement} element @returns {?Slot} null (and a warning) for unusable markup */
  function register(element) {
    checkAttributes(element);
    const isRank = element.dataset.maRank !== undefined;
    const name = isRank ? element.dataset.maRank : element.dataset.maSlot;
    if (!name || slots.has(name)) {
      warn(`a slot or ranking needs a unique name; this one ${name ? `repeats "${name}"` : 'has none'} and keeps its content:`, element);
      return null;
    }
    const slot = {
      name, element, isRank, trigger: element.dataset.maTrigger || null,
      live: element.dataset.maLive !== undefined, manual: element.dataset.maManual !== undefined,
      variants: new Map([['default', null]]), items: new Map(),
      decision: null, waiting: null, next: null, seenDecision: null, shown: 'default', ahead: null,
      inView: false, halfVisible: false, seenTimer: 0, defaults: null, replaced: false, classes: [],
      preview: null,
    };
    if (isRank) {
      for (const item of element.querySelectorAll(':scope > [data-ma-item]')) {
        if (item.dataset.maItem && !slot.items.has(item.dataset.maItem)) slot.items.set(item.dataset.maItem, item);
        else warn('a ranking item needs a unique data-ma-item; this one stays where it is:', item);
      }
      if (slot.items.size < 2) {
        warn(`ranking "${name}" needs at least two data-ma-item children; it keeps its order:`, element);
        return null;
      }
      slot.shown = [...slot.items.keys()].join(',');
    } else {
      for (const template of element.querySelectorAll(':scope > template')) {
        checkAttributes(template);
        const variant = template.dataset.maVariant;
        if (variant && variant !== 'default' && !slot.variants.has(variant)) slot.variants.set(variant, template);
        else warn('a variant template needs a unique data-ma-variant name (not "default"); it is ignored:', template);
      }
      if (slot.variants.size < 2) {
        warn(`slot "${name}" has no variants to choose from; it keeps its content:`, element);
        return null;
      }
    }
    slots.set(name, slot);
    slotOf.set(element, slot);
    visibility.observe(element);
    if (modes.preview.has(name)) showPreview(slot, modes.preview.get(name));
    else applyAhead(slot);
    return slot;
  }

  /** Preview: this choice is written now and never decided, learned from or cached. */
  function showPreview(slot, wanted) {
    modes.preview.delete(slot.name);
    const part = `"${slot.name}=${wanted}"`;
    let order = null;
    if (slot.isRank) {
      const named = wanted.split(ORDER_SEPARATOR);
      const wrong = named.find((id, i) => !slot.items.has(id) || named.indexOf(id) !== i);
      if (wrong !== undefined) {
        modes.bad.push(`${part} (ranking "${slot.name}" has no item "${wrong}" or names it twice; its items: ${[...slot.items.keys()].join(', ')})`);
        return applyAhead(slot);
      }
      order = [...named, ...[...slot.items.keys()].filter((id) => !named.includes(id))];
    } else if (!slot.variants.has(wanted)) {
      modes.bad.push(`${part} (slot "${slot.name}" has no variant "${wanted}"; its variants: ${[...slot.variants.keys()].join(', ')})`);
      return applyAhead(slot);
    }
    slot.preview = {
      slot: slot.name, variant: order ? order[0] : wanted, probability: 1, event_id: null,
      reason: 'preview', holdout: false, preview: true, ...(order ? { order } : {}),
    };
    write(slot, order || wanted);
  }

  function warnPreview() { // once, after the first scan: the parts of the preview link not applied
    for (const name of modes.preview.keys()) modes.bad.push(`"${name}=${modes.preview.get(name)}" (no slot or ranking "${name}" on this page)`);
    modes.preview.clear();
    if (modes.bad.length) warn(`ignoring part of the ?microadjust= link: ${modes.bad.join('; ')}. The rest applies.`);
  }

  function spec(slot) {
    const names = slot.isRank ? { items: [...slot.items.keys()] } : { variants: [...slot.variants.keys()] };
    return { slot: slot.name, ...names, ...(slot.trigger ? { trigger: slot.trigger } : {}), ...(slot.live ? { live: true } : {}) };
  }

  function showPreviews(list) { // their decision events; they were written when registered
    for (const slot of list) if (slot.preview && slot.decision !== slot.preview) show(slot, slot.preview);
  }

  function decideSlots(list) { // a previewed slot is never the engine's to decide
    showPreviews(list);
    const taken = new Set([...slots.keys()].slice(0, maxSlots)); // the first ones, in document order
    if (slots.size > taken.size && !overLimit) {
      overLimit = true;
      warn(`the engine takes ${maxSlots} slots (max_slots); ${slots.size - taken.size} of this page's ${slots.size} keep their default content, from "${[...slots.keys()][taken.size]}" on.`);
    }
    const wanted = list.filter((slot) => !slot.manual && !slot.preview && taken.has(slot.name)).map(spec);
    for (let start = 0; start < wanted.length; start += DECIDE_BATCH) {
      send({ type: 'decide', context: context(), slots: wanted.slice(start, start + DECIDE_BATCH), t: now() });
    }
  }

  /** A dev-tools timing (Performance panel, getEntriesByType('measure')); bounded in number. */
  function measure(name, start) {
    if (++measured > MAX_MEASURES) { // a long-lived page: drop the old ones, keep measuring
      for (const old of measures) performance.clearMeasures(old);
      measures.clear();
      measured = 1;
    }
    measures.add(name);
    performance.measure(name, { start, end: performance.now() });
  }

  // --- applying decisions: never under the visitor's eyes, in one animation frame -----------
  const painted = () => performance.getEntriesByType('paint').length > 0;

  function schedule(write) {
    if (!writes.length) requestAnimationFrame(() => { for (const w of writes.splice(0)) w(); });
    writes.push(write);
  }

  /** @param {Decision} decision shown next frame, or once its slot is out of view */
  function receive(decision) {
    const slot = slots.get(decision.slot);
    if (!slot) return;
    const choice = decision.order || decision.variant;
    if (String(choice) === slot.shown) return show(slot, decision); // already on screen
    if (slot.inView && painted() && !slot.live && !document.hidden) {
      slot.waiting = decision; // applied once the slot is out of view
      return;
    }
    slot.waiting = null;
    slot.next = decision;
    prepare(slot, decision).then(() => schedule(() => {
      if (slot.next === decision) applyNow(slot, decision);
    }));
  }

  function applyNow(slot, decision) {
    slot.next = slot.waiting = null;
    const start = performance.now();
    write(slot, decision.order || decision.variant);
    measure(`microadjust:apply:${slot.name}`, start);
    show(slot, decision);
  }

  function prepare(slot, decision) { // decode a swapped image before it is shown: no blank frame
    const template = slot.variants.get(decision.variant);
    if (!template || !template.dataset.maSrc) return Promise.resolve();
    const image = new Image();
    if (template.dataset.maSrcset) image.srcset = template.dataset.maSrcset;
    image.src = template.dataset.maSrc;
    return image.decode().catch(() => {});
  }

  /** @param {Slot} slot @param {string|string[]} choice a variant, or a ranking's order */
  function write(slot, choice) {
    if (slot.isRank) writeRanking(slot, choice); else writeVariant(slot, choice);
    slot.shown = String(choice);
    slot.element.dataset.maApplied = slot.shown;
  }

  /** One DOM insertion. @param {Slot} slot @param {string[]} order */
  function writeRanking(slot, order) {
    const first = [...slot.items.values()].find((item) => item.parentNode === slot.element);
    const marker = document.createComment('');
    first.before(marker);
    marker.replaceWith(...order.map((id) => slot.items.get(id)));
  }

  /** Content, image, link, classes. @param {Slot} slot @param {string} variant */
  function writeVariant(slot, variant) {
    const { element } = slot;
    if (!slot.defaults) slot.defaults = defaults(element);
    const template = slot.variants.get(variant);
    const data = template ? template.dataset : {};
    const content = template && hasContent(template);
    const nodes = content ? [...template.content.cloneNode(true).childNodes] : slot.defaults.nodes;
    if (content || slot.replaced) {
      for (const node of [...element.childNodes]) if (node.nodeName !== 'TEMPLATE') node.remove();
      element.prepend(...nodes);
      slot.replaced = Boolean(content);
    }
    const image = element.matches('img') ? element : element.querySelector('img');
    if (image) {
      for (const [key, attr] of [['maSrcset', 'srcset'], ['maSrc', 'src'], ['maAlt', 'alt']]) {
        const value = data[key] ?? slot.defaults.image[attr];
        if (value === null) image.removeAttribute(attr); else image.setAttribute(attr, value);
      }
    }
    const link = element.matches('a') ? element : element.querySelector('a');
    if (link && (data.maHref || slot.defaults.href !== undefined)) link.setAttribute('href', data.maHref ?? slot.defaults.href);
    for (const name of slot.classes) element.classList.remove(name);
    slot.classes = (data.maClass || '').split(/\s+/).filter(Boolean);
    element.classList.add(...slot.classes);
  }

  function hasContent(template) {
    return template.content.children.length > 0 || template.content.textContent.trim() !== '';
  }

  function defaults(element) {
    const image = element.matches('img') ? element : element.querySelector('img');
    const link = element.matches('a') ? element : element.querySelector('a');
    return {
      nodes: [...element.childNodes].filter((node) => node.nodeName !== 'TEMPLATE'),
      image: image ? { src: image.getAttribute('src'), srcset: image.getAttribute('srcset'), alt: image.getAttribute('alt') } : {},
      href: link ? link.getAttribute('href') : undefined,
    };
  }

  /** On screen: record, tell the page. @param {Slot} slot @param {Decision} decision */
  function show(slot, decision) {
    slot.decision = decision;
    slot.element.dataset.maApplied = slot.shown;
    if (!decision.preview) {
      record('applied', { slot: slot.name });
      if (slot.halfVisible) startSeenTimer(slot);
      if (config.datalayer === true) pushDataLayer(decision);
    }
    const detail = detailOf(decision);
    document.dispatchEvent(new CustomEvent('microadjust:decision', { detail }));
    for (const fn of listeners) {
      try { fn(detail); } catch (error) { console.error(error); }
    }
  }

  /** @param {Decision} decision @returns {Object} what the page's listeners get */
  function detailOf({ slot, variant, probability, event_id: eventId, reason, holdout, order, why, preview, ahead }) {
    return {
      slot, variant, probability, event_id: eventId, reason, holdout: holdout === true,
      ...(order ? { order } : {}), ...(why ? { why } : {}), ...(preview ? { preview } : {}), ...(ahead ? { ahead } : {}),
    };
  }

  /** The GTM / GA4 convention, opted into with "datalayer": true; no identifier. */
  function pushDataLayer({ slot, variant, holdout, reason, order }) {
    (window.dataLayer = window.dataLayer || []).push({
      event: 'microadjust_decision', microadjust_slot: slot, microadjust_variant: variant,
      microadjust_holdout: holdout === true, microadjust_reason: reason.split(':')[0],
      ...(order ? { microadjust_order: order.join(',') } : {}),
    });
  }

  /** The worker's decision made ahead for this page view, written before the slot is painted
   * (before start only: the worker adopts them at init) and shown at start. The cache is
   * untrusted: own, well-typed, unexpired entries for the very variants (or items) the slot
   * offers, or nothing. @param {Slot} slot */
  function applyAhead(slot) {
    const entry = Object.hasOwn(cache, slot.name) ? cache[slot.name] : null;
    if (aheadTaken || !entry || typeof entry !== 'object' || slot.trigger || slot.manual) return;
    const { variant, order, probability, event_id: eventId, reason, expires } = entry;
    const offered = slot.isRank ? slot.items : slot.variants;
    const same = (names) => Array.isArray(names) && names.length === offered.size
      && new Set(names).size === names.length && names.every((name) => offered.has(name));
    const fits = slot.isRank ? same(entry.items) && same(order) && order[0] === variant
      : same(entry.variants) && offered.has(variant);
    const typed = typeof eventId === 'string' && typeof reason === 'string' && typeof probability === 'number'
      && probability > 0 && probability <= 1 && typeof expires === 'number' && expires > Date.now();
    if (!fits || !typed) return;
    delete cache[slot.name];
    write(slot, order || variant);
    slot.ahead = { slot: slot.name, variant, probability, event_id: eventId, reason, holdout: entry.holdout === true, ...(slot.isRank ? { order } : {}), ahead: true };
  }

  function watchParsing() { // a synchronous script tag: slots get their decision made ahead as parsed
    const early = new MutationObserver(() => {
      for (const element of document.querySelectorAll(HOSTS)) {
        const closed = element.nextSibling || (element.parentNode && element.parentNode.nextSibling);
        if (closed && !known.has(element)) {
          known.add(element);
          register(element);
        }
      }
    });
    early.observe(document.documentElement, { childList: true, subtree: true });
    document.addEventListener('DOMContentLoaded', () => early.disconnect(), { once: true });
  }

  // --- visibility: deferred writes, impressions, slot visibility signals ----------------------
  const visibility = new IntersectionObserver((entries) => {
    for (const entry of entries) {
      const slot = slotOf.get(entry.target);
      if (!slot || slots.get(slot.name) !== slot) continue;
      slot.inView = entry.isIntersecting && entry.intersectionRatio > 0;
      const half = entry.intersectionRatio >= 0.5;
      if (half !== slot.halfVisible) record(half ? 'slot_in' : 'slot_out', { slot: slot.name });
      slot.halfVisible = half;
      if (half && slot.decision) startSeenTimer(slot);
      if (!slot.inView && slot.waiting) receive(slot.waiting);
    }
  }, { threshold: [0, 0.5] });

  function startSeenTimer(slot) {
    if (slot.preview || slot.seenTimer || slot.seenDecision === slot.decision) return;
    slot.seenTimer = setTimeout(() => {
      slot.seenTimer = 0;
      if (slot.halfVisible && slot.decision && slot.seenDecision !== slot.decision) {
        slot.seenDecision = slot.decision;
        record('impression', { slot: slot.name });
      }
    }, SEEN_MS);
  }

  function observe() {
    let maxDepth = -1;
    let scrollQueued = false;
    let lastY = null; // read at the first scroll, not here: reading scrollY now forces a layout
    let upFrom = null; // where and when the current upward scroll began: scroll_back
    addEventListener('scroll', () => {
      if (scrollQueued) return;
      scrollQueued = true;
      requestAnimationFrame(() => {
        scrollQueued = false;
        const depth = Math.min(1, (scrollY + innerHeight) / Math.max(document.documentElement.scrollHeight, 1));
        if (depth > maxDepth + 0.05 || (depth === 1 && maxDepth < 1)) {
          maxDepth = depth;
          record('scroll', { depth: Math.round(depth * 100) / 100 });
        }
        const y = scrollY;
        if (lastY === null) lastY = y;
        if (y >= lastY || (upFrom && now() - upFrom.t > SCROLL_BACK.ms)) upFrom = null;
        if (y < lastY && !upFrom) upFrom = { y: lastY, t: now() };
        if (upFrom && upFrom.y - y >= innerHeight * SCROLL_BACK.viewports) {
          record('scroll_back', {});
          upFrom = null;
        }
        lastY = y;
      });
    }, { passive: true });
    addEventListener('click', onClick, { capture: true, passive: true });
    const onInput = (event) => { // the first input of a person: a goal before it teaches nothing
      if (!event.isTrusted) return;
      record('input', {});
      for (const type of HUMAN_INPUT) removeEventListener(type, onInput, true);
    };
    for (const type of HUMAN_INPUT) addEventListener(type, onInput, { capture: true, passive: true });
    document.addEventListener('mouseout', (event) => { // exit_intent: toward the tab bar
      if (event.isTrusted && !event.relatedTarget && event.clientY <= 0 && matchMedia('(pointer: fine)').matches) record('exit_intent', {});
    }, { passive: true });
    document.addEventListener('visibilitychange', () => {
      record(document.hidden ? 'hidden' : 'visible', {});
      if (!document.hidden) return;
      flush();
      for (const slot of slots.values()) if (slot.waiting) applyNow(slot, slot.waiting);
    });
    new MutationObserver((mutations) => {
      const added = [];
      for (const mutation of mutations) {
        for (const node of mutation.addedNodes) if (node.nodeType === 1 && !known.has(node)) added.push(...scan(node));
      }
      if (added.length) decideSlots(added);
    }).observe(document.documentElement, { childList: true, subtree: true });
    for (const method of ['pushState', 'replaceState']) {
      const original = history[method];
      history[method] = function (...args) {
        const before = location.pathname;
        const result = original.apply(this, args);
        if (location.pathname !== before) pageView();
        return result;
      };
    }
    addEventListener('popstate', pageView);
    setInterval(flush, FLUSH_MS);
  }

  function onClick(event) {
    record('click', { trusted: event.isTrusted });
    if (event.isTrusted) noticeClick(event);
    const goal = event.target.closest && event.target.closest('[data-ma-goal]');
    const host = goal && goal.closest(HOSTS);
    if (!host || (slotOf.get(host) || {}).preview) return; // a previewed slot's goals teach nothing
    const value = Number(goal.dataset.maValue ?? 1);
    const item = goal.closest('[data-ma-item]');
    send({
      type: 'reward', goal: goal.dataset.maGoal || 'click', value: Number.isFinite(value) ? value : 1,
      slot: host.dataset.maRank ?? host.dataset.maSlot,
      ...(item && host.contains(item) ? { item: item.dataset.maItem } : {}), t: now(),
    });
  }

  let burst = []; // the clicks of the current burst on one spot: rage_clicks
  function noticeClick({ target, clientX: x, clientY: y, timeStamp: t }) {
    const first = burst[0];
    if (first && (t - first.t > RAGE.ms || Math.hypot(x - first.x, y - first.y) > RAGE.px)) burst = [];
    burst.push({ x, y, t });
    if (burst.length === RAGE.clicks) {
      record('rage_click', {});
      burst = [];
    }
    if (target instanceof Element && !interactive(target)) record('dead_click', {});
  }

  function interactive(target) { // a handler added with addEventListener cannot be seen
    for (let node = target; node; node = node.parentElement) {
      if (node.matches(INTERACTIVE) || typeof node.onclick === 'function') return true;
    }
    return getComputedStyle(target).cursor === 'pointer'; // what sites style clickable things with
  }

  function pageView() { // a single-page app changed route: a new page view, same visitor
    flush();
    for (const [name, slot] of slots) {
      if (!slot.element.isConnected) { slots.delete(name); visibility.unobserve(slot.element); }
    }
    post({ type: 'page', context: context() });
    decideSlots(scan(document));
  }

  // --- the worker ---------------------------------------------------------------------------
  function onMessage({ data }) {
    if (!data || data.v !== PROTOCOL) return fail(`the worker speaks protocol ${data && data.v}, expected ${PROTOCOL}`);
    const resolve = requests.get(data.id);
    if (resolve) requests.delete(data.id);
    if (data.ignored && !ignored) { // once (at ready, or an ignored goal): why nothing learns
      ignored = data.ignored;
      console.info(`microadjust: ${ignored}; it learns nothing (the configuration's "automation": "learn" changes that)`);
    }
    if (data.type === 'ready') {
      if (Number.isInteger(data.max_slots)) maxSlots = data.max_slots;
      performance.measure('microadjust:boot', { start: booted }); // not the mark: a page may clear marks
      settle.resolve({ engine: data.engine, restored: data.restored, visits: data.visits, boot_ms: data.boot_ms });
      decideSlots([...slots.values()]);
    } else if (data.type === 'decisions') {
      for (const decision of data.decisions) {
        const since = asked.get(decision.slot);
        asked.delete(decision.slot);
        if (since !== undefined) measure(`microadjust:decide:${decision.slot}`, since);
      }
      data.decisions.forEach(receive);
      if (resolve) resolve(data.decisions[0] || null);
    } else if (data.type === 'ahead') {
      if (persist) storage('set', CACHE_KEY, JSON.stringify(Object.fromEntries(data.decisions.map((d) => [d.slot, d]))));
    } else if (data.type === 'error' && data.fatal) {
      fail(`the engine could not start (${data.message})`);
    } else if (data.type === 'error') {
      asked.delete(data.slot);
      const slot = data.slot && slots.get(data.slot);
      warn(slot ? `slot "${data.slot}" keeps its default, ${data.message}:` : data.message, slot && slot.element);
      if (resolve) resolve(null);
    } else if (resolve) {
      resolve(data.type === 'exported' ? data.data : true);
    }
  }

  function start() {
    if (!ASSETS) return fail('this is the unbuilt loader; serve dist/microadjust/microadjust.js');
    if (typeof Worker !== 'function' || typeof WebAssembly !== 'object') return fail('this browser has no Web Worker or WebAssembly');
    if (saveData) return fail('the visitor asked to save data (navigator.connection.saveData), so nothing is downloaded');
    performance.mark('microadjust:start');
    booted = performance.now();
    scan(document);
    warnPreview();
    showPreviews([...slots.values()]);
    const ahead = [...slots.values()].filter((slot) => slot.ahead);
    aheadTaken = true; // the worker adopts these; a slot registered from now on is decided live
    if (ahead.length) storage('set', CACHE_KEY, JSON.stringify(cache)); // each is shown once
    for (const slot of ahead) show(slot, slot.ahead);
    // The worker is created now, so that its script loads and its thread starts while the page
    // renders its first frame (a timer set here ran after it); what it is told to do waits for a
    // task of its own: the page's parsing task stays short.
    if (createWorker()) setTimeout(() => boot(ahead), 0);
  }

  /** The engine's worker, not yet told anything. @returns {boolean} whether it exists */
  function createWorker() {
    try {
      worker = new Worker(asset(ASSETS.worker));
    } catch (error) {
      fail(`the worker could not be created (${error.message})`);
      return false;
    }
    worker.onmessage = onMessage;
    worker.onerror = (event) => { event.preventDefault(); fail(`the worker failed (${event.message || 'load error'})`); };
    return true;
  }

  /** Start the engine in its worker, after the slots are written. @param {Slot[]} ahead */
  function boot(ahead) {
    if (config.debug) document.head.append(Object.assign(document.createElement('script'), { src: asset(ASSETS.debug) }));
    const timer = setTimeout(() => fail(`the engine did not start within ${config.boot_timeout_s} s`), config.boot_timeout_s * 1000);
    ready.then(() => clearTimeout(timer), () => clearTimeout(timer));
    const engineConfig = Object.fromEntries(Object.entries(config).filter(([key]) => !PAGE_KEYS.includes(key)));
    worker.postMessage({
      v: PROTOCOL, type: 'init', config: engineConfig, context: context(), persist, gpc, explain: config.debug === true,
      automated: navigator.webdriver === true,
      assets: { pyodide: asset(ASSETS.pyodide), wheel: asset(ASSETS.wheel) },
      ahead: ahead.map((slot) => ({ ...spec(slot), event_id: slot.ahead.event_id, variant: slot.ahead.variant, ...(slot.isRank ? { order: slot.ahead.order } : {}) })),
    });
    observe();
  }

  // --- the JavaScript API -------------------------------------------------------------------
  /** @param {string} name @param {number} [value] */
  function reward(name, value = 1) {
    if (typeof name !== 'string' || !name) throw new TypeError('microadjust.reward(name, value): name must be a non-empty string');
    if (typeof value !== 'number' || !Number.isFinite(value)) throw new TypeError(`microadjust.reward("${name}", value): value must be a finite number`);
    ready.then(() => send({ type: 'reward', goal: name, value }), () => {});
  }

  /** @param {string} name @param {string[]} [variants] @returns {Promise<?Decision>} */
  function decide(name, variants) {
    const slot = slots.get(name);
    if (slot && slot.preview) return Promise.resolve(detailOf(slot.preview));
    if (slot) return request({ type: 'decide', context: context(), slots: [{ ...spec(slot), trigger: undefined }], t: now() });
    if (!Array.isArray(variants) || variants.length < 2 || !variants.every((v) => typeof v === 'string')) {
      return Promise.reject(new TypeError(`microadjust.decide("${name}"): no such slot on the page; pass its variants, e.g. decide("${name}", ["default", "b"])`));
    }
    return request({ type: 'decide', context: context(), slots: [{ slot: name, variants }], t: now() })
      .then((decision) => { // a slot without markup: the caller shows it, so it counts as seen
        if (decision) events.push({ kind: 'applied', slot: name, t: now() }, { kind: 'impression', slot: name, t: now() });
        return decision;
      });
  }

  function consent(granted) {
    persist = Boolean(granted);
    if (persist) storage('set', CONSENT_KEY, 'granted');
    else forgetPage();
    post({ type: 'consent', granted: persist });
  }

  function forgetPage() {
    storage('remove', CACHE_KEY);
    storage('remove', CONSENT_KEY);
  }

  window.microadjust = Object.freeze({
    version: VERSION,
    ready,
    on(type, fn) { if (type === 'decision' && typeof fn === 'function') listeners.add(fn); },
    off(type, fn) { listeners.delete(fn); },
    reward,
    decide,
    consent,
    forget() { forgetPage(); persist = false; return request({ type: 'forget' }); },
    export() {
      return request({ type: 'export' }).then((device) => ({
        device, page: { ahead_decisions: storage('get', CACHE_KEY), consent: storage('get', CONSENT_KEY) },
      }));
    },
    ...(config.debug ? { debug: { slots: debugSlots, ignored: () => ignored } } : {}),
  });

  /** For the debug panel (web/debug.js), only in debug mode: every slot and what it shows. */
  function debugSlots() {
    return [...slots.values()].map((slot) => ({
      slot: slot.name, ranking: slot.isRank, shown: slot.isRank ? slot.shown.split(',') : slot.shown,
      decision: slot.decision && detailOf(slot.decision), waiting: slot.waiting && detailOf(slot.waiting),
      preview: Boolean(slot.preview),
    }));
  }
  if (document.readyState === 'loading') {
    if (Object.keys(cache).length || modes.preview.size) watchParsing();
    document.addEventListener('DOMContentLoaded', start, { once: true });
  } else {
    start();
  }
})();
