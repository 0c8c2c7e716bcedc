// Compiled by `tsc --noEmit` in CI: a site's typed use of the loader, checked against microadjust.d.ts.
import type {
  MicroadjustAttribute, MicroadjustConfig, MicroadjustDataLayerEvent, MicroadjustDecision,
} from '../../web/microadjust';

const config: MicroadjustConfig = {
  policy: 'auto',
  holdout: 0.05,
  consent: 'required',
  ahead_expiry_s: 12 * 3600,
  automation: 'ignore',
  sync: { site: 'shop', key: 'public-key', upload: true },
  datalayer: true,
};

const slotAttribute: MicroadjustAttribute = 'data-ma-slot';

function track(decision: MicroadjustDecision): string {
  const order: string[] = decision.order ?? [decision.variant];
  const when = decision.ahead ? 'ahead' : 'live';
  return `${decision.slot}:${order.join(',')}@${decision.probability.toFixed(3)} ${when}`;
}

document.addEventListener('microadjust:decision', (event) => {
  console.log(track(event.detail));
  const { why, preview, holdout } = event.detail;
  if (why) console.log(why.score, why.terms.map((t) => `${t.feature} ${t.contribution}`), why.runner_up?.action);
  if (preview || holdout) console.log('not personalized');
});

const pushed = (window.dataLayer ?? []) as MicroadjustDataLayerEvent[];
console.log(pushed.filter((e) => e.event === 'microadjust_decision').map((e) => e.microadjust_slot));
for (const view of window.microadjust.debug?.slots() ?? []) console.log(view.slot, view.shown, view.preview);
const ignored: string | null = window.microadjust.debug?.ignored() ?? null;
console.log(ignored);

async function main(): Promise<void> {
  const { visits, boot_ms } = await window.microadjust.ready;
  window.microadjust.on('decision', (decision) => console.log(decision.reason));
  window.microadjust.reward('signup', 1);
  const decision = await window.microadjust.decide('banner', ['default', 'sale']);
  if (decision) console.log(decision.variant, visits, boot_ms);
  window.microadjust.consent(true);
  await window.microadjust.forget();
  console.log(config, slotAttribute, window.microadjust.version);
}

void main();
