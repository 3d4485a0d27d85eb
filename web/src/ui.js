// Small DOM helpers both pages use: element building, toasts, two-click
// buttons, ages and countdowns, state badges. No framework: the pages are
// small and mostly update a few cells in place.

import { onSession } from './api.js';

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
    for (const el of document.querySelectorAll('[data-until]')) {
      el.textContent = countdown(el.dataset.until);
      el.classList.toggle('expired', Date.parse(el.dataset.until) <= Date.now());
    }
  }, 1000);
}

const ICONS = { idle: '💤', thinking: '🧠', compacting: '📦', napping: '😴', stopped: '⏹', failed: '✖' };

/** The one state a badge shows: failed > stopped > the turn-loop state. */
export function stateOf(row) {
  if (row.failed) return 'failed';
  if (!row.running) return 'stopped';
  return row.state;
}

/** "MM:SS" left until `iso` (00:00 once it passed). */
function napLeft(iso) {
  const s = Math.max(0, Math.ceil((Date.parse(iso) - Date.now()) / 1000));
  const pad = (n) => String(n).padStart(2, '0');
  return `${pad(Math.floor(s / 60))}:${pad(s % 60)}`;
}

/** `🧠 thinking · 12s` (the age of the state), or `😴 napping · 04:59` (the nap's countdown), coloured by state. */
export function badge(row) {
  const state = stateOf(row);
  const when = state === 'napping' && row.nap_until
    ? h('time', { datetime: row.nap_until, title: `napping until ${new Date(row.nap_until).toLocaleString()}`, dataset: { nap: row.nap_until } }, napLeft(row.nap_until))
    : since(row.state_since);
  return h('span', { class: `badge s-${state}`, dataset: { state } },
    h('span', { class: 'icon', 'aria-hidden': 'true' }, ICONS[state] ?? '•'), ` ${state} · `, when);
}

/** Small tags for flags that are not the state. */
export function flags(row) {
  return [
    row.paused && h('span', { class: 'tag warn', title: 'its turn loop is parked; messages keep queueing' }, '⏸ paused'),
    row.needs_login && h('span', { class: 'tag warn', title: 'no usable claude credentials' }, '🔑 needs login'),
    row.parent && h('span', { class: 'tag', title: 'asked for by' }, `↖ ${row.parent}`),
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

/** A message list item: who to whom, when, and the body. */
export function messageItem(m, me) {
  const outgoing = m.from === me;
  const who = outgoing ? h('span', { class: 'who' }, '→ ', h('b', {}, m.to)) : h('span', { class: 'who' }, h('b', {}, m.from), ' →');
  return h('li', { class: `msg ${outgoing ? 'out' : 'in'}`, dataset: { id: m.id } },
    h('div', { class: 'meta' }, who, h('span', { class: 'dim' }, ` #${m.id} · `), since(m.sent_at, ' ago')),
    h('div', { class: 'body' }, m.body));
}
