// Small DOM helpers both pages use: element building, toasts, two-click
// buttons, ages and countdowns, state badges. No framework: the pages are
// small and mostly update a few cells in place.

import { onSession } from './api.js';
import { stateInfo, stateKey } from './states.js';
import { icon } from './icons.js';

/** Builds an element: h('a', {href: '/', class: 'x', onclick}, 'text', child). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'text') el.textContent = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export const $ = (sel, root = document) => root.querySelector(sel);

/** Replaces an element's children, skipping empty ones (false, null, undefined). */
export function fill(el, ...children) {
  el.replaceChildren(...children.flat().filter((c) => c !== undefined && c !== null && c !== false && c !== ''));
  return el;
}

/** Shows a toast; errors stay longer. */
export function toast(message, kind = 'ok') {
  const box = $('#toasts');
  const t = h('div', { class: `toast ${kind}`, role: kind === 'error' ? 'alert' : 'status' }, message);
  box.append(t);
  // Keep the stack short: the oldest goes first.
  while (box.children.length > 4) box.firstElementChild.remove();
  setTimeout(() => t.classList.add('leaving'), kind === 'error' ? 8000 : 4000);
  setTimeout(() => t.remove(), kind === 'error' ? 8500 : 4500);
}

/** Runs an API call and toasts its outcome (the server's sentence either way). */
export async function run(call, okText) {
  try {
    const r = await call();
    toast(okText ?? r?.message ?? 'done');
    return r;
  } catch (e) {
    toast(e.message, 'error');
    return undefined;
  }
}

/** How long a two-click button stays armed. */
export const ARM_MS = 4000;

/**
 * Makes a button destructive-safe: the first click arms it ("click again to
 * confirm"), a second click within ARM_MS runs `action`, else it disarms.
 */
export function twoClick(button, action) {
  let timer = null;
  const label = button.textContent;
  const disarm = () => {
    clearTimeout(timer);
    timer = null;
    button.classList.remove('armed');
    button.textContent = label;
  };
  button.addEventListener('click', (ev) => {
    ev.preventDefault();
    if (timer) {
      disarm();
      action();
      return;
    }
    button.classList.add('armed');
    button.textContent = 'click again to confirm';
    timer = setTimeout(disarm, ARM_MS);
  });
  return button;
}

/** "12s", "3m 04s", "2h 05m", "3d 4h" for a duration in ms. */
export function span(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, '0')}s`;
  const hr = Math.floor(m / 60);
  if (hr < 48) return `${hr}h ${String(m % 60).padStart(2, '0')}m`;
  return `${Math.floor(hr / 24)}d ${hr % 24}h`;
}

/** Milliseconds as "850ms" or "12.3s" or a span. */
export function duration(ms) {
  if (ms == null || Number.isNaN(Number(ms))) return '—';
  if (ms < 1000) return `${Math.round(ms)}ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)}s`;
  return span(ms);
}

/** An element that shows the time since `iso` and keeps it current. */
export function since(iso, suffix = '') {
  return h('time', { datetime: iso, title: iso ? new Date(iso).toLocaleString() : '', dataset: { since: iso ?? '', suffix } }, iso ? span(Date.now() - Date.parse(iso)) + suffix : '—');
}

/** An element that counts down to `iso`. */
export function until(iso) {
  return h('time', { datetime: iso, title: new Date(iso).toLocaleString(), dataset: { until: iso } }, countdown(iso));
}

function countdown(iso) {
  const left = Date.parse(iso) - Date.now();
  return left > 0 ? `${span(left)} left` : 'expired';
}

/** Updates every age and countdown once a second. */
export function startClock() {
  setInterval(() => {
    for (const el of document.querySelectorAll('[data-since]')) {
      if (el.dataset.since) el.textContent = span(Date.now() - Date.parse(el.dataset.since)) + (el.dataset.suffix ?? '');
    }
    for (const el of document.querySelectorAll('[data-nap]')) el.textContent = napLeft(el.dataset.nap);
    for (const el of document.querySelectorAll('[data-retry]')) el.textContent = retryIn(el.dataset.retry);
    for (const el of document.querySelectorAll('[data-until]')) {
      el.textContent = countdown(el.dataset.until);
      el.classList.toggle('expired', Date.parse(el.dataset.until) <= Date.now());
    }
  }, 1000);
}


/** The one state a badge shows: failed > restarting > stopped > waiting on you > the turn-loop state (states.js). */
export function stateOf(row) {
  return stateKey(row);
}

/** "MM:SS" left until `iso` (00:00 once it passed). */
function napLeft(iso) {
  const s = Math.max(0, Math.ceil((Date.parse(iso) - Date.now()) / 1000));
  const pad = (n) => String(n).padStart(2, '0');
  return `${pad(Math.floor(s / 60))}:${pad(s % 60)}`;
}

/** "retry in 38s" until `iso`, then "retry due". */
function retryIn(iso) {
  const s = Math.ceil((Date.parse(iso) - Date.now()) / 1000);
  return s > 0 ? `retry in ${span(s * 1000)}` : 'retry due';
}

/** What a badge counts: a nap's end, a retry's time, else the state's age; kept current by `startClock`. */
export function stateClock(row, state) {
  if (state === 'napping' && row.nap_until) {
    return h('time', { datetime: row.nap_until, title: `napping until ${new Date(row.nap_until).toLocaleString()}`, dataset: { nap: row.nap_until } }, napLeft(row.nap_until));
  }
  if (state === 'waiting' && row.retry_at) {
    return h('time', { datetime: row.retry_at, title: row.state_detail ?? '', dataset: { retry: row.retry_at } }, retryIn(row.retry_at));
  }
  return since(row.state_since);
}

/**
 * `thinking · 12s` (the age of the state), `napping · 04:59` (the nap's
 * countdown), `retrying · API 529 · 3/10 · 12s` or `waiting · retry in 38s`
 * (the model API's trouble), `queued · 12s` (waiting for a turn slot since
 * its oldest message came; its place in line in the title), `node down ·
 * no heartbeat from alpha · 40s` (its home node went silent), each after its
 * state's icon, coloured by state.
 */
export function badge(row) {
  const state = stateOf(row);
  const detail = state === row.state ? row.state_detail : null;
  const when = stateClock(row, state);
  // Held by a budget shows the spend that holds it, as retrying shows the API's error.
  const about = (state === 'retrying' || state === 'over_budget' || state === 'node_down') && detail ? ` · ${detail}` : '';
  const title = state === 'queued' && row.queue_position ? `waiting for a turn slot: #${row.queue_position} in line` : detail ?? '';
  return h('span', { class: `badge s-${state}`, dataset: { state }, title },
    icon(state), ` ${stateInfo(state).label}${about} · `, when);
}

/** Dollars as `$0.42`. */
export function usd(v) {
  return `$${(v ?? 0).toFixed(2)}`;
}

/** A token count as `950`, `12.3k` or `2.1M`. */
export function tokens(n) {
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
  if (n >= 1e4) return `${(n / 1e3).toFixed(1)}k`;
  return String(n ?? 0);
}

/**
 * Today's spend against a budget (a BudgetRow): a bar (a <meter>, which needs
 * no style attribute under the CSP) and the figures; the figures alone without a limit.
 */
export function spendBar(b) {
  const parts = [];
  if (b.usd_per_day != null) parts.push(`${usd(b.spent_usd)} of ${usd(b.usd_per_day)}`);
  else parts.push(usd(b.spent_usd));
  if (b.tokens_per_day != null) parts.push(`${tokens(b.spent_tokens)} of ${tokens(b.tokens_per_day)} tokens`);
  else parts.push(`${tokens(b.spent_tokens)} tokens`);
  const limited = b.usd_per_day != null || b.tokens_per_day != null;
  const from = { operator: ' (set for today)', lifted: ' (lifted for today)' }[b.source] ?? '';
  const title = `spent today (${b.day} UTC): ${parts.join(', ')}${from}`;
  // Dollars and tokens in spans of their own: a phone's card shows the bar, or the dollars alone.
  return h('span', { class: `spend${b.over ? ' over' : ''}${limited ? ' limited' : ''}`, title, dataset: { fraction: b.fraction } },
    limited && h('meter', { class: 'spend-bar', min: 0, max: 1, low: 0.8, high: 0.999, optimum: 0, value: Math.min(b.fraction, 1) }),
    h('span', { class: 'spend-text' }, h('span', { class: 'spend-usd' }, parts[0]), h('span', { class: 'spend-tokens' }, ` · ${parts[1]}`)));
}

/** Small tags for flags that are not the state. */
export function flags(row) {
  return [
    row.paused && h('span', { class: 'tag warn', title: 'its turn loop is parked; messages keep queueing' }, icon('pause'), ' paused'),
    row.needs_login && h('span', { class: 'tag warn', title: row.login_reason ?? 'no usable claude credentials' }, icon('key'), ' needs login'),
    row.parent && h('span', { class: 'tag', title: 'asked for by' }, icon('parent'), ` ${row.parent}`),
  ].filter(Boolean);
}

/** Sets the connection indicator in the header. */
export function setConn(state) {
  const el = $('#conn');
  if (!el) return;
  el.className = `conn ${state}`;
  el.textContent = { live: '● live', reconnecting: '○ reconnecting…', connecting: '○ connecting…' }[state] ?? state;
}

/** Shows a sticky banner (e.g. "reload the page"); `kind` names it for `hideBanner`. */
export function banner(text, actionLabel, action, kind = 'notice') {
  const b = $('#banner');
  fill(b, h('span', {}, text), actionLabel && h('button', { type: 'button', onclick: action }, actionLabel));
  b.dataset.kind = kind;
  b.hidden = false;
}

/** Hides the banner if it is of `kind`. */
export function hideBanner(kind) {
  const b = $('#banner');
  if (b.dataset.kind === kind) b.hidden = true;
}

/** Shows the free-space alarm (a SpaceAlarm) as the banner while it is on, and hides it when it clears. */
export function showSpace(alarm) {
  if (alarm) banner(`Disk nearly full since ${alarm.since}: ${alarm.message}`, null, null, 'space');
  else hideBanner('space');
}

/** Shows the database alarm (a DatabaseAlarm) as the banner while it is on, and hides it when it clears. */
export function showDatabase(alarm) {
  if (alarm) banner(`Database alarm since ${alarm.since}: ${alarm.message}`, null, null, 'database');
  else hideBanner('database');
}

/**
 * Keeps a banner up while the server says this browser is not logged in:
 * its sentence says why and how to log in again (the link `hive-c0re urls`
 * prints); the banner goes once a request goes through again.
 */
export function watchLogin() {
  onSession((why) => {
    if (why) banner(`Logged out: ${why}`, 'Reload', () => location.reload(), 'login');
    else hideBanner('login');
  });
}

/**
 * A message list item: who to whom, when, and the body. With `labels`, a tag
 * says what it is to `me`: sent by it, or (to it) pending until it has read it.
 */
export function messageItem(m, me, { labels = false } = {}) {
  const outgoing = m.from === me;
  const who = outgoing ? h('span', { class: 'who' }, '→ ', h('b', {}, m.to)) : h('span', { class: 'who' }, h('b', {}, m.from), ' →');
  let label = null;
  if (labels && outgoing) label = h('span', { class: 'tag label sent', title: `${me} sent this` }, `sent by ${me}`);
  else if (labels && m.pending) label = h('span', { class: 'tag label pending warn', title: `${me} has not read it yet` }, 'pending');
  else if (labels && m.pending === false) label = h('span', { class: 'tag label read', title: `${me} read it in a turn` }, 'read');
  return h('li', { class: `msg ${outgoing ? 'out' : 'in'}`, dataset: { id: m.id } },
    h('div', { class: 'meta' }, who, h('span', { class: 'dim' }, ` #${m.id} · `), since(m.sent_at, ' ago'), label && ' ', label),
    h('div', { class: 'body' }, m.body));
}
