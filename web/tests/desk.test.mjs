// The hive page at fifty agents (issue 19, points 1-4): the "needs you"
// strip, health in every row, a table built for fifty (sort, filters in the
// URL, a menu per row, bulk actions, totals, cards on a phone) and the
// hive-wide activity feed. A real hive-c0re (process runtime) whose harness
// is a stand-in that sleeps — or, for `crashy`, prints and dies — so fifty
// agents cost fifty idle `sleep`s; the test plays harnesses on agent.sock.
//
// Run: cargo build -p hive-c0re && (cd web && npm run build && node --test tests/desk.test.mjs)

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { OUT, agentSocket, cspViolations, launchBrowser, makeHive, requireBuilt, turnEvents, until } from './hive.mjs';
import { rate } from '../src/stats.js';

const AGENTS = Array.from({ length: 48 }, (_, i) => `agent-${String(i).padStart(2, '0')}`);
const CRASH_LINE = 'fatal: crashy cannot read its notes';

let hive;
let browser;
let page;
let refused;
let bins;
let mgr;
let asked;

before(async () => {
  requireBuilt();
  fs.mkdirSync(OUT, { recursive: true });
  // The stand-in harness: sleeps, except crashy, which runs a moment, says why and dies.
  bins = fs.mkdtempSync(path.join(os.tmpdir(), 'hive-desk-bin-'));
  fs.chmodSync(bins, 0o755);
  const script = `#!/bin/sh\nif [ "$HIVE_AGENT_NAME" = crashy ]; then echo 'crashy: loading its notes'; sleep 0.7; echo '${CRASH_LINE}' >&2; exit 255; fi\nexec sleep 100000\n`;
  for (const harness of ['hive-ag3nt', 'hive-m1nd']) fs.writeFileSync(path.join(bins, harness), script, { mode: 0o755 });
  hive = await makeHive({ binDir: bins });
  await hive.start();
  for (let i = 0; i < AGENTS.length; i += 8) await Promise.all(AGENTS.slice(i, i + 8).map((n) => hive.cli('spawn', n)));
  await hive.cli('spawn', 'manager');
  await hive.cli('spawn', 'crashy');
  browser = await launchBrowser();
  page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
  page.on('pageerror', (e) => console.error('page error:', e.message));
  refused = cspViolations(page);
  await hive.logIn(page);
});

after(async () => {
  mgr?.close();
  await browser?.close();
  await hive?.stop();
  if (process.env.KEEP_HIVE) console.log(`hive left in ${hive.dir}`);
  else hive?.cleanup();
  if (bins) fs.rmSync(bins, { recursive: true, force: true });
});

const row = (name) => page.locator(`#agents tbody tr[data-name="${name}"]`);
const need = (kind, agent) => page.locator(`#needs-list li.need[data-kind="${kind}"][data-agent="${agent}"]`);
/** The hive page's title with `n` things needing the operator (after the bell's unread count, if any). */
const titleWith = (n) => new RegExp(`^(\\(\\d+\\) )?${n} needs? you · hive · hyperhive$`);
const text = async (loc) => (await loc.innerText()).replace(/\s+/g, ' ').trim();
const shownRows = () => page.locator('#agents tbody tr:visible').evaluateAll((trs) => trs.map((tr) => tr.dataset.name));

test('the strip lists what needs the operator, each linking to where it is handled, and the count is in the title', async () => {
  await page.goto(hive.url);
  await row('agent-47').waitFor();
  // Every state crashy's row shows while it crash-loops, until it is left failed.
  await page.evaluate(() => {
    window.crashyStates = [];
    const look = () => {
      const s = document.querySelector('#agents tr[data-name="crashy"]')?.dataset.state;
      if (s && window.crashyStates.at(-1) !== s) window.crashyStates.push(s);
      if (s !== 'failed') setTimeout(look, 20);
    };
    look();
  });
  assert.equal(await page.locator('#agents tbody tr').count(), 50);
  // An approval, a question from a manager that is mid-turn, a paused agent with mail.
  await hive.cli('request-spawn', 'newbie', '--description', 'a helper for the desk');
  mgr = await agentSocket(hive, 'manager');
  await mgr.call({ op: 'state', state: 'thinking', model: 'haiku' });
  asked = mgr.call({ op: 'ask_operator', question: 'Ship the parser today?', options: ['yes', 'no'], ttl_seconds: 600 });
  await hive.cli('pause', 'agent-07');
  await hive.cli('send', 'agent-07', 'are you there?');

  await need('approval', 'newbie').waitFor();
  const q = need('question', 'manager');
  await q.waitFor();
  assert.match(await q.locator('time').innerText(), /^(9m \d\ds|10m 00s) left$/);
  const first = await q.locator('time').innerText();
  await until(async () => (await q.locator('time').innerText()) !== first, 'the countdown to tick');
  await need('paused_mail', 'agent-07').waitFor();
  assert.match(await need('paused_mail', 'agent-07').innerText(), /paused with a message waiting/);
  // crashy dies six times and is left failed (6 × 0.7 s of life, 0.5 + 1 + 2 + 4 + 8 s of backoff).
  await need('failed', 'crashy').waitFor({ timeout: 40000 });

  // Never idle (nor plain stopped) between its deaths: restarting, then
  // failed. Idle only in its first life, when the page loaded before it died.
  const seen = await page.evaluate(() => window.crashyStates);
  assert.equal(seen.at(-1), 'failed', JSON.stringify(seen));
  const died = seen.findIndex((x) => x !== 'idle');
  assert.ok(seen.slice(died).every((x) => x === 'restarting' || x === 'failed'), `crashy's row read ${JSON.stringify(seen)}`);
  const count = await page.locator('#needs-list li.need').count();
  assert.ok(count >= 4, `${count} items`);
  assert.match(await page.title(), titleWith(count));
  const qid = (await hive.fetch('/api/questions').then((r) => r.json())).find((x) => x.status === 'pending').id;
  assert.equal(await q.locator('a').getAttribute('href'), `#question-${qid}`);
  assert.equal(await need('failed', 'crashy').locator('a').getAttribute('href'), '/agents/crashy');
  // The same list as the API serves (one computation on the server).
  const api = await hive.fetch('/api/needs_you').then((r) => r.json());
  assert.equal(api.items.length, count);
  // Following the question's link brings its card into view.
  await q.locator('a').click();
  await until(() => page.locator(`.question[data-id="${qid}"]`).evaluate((el) => el.classList.contains('flash')), 'the question card to flash');
});

test("a failed agent's row says failed with its restarts and the crash's log tail; the manager waits on the operator", async () => {
  const badge = row('crashy').locator('td.state .badge');
  assert.equal(await text(badge), 'failed · 6 restarts');
  assert.equal(await row('crashy').getAttribute('data-state'), 'failed');
  await row('crashy').locator('details.crash-tail summary').click();
  const tail = await row('crashy').locator('details.crash-tail pre').innerText();
  assert.ok(tail.includes(CRASH_LINE), tail);
  assert.match(await row('crashy').locator('.crash-exit').innerText(), /exited with status 255/);
  await row('crashy').locator('details.crash-tail summary').click();
  const qid = (await hive.fetch('/api/questions').then((r) => r.json())).find((x) => x.status === 'pending').id;
  assert.equal(await text(row('manager').locator('td.state .badge')), `waiting on you · question #${qid}`);
  // The CLI's status rows say the same (new fields).
  const st = await hive.status();
  assert.equal(st.crashy.health, 'failed');
  assert.equal(st.crashy.restarts, 6);
  assert.ok(st.crashy.crash_tail.includes(CRASH_LINE));
  assert.equal(st.manager.question, qid);
  assert.match(await hive.cli('status'), /manager\s+running\s+waiting on you · question #\d+/);
});

test('sorting and filtering work and stay in the URL', async () => {
  await hive.cli('send', 'agent-10', 'one');
  await hive.cli('send', 'agent-10', 'two');
  await hive.cli('send', 'agent-10', 'three');
  await hive.cli('send', 'agent-20', 'one');
  await until(async () => (await row('agent-10').locator('td.inbox').innerText()) === '3', "agent-10's inbox");
  await page.locator('#agents th[data-sort=inbox] button').click();
  const byInbox = await hive.status();
  const deepest = Object.values(byInbox).sort((a, b) => b.inbox_depth - a.inbox_depth || a.name.localeCompare(b.name))[0].name;
  assert.equal((await shownRows())[0], deepest);
  await page.locator('#agents th[data-sort=inbox] button').click();
  assert.equal((await shownRows()).at(-1), deepest, 'a second click reverses the order');
  await page.locator('#agents th[data-sort=name] button').click();
  assert.equal((await shownRows())[0], 'agent-00');

  await page.locator('#filter-inbox').check();
  const withMail = Object.values(await hive.status()).filter((r) => r.inbox_depth > 0).map((r) => r.name).sort();
  assert.deepEqual(await shownRows(), withMail);
  assert.match(page.url(), /inbox=1/);
  await page.locator('#filter-inbox').uncheck();
  await page.locator('#filter-failed').check();
  assert.deepEqual(await shownRows(), ['crashy']);
  await page.locator('#filter-failed').uncheck();
  await page.selectOption('#filter-state', 'stopped');
  assert.match(page.url(), /state=stopped/);
  await page.reload();
  await row('agent-00').waitFor({ state: 'attached' });
  assert.equal(await page.inputValue('#filter-state'), 'stopped', 'the filter survives a reload');
  assert.deepEqual(await shownRows(), []);
  await page.selectOption('#filter-state', '');
  assert.equal((await shownRows()).length, 50);
  // Every row carries one node (or none): no node filter.
  assert.equal(await page.locator('#filter-node').isVisible(), false);
});

test('the row menu pauses and resumes; a bulk pause pauses the selected and only them', async () => {
  const menu = row('agent-40').locator('details.menu');
  await menu.locator('summary').click();
  await menu.locator('button[data-action=pause]').click();
  await until(async () => (await hive.status())['agent-40'].paused, 'agent-40 paused');
  await until(() => menu.locator('button[data-action=resume]').isEnabled(), 'the menu to offer resume');
  await menu.locator('summary').click();
  await menu.locator('button[data-action=resume]').click();
  await until(async () => !(await hive.status())['agent-40'].paused, 'agent-40 resumed');

  const picked = ['agent-30', 'agent-31', 'agent-32', 'agent-33', 'agent-34'];
  for (const n of picked) await row(n).locator('input.pick').check();
  assert.equal(await page.locator('#bulk-count').innerText(), '5 selected');
  await page.locator('#bulk button[data-bulk=pause]').click();
  await until(async () => {
    const st = await hive.status();
    return picked.every((n) => st[n].paused);
  }, 'the five to be paused');
  const st = await hive.status();
  assert.equal(st['agent-35'].paused, false);
  assert.equal(st['agent-29'].paused, false);
  // Stop is destructive: the first click only arms it.
  const stop = page.locator('#bulk button[data-bulk=stop]');
  await stop.click();
  assert.equal(await stop.innerText(), 'click again to confirm');
  assert.ok(picked.every((n) => st[n].running));
  await page.locator('#bulk-clear').click();
  assert.equal(await page.locator('#bulk').isVisible(), false);
});

test('the header totals match the hive', async () => {
  // A turn with a cost, so "cost today" and turns/min are not zero.
  const sock = await agentSocket(hive, 'agent-03');
  await hive.cli('send', 'agent-03', 'turn 1');
  const got = await sock.call({ op: 'next_turn', wait_ms: 5000 });
  assert.ok(got.ok, JSON.stringify(got));
  await sock.call({ op: 'events', items: turnEvents(1) });
  await sock.call({ op: 'send', to: 'agent-04', body: 'agent-03 hands the parser to agent-04' });
  const stats = { duration_ms: 1500, exit_code: 0, exit_class: 'ok', tool_calls: {}, messages_received: 1, cost_usd: 0.25 };
  assert.ok((await sock.call({ op: 'turn_end', stats, outcome: 'ack' })).ok);
  sock.close();
  await until(async () => (await page.locator('[data-total=cost]').innerText()) === '$0.25 today', 'the cost today', 15000);
  const st = Object.values(await hive.status());
  const want = {
    failed: st.filter((r) => r.health === 'failed').length,
    stopped: st.filter((r) => !r.running && !r.health).length,
    thinking: st.filter((r) => r.running && r.state === 'thinking' && r.question == null).length,
    idle: st.filter((r) => r.running && r.state === 'idle').length,
  };
  assert.equal(want.failed, 1);
  await until(async () => {
    for (const [k, n] of Object.entries(want)) if (await page.locator(`[data-total=${k}]`).getAttribute('data-n') !== String(n)) return false;
    return true;
  }, `the totals ${JSON.stringify(want)}`);
  const s = await hive.fetch('/api/stats?since=1h').then((r) => r.json());
  assert.equal(await page.locator('[data-total=rate]').innerText(), rate(s.agents.reduce((t, a) => t + a.turns_per_minute, 0)));
});

test('the feed shows the turn and the message in time order, each linking to its agent and turn', async () => {
  const items = page.locator('#feed li.feed-item');
  await page.locator('#feed li[data-kind=turn_end]', { hasText: 'turn ended: ok' }).waitFor();
  const rows = await items.evaluateAll((lis) => lis.map((li) => ({ key: li.dataset.key, kind: li.dataset.kind, ts: li.dataset.ts, text: li.innerText, links: [...li.querySelectorAll('a')].map((a) => a.getAttribute('href')) })));
  const idx = (pred) => rows.findIndex(pred);
  const start = idx((r) => r.kind === 'turn_start' && r.text.includes('agent-03'));
  const msg = idx((r) => r.kind === 'message' && r.text.includes('agent-03 hands the parser'));
  const end = idx((r) => r.kind === 'turn_end' && r.text.includes('agent-03'));
  assert.ok(start >= 0 && msg >= 0 && end >= 0, JSON.stringify(rows.slice(0, 8)));
  // Newest first: the end, then the message sent during the turn, then the start.
  assert.ok(end < msg && msg < start, JSON.stringify(rows.slice(0, 8)));
  const times = rows.map((r) => Date.parse(r.ts));
  assert.deepEqual(times, [...times].sort((a, b) => b - a), 'in time order');
  assert.ok(rows[start].links.includes('/agents/agent-03'));
  assert.ok(rows[start].links.includes(`/agents/agent-03#event-${rows[start].key.slice(1)}`));
  assert.ok(rows[msg].links.includes('/agents/agent-04'));
  assert.ok(rows.some((r) => r.kind === 'crash' && r.text.includes('crashy')));
  assert.ok(rows.some((r) => r.kind === 'approval' && r.text.includes('newbie')));
  // Older pages come from the API with a cursor.
  const page1 = await hive.fetch('/api/feed?limit=3').then((r) => r.json());
  const page2 = await hive.fetch(`/api/feed?limit=3&before=${page1.before}`).then((r) => r.json());
  const keys = [...page1.items, ...page2.items].map((i) => i.key);
  assert.equal(new Set(keys).size, 6, 'pages neither repeat nor skip');
  assert.deepEqual(keys, rows.slice(0, 6).map((r) => r.key));
});

test('rows are compact at desktop size and cards on a phone; screenshots', async (t) => {
  const heights = async () => page.locator('#agents tbody tr:visible').evaluateAll((trs) => trs.map((tr) => tr.getBoundingClientRect().height));
  await page.goto(hive.url);
  await row('crashy').locator('.badge').waitFor();
  await need('failed', 'crashy').waitFor();
  const desk = await heights();
  assert.equal(desk.length, 50);
  t.diagnostic(`desktop (1440x900): rows up to ${Math.max(...desk)} px`);
  assert.ok(Math.max(...desk) <= 40, `desktop rows up to ${Math.max(...desk)} px`);
  await page.screenshot({ path: path.join(OUT, 'desk-hive-desktop.png') });
  await page.screenshot({ path: path.join(OUT, 'desk-hive-desktop-full.png'), fullPage: true });
  await page.locator('main .columns').screenshot({ path: path.join(OUT, 'desk-hive-desktop-panels.png') });

  await page.setViewportSize({ width: 390, height: 844 });
  await page.goto(hive.url);
  await row('crashy').locator('.badge').waitFor();
  await need('failed', 'crashy').waitFor();
  const phone = await heights();
  t.diagnostic(`phone (390x844): rows up to ${Math.max(...phone)} px`);
  assert.ok(Math.max(...phone) <= 56, `phone rows up to ${Math.max(...phone)} px`);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `the page is ${overflow} px wider than the phone`);
  // The menu and the state still fit on a card.
  const box = await row('agent-05').locator('details.menu summary').boundingBox();
  assert.ok(box.x + box.width <= 390, JSON.stringify(box));
  await page.screenshot({ path: path.join(OUT, 'desk-hive-phone.png') });
  await page.screenshot({ path: path.join(OUT, 'desk-hive-phone-full.png'), fullPage: true });
  await page.setViewportSize({ width: 1440, height: 900 });
  assert.deepEqual(refused, [], 'the content security policy refused something');
});

test('answering the question clears it from the strip and the manager thinks again', async () => {
  await page.goto(hive.url);
  const q = page.locator('.question', { hasText: 'Ship the parser today?' });
  await q.locator('input.answer').fill('yes');
  await q.locator('button[type=submit]').click();
  const answer = await asked;
  assert.equal(answer.ok, true, JSON.stringify(answer));
  await until(async () => (await need('question', 'manager').count()) === 0, 'the question to leave the strip');
  await until(async () => /^thinking · \d+s$/.test(await text(row('manager').locator('td.state .badge'))), 'the manager to read thinking');
  const count = await page.locator('#needs-list li.need').count();
  assert.match(await page.title(), titleWith(count));
});
