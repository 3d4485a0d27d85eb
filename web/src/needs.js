// The hive page's "needs you" strip: everything that waits on the operator
// (hive_sh4re::host::NeedsYou, computed once by hive-c0re), each item linking
// to where it is handled, with questions counting down; the count is also
// in the tab title (`4 need you · hive · hyperhive`, after the bell's unread count).

import { setTitle } from './notifications.js';
import { needInfo } from './states.js';
import { $, fill, h, until } from './ui.js';

// The bell's unread count goes in front of the title (notifications.js); what
// needs the operator goes in the title it is put in front of.
const BASE_TITLE = document.title.replace(/^\(\d+\) /, '');
let items = [];

/** Open items: a question whose deadline passed no longer waits. */
function open() {
  const now = Date.now();
  return items.filter((i) => !i.deadline || Date.parse(i.deadline) > now);
}

/** Shows a NeedsYou list. */
export function showNeeds(needs) {
  items = needs.items ?? [];
  render();
}

function render() {
  const list = open();
  const strip = $('#needs');
  setTitle(list.length ? `${list.length} need${list.length === 1 ? 's' : ''} you · ${BASE_TITLE}` : BASE_TITLE);
  strip.dataset.count = list.length;
  $('#needs-count').textContent = list.length || '';
  const box = $('#needs-list');
  const key = list.map((i) => `${i.kind}:${i.agent}:${i.node ?? ''}:${i.id ?? ''}:${i.text}`).join('|');
  if (box.dataset.key === key && list.length) return; // countdowns tick by themselves
  box.dataset.key = key;
  strip.classList.toggle('calm', list.length === 0);
  fill(box, list.length
    ? list.map((i) => {
      const info = needInfo(i.kind);
      return h('li', { class: `need ${info.cls}`, dataset: { kind: i.kind, agent: i.agent, node: i.node ?? '', id: i.id ?? '' } },
        h('a', { class: 'need-link', href: info.where(i) },
          h('span', { class: 'dot', 'aria-hidden': 'true' }),
          h('span', { class: 'need-kind' }, info.label, i.id != null ? ` #${i.id}` : ''),
          h('b', { class: 'need-agent' }, i.node ?? i.agent),
          h('span', { class: 'need-text', title: i.text }, i.text)),
        i.deadline && until(i.deadline));
    })
    : [h('li', { class: 'empty' }, 'Nothing waits on you.')]);
}

/** Brings an approval card or a question (by `#approval-N` / `#question-N`) into view. */
function reveal(hash) {
  const m = /^#(approval|question)-(\d+)$/.exec(hash);
  if (!m) return;
  const el = document.querySelector(`.${m[1]}[data-id="${m[2]}"]`);
  if (!el) return;
  el.scrollIntoView({ block: 'center' });
  el.classList.remove('flash');
  void el.offsetWidth; // restart the animation
  el.classList.add('flash');
}

window.addEventListener('hashchange', () => reveal(location.hash));
$('#needs-list').addEventListener('click', (e) => {
  const a = e.target.closest('a.need-link');
  // The same hash clicked twice fires no hashchange: reveal it anyway.
  if (a && a.getAttribute('href') === location.hash) reveal(location.hash);
});

/** Re-filters expired questions (deadlines pass without a frame). */
setInterval(render, 5000);
