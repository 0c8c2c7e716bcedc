// microadjust debug panel: loaded only with ?microadjust=debug. Lists each decision, its
// propensity and the engine's reason. Reads the public events; touches nothing else.
(() => {
  'use strict';
  const panel = document.createElement('aside');
  panel.setAttribute('aria-label', 'microadjust decisions');
  panel.style.cssText = 'position:fixed;right:12px;bottom:12px;z-index:2147483647;width:340px;max-height:45vh;'
    + 'overflow:auto;font:12px/1.45 ui-monospace,Menlo,monospace;background:rgba(20,20,28,.92);color:#e8e8f0;'
    + 'border-radius:10px;padding:10px 12px;box-shadow:0 8px 30px rgba(0,0,0,.3)';
  const status = document.createElement('div');
  status.textContent = 'microadjust: starting the engine…';
  status.style.cssText = 'color:#9fd3ff;margin-bottom:6px';
  panel.append(status);
  const show = () => document.body.append(panel);
  if (document.body) show(); else addEventListener('DOMContentLoaded', show, { once: true });

  window.microadjust.ready.then(
    (info) => { status.textContent = `engine ${info.engine} ready in ${info.boot_ms} ms · ${info.restored ? 'state restored' : 'fresh state'}`; },
    (error) => { status.textContent = `engine failed: ${error.message}`; status.style.color = '#ff9f9f'; },
  );
  document.addEventListener('microadjust:decision', ({ detail }) => {
    const row = document.createElement('div');
    row.style.cssText = 'border-top:1px solid #333;padding:4px 0';
    const strong = document.createElement('b');
    strong.textContent = `${detail.slot} → ${detail.variant}`;
    const meta = document.createElement('div');
    meta.style.color = '#aab';
    meta.textContent = `p=${detail.probability.toFixed(3)} · ${detail.reason || ''}`;
    row.append(strong, meta);
    panel.append(row);
  });
})();
