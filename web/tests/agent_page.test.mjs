// Browser test of the agent page's edges: the "↓ N new" chip inside the
// terminal, unknown /commands, icons that need no emoji font, and the inbox's
// labels. A real hive-c0re (process runtime, stand-in harness), headless
// chromium; the test plays alice's harness through her agent.sock.
//
// Run: cargo build -p hive-c0re && (cd web && npm ci && npm run build && node --test tests/agent_page.test.mjs)

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { OUT, agentSocket, cspViolations, launchBrowser, makeHive, playTurn, requireBuilt, sleep, until } from './hive.mjs';

let hive;
let browser;
let page;
let refused;
let sock;

before(async () => {
  requireBuilt();
  fs.mkdirSync(OUT, { recursive: true });
  hive = await makeHive();
  await hive.start();
  await hive.cli('spawn', 'alice');
  sock = await agentSocket(hive, 'alice');
  // Enough turns that the terminal overflows and can be scrolled up.
  for (let n = 0; n < 12; n++) await playTurn(hive, sock, 'alice', n);
  browser = await launchBrowser();
  page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.on('pageerror', (e) => console.error('page error:', e.message));
  refused = cspViolations(page);
  await hive.logIn(page);
  await page.goto(`${hive.url}/agents/alice`);
  await page.locator('#rows .row', { hasText: 'turn 11: looking at it' }).waitFor();
});

after(async () => {
  sock?.close();
  await browser?.close();
  await hive?.stop();
  if (process.env.KEEP_HIVE) console.log(`hive left in ${hive.dir}`);
  else hive?.cleanup();
});

const inside = (inner, outer) => inner.x >= outer.x && inner.y >= outer.y && inner.x + inner.width <= outer.x + outer.width && inner.y + inner.height <= outer.y + outer.height;
const overlap = (a, b) => a.x < b.x + b.width && b.x < a.x + a.width && a.y < b.y + b.height && b.y < a.y + a.height;

test('the "new" chip sits inside the terminal box, clear of the input and the shell button', async () => {
  const term = page.locator('#term');
  await term.evaluate((t) => { t.scrollTop = 0; });
  await sleep(300);
  await sock.call({ op: 'events', items: [{ kind: 'stream', payload: { type: 'assistant', message: { content: [{ type: 'text', text: 'below the fold' }] } } }] });
  const chip = page.locator('#new-chip');
  await until(async () => /^↓ \d+ new$/.test(await chip.innerText()), 'the chip to show');
  const [c, t, input, shell] = await Promise.all([chip.boundingBox(), term.boundingBox(), page.locator('#term-form').boundingBox(), page.locator('#shell-open').boundingBox()]);
  assert.ok(inside(c, t), `chip ${JSON.stringify(c)} is inside the terminal ${JSON.stringify(t)}`);
  assert.ok(!overlap(c, shell), `chip ${JSON.stringify(c)} clear of Open shell ${JSON.stringify(shell)}`);
  assert.ok(!overlap(c, input), 'chip clear of the input line');
  // Also on a phone, where the panels stack.
  await page.setViewportSize({ width: 390, height: 800 });
  await sleep(200);
  const [c2, t2] = await Promise.all([chip.boundingBox(), term.boundingBox()]);
  assert.ok(inside(c2, t2), `on a phone too: chip ${JSON.stringify(c2)} in ${JSON.stringify(t2)}`);
  await page.screenshot({ path: path.join(OUT, 'agent-chip-phone.png') });
  await page.setViewportSize({ width: 1400, height: 900 });
  await chip.click();
  await until(() => chip.isHidden(), 'the chip to go once at the bottom');
});

test('an unknown /command is answered with a /help hint and sends nothing', async () => {
  const before = (await hive.status()).alice.inbox_depth;
  const input = page.locator('#term-input');
  await input.fill('/frobnicate now');
  await input.press('Enter');
  await page.locator('#rows .row.help', { hasText: 'unknown command /frobnicate: /help lists the commands' }).waitFor();
  await sleep(500);
  const messages = await (await hive.fetch('/api/agents/alice/messages')).json();
  assert.ok(!messages.some((m) => m.body.includes('frobnicate')), `no message stored: ${JSON.stringify(messages)}`);
  assert.equal((await hive.status()).alice.inbox_depth, before);
  // A known one still works, and a leading space makes it a message.
  await input.fill(' /frobnicate is a word');
  await input.press('Enter');
  await until(async () => (await (await hive.fetch('/api/agents/alice/messages')).json()).some((m) => m.body === ' /frobnicate is a word'), 'the spaced line to be sent');
});

test('the inbox says which messages are pending, read, or sent by the agent', async () => {
  // Read what the last test queued, so the next message is the one pending.
  const got = await sock.call({ op: 'next_turn', wait_ms: 5000 });
  const ended = await sock.call({ op: 'turn_end', stats: { duration_ms: 5, exit_code: 0, exit_class: 'ok', tool_calls: {}, messages_received: got.messages.length }, outcome: 'ack' });
  assert.ok(got.ok && ended.ok, JSON.stringify([got, ended]));
  await hive.cli('send', 'alice', 'are you there? 🎉');
  const sent = await sock.call({ op: 'send', to: 'operator', body: 'alice here, writing to you' });
  assert.ok(sent.ok, JSON.stringify(sent));
  const item = (text) => page.locator('#inbox li', { hasText: text });
  await item('are you there?').locator('.tag.label.pending', { hasText: 'pending' }).waitFor();
  await item('alice here, writing to you').locator('.tag.label.sent', { hasText: 'sent by alice' }).waitFor();
  await item('/frobnicate is a word').locator('.tag.label.read', { hasText: 'read' }).waitFor();
  // Text emoji in a message stay as written.
  assert.equal(await item('are you there?').locator('.body').innerText(), 'are you there? 🎉');
  // A turn reads it: the label follows.
  const turn = await sock.call({ op: 'next_turn', wait_ms: 5000 });
  await sock.call({ op: 'turn_end', stats: { duration_ms: 5, exit_code: 0, exit_class: 'ok', tool_calls: {}, messages_received: turn.messages.length }, outcome: 'ack' });
  await item('are you there?').locator('.tag.label.read').waitFor();
  assert.equal(await item('are you there?').locator('.tag.label.pending').count(), 0);
});

test('a turn that did not finish says why in the terminal', async () => {
  await hive.cli('send', 'alice', 'this turn fails');
  const turn = await sock.call({ op: 'next_turn', wait_ms: 5000 });
  const why = 'the model API answered 529: overloaded';
  const stats = { duration_ms: 5, exit_code: 1, exit_class: 'failure', tool_calls: {}, messages_received: turn.messages?.length ?? 0, error: why };
  const ended = await sock.call({ op: 'turn_end', stats, outcome: 'ack' });
  assert.ok(turn.ok && ended.ok, JSON.stringify([turn, ended]));
  const said = page.locator('#rows .row.crash[data-kind=turn_end]', { hasText: why });
  await said.waitFor();
  await page.locator('#rows .row[data-kind=turn_end]', { hasText: 'failure' }).last().waitFor();
});

test('a stream line the renderer cannot read shows raw and takes nothing else down', async () => {
  // Stream payloads are whatever JSON the agent's harness reports: these broke
  // the renderer, which lost their batch live and, on load, the whole terminal.
  const errors = [];
  const onError = (e) => errors.push(e.message);
  page.on('pageerror', onError);
  const bad = [
    { type: 'assistant', message: { content: 'x' } },
    { type: 'assistant', message: { content: [null] } },
    { type: 'user', message: { content: {} } },
    { type: 'user', message: { content: [{ type: 'tool_result', content: [null] }] } },
    { type: 'result', subtype: { x: 1 }, duration_ms: 'soon' },
  ];
  const said = (text) => ({ kind: 'stream', payload: { type: 'assistant', message: { content: [{ type: 'text', text }] } } });
  await sock.call({ op: 'events', items: [...bad.map((payload) => ({ kind: 'stream', payload })), said('after the odd lines, live')] });
  await page.locator('#rows .row', { hasText: 'after the odd lines, live' }).waitFor();
  await page.locator('#rows .row.dim', { hasText: '"content":"x"' }).waitFor();
  // Loaded with the page, as history: the terminal still fills, and live rows still come.
  await page.reload();
  await page.locator('#rows .row', { hasText: 'after the odd lines, live' }).waitFor();
  await sock.call({ op: 'events', items: [said('and one more after a reload')] });
  await page.locator('#rows .row', { hasText: 'and one more after a reload' }).waitFor();
  page.off('pageerror', onError);
  assert.deepEqual(errors, []);
});

/** Text of the page's own UI (not messages, statuses or the terminal's event text) with emoji in it. */
const emojiInUi = () => page.evaluate(() => {
  const skip = '.msg .body, .status-text, #rows, pre.diff, .xterm, .feed-text, .need-text, .crash-tail';
  const found = [];
  const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walk.nextNode(); n; n = walk.nextNode()) {
    if (n.parentElement.closest(skip)) continue;
    if (/\p{Extended_Pictographic}/u.test(n.textContent)) found.push(`${n.parentElement.tagName}.${n.parentElement.className}: ${n.textContent}`);
  }
  for (const el of document.querySelectorAll('.icon, .badge, .tag, button, .chip')) {
    if (/\p{Extended_Pictographic}/u.test(el.textContent) && !el.closest(skip)) found.push(`${el.tagName}.${el.className}: ${el.textContent}`);
  }
  return found;
});

test('icons are inline SVG, with no emoji codepoints in the UI', async () => {
  // Flags and states that used to be emoji: paused, a parent, a failed turn's row.
  await hive.cli('pause', 'alice');
  await page.locator('#flags .tag', { hasText: 'paused' }).waitFor();
  await page.locator('#btn-pause', { hasText: 'Resume' }).waitFor();
  await sock.call({ op: 'state', state: 'thinking', model: 'haiku' });
  await page.locator('#badge[data-state=thinking]').waitFor();
  assert.ok(await page.locator('#badge svg.icon[data-icon=thinking]').count());
  assert.ok(await page.locator('#flags svg.icon[data-icon=pause]').count());
  assert.ok(await page.locator('#btn-pause svg.icon[data-icon=play]').count());
  assert.deepEqual(await emojiInUi(), []);
  await sock.call({ op: 'state', state: 'idle' });
  await hive.cli('resume', 'alice');

  await page.goto(hive.url);
  await page.locator('#agents tbody tr[data-name=alice] .badge svg.icon').waitFor();
  await page.locator('#agents tbody tr[data-name=alice] td.heartbeat', { hasText: /ago|no turn yet/ }).waitFor();
  assert.deepEqual(await emojiInUi(), []);
  assert.deepEqual(refused, [], 'no content security policy violation');
});
