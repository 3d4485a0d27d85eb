// Browser test of the dashboard steering a real agent: hive-c0re with the
// process runtime, the real harness and the real claude CLI against
// hive-model-sim. The operator works only through the pages (hive page and
// agent page open side by side); the model server's request log shows
// what claude was asked to do.
//
// Skips (and passes) with a printed reason when claude or the binaries are missing.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { claudeHive, defaultScript, getJson, missing, startSim } from './claude.mjs';
import { OUT, launchBrowser, requireBuilt, until } from './hive.mjs';

const skip = missing() ?? false;
if (skip) console.log(`# skipped the claude-driven dashboard test: ${skip}`);

/** A message whose answer the model holds back for 20 s, so the turn can be cancelled mid-way. */
const SLOW = 'take your time with this one';
const slowRule = `
[[rule]]
name = "slow"
each_message = true
user_text = "${SLOW}"
delay_ms = 20000
[[rule.reply]]
tool = "mcp__hyperhive__send"
input = { to = "{{sender}}", body = "finally: {{body}}" }
`;

let sim;
let hive;
let browser;
let hivePage;
let agentPage;
let plain; // the built-in script

before(async () => {
  if (skip) return;
  requireBuilt();
  fs.mkdirSync(OUT, { recursive: true });
  plain = await defaultScript();
  // Rules are tried in order: the slow one goes before the built-in "ack everything".
  sim = await startSim(plain.replace('[[rule]]', `${slowRule}\n[[rule]]`));
  hive = await claudeHive(sim);
  await hive.start();
  await hive.cli('spawn', 'alice');
  browser = await launchBrowser();
  const ctx = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  hivePage = await ctx.newPage();
  agentPage = await ctx.newPage();
  for (const p of [hivePage, agentPage]) p.on('pageerror', (e) => console.error('page error:', e.message));
  // One login for the browser context: both pages share its cookie.
  await hive.logIn(hivePage);
  await openAgentPage();
});

after(async () => {
  await browser?.close();
  await hive?.stop();
  await sim?.stop();
  if (process.env.KEEP_HIVE) console.log(`hive left in ${hive?.dir}`);
  else hive?.cleanup();
});

/** Opens alice's page and records every state its badge shows, in order, in `window.states`. */
async function openAgentPage() {
  await agentPage.goto(`${hive.url}/agents/alice`);
  await agentPage.locator('#badge[data-state]').waitFor();
  await agentPage.evaluate(() => {
    window.states = [];
    const note = () => {
      const s = document.querySelector('#badge')?.dataset.state;
      if (s && window.states.at(-1) !== s) window.states.push(s);
    };
    note();
    new MutationObserver(note).observe(document.querySelector('.agent-head'), { childList: true, subtree: true });
  });
}

const states = () => agentPage.evaluate(() => window.states);
const badgeState = () => agentPage.locator('#badge').getAttribute('data-state');
const resetStates = () => agentPage.evaluate(() => { window.states = [document.querySelector('#badge').dataset.state]; });
const row = (text) => agentPage.locator('#rows .row', { hasText: text });
const alice = () => getJson(hive, '/api/agents/alice');

/** Types a line into the agent page's terminal input. */
async function type(line) {
  const input = agentPage.locator('#term-input');
  await input.fill(line);
  await input.press('Enter');
}

/** True when `seq` holds `want` in order (other states may come between). */
function inOrder(seq, want) {
  let i = 0;
  for (const s of seq) if (s === want[i]) i++;
  return i === want.length;
}

test('a message sent from the hive page is answered live in the terminal and the operator inbox', { skip }, async () => {
  await until(async () => (await badgeState()) === 'idle', 'alice to be idle', 20000);
  await resetStates();
  await hivePage.selectOption('#send-to', 'alice');
  await hivePage.fill('#send-body', 'hello from the dashboard');
  await hivePage.click('#send-form button[type=submit]');
  // The agent's page shows claude's tool call, its result and its closing text as they happen.
  await row('hyperhive:send').filter({ hasText: 'ack: hello from the dashboard' }).waitFor({ timeout: 30000 });
  await row('Done: answered the inbox.').waitFor({ timeout: 15000 });
  await agentPage.locator('#rows .row.turn', { hasText: 'exit 0' }).waitFor();
  // And the hive page's operator inbox gets the answer.
  await hivePage.locator('#inbox li', { hasText: 'ack: hello from the dashboard' }).waitFor();
  await until(async () => (await badgeState()) === 'idle', 'the badge back at idle');
  assert.ok(inOrder(await states(), ['idle', 'thinking', 'idle']), `badge states: ${await states()}`);
  await agentPage.screenshot({ path: path.join(OUT, 'claude-agent-answer.png') });
  await hivePage.screenshot({ path: path.join(OUT, 'claude-hive-inbox.png') });
});

test('/model sonnet in the terminal changes the model of the next claude run', { skip }, async () => {
  await type('/model sonnet');
  await agentPage.locator('.toast', { hasText: 'alice uses sonnet' }).first().waitFor();
  await until(async () => /active\s*sonnet/.test(await agentPage.locator('#model').innerText()), 'the model panel to say sonnet');
  await type('which model are you');
  await hivePage.locator('#inbox li', { hasText: 'ack: which model are you' }).waitFor({ timeout: 30000 });
  const asked = (await sim.requests()).filter((r) => (r.user_text ?? '').includes('which model are you'));
  assert.ok(asked.length > 0, 'the sim saw the turn');
  for (const r of asked) assert.match(r.model, /sonnet/, `request #${r.seq} used ${r.model}`);
  const before = (await sim.requests()).filter((r) => (r.user_text ?? '').includes('hello from the dashboard'));
  assert.ok(before.every((r) => !/sonnet/.test(r.model)), 'the turn before the override did not use sonnet');
  await row('turn ·').filter({ hasText: 'sonnet' }).last().waitFor();
  await type('/model default');
  await until(async () => /override\s*none/.test(await agentPage.locator('#model').innerText()), 'the override to clear');
});

test('/cancel stops a slow turn; its message waits in the inbox and is answered next turn', { skip }, async () => {
  await until(async () => (await badgeState()) === 'idle', 'alice to be idle', 20000);
  await type(SLOW);
  await until(async () => (await badgeState()) === 'thinking', 'the thinking badge', 15000);
  // The model holds its answer for 20 s; wait until claude is actually waiting on it.
  await until(async () => (await sim.requests()).some((r) => (r.user_text ?? '').includes(SLOW)), 'claude to ask the model', 15000);
  await agentPage.locator('#btn-cancel').waitFor();
  const t0 = Date.now();
  await type('/cancel');
  await agentPage.locator('.toast', { hasText: 'asked alice to cancel' }).first().waitFor();
  await until(async () => (await badgeState()) === 'idle', 'the badge back at idle', 5000);
  const took = Date.now() - t0;
  assert.ok(took < 5000, `cancel took ${took} ms`);
  await agentPage.locator('#rows .row.turn', { hasText: 'cancelled' }).waitFor();
  // Not lost: back in the inbox, unanswered.
  await until(async () => (await alice()).inbox_depth === 1, 'inbox depth 1 after the cancel');
  const ops = await getJson(hive, '/api/operator/messages');
  assert.ok(!ops.some((m) => m.body.includes('finally:')), 'no answer came from the cancelled turn');

  // The next message starts a turn that carries both; the model answers at once now.
  await sim.setScript(plain);
  await type('are you there');
  await hivePage.locator('#inbox li', { hasText: `ack: ${SLOW}` }).waitFor({ timeout: 30000 });
  await hivePage.locator('#inbox li', { hasText: 'ack: are you there' }).waitFor({ timeout: 30000 });
  await until(async () => (await alice()).inbox_depth === 0, 'an empty inbox');
  await agentPage.screenshot({ path: path.join(OUT, 'claude-agent-cancel.png') });
});

test('/compact after a turn shows compacting, then idle, and claude asked for a summary', { skip }, async () => {
  await until(async () => (await badgeState()) === 'idle', 'alice to be idle', 20000);
  await resetStates();
  const compactsBefore = (await sim.requests()).filter((r) => r.step === 'compact').length;
  await type('/compact');
  await agentPage.locator('.toast', { hasText: 'asked alice to compact' }).first().waitFor();
  await until(async () => (await sim.requests()).filter((r) => r.step === 'compact').length > compactsBefore, 'a compact request at the model', 30000);
  await until(async () => inOrder(await states(), ['compacting', 'idle']), 'compacting then idle on the badge', 30000);
  assert.ok(inOrder(await states(), ['idle', 'compacting', 'idle']), `badge states: ${await states()}`);
  // The terminal tells the compaction's start and end, not its replayed conversation.
  await row('compact · session').waitFor();
  await agentPage.locator('#rows .row.turn', { hasText: 'compact end · exit 0' }).waitFor();
  assert.equal(await row('compact_stream').count(), 0, 'no raw compaction lines');
  await agentPage.screenshot({ path: path.join(OUT, 'claude-agent-compact.png') });
});

test('a restart of hive-c0re keeps the history visible', { skip }, async () => {
  await hive.stop();
  await until(async () => (await agentPage.locator('#conn').innerText()).includes('reconnecting'), 'the page to notice');
  await hive.start();
  await until(async () => (await agentPage.locator('#conn').innerText()) === '● live', 'the page to reconnect', 20000);
  await agentPage.reload();
  await row('hyperhive:send').filter({ hasText: 'ack: hello from the dashboard' }).waitFor();
  await row('ack: are you there').first().waitFor();
  await agentPage.locator('#rows .row.turn', { hasText: 'cancelled' }).waitFor();
  // alice comes back by herself and still answers.
  await until(async () => (await alice()).running, 'alice to run again', 20000);
  await type('still there?');
  await row('hyperhive:send').filter({ hasText: 'ack: still there?' }).waitFor({ timeout: 30000 });
  await agentPage.screenshot({ path: path.join(OUT, 'claude-agent-after-restart.png') });
});
