// The hive page's agent table, built for fifty agents: compact rows that say
// each agent's health (failed, restarting, waiting on the operator), sorting
// and filters kept in the URL, the per-agent actions in a menu, bulk actions
// on a selection, the hive's totals above it, and cards on a phone.

import { api, snapshot } from './api.js';
import { icon } from './icons.js';
import { rate, refresher, stuckTag, turnTime } from './stats.js';
import { STATES, TOTALS, agentHref, stateInfo, stateKey } from './states.js';
import { $, fill, flags, h, run, since, spendBar, stateClock, toast, twoClick } from './ui.js';

const agents = new Map(); // name -> {row, tr, stats, cost, budget}
const selected = new Set();
let onChange = () => {};

// ---- the view: sort and filters, kept in the URL ------------------------------

const SORTS = {
  name: { label: 'agent', cmp: (a, b) => a.row.name.localeCompare(b.row.name), dir: 1 },
  state: { label: 'state', cmp: (a, b) => stateInfo(stateKey(a.row)).rank - stateInfo(stateKey(b.row)).rank, dir: 1 },
  inbox: { label: 'inbox', cmp: (a, b) => a.row.inbox_depth - b.row.inbox_depth, dir: -1 },
  activity: { label: 'last activity', cmp: (a, b) => lastActivity(a.row) - lastActivity(b.row), dir: -1 },
  cost: { label: 'cost today', cmp: (a, b) => (a.cost ?? 0) - (b.cost ?? 0), dir: -1 },
};

const view = (() => {
  const q = new URLSearchParams(location.search);
  return {
    sort: SORTS[q.get('sort')] ? q.get('sort') : 'name',
    dir: q.get('dir') === 'desc' ? -1 : q.get('dir') === 'asc' ? 1 : null,
    state: q.get('state') ?? '',
    inbox: q.get('inbox') === '1',
    failed: q.get('failed') === '1',
    node: q.get('node') ?? '',
    text: q.get('q') ?? '',
  };
})();

function saveView() {
  const q = new URLSearchParams(location.search);
  const set = (k, v) => (v ? q.set(k, v) : q.delete(k));
  set('sort', view.sort !== 'name' && view.sort);
  set('dir', view.dir && (view.dir < 0 ? 'desc' : 'asc'));
  set('state', view.state);
  set('inbox', view.inbox && '1');
  set('failed', view.failed && '1');
  set('node', view.node);
  set('q', view.text);
  const s = q.toString();
  history.replaceState(null, '', `${location.pathname}${s ? `?${s}` : ''}${location.hash}`);
}

const lastActivity = (row) => Date.parse(row.last_turn_at ?? row.state_since) || 0;

function visible(e) {
  const key = stateKey(e.row);
  if (view.state === 'needs_you' ? !stateInfo(key).needsYou : view.state && key !== view.state) return false;
  if (view.inbox && !(e.row.inbox_depth > 0)) return false;
  if (view.failed && key !== 'failed' && key !== 'restarting') return false;
  if (view.node && (e.row.node ?? '') !== view.node) return false;
  if (view.text && !e.row.name.includes(view.text.toLowerCase())) return false;
  return true;
}

/** Puts the rows in the view's order and hides the filtered ones. */
function arrange() {
  const s = SORTS[view.sort];
  const dir = view.dir ?? s.dir;
  const list = [...agents.values()].sort((a, b) => dir * s.cmp(a, b) || a.row.name.localeCompare(b.row.name));
  const body = $('#agents tbody');
  // Moving rows under an open menu would pull it from under the pointer.
  if (!body.querySelector('details.menu[open]') && list.some((e, i) => body.children[i] !== e.tr)) {
    body.append(...list.map((e) => e.tr));
  }
  let shown = 0;
  for (const e of list) {
    e.tr.hidden = !visible(e);
    if (!e.tr.hidden) shown++;
  }
  for (const th of document.querySelectorAll('#agents th[data-sort]')) {
    const on = th.dataset.sort === view.sort;
    th.classList.toggle('sorted', on);
    th.setAttribute('aria-sort', on ? (dir > 0 ? 'ascending' : 'descending') : 'none');
  }
  $('#agents-shown').textContent = shown < agents.size ? `${shown} of ${agents.size} shown` : '';
  showNodeFilter();
  showTotals();
  showBulk();
}

// ---- rows --------------------------------------------------------------------

function actionButton(name, action, label, { danger = false } = {}) {
  const b = h('button', { type: 'button', class: danger ? 'danger' : '', dataset: { action } }, label);
  const go = () => run(() => api.act(name, action));
  if (danger) twoClick(b, go);
  else {
    b.addEventListener('click', () => {
      b.closest('details.menu')?.removeAttribute('open');
      go();
    });
  }
  return b;
}

function agentRow(name) {
  const check = h('input', { type: 'checkbox', class: 'pick', 'aria-label': `select ${name}` });
  check.addEventListener('change', () => {
    if (check.checked) selected.add(name);
    else selected.delete(name);
    showBulk();
  });
  const menu = h('details', { class: 'menu' },
    h('summary', { 'aria-label': `${name}'s actions`, title: 'actions' }, h('span', { class: 'dots', 'aria-hidden': 'true' }, '⋯')),
    h('div', { class: 'menu-items' },
      actionButton(name, 'start', 'Start'),
      actionButton(name, 'stop', 'Stop'),
      actionButton(name, 'restart', 'Restart'),
      actionButton(name, 'pause', 'Pause'),
      actionButton(name, 'resume', 'Resume'),
      actionButton(name, 'kill', 'Kill', { danger: true }),
      actionButton(name, 'destroy', 'Destroy', { danger: true })));
  return h('tr', { dataset: { name } },
    h('td', { class: 'sel' }, check),
    h('td', { class: 'name' }),
    h('td', { class: 'state' }),
    h('td', { class: 'inbox' }),
    h('td', { class: 'heartbeat' }),
    h('td', { class: 'rate num' }),
    h('td', { class: 'p95 num' }),
    h('td', { class: 'cost num spend-cell' }),
    h('td', { class: 'model' }),
    h('td', { class: 'actions' }, menu));
}

/** The state cell: a dot and what the agent is doing, or what is wrong with it. */
function stateBadge(row) {
  const key = stateKey(row);
  const info = stateInfo(key);
  let detail;
  if (key === 'failed') detail = `${row.restarts || 'after'} restarts`;
  else if (key === 'restarting') detail = `crash ${row.restarts}`;
  else if (key === 'waiting_on_you') detail = h('a', { href: `#question-${row.question}` }, `question #${row.question}`);
  else if (key === 'retrying' && row.state_detail) detail = row.state_detail;
  // Health and the operator's question say more than the state's age.
  const age = !['failed', 'restarting', 'waiting_on_you'].includes(key);
  return h('span', { class: `badge ${info.cls}`, dataset: { state: key }, title: row.state_detail ?? row.crash_exit ?? '' },
    icon(key),
    h('span', { class: 'label' }, ' ', info.label, detail && ' · ', detail, age && h('span', { class: 'age' }, ' · ', stateClock(row, key))));
}

/** The last crash's log tail, folded, while the crash is recent. */
function crashTail(row) {
  if (!row.restarts && !row.crash_tail) return null;
  return h('details', { class: 'crash-tail' },
    h('summary', {}, stateKey(row) === 'failed' || stateKey(row) === 'restarting' ? 'last crash' : `${row.restarts} restarts`),
    h('div', { class: 'crash-exit' }, `harness ${row.crash_exit ?? 'crashed'}`),
    h('pre', {}, row.crash_tail ?? '(no log tail)'));
}

/** Fills a row's cells from a status row; the menu (and an armed button in it) stays. */
function fillRow(e) {
  const { tr, row } = e;
  const cell = (cls) => tr.querySelector(`td.${cls}`);
  fill(cell('name'),
    h('a', { href: agentHref(row.name) }, row.name), ...flags(row),
    row.status_text && h('span', { class: 'status-text', title: row.status_text }, row.status_text));
  const open = cell('state').querySelector('details.crash-tail')?.open;
  fill(cell('state'), stateBadge(row), crashTail(row), stuckTag(e.stats, stuckAfter));
  if (open) cell('state').querySelector('details.crash-tail')?.setAttribute('open', '');
  const act = lastActivity(row);
  fill(cell('heartbeat'), act && (row.last_turn_at || row.running)
    ? since(new Date(act).toISOString(), ' ago')
    : h('span', { class: 'dim' }, 'no turn yet'));
  cell('model').textContent = row.active_model;
  const inbox = cell('inbox');
  inbox.textContent = row.inbox_depth;
  inbox.classList.toggle('waiting', row.inbox_depth > 0);
  fillCost(cell('cost'), e);
  const key = stateKey(row);
  const btn = (a) => tr.querySelector(`[data-action=${a}]`);
  btn('start').disabled = row.running && !row.failed;
  btn('stop').disabled = !row.running;
  btn('pause').disabled = row.paused;
  btn('resume').disabled = !row.paused;
  tr.classList.toggle('failed', key === 'failed');
  tr.classList.toggle('restarting', key === 'restarting');
  tr.dataset.state = key;
}

const money = (v) => (v == null ? '—' : v === 0 ? '$0' : v < 0.01 ? '<$0.01' : `$${v.toFixed(2)}`);

export function upsertAgent(row) {
  let e = agents.get(row.name);
  if (!e) {
    e = { row, tr: agentRow(row.name) };
    agents.set(row.name, e);
    $('#agents tbody').append(e.tr);
  }
  e.row = row;
  fillRow(e);
  changed();
  pokeStats();
}

export function removeAgent(name) {
  agents.get(name)?.tr.remove();
  agents.delete(name);
  selected.delete(name);
  changed();
}

export async function loadAgents() {
  const rows = await snapshot(['agent', 'agent_removed'], api.agents);
  const names = new Set(rows.map((r) => r.name));
  for (const name of [...agents.keys()]) if (!names.has(name)) removeAgent(name);
  rows.forEach(upsertAgent);
}

/** The names of every agent, sorted. */
export const agentNames = () => [...agents.keys()].sort();

function changed() {
  $('#agent-count').textContent = agents.size || '';
  $('#no-agents').hidden = agents.size > 0;
  $('#agents').hidden = agents.size === 0;
  arrange();
  onChange();
}

// ---- totals, the node filter and bulk actions -----------------------------------

function showTotals() {
  const count = Object.fromEntries(TOTALS.map((k) => [k, 0]));
  let perMin = 0;
  let cost = 0;
  for (const e of agents.values()) {
    const k = stateKey(e.row);
    if (k in count) count[k]++;
    perMin += e.stats?.turns_per_minute ?? 0;
    cost += e.cost ?? 0;
  }
  fill($('#totals'),
    TOTALS.map((k) => h('span', { class: `total ${stateInfo(k).cls}`, dataset: { total: k, n: count[k] } },
      h('span', { class: 'dot', 'aria-hidden': 'true' }), ` ${count[k]} ${stateInfo(k).label}`)),
    h('span', { class: 'total', dataset: { total: 'rate' } }, rate(perMin)),
    h('span', { class: 'total', dataset: { total: 'cost' }, title: 'model cost since midnight (this browser\'s time)' }, `${money(cost)} today`));
}

function showNodeFilter() {
  const nodes = [...new Set([...agents.values()].map((e) => e.row.node).filter(Boolean))].sort();
  const select = $('#filter-node');
  // A node filter means something only when the agents run on more than one.
  select.closest('label').hidden = nodes.length < 2;
  const want = ['', ...nodes].join();
  if ([...select.options].map((o) => o.value).join() !== want) {
    select.replaceChildren(h('option', { value: '' }, 'any node'), ...nodes.map((n) => h('option', { value: n }, n)));
    select.value = view.node;
  }
}

function showBulk() {
  for (const n of [...selected]) if (!agents.has(n)) selected.delete(n);
  const bar = $('#bulk');
  bar.hidden = selected.size === 0;
  $('#bulk-count').textContent = `${selected.size} selected`;
  const shown = [...agents.values()].filter((e) => !e.tr.hidden);
  const all = $('#pick-all');
  all.checked = shown.length > 0 && shown.every((e) => selected.has(e.row.name));
  all.indeterminate = !all.checked && shown.some((e) => selected.has(e.row.name));
  for (const e of agents.values()) e.tr.querySelector('input.pick').checked = selected.has(e.row.name);
}

async function bulk(action) {
  const names = [...selected].sort();
  const results = await Promise.allSettled(names.map((n) => api.act(n, action)));
  const failed = results.map((r, i) => [names[i], r]).filter(([, r]) => r.status === 'rejected');
  if (failed.length) toast(`${action}: ${failed.map(([n, r]) => `${n}: ${r.reason.message}`).join('; ')}`, 'error');
  const done = names.length - failed.length;
  if (done) toast(`${action}: done for ${done} agent${done === 1 ? '' : 's'}`);
}

// ---- telemetry: turns/min and p95 of the last hour, cost since midnight ---------

/** Today's spend: against the agent's budget (a bar) when the hive keeps one for it, else the cost. */
function fillCost(td, e) {
  if (e.budget) fill(td, spendBar(e.budget));
  else td.textContent = money(e.cost);
}

let stuckAfter = 300;

function fillStats(e) {
  const cell = (cls) => e.tr.querySelector(`td.${cls}`);
  const a = e.stats;
  cell('rate').textContent = rate(a.turns_per_minute);
  cell('p95').textContent = turnTime(a.duration_p95_ms, a.turns);
  cell('p95').title = a.turns ? `p50 ${turnTime(a.duration_p50_ms, a.turns)} over ${a.turns} turns` : 'no turns in the last hour';
  fillCost(cell('cost'), e);
  e.tr.classList.toggle('stuck', a.stuck);
  const state = cell('state');
  state.querySelector('.tag.stuck')?.remove();
  const tag = stuckTag(a, stuckAfter);
  if (tag) state.append(tag);
}

async function loadStats() {
  const midnight = new Date();
  midnight.setHours(0, 0, 0, 0);
  let hour;
  let today;
  try {
    [hour, today] = await Promise.all([api.stats(null, '1h'), api.stats(null, String(Math.floor(midnight / 1000)))]);
  } catch {
    return; // the next change or the idle refresh tries again; the rows stay as they were
  }
  stuckAfter = hour.stuck_after_seconds;
  const costs = new Map(today.agents.map((a) => [a.agent, a.cost_usd]));
  const budgets = new Map((hour.budgets ?? []).filter((b) => b.agent != null).map((b) => [b.agent, b]));
  const hive = (hour.budgets ?? []).find((b) => b.agent == null);
  if (hive) fill($('#hive-spend'), 'hive today: ', spendBar(hive));
  for (const a of hour.agents) {
    const e = agents.get(a.agent);
    if (!e) continue;
    e.stats = a;
    e.cost = costs.get(a.agent) ?? 0;
    e.budget = budgets.get(a.agent);
    fillStats(e);
  }
  arrange();
}

const pokeStats = refresher(loadStats);

// ---- wiring ----------------------------------------------------------------------

/** Wires the table's controls; `changedFn` runs whenever the set of agents or a row changed. */
export function initAgents(changedFn) {
  onChange = changedFn;
  const head = $('#agents thead tr');
  for (const th of head.querySelectorAll('th[data-sort]')) {
    const key = th.dataset.sort;
    const b = h('button', { type: 'button', class: 'sort' }, th.textContent);
    b.addEventListener('click', () => {
      view.dir = view.sort === key ? -(view.dir ?? SORTS[key].dir) : null;
      view.sort = key;
      saveView();
      arrange();
    });
    th.replaceChildren(b);
  }
  const stateSel = $('#filter-state');
  stateSel.replaceChildren(h('option', { value: '' }, 'any state'), h('option', { value: 'needs_you' }, 'needs you'),
    ...Object.entries(STATES).map(([k, v]) => h('option', { value: k }, v.label)));
  const bind = (sel, key, read) => {
    const el = $(sel);
    if (el.type === 'checkbox') el.checked = view[key];
    else el.value = view[key];
    el.addEventListener(el.type === 'checkbox' || el.tagName === 'SELECT' ? 'change' : 'input', () => {
      view[key] = read(el);
      saveView();
      arrange();
    });
  };
  bind('#filter-state', 'state', (el) => el.value);
  bind('#filter-inbox', 'inbox', (el) => el.checked);
  bind('#filter-failed', 'failed', (el) => el.checked);
  bind('#filter-node', 'node', (el) => el.value);
  bind('#filter-text', 'text', (el) => el.value.trim());
  $('#pick-all').addEventListener('change', (ev) => {
    for (const e of agents.values()) {
      if (e.tr.hidden) continue;
      if (ev.target.checked) selected.add(e.row.name);
      else selected.delete(e.row.name);
    }
    showBulk();
  });
  for (const b of document.querySelectorAll('#bulk button[data-bulk]')) {
    const go = () => bulk(b.dataset.bulk);
    if (b.classList.contains('danger')) twoClick(b, go);
    else b.addEventListener('click', go);
  }
  $('#bulk-clear').addEventListener('click', () => {
    selected.clear();
    showBulk();
  });
  // One menu open at a time; a click elsewhere closes it.
  document.addEventListener('click', (ev) => {
    for (const m of document.querySelectorAll('details.menu[open]')) if (!m.contains(ev.target)) m.open = false;
  });
}
