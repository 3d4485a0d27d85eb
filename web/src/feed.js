// The hive-wide activity feed: turns started and ended, messages between
// agents, approvals and crashes, newest first, live over SSE (`feed` frames),
// older pages on demand (`GET /api/feed?before=`).

import { api, snapshot } from './api.js';
import { agentHref } from './states.js';
import { $, fill, h } from './ui.js';

/** Items kept on the page; older ones are a click away. */
const KEEP = 300;
const PAGE = 50;
const seen = new Set();
let before = null;

const KINDS = {
  turn_start: { label: 'turn', cls: 'f-turn' },
  turn_end: { label: 'turn end', cls: 'f-turn-end' },
  message: { label: 'message', cls: 'f-message' },
  approval: { label: 'approval', cls: 'f-approval' },
  crash: { label: 'crash', cls: 'f-crash' },
};

const clock = (iso) => new Date(iso).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });

function item(i) {
  const kind = KINDS[i.kind] ?? { label: i.kind, cls: 'f-other' };
  // An event links to its row in the agent's terminal; the rest to the agent.
  const where = i.key.startsWith('e') ? `${agentHref(i.agent)}#event-${i.id}` : agentHref(i.agent);
  return h('li', { class: `feed-item ${kind.cls}`, dataset: { key: i.key, kind: i.kind, ts: i.ts } },
    h('time', { datetime: i.ts, title: new Date(i.ts).toLocaleString() }, clock(i.ts)),
    h('span', { class: 'dot', 'aria-hidden': 'true' }),
    h('a', { class: 'feed-agent', href: agentHref(i.agent) }, i.agent),
    i.to && [h('span', { class: 'dim' }, ' → '), i.to === 'operator' ? h('b', {}, 'operator') : h('a', { class: 'feed-to', href: agentHref(i.to) }, i.to)],
    h('a', { class: 'feed-text', href: where, title: i.text }, i.text));
}

/** Newest-first items go on top (live) or at the bottom (older pages). */
function add(items, atTop) {
  const list = $('#feed');
  list.querySelector('.empty')?.remove();
  const fresh = items.filter((i) => !seen.has(i.key));
  fresh.forEach((i) => seen.add(i.key));
  if (atTop) list.prepend(...fresh.map(item));
  else list.append(...fresh.map(item));
  while (list.children.length > KEEP) {
    seen.delete(list.lastElementChild.dataset.key);
    list.lastElementChild.remove();
    before = null; // what fell off is older than the kept page: page again from the new bottom
  }
  if (!list.children.length) list.append(h('li', { class: 'empty' }, 'Nothing happened yet.'));
  $('#feed-more').hidden = !before;
}

/** The newest page (on load and after a reconnect). */
export async function loadFeed() {
  const page = await snapshot(['feed'], () => api.feed({ limit: PAGE }));
  seen.clear();
  fill($('#feed'));
  add(page.items, false);
  before = page.before ?? null;
  $('#feed-more').hidden = !before;
}

/** A `feed` frame: new items, oldest first. */
export function liveFeed({ items }) {
  add([...items].reverse(), true);
}

$('#feed-more').addEventListener('click', async () => {
  if (!before) return;
  const page = await api.feed({ before, limit: PAGE });
  add(page.items, false);
  before = page.before ?? null;
  $('#feed-more').hidden = !before;
});
