// Telemetry helpers both pages use: a throttled refresh, number formats,
// small bar lists and the "stuck" flag. The figures come from /api/stats
// (hive_sh4re::host::StatsSummary); nothing is derived here.

import { icon } from './icons.js';
import { duration, h, span } from './ui.js';

/** Least time between two stats requests of one page: an agent's frames come in bursts. */
export const MIN_REFRESH_MS = 2000;
/** A stats refresh even without frames: "stuck" and "since last turn" change with time alone. */
export const IDLE_REFRESH_MS = 30000;

/**
 * Runs `load` at most once per MIN_REFRESH_MS however often it is poked
 * (the last poke of a burst is never lost), and every IDLE_REFRESH_MS.
 * Returns `poke()`.
 */
export function refresher(load) {
  let last = 0;
  let timer = null;
  let running = false;
  const fire = async () => {
    timer = null;
    if (running) return void (timer = setTimeout(fire, MIN_REFRESH_MS));
    running = true;
    last = Date.now();
    try {
      await load();
    } finally {
      running = false;
    }
  };
  const poke = () => {
    if (timer) return;
    timer = setTimeout(fire, Math.max(0, last + MIN_REFRESH_MS - Date.now()));
  };
  setInterval(poke, IDLE_REFRESH_MS);
  return poke;
}

/** "0.42/min", "12/min". */
export const rate = (v) => `${v === 0 ? 0 : v >= 10 ? Math.round(v) : v >= 1 ? v.toFixed(1) : v.toFixed(2)}/min`;

/** A per-turn figure: "1", "1.5", "0.33". */
export const perTurn = (v) => (Number.isInteger(v) ? String(v) : v.toFixed(v >= 10 ? 0 : 2).replace(/0+$/, '').replace(/\.$/, ''));

/** "812 B", "4.2 KB", "1.3 MB". */
export function bytes(v) {
  if (v == null) return '—';
  const a = Math.abs(v);
  if (a < 1024) return `${Math.round(v)} B`;
  if (a < 1024 * 1024) return `${(v / 1024).toFixed(1)} KB`;
  return `${(v / 1024 / 1024).toFixed(1)} MB`;
}

/** A turn's duration, or "—" when there were no turns. */
export const turnTime = (ms, turns) => (turns > 0 ? duration(ms) : '—');

/** The time since the last turn, as an age that keeps ticking ("3m 04s ago"). */
export function lastTurnAge(secs) {
  if (secs == null) return h('span', { class: 'dim' }, 'no turn yet');
  const iso = new Date(Date.now() - secs * 1000).toISOString();
  return h('time', { datetime: iso, dataset: { since: iso, suffix: ' ago' } }, `${span(secs * 1000)} ago`);
}

/** Flag of an agent whose inbox waits while no turn ran for too long. */
export function stuckTag(a, stuckAfter) {
  if (!a?.stuck) return null;
  const quiet = a.seconds_since_last_turn != null ? `no turn for ${span(a.seconds_since_last_turn * 1000)}` : 'no turn yet';
  return h('span', { class: 'tag stuck', title: `${a.inbox_depth_current} waiting in its inbox, ${quiet} (threshold ${span(stuckAfter * 1000)})`, dataset: { stuck: a.agent } }, icon('warn'), ' stuck');
}

/**
 * A small bar list of `entries` ([key, value] pairs), longest bar = largest
 * value. `colorOf(key)` picks a bar's colour class; `fmt` prints values.
 */
export function bars(entries, { fmt = String, colorOf = () => '', emptyText = 'none' } = {}) {
  if (entries.length === 0) return h('p', { class: 'empty' }, emptyText);
  const max = Math.max(...entries.map(([, v]) => v), 1e-9);
  return h('ul', { class: 'bars' }, entries.map(([k, v]) =>
    h('li', { dataset: { key: k, value: v } },
      h('span', { class: 'k', title: k }, k),
      h('span', { class: 'track' }, h('i', { class: colorOf(k), style: `width:${Math.max(2, (100 * v) / max).toFixed(1)}%` })),
      h('span', { class: 'v' }, fmt(v)))));
}

/** Entries of an object, largest value first. */
export const byValue = (obj) => Object.entries(obj ?? {}).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
