// The bell on every page: the operator's unread notifications, a dropdown
// that lists the newest (each links to its item) and marks them read, the
// unread count in the page title, and browser notifications (the
// Notification API) for the kinds the operator chose, once allowed.
//
// A notification's text is an agent's words: it only ever becomes a text
// node. The kinds are hive_sh4re::notification::NotificationKind's.

import { api, snapshot } from './api.js';
import { $, h, fill, since, toast } from './ui.js';

/** Every kind and how the dropdown names it. */
export const KINDS = {
  message: 'Messages to the operator',
  question: 'Questions',
  approval: 'Approvals waiting',
  crashed: 'Agent crashed',
  failed: 'Agent failed',
  budget_warning: 'Budget at 80 %',
  over_budget: 'Over budget',
  needs_login: 'Needs a login',
  node_down: 'Node down',
  disk_full: 'Disk nearly full',
  turns_failing: 'Turns keep failing',
  webhook_failing: 'Webhook failing',
  schedule_removed: 'Schedule removed',
  out_of_memory: 'Agent out of memory',
  internal_error: 'hive-c0re fault',
};

/** localStorage key of the kinds the browser notifies of. */
const CHOSEN_KEY = 'hyperhive.notify.kinds';
/** Kinds notified of before the operator chooses. */
const DEFAULT_KINDS = ['message', 'question', 'approval', 'failed', 'over_budget', 'needs_login', 'node_down', 'disk_full', 'turns_failing', 'webhook_failing', 'internal_error'];

let baseTitle = document.title;
let unread = 0;
let list = [];
/** The newest id this page has seen; browser notifications are for newer ones only. */
let newestSeen = null;

/** Sets the page's title; the unread count goes in front of it. */
export function setTitle(title) {
  baseTitle = title;
  showTitle();
}

function showTitle() {
  document.title = unread > 0 ? `(${unread}) ${baseTitle}` : baseTitle;
}

function chosenKinds() {
  try {
    const v = JSON.parse(localStorage.getItem(CHOSEN_KEY));
    if (Array.isArray(v)) return new Set(v);
  } catch {
    // A bad value falls back to the defaults.
  }
  return new Set(DEFAULT_KINDS);
}

function saveKinds(set) {
  localStorage.setItem(CHOSEN_KEY, JSON.stringify([...set]));
}

const browserCan = () => typeof Notification !== 'undefined';

/** The bell icon: inline SVG, no icon font and no emoji. */
function bellIcon() {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('width', '18');
  svg.setAttribute('height', '18');
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('class', 'bell-icon');
  const path = document.createElementNS(ns, 'path');
  path.setAttribute('d', 'M12 22a2.5 2.5 0 0 0 2.45-2h-4.9A2.5 2.5 0 0 0 12 22zm7-6V11a7 7 0 0 0-5.5-6.84V3a1.5 1.5 0 0 0-3 0v1.16A7 7 0 0 0 5 11v5l-2 2v1h18v-1l-2-2z');
  path.setAttribute('fill', 'currentColor');
  svg.append(path);
  return svg;
}

let button;
let countEl;
let panel;

/** Puts the bell in the page header (before the connection indicator). */
export function mountBell() {
  const header = $('header.top');
  if (!header || $('#bell')) return;
  countEl = h('span', { id: 'bell-count', class: 'bell-count', hidden: true });
  button = h('button', { id: 'bell', type: 'button', class: 'bell', title: 'Notifications', 'aria-haspopup': 'true', 'aria-expanded': 'false', onclick: toggle }, bellIcon(), countEl);
  panel = h('div', { id: 'bell-panel', class: 'bell-panel', hidden: true, role: 'dialog', 'aria-label': 'Notifications' });
  const wrap = h('div', { class: 'bell-wrap' }, button, panel);
  header.insertBefore(wrap, $('#conn', header));
  document.addEventListener('click', (e) => {
    if (!panel.hidden && !wrap.contains(e.target)) close();
  });
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape') close();
  });
}

function toggle() {
  if (panel.hidden) {
    panel.hidden = false;
    button.setAttribute('aria-expanded', 'true');
    render();
  } else {
    close();
  }
}

function close() {
  if (!panel) return;
  panel.hidden = true;
  button.setAttribute('aria-expanded', 'false');
}

async function markRead(body) {
  try {
    const r = await api.readNotifications(body);
    show({ notifications: list.map((n) => (body.all || n.id === body.id ? { ...n, read: true } : n)), unread: r.unread });
  } catch (e) {
    toast(e.message, 'error');
  }
}

function item(n) {
  return h('li', { class: `notif${n.read ? '' : ' unread'}`, dataset: { id: n.id, kind: n.kind } },
    h('a', { href: n.link, class: 'notif-link', onclick: () => { if (!n.read) markRead({ id: n.id }); } },
      h('span', { class: 'notif-head' }, h('b', {}, KINDS[n.kind] ?? n.kind), n.agent ? ` · ${n.agent}` : '', ' · ', since(n.ts, ' ago')),
      h('span', { class: 'notif-text' }, n.text)),
    !n.read && h('button', { type: 'button', class: 'link notif-read', title: 'Mark read', onclick: () => markRead({ id: n.id }) }, 'mark read'));
}

function browserSettings() {
  if (!browserCan()) return h('p', { class: 'dim' }, 'This browser has no notifications.');
  if (Notification.permission === 'denied') return h('p', { class: 'dim' }, 'Browser notifications are blocked for this page (the browser\'s site settings can allow them).');
  if (Notification.permission !== 'granted') {
    return h('button', { type: 'button', id: 'bell-enable', onclick: async () => { await Notification.requestPermission(); render(); } }, 'Enable browser notifications');
  }
  const chosen = chosenKinds();
  return h('fieldset', { class: 'bell-kinds' }, h('legend', {}, 'Browser notifications for'),
    Object.entries(KINDS).map(([kind, label]) => h('label', {},
      h('input', { type: 'checkbox', checked: chosen.has(kind), dataset: { kind }, onchange: (e) => {
        const set = chosenKinds();
        if (e.target.checked) set.add(kind);
        else set.delete(kind);
        saveKinds(set);
      } }), ` ${label}`)));
}

function render() {
  if (!panel || panel.hidden) return;
  fill(panel,
    h('div', { class: 'bell-top' }, h('b', {}, `${unread} unread`), h('span', { class: 'spacer' }),
      h('button', { type: 'button', id: 'bell-read-all', disabled: unread === 0, onclick: () => markRead({ all: true }) }, 'Mark all read')),
    list.length ? h('ol', { class: 'notifs' }, list.map(item)) : h('p', { class: 'empty' }, 'No notifications.'),
    browserSettings());
}

/** Fires browser notifications for what is new since the last list. */
function announce(items) {
  const newest = items.reduce((m, n) => Math.max(m, n.id), 0);
  if (newestSeen === null) {
    newestSeen = newest;
    return;
  }
  const fresh = items.filter((n) => n.id > newestSeen && !n.read);
  newestSeen = Math.max(newestSeen, newest);
  if (!browserCan() || Notification.permission !== 'granted') return;
  const chosen = chosenKinds();
  for (const n of fresh.reverse()) {
    if (!chosen.has(n.kind)) continue;
    const title = `${KINDS[n.kind] ?? n.kind}${n.agent ? ` · ${n.agent}` : ''}`;
    // The tag makes every open page show one notification, not one each.
    const shown = new Notification(title, { body: n.text, tag: `hyperhive-${n.id}` });
    shown.onclick = () => {
      window.focus();
      location.href = n.link;
    };
  }
}

/** Shows a list (`GET /api/notifications` or a `notifications` frame). */
export function show({ notifications, unread: count }) {
  list = notifications;
  unread = count;
  announce(notifications);
  if (countEl) {
    countEl.textContent = count > 99 ? '99+' : String(count);
    countEl.hidden = count === 0;
    button.classList.toggle('has-unread', count > 0);
    button.title = `${count} unread notification${count === 1 ? '' : 's'}`;
  }
  showTitle();
  render();
}

/** Fetches the list again (after a reconnect). */
export async function loadNotifications() {
  try {
    show(await snapshot(['notifications'], api.notifications));
  } catch (e) {
    toast(e.message, 'error');
  }
}
