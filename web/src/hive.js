// The hive page: what needs the operator first (needs.js), every agent and
// its controls (agents.js), approvals, operator questions, the hive-wide
// activity feed (feed.js), a box to message any agent, and the operator's
// inbox. Live over SSE.

import { agentNames, initAgents, loadAgents, removeAgent, upsertAgent } from './agents.js';
import { api, live, snapshot } from './api.js';
import { liveFeed, loadFeed } from './feed.js';
import { showNeeds } from './needs.js';
import { icon } from './icons.js';
import { loadNotifications, mountBell, show as showNotifications } from './notifications.js';
import { refresher } from './stats.js';
import { $, fill, h, messageItem, run, setConn, showDatabase, showSpace, since, startClock, toast, twoClick, until, watchLogin } from './ui.js';

const hiddenDiffs = new Set(); // approval ids whose diff the operator folded away

// ---- agents (agents.js: the table) ---------------------------------------------

function agentsChanged() {
  const select = $('#send-to');
  const chosen = select.value;
  const names = agentNames();
  if (names.join() !== [...select.options].map((o) => o.value).join()) {
    select.replaceChildren(...names.map((n) => h('option', { value: n }, n)));
    if (names.includes(chosen)) select.value = chosen;
  }
  pokeBackoff();
}

// ---- the hive-wide model API backoff ------------------------------------------

/** Shows (or hides) the banner of the hive backing off from a failing model API. */
function showBackoff(b) {
  const el = $('#api-backoff');
  el.hidden = !b;
  if (!b) return;
  fill(el,
    h('span', {}, icon('warn'), ' The model API is failing: the hive holds new turns and probes it with one at a time. '),
    h('span', {}, 'Since ', since(b.since, ' ago'), ` · last error: ${b.last_error} · next try: `,
      b.probe ? `probing now with ${b.probe}` : until(b.next_try)));
}

const pokeBackoff = refresher(async () => {
  try {
    showBackoff(await api.backoff());
  } catch {
    // the next change tries again
  }
});

// ---- approvals --------------------------------------------------------------

// Each pending approval keeps its card (keyed by id) across live updates, so a
// typed deny reason, an armed button and an opened diff survive a new
// approval arriving: cards are updated in place, added and removed, never
// rebuilt.
const approvalCards = new Map(); // id -> card element
// Each card's diff reloader. A diff is the pinned text against what is
// deployed now, so it goes stale when another approval deploys: approving
// from a stale diff could undo that deploy unseen. The approve sends the
// shown diff's id back, and hive-c0re refuses it if the diff moved since
// (a deploy on another node, before this page heard of it).
const diffReloads = new WeakMap(); // card element -> () => void
let lastApproved = null; // the newest approved approval's id, once the list came

function approvalCard(a) {
  // A pending approval shows what it changes unless the operator folds it.
  const shown = !hiddenDiffs.has(a.id);
  const diffBox = h('pre', { class: 'diff', hidden: !shown }, 'loading the diff…');
  const changed = h('p', { class: 'warning diff-changed', hidden: true }, icon('warn'),
    ' another approval was deployed since this diff was shown: this is the diff against what runs now');
  let seen = null; // the diff text last shown
  let seenId = null; // its diff_id, which the approve sends back
  let failed = false; // the last load of the diff failed
  let loads = 0; // loads started; only the newest one's answer counts
  // Approve waits for a loaded diff: without its id the approve could not be
  // checked against what runs now, and could undo a deploy the operator never saw.
  const approve = h('button', { type: 'button', class: 'primary', dataset: { decide: 'approve' } }, 'Approve');
  const approveHint = h('span', { class: 'dim approve-hint' });
  const showReady = () => {
    const why = seenId ? ''
      : diffBox.hidden ? 'read the diff first: show it to approve'
        : failed ? 'the diff did not load: reload it to approve'
          : 'read the diff first: it is loading';
    approve.disabled = !seenId;
    approve.title = why;
    approveHint.textContent = why;
    approveHint.hidden = !why;
  };
  const loadDiff = async () => {
    const load = ++loads;
    try {
      const { diff, diff_id: id } = await api.diff(a.id);
      if (load !== loads) return;
      changed.hidden = seen === null || diff === seen;
      seen = diff;
      seenId = id;
      failed = false;
      fill(diffBox, ...diff.split('\n').map((line) =>
        h('span', { class: line.startsWith('+') ? 'add' : line.startsWith('-') ? 'del' : line.startsWith('@@') ? 'hunk' : '' }, line + '\n')));
    } catch (e) {
      if (load !== loads) return;
      // What was read before may no longer be what this approval deploys: no approve until a diff loads again.
      seenId = null;
      failed = true;
      changed.hidden = true;
      diffBox.textContent = `the diff did not load (${e.message}): Approve stays off until it does; reload the page, or hide and show the diff, to try again`;
    }
    showReady();
  };
  const toggle = h('button', { type: 'button', class: 'link fold-toggle', 'aria-expanded': String(shown) }, shown ? 'hide diff' : 'show diff');
  toggle.addEventListener('click', () => {
    const show = diffBox.hidden;
    diffBox.hidden = !show;
    toggle.textContent = show ? 'hide diff' : 'show diff';
    toggle.setAttribute('aria-expanded', String(show));
    if (show) {
      hiddenDiffs.delete(a.id);
      loadDiff();
    } else hiddenDiffs.add(a.id);
    showReady();
  });
  showReady();
  if (shown) loadDiff();
  const note = h('input', { class: 'note', placeholder: 'reason (optional, for deny)' });
  const card = h('div', { class: 'approval', dataset: { id: a.id } },
    h('div', { class: 'meta' }, h('b', {}, `#${a.id} ${a.kind}`), ' ', h('a', { href: `/agents/${encodeURIComponent(a.agent)}` }, a.agent),
      a.node && h('span', { class: 'node' }, ` on node ${a.node}`),
      a.commit_ref && h('code', {}, a.commit_ref.slice(0, 12)), h('span', { class: 'dim' }, ' · asked '), since(a.requested_at, ' ago')),
    h('p', { class: 'desc' }),
    h('ul', { class: 'warnings' }),
    toggle, changed, diffBox,
    h('div', { class: 'buttons' },
      twoClick(approve, () => { if (seenId) run(() => api.approve(a.id, seenId)); }),
      approveHint,
      note,
      twoClick(h('button', { type: 'button', class: 'danger', dataset: { decide: 'deny' } }, 'Deny'), () => run(() => api.deny(a.id, note.value.trim())))));
  // A folded diff loads afresh when opened.
  diffReloads.set(card, () => { if (!diffBox.hidden) loadDiff(); });
  return card;
}

/** Refreshes what may change on a pending card (description, warnings); its inputs and buttons stay. */
function updateCard(card, a) {
  const desc = card.querySelector('.desc');
  desc.textContent = a.description ?? '';
  desc.hidden = !a.description;
  const warnings = a.warnings ?? [];
  const key = JSON.stringify(warnings);
  const list = card.querySelector('.warnings');
  if (list.dataset.key !== key) {
    list.dataset.key = key;
    fill(list, ...warnings.map((w) => h('li', { class: `warning w-${w.kind}`, dataset: { kind: w.kind } }, icon('warn'), ' ', w.message)));
  }
  list.hidden = warnings.length === 0;
}

function showApprovals(list) {
  const pending = list.filter((a) => a.status === 'pending');
  const decided = list.filter((a) => a.status !== 'pending').slice(-5).reverse();
  $('#approval-count').textContent = pending.length || '';
  const box = $('#approvals');
  // Another approval deployed: the open diffs are against what ran before it.
  const approved = list.reduce((m, a) => (a.status === 'approved' && a.id > m ? a.id : m), 0);
  if (lastApproved !== null && approved !== lastApproved) {
    for (const card of approvalCards.values()) diffReloads.get(card)?.();
  }
  lastApproved = approved;
  const ids = new Set(pending.map((a) => a.id));
  for (const [id, card] of approvalCards) {
    if (!ids.has(id)) {
      card.remove();
      approvalCards.delete(id);
    }
  }
  // Oldest first, each card where its order puts it; existing ones are moved only if out of place.
  let before = box.firstChild;
  for (const a of pending) {
    let card = approvalCards.get(a.id);
    if (!card) {
      card = approvalCard(a);
      approvalCards.set(a.id, card);
    }
    updateCard(card, a);
    if (card !== before) box.insertBefore(card, before);
    else before = before.nextSibling;
  }
  // What follows the cards: the empty note or the recent decisions, rebuilt (nothing typed there).
  const open = box.querySelector('details.decided')?.open;
  while (before) {
    const next = before.nextSibling;
    before.remove();
    before = next;
  }
  if (!pending.length) box.append(h('p', { class: 'empty' }, 'Nothing to approve.'));
  if (decided.length > 0) {
    box.append(h('details', { class: 'decided', open: open || undefined }, h('summary', {}, `recent decisions (${decided.length})`),
      h('ul', {}, decided.map((a) => h('li', {}, h('span', { class: `status st-${a.status}` }, a.status), ` #${a.id} ${a.kind} ${a.agent}`, a.note && h('span', { class: 'dim' }, ` — ${a.note}`))))));
  }
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
      ' · ', icon('waiting'), ' ', until(q.deadline)),
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

// ---- webhooks -----------------------------------------------------------------

/** The webhooks panel: hidden without webhooks; a failing one stands out. */
function showWebhooks(hooks) {
  const panel = $('#webhooks-panel');
  panel.hidden = hooks.length === 0;
  const failing = hooks.filter((w) => w.last_error);
  fill($('#webhook-count'), failing.length ? `${failing.length} failing` : '');
  fill($('#webhooks'), hooks.map((w) => h('tr', { class: w.last_error ? 'failing' : '', dataset: { name: w.name } },
    h('td', {}, h('b', {}, w.name)),
    h('td', {}, w.format),
    h('td', { class: 'dim' }, w.target),
    h('td', { class: 'num-col' }, String(w.pending)),
    h('td', { class: 'num-col' }, String(w.attempts)),
    h('td', {}, w.last_ok ? since(w.last_ok, ' ago') : '—'),
    h('td', { class: 'webhook-error' }, w.last_error ?? ''))));
}

// ---- live -------------------------------------------------------------------

async function loadAll() {
  try {
    await Promise.all([
      loadAgents(),
      snapshot(['needs_you'], api.needsYou).then(showNeeds),
      loadFeed(),
      snapshot(['approvals'], api.approvals).then(showApprovals),
      snapshot(['questions'], api.questions).then(showQuestions),
      snapshot(['operator_inbox'], api.operatorMessages).then(showInbox),
      snapshot(['space'], api.space).then(({ alarm }) => showSpace(alarm)),
      // Answered from memory, so it shows while the reads above fail.
      snapshot(['database'], api.database).then(({ alarm }) => showDatabase(alarm)),
      loadNotifications(),
      snapshot(['webhooks'], api.webhooks).then(showWebhooks),
    ]);
  } catch (e) {
    toast(e.message, 'error');
  }
}

initAgents(agentsChanged);

live(null, {
  hello: () => loadAll(),
  resync: () => loadAll(),
  agent: upsertAgent,
  agent_removed: ({ name }) => removeAgent(name),
  approvals: ({ approvals }) => showApprovals(approvals),
  questions: ({ questions }) => showQuestions(questions),
  operator_inbox: ({ messages }) => showInbox(messages),
  space: ({ alarm }) => showSpace(alarm),
  database: ({ alarm }) => showDatabase(alarm),
  notifications: showNotifications,
  webhooks: ({ webhooks }) => showWebhooks(webhooks),
  needs_you: showNeeds,
  feed: liveFeed,
}, setConn);
mountBell();
watchLogin();

// A deadline passes without a word from the server: drop expired questions here.
setInterval(() => showQuestions(lastQuestions), 5000);
startClock();
