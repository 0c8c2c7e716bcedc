/**
 * Types for the microadjust loader: `window.microadjust`, the `microadjust:decision` event, the
 * page configuration (`<script type="application/json" data-microadjust>`) and the markup's
 * attribute names. Shipped beside the loader as dist/microadjust/microadjust.d.ts.
 */

/** What the engine decided for one slot, as the page applied it. */
export interface MicroadjustDecision {
  /** The slot's name (`data-ma-slot`, `data-ma-rank`, or the name given to `decide`). */
  slot: string;
  /** The variant shown (`"default"` is the slot's own content); for a ranking, the top item. */
  variant: string;
  /** For a ranking (`data-ma-rank`): every item id, top first. */
  order?: string[];
  /** The exact probability the engine had of making this choice (for off-policy evaluation). */
  probability: number;
  /** Opaque id of the decision; `null` for a ranking of a single item, or a preview. */
  event_id: string | null;
  /** Why it was chosen, in words (e.g. `"explore"`, `"exploit: score 0.07 ± 0.02"`, `"holdout: default"`, `"preview"`). */
  reason: string;
  /** `true` for a decision made ahead, on an earlier page view, and applied before first paint. */
  ahead?: true;
  /** Whether this decision shows the default content to measure lift (the holdout). */
  holdout: boolean;
  /** Only in debug mode: the score's largest terms and the runner-up. */
  why?: MicroadjustWhy;
  /** Set on a slot shown by a preview link (`?microadjust=preview:slot=variant`): never learned from. */
  preview?: true;
}

/** Why a decision (debug mode): the chosen variant's predicted score and what made it. */
export interface MicroadjustWhy {
  score: number;
  /** The largest weight × feature value terms, largest first; `feature` names the context
   * (or action) features that hash there, e.g. `"device=mobile"`, `"(bias)"`, `"a | b"` on a collision. */
  terms: { feature: string; contribution: number }[];
  /** The best of the other variants (a ranking: of the other items), by the same score. */
  runner_up: { action: string; score: number } | null;
}

/** What `"datalayer": true` pushes to `window.dataLayer` for each applied decision (no identifier). */
export interface MicroadjustDataLayerEvent {
  event: 'microadjust_decision';
  microadjust_slot: string;
  microadjust_variant: string;
  microadjust_holdout: boolean;
  /** The reason's kind: `"explore"`, `"exploit"`, `"holdout"`, `"cooldown"`, … */
  microadjust_reason: string;
  /** A ranking's items, top first, comma-separated. */
  microadjust_order?: string;
}

/** What `microadjust.ready` resolves with once the engine runs in its worker. */
export interface MicroadjustReady {
  /** The engine's version. */
  engine: string;
  /** Whether the visitor's earlier state was restored from this device. */
  restored: boolean;
  /** Page views of this visitor on this device, this one included. */
  visits: number;
  /** Time the worker took to boot, in milliseconds. */
  boot_ms: number;
}

/** Everything `microadjust.export()` returns: what this device holds about the visitor. */
export interface MicroadjustExport {
  device: unknown;
  /** The `localStorage` entries: the decisions made ahead for the next page view (JSON), consent. */
  page: { ahead_decisions: string | null; consent: string | null };
}

/** The optional sync server (on the site's own origin unless `url` says otherwise). */
export interface MicroadjustSyncConfig {
  site: string;
  url?: string;
  /** The public upload key: it only scopes uploads to the site. */
  key?: string;
  /** Whether this site contributes bounded counts (consent and Global Privacy Control permitting). */
  upload?: boolean;
  /** `"aggregate"` (default): exact small counts, noised once by the server when it publishes;
   * `"local"`: Gaussian noise on the device (see docs/sync-protocol.md). */
  mode?: 'aggregate' | 'local';
  /** Local mode's privacy parameter (0.1 to 10). */
  epsilon?: number;
  /** Seconds between upload attempts (the page being hidden also sends one at once). */
  interval_s?: number;
  /** How many observations the site's and the visitor's cell's priors may count as (tuned defaults). */
  site_prior_n?: number;
  segment_prior_n?: number;
  site_floor_n?: number;
  shrinkage?: number;
}

/** The page configuration, a JSON object in `<script type="application/json" data-microadjust>`. */
export interface MicroadjustConfig {
  policy?: 'auto' | 'epsilon_greedy' | 'thompson' | 'linucb' | 'lin_ts';
  /** Share of decisions that show the default content, to measure lift (0 to < 1). */
  holdout?: number;
  attribution_window_s?: number;
  /** `"required"`: nothing is stored or uploaded until `microadjust.consent(true)`. */
  consent?: 'implied' | 'required';
  /** Shows the debug panel (also `?microadjust=debug`); decisions then carry `why`. */
  debug?: boolean;
  /** Push each applied decision to `window.dataLayer` (Google Tag Manager / GA4). */
  datalayer?: boolean;
  /** The default content stays if the engine has not started within this many seconds. */
  boot_timeout_s?: number;
  /** How long a decision made ahead for the next page view stays valid, in seconds (default
   * 86400; 0 decides nothing ahead). */
  ahead_expiry_s?: number;
  /** Automated page views (`navigator.webdriver`, a goal before any pointer, touch or key input,
   * or faster than a person): `"ignore"` (default) shows their decisions but learns, keeps and
   * uploads nothing from them; `"learn"` treats them as any visitor (e.g. for end-to-end tests). */
  automation?: 'ignore' | 'learn';
  /** Micro-segments (scikit-learn, loaded lazily after the first decision). */
  segments?: boolean;
  sync?: MicroadjustSyncConfig;
  /** Any other engine parameter (see the README's parameter table). */
  [parameter: string]: unknown;
}

export type MicroadjustDecisionListener = (decision: MicroadjustDecision) => void;

/** `window.microadjust`: the page's API. */
export interface Microadjust {
  readonly version: string;
  /**
   * Settles once, on every path: resolves when the engine runs; rejects (after one console
   * warning, the page keeping its default content) when it cannot start, or when the visitor
   * asked to save data (`navigator.connection.saveData`: no worker, nothing downloaded).
   * IndexedDB failing in the worker does not reject it: the engine runs without keeping state.
   */
  readonly ready: Promise<MicroadjustReady>;
  on(type: 'decision', listener: MicroadjustDecisionListener): void;
  off(type: 'decision', listener: MicroadjustDecisionListener): void;
  /** Rewards every seen, open decision with `value` (default 1) under goal `name`. */
  reward(name: string, value?: number): void;
  /** Decides a slot now: one on the page by name, or one without markup given its variants. */
  decide(slot: string, variants?: string[]): Promise<MicroadjustDecision | null>;
  /** The visitor's choice: `true` allows storing and uploading, `false` erases and stops it. */
  consent(granted: boolean): void;
  /** Erases everything microadjust keeps on this device. */
  forget(): Promise<unknown>;
  export(): Promise<MicroadjustExport>;
  /** Debug mode only (for the debug panel): every slot, what it shows and its decision, and
   * why this page view learns nothing (it looks automated), or `null` while it learns. */
  readonly debug?: { slots(): MicroadjustSlotView[]; ignored(): string | null };
}

/** A slot as the debug panel sees it. */
export interface MicroadjustSlotView {
  slot: string;
  ranking: boolean;
  /** The variant on screen, or a ranking's items in screen order. */
  shown: string | string[];
  /** The decision on screen. */
  decision: MicroadjustDecision | null;
  /** A newer decision, held until the slot is out of view. */
  waiting: MicroadjustDecision | null;
  preview: boolean;
}

/** The markup's attributes, as written in HTML. */
export type MicroadjustAttribute =
  | 'data-ma-slot'
  | 'data-ma-variant'
  | 'data-ma-rank'
  | 'data-ma-item'
  | 'data-ma-trigger'
  | 'data-ma-goal'
  | 'data-ma-value'
  | 'data-ma-live'
  | 'data-ma-manual'
  | 'data-ma-page'
  | 'data-ma-applied'
  | 'data-ma-src'
  | 'data-ma-srcset'
  | 'data-ma-alt'
  | 'data-ma-href'
  | 'data-ma-class';

declare global {
  interface Window {
    microadjust: Microadjust;
    dataLayer?: unknown[];
  }
  interface DocumentEventMap {
    'microadjust:decision': CustomEvent<MicroadjustDecision>;
  }
}
