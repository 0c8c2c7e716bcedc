// microadjust debug panel: loaded only with ?microadjust=debug. One row per slot: what it shows,
// the latest decision (applied, or waiting until the slot is out of view), its propensity and
// reason, why (the score's largest terms and the runner-up), a mark on previewed slots and on
// decisions made ahead (applied before this script loaded, so read from the loader, not events),
// and whether this page view learns (the worker's automation verdict); a button copies a preview
// link of what the page shows now.
// Reads the public decision events and microadjust.debug (debug mode only); changes nothing.
(() => {
  'use strict';
  const api = window.microadjust;
  const css = (element, text) => { element.style.cssText = text; return element; };
  const make = (tag, text, style = '') => css(Object.assign(document.createElement(tag), { textContent: text }), style);

  const panel = css(document.createElement('aside'), 'position:fixed;right:12px;bottom:12px;z-index:2147483647;'
    + 'width:400px;max-height:60vh;overflow:auto;font:12px/1.5 ui-monospace,Menlo,Consolas,monospace;'
    + 'background:rgba(20,20,28,.98);color:#e8e8f0;border-radius:10px;padding:10px 12px;'
    + 'box-shadow:0 8px 30px rgba(0,0,0,.35)');
  panel.setAttribute('aria-label', 'microadjust decisions');
  panel.dataset.maDebug = '';
  const status = make('div', 'microadjust: starting the engine…', 'color:#9fd3ff');
  const learning = make('div', '');
  const aheadNote = make('div', 'MADE AHEAD: decided on the page view before, applied before first paint (so no why)',
    'display:none;color:#b4a0ff');
  const copy = make('button', 'Copy preview link', 'font:inherit;color:#14141c;background:#9fd3ff;border:0;'
    + 'border-radius:5px;padding:2px 8px;cursor:pointer');
  copy.type = 'button';
  const link = css(Object.assign(document.createElement('input'), { readOnly: true }),
    'display:none;width:100%;box-sizing:border-box;margin-top:4px;font:11px ui-monospace,monospace;'
    + 'background:#0c0c12;color:#e8e8f0;border:1px solid #444;border-radius:4px;padding:2px 4px');
  link.setAttribute('aria-label', 'preview link');
  const copied = make('span', '', 'color:#aab;margin-left:8px');
  const rows = new Map(); // slot -> its row
  panel.append(status, learning, aheadNote, css(document.createElement('div'), 'height:6px'), copy, copied, link);
  const mount = () => document.body.append(panel);
  if (document.body) mount(); else addEventListener('DOMContentLoaded', mount, { once: true });

  let started = false; // the worker's verdict comes with its ready message
  api.ready.then(
    (info) => {
      status.textContent = `engine ${info.engine} ready in ${info.boot_ms} ms · ${info.restored ? 'state restored' : 'fresh state'}`;
      started = true;
      renderLearning();
    },
    (error) => { status.textContent = `engine failed: ${error.message}`; status.style.color = '#ff9f9f'; },
  );

  const signed = (n) => `${n >= 0 ? '+' : '−'}${Math.abs(n).toFixed(2)}`;
  const badge = (text, color) => make('span', text, `margin-left:8px;padding:0 5px;border-radius:4px;background:${color};color:#14141c;font-size:11px;white-space:nowrap`);

  /** The worker's automation verdict: an automated page view (with "automation": "ignore") learns nothing. */
  function renderLearning() {
    if (!started) return;
    const ignored = api.debug.ignored();
    learning.textContent = ignored ? `${ignored}; it learns nothing` : 'learning: no sign of automation so far';
    learning.style.color = ignored ? '#ffb454' : '#8fd694';
  }

  /** Whether the decision a slot's row shows was made ahead (on the page view before). */
  const madeAhead = ({ decision, waiting, preview }) => !preview && (waiting || decision || {}).ahead === true;

  /** One slot's row: what it shows, the latest decision (applied, or waiting to be) and why. */
  function renderSlot(view) {
    const { slot, ranking, shown, decision, waiting, preview } = view;
    let row = rows.get(slot);
    if (!row) {
      row = css(document.createElement('div'), 'border-top:1px solid #3a3a48;padding:5px 0');
      row.dataset.slot = slot;
      rows.set(slot, row);
      panel.append(row);
    }
    const title = make('div', `${slot} → ${ranking ? shown.join(' · ') : shown}`, 'font-weight:bold');
    if (preview) title.append(badge('PREVIEW', '#ffb454'));
    const latest = waiting || decision;
    if (madeAhead(view)) title.append(badge('MADE AHEAD', '#b4a0ff'));
    const lines = [title];
    if (preview) lines.push(make('div', 'previewed by link: not decided, learned from or cached', 'color:#aab'));
    else if (!latest) lines.push(make('div', 'no decision yet: its own content', 'color:#aab'));
    else lines.push(make('div', `p=${latest.probability.toFixed(3)} · ${latest.reason}`, 'color:#aab'));
    if (waiting) lines.push(make('div', `decided ${waiting.order ? waiting.order.join(' · ') : waiting.variant}: shown once out of view`, 'color:#ffb454'));
    const why = latest && latest.why;
    if (why && why.terms.length) {
      lines.push(make('div', 'why (score terms):', 'color:#9fd3ff'));
      for (const term of why.terms) lines.push(make('div', `  ${signed(term.contribution)}  ${term.feature}`, 'white-space:pre;color:#d8f5c0'));
    }
    if (why && !why.terms.length) lines.push(make('div', 'why: no feature weighs in yet', 'color:#9fd3ff'));
    if (why) {
      const runnerUp = why.runner_up ? `runner-up ${why.runner_up.action} ${why.runner_up.score.toFixed(3)}` : 'no runner-up';
      lines.push(make('div', `score ${why.score.toFixed(3)} · ${runnerUp}`, 'color:#aab'));
    }
    row.replaceChildren(...lines);
  }

  const render = () => {
    renderLearning();
    const views = api.debug.slots();
    for (const view of views) renderSlot(view);
    aheadNote.style.display = views.some(madeAhead) ? 'block' : 'none'; // said once, not on every row
  };

  /** This page with ?microadjust=preview:slot=variant,ranking=a.b.c for what every slot shows now. */
  function previewLink() {
    const encode = encodeURIComponent; // keeps "." (the order separator) and encodes , : =
    const parts = api.debug.slots().map(({ slot, ranking, shown }) =>
      `${encode(slot)}=${ranking ? shown.map(encode).join('.') : encode(shown)}`);
    const others = new URLSearchParams(location.search);
    others.delete('microadjust');
    const url = new URL(location.href);
    url.search = [others.toString(), `microadjust=preview:${parts.join(',')}`].filter(Boolean).join('&');
    return url.href;
  }

  copy.addEventListener('click', () => {
    link.value = previewLink();
    link.style.display = 'block';
    link.select();
    const clipboard = navigator.clipboard ? navigator.clipboard.writeText(link.value) : Promise.reject();
    clipboard.then(() => { copied.textContent = 'copied'; }, () => { copied.textContent = 'select and copy it'; });
  });

  render(); // what happened before this script loaded
  document.addEventListener('microadjust:decision', render);
  setInterval(render, 1000); // decisions waiting to be shown send no event
})();
