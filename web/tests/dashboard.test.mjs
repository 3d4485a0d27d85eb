// Browser test of the dashboard: a real hive-c0re (process runtime, stand-in
// harness), headless chromium, no claude. The test plays an agent's harness
// through its agent.sock to produce turns, states and messages.
//
// Run: cargo build -p hive-c0re && (cd web && npm ci && npm run build && node --test tests/)

import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { OUT, agentSocket, cspViolations, launchBrowser, makeHive, playTurn, requireBuilt, sleep, until } from './hive.mjs';

let hive;
let browser;
let page;
let refused;
const STATES = /^(idle|thinking|compacting|napping|stopped|failed) · \d+(s|m \d+s)$/u;

before(async () => {
  requireBuilt();
  fs.mkdirSync(OUT, { recursive: true });
  hive = await makeHive();
  await hive.start();
  await hive.cli('spawn', 'alice');
  await hive.cli('spawn', 'bob', '--model', 'sonnet');
  browser = await launchBrowser();
  page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.on('pageerror', (e) => console.error('page error:', e.message));
  refused = cspViolations(page);
  await hive.logIn(page);
});

after(async () => {
  await browser?.close();
  await hive?.stop();
  if (process.env.KEEP_HIVE) console.log(`hive left in ${hive.dir}`);
  else hive?.cleanup();
});

const row = (name) => page.locator(`#agents tbody tr[data-name="${name}"]`);
const toast = (text) => page.locator('.toast', { hasText: text }).first().waitFor({ timeout: 10000 });

test('the hive page lists every agent with a state badge, heartbeat, model and inbox', async () => {
  await page.goto(hive.url);
  for (const name of ['alice', 'bob']) {
    await row(name).locator('.badge').waitFor();
    const text = await row(name).locator('.badge').textContent();
    assert.match(text.replace(/\s+/g, ' ').trim(), STATES);
    // The state's icon is an SVG whose name is the state.
    assert.equal(await row(name).locator('.badge svg.icon').getAttribute('data-icon'), text.trim().split(' ')[0]);
  }
  assert.equal(await row('bob').locator('td.model').innerText(), 'sonnet');
  assert.match(await row('alice').locator('td.heartbeat').innerText(), /no turn yet|ago/);
  assert.equal(await page.locator('#conn').innerText(), '● live');
});

test('changes show up live: inbox depth, a new agent, a finished turn', async () => {
  await hive.cli('send', 'alice', 'first message');
  await until(async () => (await row('alice').locator('td.inbox').innerText()) === '1', "alice's inbox depth to show 1");
  await hive.cli('spawn', 'carol');
  await row('carol').waitFor();
  assert.ok(await page.locator('#send-to option[value="carol"]').count(), 'carol is in the send box');
  const sock = await agentSocket(hive, 'carol');
  await sock.call({ op: 'state', state: 'thinking', model: 'haiku' });
  await sock.call({ op: 'state', state: 'idle' });
  sock.close();
  await until(async () => /ago/.test(await row('carol').locator('td.heartbeat').innerText()), "carol's heartbeat");
});

test('a message sent from the dashboard lands in the agent inbox', async () => {
  await page.selectOption('#send-to', 'bob');
  await page.fill('#send-body', 'hello bob, from the dashboard');
  await page.click('#send-form button[type=submit]');
  await toast('queued for bob');
  assert.equal(await page.inputValue('#send-body'), '', 'the box empties after sending');
  const got = (await hive.cli('recv', '--as', 'bob', '--json')).trim().split('\n').map((l) => JSON.parse(l));
  assert.deepEqual(got.map((m) => [m.from, m.body]), [['operator', 'hello bob, from the dashboard']]);
  // Reading the operator's side in the dashboard acknowledges nothing; the sent message is listed.
  await page.locator('#inbox li', { hasText: 'hello bob, from the dashboard' }).waitFor();
});

test('a refusal is toasted with the server sentence', async () => {
  await page.selectOption('#send-to', 'bob');
  await page.fill('#send-body', '   ');
  await page.evaluate(() => document.querySelector('#send-body').removeAttribute('required'));
  await page.click('#send-form button[type=submit]');
  await page.locator('.toast.error', { hasText: 'the message body is empty' }).waitFor();
});

test('a send repeated after a failure carries the failed try\'s key; the next has its own', async () => {
  // The first try fails as a database out of reach does (503); the operator sends again.
  const keys = [];
  let fail = true;
  await page.route('**/api/agents/bob/messages', async (route) => {
    keys.push(route.request().postDataJSON().key);
    if (fail) {
      fail = false;
      return route.fulfill({ status: 503, contentType: 'application/json', body: JSON.stringify({ ok: false, error: 'the hive\'s database is out of reach' }) });
    }
    return route.continue();
  });
  await page.selectOption('#send-to', 'bob');
  await page.fill('#send-body', 'once only');
  await page.click('#send-form button[type=submit]');
  await page.locator('.toast.error', { hasText: 'out of reach' }).waitFor();
  assert.equal(await page.inputValue('#send-body'), 'once only', 'the text stays for another try');
  await page.click('#send-form button[type=submit]');
  await toast('queued for bob');
  await page.fill('#send-body', 'and another');
  // Answered, not only asked: the recv below must find it stored.
  const stored = page.waitForResponse((r) => r.url().endsWith('/api/agents/bob/messages')
    && r.request().postDataJSON().body === 'and another');
  await page.click('#send-form button[type=submit]');
  await stored;
  await until(async () => keys.length === 3, 'three tries to reach the server');
  await page.unroute('**/api/agents/bob/messages');
  assert.ok(/^[0-9a-f]{32}$/.test(keys[0]), `a key of its own: ${keys[0]}`);
  assert.equal(keys[1], keys[0], 'the repeat carries the first try\'s key');
  assert.notEqual(keys[2], keys[0], 'a new message has a new key');
  const got = (await hive.cli('recv', '--as', 'bob', '--json')).trim().split('\n').map((l) => JSON.parse(l).body);
  assert.deepEqual(got, ['once only', 'and another']);
});

test('kill needs two clicks, and disarms by itself', async () => {
  await row('bob').locator('details.menu summary').click();
  const kill = row('bob').locator('button[data-action=kill]');
  await kill.click();
  assert.equal(await kill.innerText(), 'click again to confirm');
  assert.ok(await kill.evaluate((b) => b.classList.contains('armed')));
  await until(async () => (await kill.innerText()) === 'Kill', 'the kill button to disarm', 6000);
  await kill.click();
  await kill.click();
  await toast('bob was killed');
  await until(async () => (await hive.status()).bob.running === false, 'bob to be stopped');
  await until(async () => /stopped|failed/.test(await row('bob').locator('.badge').innerText()), "bob's badge to say stopped");
});

test('approvals show their diff and are denied with two clicks', async () => {
  await hive.cli('request-spawn', 'dave', '--description', 'a reviewer for bob');
  const item = page.locator('.approval', { hasText: 'a reviewer for bob' });
  await item.waitFor();
  await until(async () => /model\s*=/.test(await item.locator('pre.diff').innerText()), 'the spawn config to show');
  await item.locator('input.note').fill('not now');
  const deny = item.locator('button[data-decide=deny]');
  await deny.click();
  await deny.click();
  await toast('denied');
  const approvals = (await hive.cli('approvals', '--json')).trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(approvals.at(-1).status, 'denied');
  assert.equal(approvals.at(-1).note, 'not now');
  await page.locator('#approvals .empty', { hasText: 'Nothing to approve' }).waitFor();
});

test('an operator question counts down and takes an answer', async () => {
  await hive.cli('spawn', 'manager');
  const mgr = await agentSocket(hive, 'manager');
  const asked = mgr.call({ op: 'ask_operator', question: 'Ship it today?', options: ['yes', 'no'], ttl_seconds: 600 });
  const q = page.locator('.question', { hasText: 'Ship it today?' });
  await q.waitFor();
  assert.match(await q.locator('time').innerText(), /^9m \d\ds left$|^10m 00s left$/);
  await q.locator('button.option', { hasText: 'yes' }).click();
  await q.locator('button[type=submit]').click();
  const answer = await asked;
  mgr.close();
  assert.equal(answer.ok, true, JSON.stringify(answer));
  assert.match(answer.text ?? JSON.stringify(answer), /yes/);
  await page.screenshot({ path: path.join(OUT, 'dashboard-hive.png'), fullPage: true });
});

test('the agent page shows history, new events live, and sticky scrolling', async () => {
  const sock = await agentSocket(hive, 'alice');
  // 40 turns (over 240 events): more than one history page, taller than the terminal.
  for (let n = 0; n < 40; n++) await playTurn(hive, sock, 'alice', n);
  await page.goto(`${hive.url}/agents/alice`);
  await page.locator('#rows .row', { hasText: 'turn 39: looking at it' }).waitFor();
  const term = page.locator('#term');
  const box = await term.boundingBox();
  assert.ok(box.height >= Math.min(0.7 * 900, 60 * 14) - 2, `the terminal is ${box.height}px tall`);
  const atBottom = () => term.evaluate((t) => t.scrollHeight - t.scrollTop - t.clientHeight < 8);
  assert.ok(await atBottom(), 'history opens scrolled to the bottom');
  assert.match(await page.locator('#last-turn').innerText(), /exit 0/);

  // At the bottom, new rows follow.
  await sock.call({ op: 'events', items: [{ kind: 'stream', payload: { type: 'assistant', message: { content: [{ type: 'text', text: 'live one' }] } } }] });
  await page.locator('#rows .row', { hasText: 'live one' }).waitFor();
  await sleep(100);
  assert.ok(await atBottom(), 'still at the bottom');
  assert.ok(await page.locator('#new-chip').isHidden());

  // Scrolled up, new rows wait below a chip that counts them.
  await term.evaluate((t) => { t.scrollTop = t.scrollHeight / 2; });
  await sleep(200);
  const top = await term.evaluate((t) => t.scrollTop);
  const events = [1, 2, 3].map((i) => ({ kind: 'stream', payload: { type: 'assistant', message: { content: [{ type: 'text', text: `below the fold ${i}` }] } } }));
  await sock.call({ op: 'events', items: events });
  await page.locator('#rows .row', { hasText: 'below the fold 3' }).waitFor({ state: 'attached' });
  await until(async () => (await page.locator('#new-chip').innerText()) === '↓ 3 new', 'the chip to count 3');
  assert.equal(await term.evaluate((t) => t.scrollTop), top, 'the view did not move');
  await page.screenshot({ path: path.join(OUT, 'dashboard-agent-chip.png') });
  await page.click('#new-chip');
  await until(atBottom, 'the chip to jump down');
  assert.ok(await page.locator('#new-chip').isHidden());

  // Scrolling to the top brings earlier turns.
  const firstId = () => page.locator('#rows .row').first().getAttribute('data-id').then(Number);
  const before = await firstId();
  await term.evaluate((t) => { t.scrollTop = 0; });
  await until(async () => (await firstId()) < before, 'earlier events to load');
  await page.locator('#rows .row', { hasText: 'turn 0: looking at it' }).waitFor({ state: 'attached' });
  await until(() => page.locator('.term-top', { hasText: 'start of history' }).count(), 'the start of history');
  sock.close();
});

test('slash commands steer the agent; anything else is a message', async () => {
  const input = page.locator('#term-input');
  await input.fill('/help');
  await input.press('Enter');
  await page.locator('#rows .row.help', { hasText: /^\/compact\s+compact the claude/ }).waitFor();
  await page.locator('#rows .row.help', { hasText: '/compact-notes' }).waitFor();
  await input.fill('/model sonnet');
  await input.press('Enter');
  await toast('alice uses sonnet');
  await until(async () => /override\s*sonnet/.test(await page.locator('#model').innerText()), 'the override to show');
  await page.locator('#rows .row.operator', { hasText: '/model sonnet' }).waitFor();
  await input.fill('/model default');
  await input.press('Enter');
  await until(async () => /override\s*none/.test(await page.locator('#model').innerText()), 'the override to clear');
  // During a turn, an override waits for the next one: it shows as queued until the turn ends.
  const sock = await agentSocket(hive, 'alice');
  await sock.call({ op: 'state', state: 'thinking', model: 'haiku' });
  await input.fill('/model opus');
  await input.press('Enter');
  await until(async () => /active\s*haiku\s*queued\s*opus/.test(await page.locator('#model').innerText()), 'the override to show as queued');
  await sock.call({ op: 'state', state: 'idle' });
  await until(async () => !/queued/.test(await page.locator('#model').innerText()), 'the queued model to take over');
  assert.match(await page.locator('#model').innerText(), /active\s*opus/);
  sock.close();
  await input.fill('/model default');
  await input.press('Enter');
  await until(async () => /override\s*none/.test(await page.locator('#model').innerText()), 'the override to clear again');
  await input.fill('/clear');
  await input.press('Enter');
  assert.equal(await page.locator('#rows .row').count(), 0, '/clear empties the view');
  await sleep(500);
  assert.equal(await page.locator('#rows .row').count(), 0, 'and the history does not come back by itself');
  await input.fill('please check the logs');
  await input.press('Enter');
  await toast('queued for alice');
  await page.locator('#rows .row.operator', { hasText: 'please check the logs' }).waitFor();
  await page.locator('#inbox li', { hasText: 'please check the logs' }).waitFor();
  await page.click('#load-earlier');
  await page.locator('#rows .row', { hasText: 'below the fold 3' }).waitFor();
  await input.fill('/compact');
  await input.press('Enter');
  // alice runs a stand-in harness (or none): compact is refused with a sentence either way.
  await page.locator('.toast.error', { hasText: /no claude session|not running/ }).first().waitFor();
  await page.click('#btn-pause');
  await toast('alice is paused');
  assert.equal((await hive.status()).alice.paused, true);
  await until(async () => (await page.locator('#btn-pause').innerText()).includes('Resume'), 'the button to offer resume');
  await page.click('#btn-pause');
  await toast('alice is resumed');
  assert.equal((await hive.status()).alice.paused, false);
});

test('the pages run under their content security policy and refuse framing', async () => {
  assert.deepEqual(refused, [], 'the content security policy refused nothing on the hive and agent pages');
  const resp = await page.goto(`${hive.url}/agents/alice`);
  assert.match(resp.headers()['content-security-policy'], /frame-ancestors 'none'/);
  assert.equal(resp.headers()['x-frame-options'], 'DENY');
  // Not even the dashboard's own origin may frame it (so no page can overlay it to steal clicks).
  await page.evaluate((src) => {
    const f = document.createElement('iframe');
    f.src = src;
    document.body.append(f);
  }, `${hive.url}/`);
  await sleep(1000);
  const framed = page.frames().find((f) => f !== page.mainFrame());
  assert.ok(framed, 'the frame exists');
  const shown = await framed.evaluate(() => document.querySelector('#agents') !== null).catch(() => false);
  assert.equal(shown, false, 'the hive page does not render in a frame');
});

test('the login cookie a page on another port of the host gets opens no data and changes nothing', async () => {
  // Another program on this host (another user's, or a process-runtime
  // agent's) listens on another port; the operator's browser visits it.
  let got = null;
  const spy = http.createServer((req, res) => { got = req.headers.cookie ?? ''; res.end('hello'); });
  await new Promise((resolve) => spy.listen(0, '127.0.0.1', resolve));
  const back = page.url();
  try {
    await page.goto(`http://127.0.0.1:${spy.address().port}/`);
    assert.match(got, /hive_login_\d+=/, 'browsers send the login cookie to every port of the host');
    // It replays the cookie, posing as the dashboard's own page.
    for (const p of ['/api/agents', '/api/secrets', '/api/approvals']) {
      const r = await fetch(`${hive.url}${p}`, { headers: { Cookie: got } });
      assert.equal(r.status, 401, p);
    }
    const post = await fetch(`${hive.url}/api/agents/alice/stop`, { method: 'POST', headers: { Cookie: got, Origin: hive.url } });
    assert.equal(post.status, 401);
    assert.match((await post.json()).error, /not the key its login gave/);
    // The operator's own page goes on working.
    await page.goto(`${hive.url}/`);
    await row('alice').waitFor();
    await page.goto(back);
  } finally {
    spy.close();
  }
});

test('state-changing requests need the token and the same origin', async () => {
  const { token } = hive;
  // The page never holds the token: the login cookie is HttpOnly.
  assert.equal(await page.evaluate(() => document.cookie), '');
  assert.ok(!(await page.content()).includes(token));
  const post = (headers) => fetch(`${hive.url}/api/agents/alice/start`, { method: 'POST', headers });
  assert.equal((await post({})).status, 401);
  const cross = await post({ 'X-Hive-Token': token, Origin: 'http://evil.example' });
  assert.equal(cross.status, 403);
  assert.match((await cross.json()).error, /cross-origin/);
  assert.equal((await post({ 'X-Hive-Token': token, Origin: hive.url })).status, 200);
  const bad = await hive.fetch('/api/agents/..%2Fetc/events');
  assert.equal(bad.status, 400);
  assert.match((await bad.json()).error, /must start with a lowercase letter/);
});

test('scheduled prompts are added from the agent page, listed and removed', async () => {
  await page.fill('#schedule-when', '1h');
  await page.fill('#schedule-text', 'check in');
  await page.click('#schedule-form button[type=submit]');
  await toast('added for alice');
  const item = page.locator('#schedules li.schedule', { hasText: 'check in' });
  await item.waitFor();
  assert.match(await item.innerText(), /1h/);
  // A bad time is refused with the server's sentence.
  await page.fill('#schedule-when', 'soon');
  await page.fill('#schedule-text', 'never');
  await page.click('#schedule-form button[type=submit]');
  await page.locator('.toast.error', { hasText: 'is not a schedule time' }).waitFor();
  await item.locator('button[data-remove]').click();
  await toast('removed');
  await item.waitFor({ state: 'detached' });
  await page.locator('#schedules .empty', { hasText: 'Nothing scheduled' }).waitFor();
});

test('the agent page names the secrets its claude gets, never a value', async () => {
  await hive.cliWithInput('ghp-hive-wide-value\n', 'secret', 'set', 'GH_TOKEN');
  await hive.cliWithInput('sk-alices-own-value\n', 'secret', 'set', 'ANTHROPIC_API_KEY', '--agent', 'alice');
  // A secret change comes with an agent frame: the panel follows without a reload.
  const own = page.locator('#secrets li.secret[data-name=ANTHROPIC_API_KEY]');
  await own.waitFor();
  assert.match(await own.innerText(), /this agent's/);
  assert.match(await page.locator('#secrets li.secret[data-name=GH_TOKEN]').innerText(), /hive-wide/);
  const html = await page.content();
  assert.ok(!html.includes('ghp-hive-wide-value') && !html.includes('sk-alices-own-value'));
  await hive.cli('secret', 'rm', 'GH_TOKEN');
  await hive.cli('secret', 'rm', 'ANTHROPIC_API_KEY', '--agent', 'alice');
  await page.locator('#secrets .empty', { hasText: 'No secrets' }).waitFor();
});

test('a napping agent counts its nap down in the badge', async () => {
  const sock = await agentSocket(hive, 'alice');
  await sock.call({ op: 'state', state: 'idle' });
  const r = await sock.call({ op: 'nap', seconds: 120 });
  assert.equal(r.ok, true, JSON.stringify(r));
  const badge = page.locator('#badge');
  const left = async () => (await badge.textContent()).match(/napping · (\d\d:\d\d)/)?.[1];
  await until(left, 'the nap countdown');
  assert.match(await badge.textContent(), /napping · \d\d:\d\d/);
  const first = await left();
  await until(async () => (await left()) !== first, 'the countdown to tick', 3000);
  await page.click('#btn-cancel');
  await until(async () => !(await badge.textContent()).includes('napping'), 'the nap to end');
  sock.close();
});

test('a budget is set on the agent page, holds the agent once spent, shows as a bar, and is lifted', async () => {
  await hive.cli('spawn', 'frank');
  const sock = await agentSocket(hive, 'frank');
  await page.goto(`${hive.url}/agents/frank`);
  await page.locator('#budget', { hasText: 'no budget' }).waitFor();
  await page.fill('#budget-tokens', '1000');
  await page.click('#budget-form button[type=submit]');
  await toast("frank's budget is set for today");
  await page.locator('#budget meter.spend-bar').waitFor();
  // A compaction's usage, as the harness reports it (holding the slot admit
  // gave, then giving it back): 120 % of the budget.
  const admitted = await sock.call({ op: 'admit', wait_ms: 3000 });
  assert.equal(admitted.admitted, true, JSON.stringify(admitted));
  const r = await sock.call({ op: 'stats', items: [['tokens.in', 1000], ['tokens.out', 200]] });
  assert.equal(r.ok, true, JSON.stringify(r));
  await sock.call({ op: 'release' });
  await hive.cli('send', 'frank', 'wait for me');
  const turn = sock.call({ op: 'next_turn', wait_ms: 20000 });
  const badge = page.locator('#badge');
  await until(async () => /over budget · budget: 1200 of 1000 tokens today/.test(await badge.textContent()), "frank's over-budget badge");
  assert.match(await page.locator('#budget').innerText(), /1200 of 1000 tokens/);
  await page.screenshot({ path: path.join(OUT, 'dashboard-over-budget.png') });
  // Lifted for today: the held message starts a turn at once.
  await page.click('#budget-reset');
  const got = await turn;
  assert.deepEqual(got.messages.map((m) => m.body), ['wait for me'], JSON.stringify(got));
  await page.locator('#budget', { hasText: 'no budget' }).waitFor();
  sock.close();

  await page.goto(hive.url);
  const cell = row('frank').locator('td.spend-cell');
  await until(async () => /1200 tokens/.test(await cell.innerText()), "frank's spend on the hive page");
  assert.equal(await cell.locator('meter').count(), 0, 'no bar without a budget in force');
  await hive.cli('budget', 'frank', '--tokens', '2400');
  await until(async () => (await cell.locator('meter').count()) === 1, "frank's spend bar");
  assert.equal(await cell.locator('meter').getAttribute('value'), '0.5');
  assert.match((await page.locator('#hive-spend').textContent()).replace(/\s+/g, ' '), /hive today: \$0\.00 · 1200 tokens/);
});

test('the model API failing shows in the badges and, for several agents, as the hive banner', async () => {
  await page.goto(hive.url);
  const badge = (name) => row(name).locator('.badge');
  const socks = {};
  await hive.cli('spawn', 'dave');
  await hive.cli('spawn', 'erin');
  for (const name of ['alice', 'dave', 'erin']) socks[name] = await agentSocket(hive, name);
  let r = await socks.alice.call({ op: 'api_retry', status: 529, error: 'overloaded', attempt: 3, max_retries: 10 });
  assert.equal(r.ok, true, JSON.stringify(r));
  assert.ok(!r.give_up, 'one agent alone does not make the hive back off');
  await until(async () => /(^|\s)retrying · API 529 · 3\/10 · \d+s/u.test(await badge('alice').textContent()), "alice's retrying badge");
  await socks.dave.call({ op: 'backoff', retry_in_ms: 40000, reason: 'API 500 server_error' });
  await until(async () => /(^|\s)waiting · retry in (39|40)s/u.test(await badge('dave').textContent()), "dave's waiting badge");
  assert.match(await badge('dave').getAttribute('title'), /API 500 server_error/);
  assert.ok(await page.locator('#api-backoff').isHidden(), 'no banner yet');
  await socks.dave.call({ op: 'api_retry', status: 529, error: 'overloaded', attempt: 1, max_retries: 10 });
  r = await socks.erin.call({ op: 'api_retry', status: 503, error: 'unavailable', attempt: 1, max_retries: 10 });
  assert.equal(r.give_up, true, "the third agent's turn gives up: the hive backs off");
  const banner = page.locator('#api-backoff');
  await banner.waitFor({ timeout: 10000 });
  const text = await banner.innerText();
  assert.match(text, /The model API is failing/);
  assert.match(text, /Since \d+s ago · last error: API 503 unavailable · next try: \d+s left/);
  await page.screenshot({ path: path.join(OUT, 'dashboard-api-backoff.png') });
  for (const s of Object.values(socks)) s.close();
  await page.goto(`${hive.url}/agents/alice`); // where the next test reads alice's history
});

test('a restart of hive-c0re keeps the history visible and the login', async () => {
  const sock = await agentSocket(hive, 'alice');
  await sock.call({ op: 'events', items: [{ kind: 'stream', payload: { type: 'assistant', message: { content: [{ type: 'text', text: 'said before the restart' }] } } }] });
  await page.locator('#rows .row', { hasText: 'said before the restart' }).waitFor();
  if ((await hive.status()).alice.running) {
    // A running harness that says it is thinking: the badge and the Cancel button follow.
    await sock.call({ op: 'state', state: 'thinking', model: 'haiku' });
    await until(async () => (await page.locator('#badge').textContent()).includes('thinking'), 'the thinking badge');
    assert.ok(await page.locator('#btn-cancel').isVisible(), 'Cancel shows while thinking');
    assert.ok(await page.locator('#btn-compact').isHidden(), 'Compact hides while thinking');
  }
  sock.close();
  await page.screenshot({ path: path.join(OUT, 'dashboard-agent.png') });
  await hive.stop();
  await until(async () => (await page.locator('#conn').innerText()).includes('reconnecting'), 'the page to notice');
  await hive.start();
  // The open page reconnects and is still logged in: it acts without a reload or a new login.
  await until(async () => (await page.locator('#conn').innerText()) === '● live', 'the page to reconnect', 20000);
  const input = page.locator('#term-input');
  await input.fill('sent after the restart');
  await input.press('Enter');
  await toast('queued for alice');
  assert.ok(await page.locator('#banner').isHidden(), 'no banner: the login survived');
  await page.reload();
  await page.locator('#rows .row', { hasText: 'said before the restart' }).waitFor();
  await page.locator('#rows .row', { hasText: 'turn 39: looking at it' }).waitFor();
});

test('a page whose login is gone says why and how to log in again', async () => {
  // A new token (the kept one removed): every browser's login is void.
  await hive.stop();
  fs.rmSync(path.join(hive.env.HIVE_STATE_DIR, 'dashboard.token'));
  await hive.start();
  const banner = page.locator('#banner');
  await banner.filter({ hasText: 'Logged out' }).waitFor({ timeout: 20000 });
  const text = await banner.innerText();
  assert.match(text, /token changed since it logged in/);
  assert.match(text, /hive-c0re urls/);
  assert.doesNotMatch(text, /loopback/);
  assert.ok(!text.includes(hive.token), 'the banner does not show the token');
  await page.screenshot({ path: path.join(OUT, 'dashboard-logged-out.png') });
  // A reload shows the login page, with the same reason and without the token.
  const resp = await page.reload();
  assert.equal(resp.status(), 401);
  const body = await page.locator('body').innerText();
  assert.match(body, /token changed since it logged in/);
  assert.ok(!(await page.content()).includes(hive.token));
  await page.screenshot({ path: path.join(OUT, 'dashboard-login.png') });
  // Logging in again with the new link brings the page back.
  await hive.logIn(page);
  await page.goto(`${hive.url}/agents/alice`);
  await page.locator('#rows .row', { hasText: 'sent after the restart' }).waitFor();
  assert.ok(await page.locator('#banner').isHidden());
});
