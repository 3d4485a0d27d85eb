// The hive page: every agent and its controls, approvals, operator questions,
// a box to message any agent, and the operator's inbox. Live over SSE.

import { api, live } from './api.js';
import { rate, refresher, stuckTag, turnTime } from './stats.js';
import { $, badge, fill, flags, h, messageItem, run, setConn, showSpace, since, startClock, toast, twoClick, until, watchLogin } from './ui.js';

const agents = new Map(); // name -> {row, tr, stats}
const hiddenDiffs = new Set(); // approval ids whose diff the operator folded away

// ---- agents ---------------------------------------------------------------

function actionButton(name, action, label, { danger = false } = {}) {
  const b = h('button', { type: 'button', class: danger ? 'danger' : '', dataset: { action } }, label);
  const go = () => run(() => api.act(name, action));
  if (danger) twoClick(b, go);
  else b.addEventListener('click', go);
  return b;
}

function agentRow(name) {
  const tr = h('tr', { dataset: { name } },
    h('td', { class: 'name' }),
    h('td', { class: 'state' }),
    h('td', { class: 'heartbeat' }),
    h('td', { class: 'rate num' }),
    h('td', { class: 'p95 num' }),
    h('td', { class: 'model' }),
    h('td', { class: 'inbox' }),
    h('td', { class: 'actions' },
      actionButton(name, 'start', 'Start'),
      actionButton(name, 'stop', 'Stop'),
      actionButton(name, 'restart', 'Restart'),
      actionButton(name, 'kill', 'Kill', { danger: true }),
      actionButton(name, 'destroy', 'Destroy', { danger: true })));
  return tr;
}

/** Fills a row's cells from a status row; the buttons (and their armed state) stay. */
function fillRow(tr, row) {
  const cell = (cls) => tr.querySelector(`td.${cls}`);
  fill(cell('name'),
    h('a', { href: `/agents/${encodeURIComponent(row.name)}` }, row.name), ' ', ...flags(row),
    row.status_text && h('div', { class: 'status-text', title: row.status_set_at }, row.status_text));
  fill(cell('state'), badge(row), stuckTag(agents.get(row.name)?.stats, stuckAfter));
  fill(cell('heartbeat'), row.last_turn_at ? h('span', {}, '♥ ', since(row.last_turn_at, ' ago')) : h('span', { class: 'dim' }, 'no turn yet'));
  cell('model').textContent = row.active_model;
  const inbox = cell('inbox');
  inbox.textContent = row.inbox_depth;
  inbox.classList.toggle('waiting', row.inbox_depth > 0);
  tr.querySelector('[data-action=start]').disabled = row.running && !row.failed;
  tr.querySelector('[data-action=stop]').disabled = !row.running;
  tr.classList.toggle('failed', row.failed);
}

function upsertAgent(row) {
  let entry = agents.get(row.name);
  if (!entry) {
    entry = { row, tr: agentRow(row.name) };
    agents.set(row.name, entry);
    const body = $('#agents tbody');
    const after = [...body.children].find((tr) => tr.dataset.name > row.name);
    body.insertBefore(entry.tr, after ?? null);
  }
  entry.row = row;
  fillRow(entry.tr, row);
  agentsChanged();
  pokeStats();
}

function removeAgent(name) {
  agents.get(name)?.tr.remove();
  agents.delete(name);
  agentsChanged();
}

function agentsChanged() {
  $('#agent-count').textContent = agents.size || '';
  $('#no-agents').hidden = agents.size > 0;
  $('#agents').hidden = agents.size === 0;
  const select = $('#send-to');
  const chosen = select.value;
  const names = [...agents.keys()].sort();
  if (names.join() !== [...select.options].map((o) => o.value).join()) {
    select.replaceChildren(...names.map((n) => h('option', { value: n }, n)));
    if (names.includes(chosen)) select.value = chosen;
  }
}

async function loadAgents() {
  const rows = await api.agents();
  const names = new Set(rows.map((r) => r.name));
  for (const name of [...agents.keys()]) if (!names.has(name)) removeAgent(name);
  rows.forEach(upsertAgent);
}

// ---- telemetry --------------------------------------------------------------

let stuckAfter = 300;

/** Fills an agent row's telemetry cells (turns/min, p95) and its stuck flag. */
function fillStats(tr, a) {
  const cell = (cls) => tr.querySelector(`td.${cls}`);
  cell('rate').textContent = rate(a.turns_per_minute);
  cell('p95').textContent = turnTime(a.duration_p95_ms, a.turns);
  cell('p95').title = a.turns ? `p50 ${turnTime(a.duration_p50_ms, a.turns)} over ${a.turns} turns` : 'no turns in the last hour';
  tr.classList.toggle('stuck', a.stuck);
  const state = cell('state');
  state.querySelector('.tag.stuck')?.remove();
  const tag = stuckTag(a, stuckAfter);
  if (tag) state.append(tag);
}

async function loadStats() {
  let s;
  try {
    s = await api.stats(null, '1h');
  } catch {
    return; // the next change or the idle refresh tries again; the rows stay as they were
  }
  stuckAfter = s.stuck_after_seconds;
  for (const a of s.agents) {
    const entry = agents.get(a.agent);
    if (!entry) continue;
    entry.stats = a;
    fillStats(entry.tr, a);
  }
}

const pokeStats = refresher(loadStats);

// ---- approvals --------------------------------------------------------------

function approvalItem(a) {
  // A pending approval shows what it changes unless the operator folds it.
  const shown = !hiddenDiffs.has(a.id);
  const diffBox = h('pre', { class: 'diff', hidden: !shown }, 'loading the diff…');
  const loadDiff = async () => {
    try {
      const { diff } = await api.diff(a.id);
      fill(diffBox, ...diff.split('\n').map((line) =>
        h('span', { class: line.startsWith('+') ? 'add' : line.startsWith('-') ? 'del' : line.startsWith('@@') ? 'hunk' : '' }, line + '\n')));
    } catch (e) {
      diffBox.textContent = e.message;
    }
  };
  const toggle = h('button', { type: 'button', class: 'link' }, shown ? '▾ hide diff' : '▸ show diff');
  toggle.addEventListener('click', () => {
    const show = diffBox.hidden;
    diffBox.hidden = !show;
    toggle.textContent = show ? '▾ hide diff' : '▸ show diff';
    if (show) {
      hiddenDiffs.delete(a.id);
      loadDiff();
    } else hiddenDiffs.add(a.id);
  });
  if (shown) loadDiff();
  const note = h('input', { class: 'note', placeholder: 'reason (optional, for deny)' });
  return h('div', { class: 'approval', dataset: { id: a.id } },
    h('div', { class: 'meta' }, h('b', {}, `#${a.id} ${a.kind}`), ' ', h('a', { href: `/agents/${encodeURIComponent(a.agent)}` }, a.agent),
      a.commit_ref && h('code', {}, a.commit_ref.slice(0, 12)), h('span', { class: 'dim' }, ' · asked '), since(a.requested_at, ' ago')),
    a.description && h('p', { class: 'desc' }, a.description),
    toggle, diffBox,
    h('div', { class: 'buttons' },
      twoClick(h('button', { type: 'button', class: 'primary', dataset: { decide: 'approve' } }, 'Approve'), () => run(() => api.approve(a.id))),
      note,
      twoClick(h('button', { type: 'button', class: 'danger', dataset: { decide: 'deny' } }, 'Deny'), () => run(() => api.deny(a.id, note.value.trim())))));
}

function showApprovals(list) {
  const pending = list.filter((a) => a.status === 'pending');
  const decided = list.filter((a) => a.status !== 'pending').slice(-5).reverse();
  $('#approval-count').textContent = pending.length || '';
  const box = $('#approvals');
  fill(box,
    ...(pending.length ? pending.map(approvalItem) : [h('p', { class: 'empty' }, 'Nothing to approve.')]),
    decided.length > 0 && h('details', { class: 'decided' }, h('summary', {}, `recent decisions (${decided.length})`),
      h('ul', {}, decided.map((a) => h('li', {}, h('span', { class: `status st-${a.status}` }, a.status), ` #${a.id} ${a.kind} ${a.agent}`, a.note && h('span', { class: 'dim' }, ` — ${a.note}`))))));
}

// ---- questions --------------------------------------------------------------

function questionItem(q) {
  const input = h('input', { class: 'answer', placeholder: 'your answer', required: true });
  const form = h('form', { class: 'answer-form' }, input, h('button', { type: 'submit', class: 'primary' }, 'Answer'),
    twoClick(h('button', { type: 'button', class: 'danger' }, 'Cancel'), () => run(() => api.cancelQuestion(q.id))));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    if (input.value.trim()) run(() => api.answer(q.id, input.value.trim()));
  });
  return h('div', { class: 'question', dataset: { id: q.id } },
    h('div', { class: 'meta' }, h('b', {}, `#${q.id}`), ' from ', h('a', { href: `/agents/${encodeURIComponent(q.agent)}` }, q.agent),
      ' · ⏳ ', until(q.deadline)),
    h('p', { class: 'text' }, q.question),
    q.options.length > 0 && h('div', { class: 'options' }, q.options.map((o) =>
      h('button', { type: 'button', class: 'option', onclick: () => { input.value = o; input.focus(); } }, o))),
    form);
}

let lastQuestions = [];

function showQuestions(list) {
  lastQuestions = list;
  const now = Date.now();
  const open = list.filter((q) => q.status === 'pending' && Date.parse(q.deadline) > now);
  $('#question-count').textContent = open.length || '';
  const box = $('#questions');
  // Keep a half-typed answer: only rebuild when the set of open questions changed.
  const ids = open.map((q) => q.id).join();
  if (box.dataset.ids === ids && ids) return;
  box.dataset.ids = ids;
  fill(box, ...(open.length ? open.map(questionItem) : [h('p', { class: 'empty' }, 'No open questions.')]));
}

// ---- messages ---------------------------------------------------------------

function showInbox(messages) {
  const list = $('#inbox');
  fill(list, ...(messages.length ? [...messages].reverse().map((m) => messageItem(m, 'operator')) : [h('li', { class: 'empty' }, 'No messages yet.')]));
}

$('#send-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const to = $('#send-to').value;
  const body = $('#send-body');
  if (!to) return toast('there is no agent to write to yet', 'error');
  const r = await run(() => api.send(to, body.value));
  if (r) body.value = '';
});
$('#send-body').addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) $('#send-form').requestSubmit();
});

// ---- live -------------------------------------------------------------------

async function loadAll() {
  try {
    await Promise.all([
      loadAgents(),
      api.approvals().then(showApprovals),
      api.questions().then(showQuestions),
      api.operatorMessages().then(showInbox),
      api.space().then(({ alarm }) => showSpace(alarm)),
    ]);
  } catch (e) {
    toast(e.message, 'error');
  }
}

live(null, {
  hello: () => loadAll(),
  resync: () => loadAll(),
  agent: upsertAgent,
  agent_removed: ({ name }) => removeAgent(name),
  approvals: ({ approvals }) => showApprovals(approvals),
  questions: ({ questions }) => showQuestions(questions),
  operator_inbox: ({ messages }) => showInbox(messages),
  space: ({ alarm }) => showSpace(alarm),
}, setConn);
watchLogin();

// A deadline passes without a word from the server: drop expired questions here.
setInterval(() => showQuestions(lastQuestions), 5000);
startClock();
