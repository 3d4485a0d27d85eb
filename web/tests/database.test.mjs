// Browser test of a hive on PostgreSQL whose database goes out of reach: a
// real hive-c0re (process runtime, stand-in harness) on a throwaway cluster,
// headless chromium. Every page shows the database alarm while the node's
// heartbeats fail, and the alarm goes once the database answers again.
// Skipped (with a note) where PostgreSQL is not installed.
//
// Run: cargo build -p hive-c0re && (cd web && npm ci && npm run build && node --test tests/)

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { OUT, cspViolations, launchBrowser, makeHive, requireBuilt } from './hive.mjs';
import { missing, startCluster } from './postgres.mjs';

const skip = missing();
let cluster;
let hive;
let browser;

before(async () => {
  if (skip) return;
  requireBuilt();
  fs.mkdirSync(OUT, { recursive: true });
  cluster = await startCluster();
  hive = await makeHive({ env: { HIVE_DATABASE: cluster.url, HIVE_HEARTBEAT_SECS: '1' } });
  await hive.start();
  await hive.cli('spawn', 'alice');
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await hive?.stop();
  hive?.cleanup();
  await cluster?.stop();
});

/** Turns the hive's database away (or back), as a server that went down would. */
async function reachable(yes) {
  await cluster.sql(`ALTER DATABASE hive ALLOW_CONNECTIONS ${yes}`);
  if (!yes) await cluster.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'hive'");
}

test('a database out of reach shows as a banner on every open page until it answers again', { skip: skip ?? false }, async () => {
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  const page = await context.newPage();
  const refused = cspViolations(page);
  await hive.logIn(page);
  await page.locator('#agents tbody tr[data-name="alice"]').waitFor();
  const agentPage = await context.newPage();
  await agentPage.goto(`${hive.url}/agents/alice`);
  await agentPage.locator('#conn', { hasText: 'live' }).waitFor({ timeout: 10000 });
  const banners = [page.locator('#banner'), agentPage.locator('#banner')];
  for (const b of banners) assert.ok(await b.isHidden(), 'no banner while the database answers');

  await reachable(false);
  try {
    for (const b of banners) {
      await b.waitFor({ state: 'visible', timeout: 15000 });
      const text = await b.innerText();
      assert.match(text, /^Database alarm since \d{4}-\d\d-\d\dT[\d:.]+Z: this node cannot reach the hive's database \(/u);
      assert.match(text, /check that the PostgreSQL server is up/u);
    }
    await page.screenshot({ path: path.join(OUT, 'database-alarm.png') });

    // A page opened meanwhile cannot look the agent up: it says why.
    const late = await context.newPage();
    const resp = await late.goto(`${hive.url}/agents/alice`);
    assert.equal(resp.status(), 503);
    assert.match(await late.locator('body').innerText(), /cannot reach the hive's database/u);
    await late.close();
  } finally {
    await reachable(true);
  }
  for (const b of banners) await b.waitFor({ state: 'hidden', timeout: 15000 });
  assert.deepEqual(refused, []);
  await context.close();
});
