// An agent's page: its live terminal (history from the events table, new
// events over SSE, earlier turns on demand), state badge, controls, model,
// last turn, scheduled prompts, inbox and telemetry.

import { api, live, snapshot } from './api.js';
import { loadNotifications, mountBell, setTitle, show as showNotifications } from './notifications.js';
import { localRow, renderEvent, turnFacts } from './render.js';
import { mountShell } from './shell.js';
import { icon } from './icons.js';
import { mountTelemetry } from './telemetry.js';
import { $, badge, fill, banner, duration, flags, h, messageItem, run, setConn, showDatabase, showSpace, since, spendBar, startClock, toast, twoClick, watchLogin } from './ui.js';

// The page is served at /agents/NAME (hive-c0re checked that NAME exists).
const NAME = decodeURIComponent(location.pathname.split('/')[2] ?? '');
setTitle(`${NAME} · hyperhive`);
for (const el of document.querySelectorAll('.agent-name')) el.textContent = NAME;
$('#term-input').placeholder = `message ${NAME} as the operator, or /help`;
$('#schedule-text').placeholder = `what to tell ${NAME}`;
const PAGE = 200; // events per history request
const term = $('#term');
const rows = $('#rows');
const chip = $('#new-chip');

let row = null; // the agent's status row
let firstId = null; // oldest event id in the view (or the cut of /clear)
let lastId = 0; // newest event id seen
let hasEarlier = true;
let loadingEarlier = false;
let ready = false; // history loaded: live events go straight in
let buffered = []; // live events that came before the history
let unseen = 0; // events below the fold
let turn = {}; // facts of the last turn
// Every change of the agent (a turn's stats arrive with one) refreshes the charts, throttled.
const pokeStats = mountTelemetry(NAME);

// ---- terminal ---------------------------------------------------------------

/** True when the view is scrolled to (nearly) the bottom. */
const atBottom = () => term.scrollHeight - term.scrollTop - term.clientHeight < 8;

function toBottom() {
  term.scrollTop = term.scrollHeight;
  unseen = 0;
  chip.hidden = true;
}

/** Appends rows; follows them only if the operator was already at the bottom. */
function append(elements, count = elements.length) {
  if (elements.length === 0) return;
  const stick = atBottom();
  rows.append(...elements);
  if (stick) toBottom();
  else {
    unseen += count;
    chip.textContent = `↓ ${unseen} new`;
    chip.hidden = false;
  }
}

/** Adds live or caught-up events (oldest first), skipping any already shown. */
function addEvents(events) {
  const fresh = events.filter((e) => e.id > lastId);
  if (fresh.length === 0) return;
  lastId = fresh[fresh.length - 1].id;
  if (firstId === null) firstId = fresh[0].id;
  for (const e of fresh) turn = turnFacts(turn, e);
  showTurn();
  append(fresh.flatMap(renderEvent), fresh.length);
}

function setEarlier(more) {
  hasEarlier = more;
  const top = $('.term-top');
  fill(top, more ? $('#load-earlier') ?? earlierButton() : h('span', { class: 'dim' }, '— start of history —'));
}

function earlierButton() {
  const b = h('button', { id: 'load-earlier', type: 'button', class: 'link' }, '↑ load earlier');
  b.addEventListener('click', loadEarlier);
  return b;
}

/** Prepends the page of events before the oldest shown, keeping the view where it was. */
async function loadEarlier() {
  if (loadingEarlier || !hasEarlier || firstId === null) return;
  loadingEarlier = true;
  try {
    const events = await api.events(NAME, { before: firstId, limit: PAGE });
    if (events.length > 0) {
      firstId = events[0].id;
      const height = term.scrollHeight;
      const top = term.scrollTop;
      rows.prepend(...events.flatMap(renderEvent));
      term.scrollTop = top + (term.scrollHeight - height);
    }
    setEarlier(events.length === PAGE);
  } catch (e) {
    toast(e.message, 'error');
  } finally {
    loadingEarlier = false;
  }
}

/** The newest page of history, then whatever came live meanwhile. */
async function loadHistory() {
  const events = await api.events(NAME, { limit: PAGE });
  rows.replaceChildren();
  lastId = 0;
  firstId = null;
  turn = {};
  unseen = 0;
  chip.hidden = true;
  addEvents(events);
  setEarlier(events.length === PAGE);
  ready = true;
  addEvents(buffered);
  buffered = [];
  toBottom();
  revealLinked();
}

/** `#event-N` (the hive page's feed links a turn so): pages back to that event and shows it. */
async function revealLinked() {
  const m = /^#event-(\d+)$/.exec(location.hash);
  if (!m) return;
  const id = Number(m[1]);
  // A bounded walk back: a link to an event long vacuumed must not page forever.
  for (let i = 0; i < 20 && hasEarlier && firstId !== null && firstId > id; i++) await loadEarlier();
  const el = rows.querySelector(`.row[data-id="${id}"]`);
  if (!el) return;
  el.scrollIntoView({ block: 'center' });
  el.classList.add('flash');
}

/** After a reconnect or a resync: everything after the newest event shown. */
async function catchUp() {
  for (;;) {
    const events = await api.events(NAME, { since: lastId, limit: 1000 });
    addEvents(events);
    if (events.length < 1000) return;
  }
}

term.addEventListener('scroll', () => {
  if (atBottom()) {
    unseen = 0;
    chip.hidden = true;
  }
  // Only a view taller than the terminal was scrolled up by the operator; a
  // short one (after /clear) sits at the top and waits for the button.
  const overflows = term.scrollHeight > term.clientHeight + 40;
  if (ready && overflows && term.scrollTop < 40) loadEarlier();
});
chip.addEventListener('click', toBottom);
$('#load-earlier').addEventListener('click', loadEarlier);

// ---- slash commands ---------------------------------------------------------

const HELP = [
  '/help            this list',
  '/clear           clear the view (the history stays; ↑ load earlier brings it back)',
  '/model           show the model; /model NAME overrides it, /model default goes back to the config',
  '/compact         compact the claude session (when idle)',
  '/compact-notes   ask the agent to compact its notes',
  '/cancel          cancel the running turn (or nap)',
  'anything else    is sent to the agent as a message from the operator (a line that starts with a space too)',
];

function say(text, cls) {
  append([localRow(text, cls)], 0);
  toBottom();
}

/** The commands the terminal knows; any other line starting with / gets a hint, not a message. */
const COMMANDS = new Set(['/help', '/clear', '/model', '/compact', '/compact-notes', '/cancel']);

async function command(line) {
  const [cmd, ...rest] = line.trim().split(/\s+/);
  if (line.startsWith('/') && !COMMANDS.has(cmd)) {
    say(`unknown command ${cmd}: /help lists the commands (to send a message that starts with /, begin it with a space)`, 'local help error');
    return;
  }
  const arg = rest.join(' ');
  switch (cmd) {
    case '/help':
      HELP.forEach((l) => say(l, 'local help'));
      return;
    case '/clear':
      rows.replaceChildren();
      firstId = lastId + 1;
      setEarlier(true);
      toBottom();
      return;
    case '/model':
      if (!arg) {
        const m = await api.model(NAME).catch((e) => toast(e.message, 'error'));
        if (m) say(modelLine(m));
        return;
      }
      await setModel(arg === 'default' ? null : arg);
      return;
    case '/compact':
      await run(() => api.act(NAME, 'compact'));
      return;
    case '/compact-notes':
      await run(() => api.act(NAME, 'compact-notes'));
      return;
    case '/cancel':
      await run(() => api.act(NAME, 'cancel'));
      return;
    default:
      await run(() => api.send(NAME, line));
  }
}

const history = [];
let historyAt = 0;
const input = $('#term-input');
$('#term-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const line = input.value;
  if (!line.trim()) return;
  history.push(line);
  historyAt = history.length;
  input.value = '';
  await command(line);
});
input.addEventListener('keydown', (e) => {
  if (e.key === 'ArrowUp' && historyAt > 0) input.value = history[--historyAt];
  else if (e.key === 'ArrowDown' && historyAt < history.length) input.value = history[++historyAt] ?? '';
  else return;
  e.preventDefault();
});

// ---- controls, model, last turn, inbox --------------------------------------

function showRow(r) {
  row = r;
  $('#badge').replaceWith(Object.assign(badge(r), { id: 'badge' }));
  const hb = r.last_turn_at ? h('span', { class: 'tag' }, icon('heart'), ' ', since(r.last_turn_at, ' ago')) : h('span', { class: 'tag dim' }, 'no turn yet');
  const sha = r.deployed_sha && h('span', { class: 'tag', title: 'deployed config' }, `⎇ ${r.deployed_sha}`);
  const rt = h('span', { class: 'tag', title: r.isolated ? 'user-namespaced container' : 'plain host process, not isolated' }, r.runtime);
  fill($('#flags'), hb, ...flags(r), sha, rt, r.status_text && h('span', { class: 'status-text' }, r.status_text));
  $('#btn-cancel').hidden = !(r.running && (r.state === 'thinking' || r.state === 'compacting' || r.state === 'napping' || r.state === 'queued'));
  $('#btn-compact').hidden = !(r.running && r.state === 'idle');
  document.querySelector('[data-action=start]').disabled = r.running && !r.failed;
  document.querySelector('[data-action=stop]').disabled = !r.running;
  const pause = $('#btn-pause');
  fill(pause, icon(r.paused ? 'play' : 'pause'), r.paused ? ' Resume' : ' Pause');
  pause.title = r.paused ? 'let its turn loop take messages again' : 'park its turn loop; messages keep queueing';
  setTitle(`${r.name} · ${r.state} · hyperhive`);
  showBudget(r.budget);
  showTurn();
  pokeStats();
}

/** The agent's own budget today (its status row's `budget`), or that it has none. */
function showBudget(b) {
  fill($('#budget'), b ? spendBar(b) : h('span', { class: 'dim' }, 'no budget'));
}

async function setBudget(body) {
  const r = await run(() => api.setBudget(NAME, body), body.reset ? `${NAME}'s budget is lifted until 00:00 UTC` : `${NAME}'s budget is set for today`);
  if (r?.budget) showBudget(r.budget.usd_per_day != null || r.budget.tokens_per_day != null ? r.budget : null);
  return r;
}

function modelLine(m) {
  const queued = m.queued ? `, ${m.queued} queued for the next turn` : '';
  return `model ${m.active} (configured ${m.configured}${m.override_model ? `, override ${m.override_model}` : ''}${queued})`;
}

function showModel(m) {
  fill($('#model'), h('dl', { class: 'facts' },
    h('dt', {}, 'active'), h('dd', {}, h('b', {}, m.active)),
    // An override set during a turn waits for the next one.
    m.queued && [h('dt', {}, 'queued'), h('dd', { title: 'takes effect at the next turn' }, m.queued)],
    h('dt', {}, 'configured'), h('dd', {}, m.configured),
    h('dt', {}, 'override'), h('dd', {}, m.override_model ?? h('span', { class: 'dim' }, 'none')),
    m.switched_at && [h('dt', {}, 'switched'), h('dd', {}, since(m.switched_at, ' ago'))]));
  $('#model-clear').disabled = !m.override_model;
}

async function setModel(model) {
  const r = await run(() => api.setModel(NAME, model), model ? `${NAME} uses ${model} from its next turn` : `${NAME} is back on its configured model`);
  if (r?.model) showModel(r.model);
}

function showTurn() {
  const facts = [];
  const start = turn.start ?? (turn.end && turn.duration_ms != null ? new Date(Date.parse(turn.end) - turn.duration_ms).toISOString() : null);
  if (start) facts.push(h('dt', {}, 'started'), h('dd', {}, new Date(start).toLocaleTimeString(), ' · ', since(start, ' ago')));
  if (turn.end || turn.duration_ms != null) facts.push(h('dt', {}, 'duration'), h('dd', {}, duration(turn.duration_ms)));
  else if (turn.start) facts.push(h('dt', {}, 'duration'), h('dd', {}, 'running…'));
  if (turn.exit != null || turn.exit_class || turn.outcome) {
    const bad = (turn.exit != null && turn.exit !== 0) || (turn.exit_class && turn.exit_class !== 'ok') || turn.outcome === 'error';
    const text = [turn.exit != null && `exit ${turn.exit}`, turn.exit_class, !turn.exit_class && turn.outcome].filter(Boolean).join(' · ');
    facts.push(h('dt', {}, 'exit'), h('dd', { class: bad ? 'bad' : 'good' }, text));
  }
  // The turn's own events scrolled out of the loaded history: the row still knows when it ended.
  if (facts.length === 0 && row?.last_turn_at) facts.push(h('dt', {}, 'ended'), h('dd', {}, since(row.last_turn_at, ' ago')));
  fill($('#last-turn'), ...(facts.length ? facts : [h('dt', {}, '—'), h('dd', {}, 'no turn yet')]));
}

let inboxShown = 0; // how many times the list was filled: a reload answered after a fresher list is dropped

function showInbox(messages) {
  inboxShown++;
  fill($('#inbox'), ...(messages.length ? [...messages].reverse().map((m) => messageItem(m, NAME, { labels: true })) : [h('li', { class: 'empty' }, 'No messages yet.')]));
}

// ---- scheduled prompts ------------------------------------------------------

let schedulesLoading = null; // the fetch in flight; a request meanwhile reloads once more after it
let schedulesAgain = false;

function showSchedules(all) {
  const mine = all.filter((s) => s.agent === NAME);
  fill($('#schedules'), ...(mine.length ? mine.map(scheduleItem) : [h('li', { class: 'empty' }, 'Nothing scheduled.')]));
}

function scheduleItem(s) {
  const remove = h('button', { type: 'button', class: 'link', title: `remove schedule #${s.id}`, dataset: { remove: s.id } }, '✕ remove');
  remove.addEventListener('click', async () => {
    if (await run(() => api.removeSchedule(s.id))) loadSchedules();
  });
  return h('li', { class: 'msg schedule', dataset: { id: s.id } },
    h('div', { class: 'meta' }, h('span', { class: 'dim' }, `#${s.id} · `), h('b', {}, s.when),
      h('span', { class: 'dim' }, ' · next '), h('time', { datetime: s.next_due, title: new Date(s.next_due).toLocaleString() }, new Date(s.next_due).toLocaleString()),
      ' ', remove),
    h('div', { class: 'body' }, s.text));
}

/** (Re)loads the list; calls during a load coalesce into one more. */
async function loadSchedules() {
  if (schedulesLoading) {
    schedulesAgain = true;
    return;
  }
  schedulesLoading = api.schedules().then(showSchedules).catch((e) => toast(e.message, 'error'));
  await schedulesLoading;
  schedulesLoading = null;
  if (schedulesAgain) {
    schedulesAgain = false;
    loadSchedules();
  }
}

// ---- secrets (names only) ---------------------------------------------------

/** The secrets this agent's claude gets: its own, and the hive-wide ones it does not override. */
function showSecrets(all) {
  const own = new Set(all.filter((s) => s.agent === NAME).map((s) => s.name));
  const mine = all.filter((s) => s.agent === NAME || (s.agent == null && !own.has(s.name)));
  fill($('#secrets'), ...(mine.length
    ? mine.map((s) => h('li', { class: 'msg secret', dataset: { name: s.name } },
      h('code', {}, s.name), h('span', { class: 'dim' }, s.agent ? ' · this agent\'s' : ' · hive-wide')))
    : [h('li', { class: 'empty' }, 'No secrets.')]));
}

const loadSecrets = () => api.secrets().then(showSecrets).catch((e) => toast(e.message, 'error'));

$('#schedule-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const when = $('#schedule-when').value.trim();
  const text = $('#schedule-text').value;
  if (!when || !text.trim()) return;
  if (await run(() => api.addSchedule(NAME, when, text))) {
    $('#schedule-text').value = '';
    loadSchedules();
  }
});

$('#model-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const m = $('#model-input').value.trim();
  if (!m) return;
  await setModel(m);
  $('#model-input').value = '';
});
$('#model-clear').addEventListener('click', () => setModel(null));
$('#budget-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const body = {};
  const usdText = $('#budget-usd').value.trim();
  const tokenText = $('#budget-tokens').value.trim();
  if (usdText) body.usd = Number(usdText);
  if (tokenText) body.tokens = Number(tokenText);
  if (!usdText && !tokenText) return;
  if (await setBudget(body)) {
    $('#budget-usd').value = '';
    $('#budget-tokens').value = '';
  }
});
$('#budget-reset').addEventListener('click', () => setBudget({ reset: true }));
$('#btn-cancel').addEventListener('click', () => run(() => api.act(NAME, 'cancel')));
$('#btn-compact').addEventListener('click', () => run(() => api.act(NAME, 'compact')));
$('#btn-pause').addEventListener('click', () => run(() => api.act(NAME, row?.paused ? 'resume' : 'pause')));
for (const b of document.querySelectorAll('.agent-head [data-action]')) {
  const go = () => run(() => api.act(NAME, b.dataset.action));
  if (b.classList.contains('danger')) twoClick(b, go);
  else b.addEventListener('click', go);
}

// ---- live -------------------------------------------------------------------

/**
 * The database alarm: answered from memory, so it shows while the page's
 * other reads fail, and before its stream opens (which needs the database).
 */
function loadDatabase() {
  snapshot(['database'], api.database).then(({ alarm }) => showDatabase(alarm), () => {});
}

async function refresh(first) {
  loadDatabase();
  try {
    const [r, m, inbox, space] = await Promise.all([
      snapshot(['agent'], () => api.agent(NAME)),
      snapshot(['model'], () => api.model(NAME)),
      snapshot(['inbox'], () => api.messages(NAME)),
      snapshot(['space'], api.space),
    ]);
    showSpace(space.alarm);
    showRow(r);
    showModel(m);
    showInbox(inbox);
    loadSchedules();
    loadSecrets();
    if (first) await loadHistory();
    else await catchUp();
  } catch (e) {
    toast(e.message, 'error');
  }
}

live(NAME, {
  hello: (_, first) => {
    loadNotifications();
    return refresh(first);
  },
  resync: () => {
    loadNotifications();
    return refresh(false);
  },
  notifications: showNotifications,
  // An agent frame comes with every change of its schedules (pending_reminders) and every delivery.
  agent: (r) => {
    if (r.name !== NAME) return;
    // A turn that read its messages changes the depth, not the list: relabel what is pending.
    if (row && r.inbox_depth !== row.inbox_depth) {
      const seen = inboxShown;
      api.messages(NAME).then((m) => seen === inboxShown && showInbox(m), () => {});
    }
    showRow(r);
    loadSchedules();
    loadSecrets();
  },
  model: ({ model }) => showModel(model),
  events: ({ events }) => (ready ? addEvents(events) : buffered.push(...events)),
  inbox: ({ messages }) => showInbox(messages),
  space: ({ alarm }) => showSpace(alarm),
  database: ({ alarm }) => showDatabase(alarm),
  agent_removed: () => banner(`${NAME} was destroyed: its history stays in the database until purged.`, 'Back to the hive', () => { location.href = '/'; }),
}, setConn);

mountBell();
watchLogin();
loadDatabase();
startClock();
input.focus();
mountShell($('#shell-panel'), NAME);
