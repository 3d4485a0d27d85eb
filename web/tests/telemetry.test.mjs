// Browser test of the dashboard's telemetry: a real hive whose agent runs the
// real claude against hive-model-sim's built-in script (every message is
// answered with one `mcp__hyperhive__send` call), so a known sequence of
// turns gives known figures. Checks /api/stats, the agent page's uPlot
// charts and bars, and the hive page's per-agent row and stuck badge.
//
// Skips (and passes) with a printed reason when claude or the binaries are missing.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { claudeHive, getJson, missing, startSim } from './claude.mjs';
import { OUT, launchBrowser, requireBuilt, until } from './hive.mjs';

const skip = missing() ?? false;
if (skip) console.log(`# skipped the telemetry browser test: ${skip}`);

let sim;
let hive;
let browser;
let page;

before(async () => {
  if (skip) return;
  requireBuilt();
  fs.mkdirSync(OUT, { recursive: true });
  sim = await startSim();
  hive = await claudeHive(sim);
  await hive.start();
  await hive.cli('spawn', 'alice');
  browser = await launchBrowser();
  page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  page.on('pageerror', (e) => console.error('page error:', e.message));
  await hive.logIn(page);
});

after(async () => {
  await browser?.close();
  await hive?.stop();
  await sim?.stop();
  if (process.env.KEEP_HIVE) console.log(`hive left in ${hive?.dir}`);
  else hive?.cleanup();
});

const isStats = (url) => url.pathname === '/api/stats';
const aliceStats = async () => (await getJson(hive, '/api/stats?agent=alice')).agents[0];

/** Sends one operator message to alice and waits for the turn that answers it to be recorded. */
async function answeredTurn(n, body) {
  await hive.cli('send', 'alice', body);
  await until(async () => (await aliceStats()).turns === n, `turn ${n} to be recorded`, 30000);
}

test('three answered messages give exactly the expected figures', { skip }, async () => {
  for (let n = 1; n <= 3; n++) await answeredTurn(n, `question ${n}`);
  const s = await getJson(hive, '/api/stats?agent=alice');
  assert.equal(s.agents.length, 1);
  const a = s.agents[0];
  assert.equal(a.agent, 'alice');
  assert.equal(a.turns, 3);
  assert.deepEqual(a.tool_usage, { send: 3 });
  assert.deepEqual(a.exit_classes, { ok: 3 });
  assert.equal(a.tool_calls_per_turn, 1);
  assert.deepEqual(a.sent_per_turn, { operator: 1 });
  assert.deepEqual(a.received_per_turn, { operator: 1 });
  assert.equal(a.turns_series.length, 3);
  assert.ok(a.turns_series.every((p) => p.tool_calls === 1 && p.duration_ms > 0), JSON.stringify(a.turns_series));
  assert.ok(a.duration_p50_ms > 0 && a.duration_p95_ms >= a.duration_p50_ms);
  assert.equal(a.inbox_depth_current, 0);
  assert.equal(a.stuck, false);
  assert.ok(a.seconds_since_last_turn >= 0 && a.seconds_since_last_turn < 60);
  assert.equal(s.window_seconds, 3600);
  // Hive-wide and with a window: the same agent, the same turns.
  const all = await getJson(hive, '/api/stats?since=15m');
  assert.equal(all.window_seconds, 900);
  assert.deepEqual(all.agents.map((x) => [x.agent, x.turns]), [['alice', 3]]);
  const answers = (await getJson(hive, '/api/operator/messages')).filter((m) => m.from === 'alice').map((m) => m.body);
  assert.deepEqual(answers, ['ack: question 1', 'ack: question 2', 'ack: question 3']);
});

test('the agent page charts the turns and lists exits, tools and messages', { skip }, async () => {
  await page.goto(`${hive.url}/agents/alice`);
  await page.locator('#telemetry[data-loaded="3"]').waitFor();
  const canvases = await page.locator('#telemetry .uplot canvas').evaluateAll((cs) => cs.map((c) => [c.width, c.height, c.getBoundingClientRect().width]));
  assert.equal(canvases.length, 4, 'four charts');
  for (const [w, hgt, shown] of canvases) assert.ok(w > 100 && hgt > 50 && shown > 100, `a canvas is ${w}x${hgt} (${shown}px shown)`);
  // alice keeps no notes.md here: only the notes chart says it has nothing to show.
  const notes = (await aliceStats()).turns_series.some((p) => p.notes_bytes != null);
  assert.equal(await page.locator('#telemetry .chart-empty:visible').count(), notes ? 0 : 1);
  const fig = (k) => page.locator(`.figure[data-stat="${k}"] .fig-v`).innerText();
  assert.equal(await fig('turns'), '3');
  assert.equal(await fig('tool_calls_per_turn'), '1');
  assert.equal(await fig('turns_per_minute'), '0.05/min');
  assert.match(await fig('duration_p95_ms'), /^\d+(ms|\.\d+s)$/);
  assert.equal(await fig('inbox'), '0 / ' + (await aliceStats()).inbox_depth_max);
  assert.match(await fig('since_last_turn'), /^\d+s ago$/);
  const bar = (box, key) => page.locator(`#${box} li[data-key="${key}"] .v`).innerText();
  assert.equal(await bar('stats-exits', 'ok'), '3');
  assert.equal(await bar('stats-tools', 'send'), '3');
  assert.equal(await bar('stats-sent', 'operator'), '1');
  assert.equal(await bar('stats-received', 'operator'), '1');
  await page.screenshot({ path: path.join(OUT, 'telemetry-agent-page.png'), fullPage: true });
  await page.locator('#telemetry').screenshot({ path: path.join(OUT, 'telemetry-agent.png') });

  // A fourth turn shows up without a reload, and a shorter window can be chosen.
  await answeredTurn(4, 'question 4');
  await page.locator('#telemetry[data-loaded="4"]').waitFor({ timeout: 15000 });
  assert.equal(await bar('stats-tools', 'send'), '4');
  await page.selectOption('#stats-window', '15m');
  await until(async () => (await fig('turns_per_minute')) === '0.27/min', 'the 15 min window');
  await page.selectOption('#stats-window', '1h');
});

test('the hive page shows turns/min, p95 and time since the last turn per agent', { skip }, async () => {
  await page.goto(hive.url);
  const row = page.locator('#agents tbody tr[data-name="alice"]');
  await until(async () => (await row.locator('td.rate').innerText()) === '0.07/min', "alice's turns/min");
  assert.match(await row.locator('td.p95').innerText(), /^\d+(ms|\.\d+s)$/);
  assert.match(await row.locator('td.heartbeat').innerText(), /ago/);
  assert.equal(await row.locator('.tag.stuck').count(), 0, 'alice is not stuck');

  // Live: a fifth turn updates the row without a reload.
  await answeredTurn(5, 'question 5');
  await until(async () => (await row.locator('td.rate').innerText()) === '0.08/min', 'the row to follow the fifth turn', 15000);
});

test('an agent the summary calls stuck gets a visible badge', { skip }, async () => {
  // Stuck takes 5 quiet minutes with a waiting inbox; the server's verdict is stood in for here.
  await page.route(isStats, async (route) => {
    const resp = await route.fetch();
    const json = await resp.json();
    for (const a of json.agents) Object.assign(a, { stuck: true, inbox_depth_current: 2, seconds_since_last_turn: 420 });
    await route.fulfill({ response: resp, json });
  });
  await page.reload();
  const tag = page.locator('#agents tbody tr[data-name="alice"] .tag.stuck');
  await tag.waitFor();
  assert.equal((await tag.innerText()).trim(), 'stuck');
  assert.match(await tag.getAttribute('title'), /2 waiting in its inbox, no turn for 7m 00s/);
  assert.ok(await tag.isVisible());
  await page.screenshot({ path: path.join(OUT, 'telemetry-hive-stuck.png') });
  await page.goto(`${hive.url}/agents/alice`);
  await page.locator('#stats-stuck .tag.stuck').waitFor();
  await page.unroute(isStats);
  await page.goto(hive.url);
  await page.locator('#agents tbody tr[data-name="alice"] td.rate', { hasText: '/min' }).waitFor();
  assert.equal(await page.locator('.tag.stuck').count(), 0);
  await page.screenshot({ path: path.join(OUT, 'telemetry-hive.png') });
});
