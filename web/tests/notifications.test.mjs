// Browser test of the bell: a real hive-c0re (process runtime, stand-in
// harness), headless chromium, no claude. An agent's message to the operator
// (sent through its agent.sock, HTML in it) and an approval are
// notifications: the bell's count and the page title follow them on both
// pages, the text stays text, browser notifications fire for the chosen
// kinds, and marking read (one, then all) clears them.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, test } from 'node:test';
import { OUT, agentSocket, cspViolations, launchBrowser, makeHive, requireBuilt, until } from './hive.mjs';

let hive;
let browser;
let context;
let page;
let refused;

before(async () => {
  requireBuilt();
  fs.mkdirSync(OUT, { recursive: true });
  hive = await makeHive();
  await hive.start();
  await hive.cli('spawn', 'alice');
  browser = await launchBrowser();
  context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  await context.grantPermissions(['notifications'], { origin: hive.url });
  // Records what the page shows as browser notifications.
  await context.addInitScript(() => {
    window.shownNotifications = [];
    const Real = window.Notification;
    class Recorded {
      constructor(title, options) {
        window.shownNotifications.push({ title, body: options?.body });
      }
      static get permission() { return Real.permission; }
      static requestPermission() { return Real.requestPermission(); }
    }
    window.Notification = Recorded;
  });
  page = await context.newPage();
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

const count = () => page.locator('#bell-count');
const countIs = (n) => until(async () => (n === 0 ? await count().isHidden() : (await count().innerText()) === String(n)), `the bell to show ${n}`);
const HOSTILE = '<img src=x id=injected> hi operator';

test('the bell and the title follow new notifications on the hive page', async () => {
  await page.goto(hive.url);
  await page.locator('#bell').waitFor();
  await until(async () => (await page.locator('#conn').innerText()) === '● live', 'the stream');
  assert.ok(await count().isHidden(), 'no unread yet');
  assert.equal(await page.title(), 'hive · hyperhive');

  const sock = await agentSocket(hive, 'alice');
  const sent = await sock.call({ op: 'send', to: 'operator', body: HOSTILE });
  sock.close();
  assert.ok(sent.ok, JSON.stringify(sent));
  await countIs(1);
  assert.equal(await page.title(), '(1) hive · hyperhive');

  await page.click('#bell');
  const item = page.locator('#bell-panel li.notif').first();
  await item.waitFor();
  assert.equal(await item.getAttribute('data-kind'), 'message');
  assert.equal(await item.locator('.notif-text').innerText(), HOSTILE, 'the text is shown as text');
  assert.equal(await page.locator('#injected').count(), 0, 'no element came from the text');
  assert.equal(await item.locator('a').getAttribute('href'), '/#inbox');
  // The page was open before the message: a browser notification of a chosen kind.
  await until(() => page.evaluate(() => window.shownNotifications.length === 1), 'a browser notification');
  const shown = await page.evaluate(() => window.shownNotifications[0]);
  assert.deepEqual(shown, { title: 'Messages to the operator · alice', body: HOSTILE });
});

test('the agent page has the bell too, and marking read clears it', async () => {
  await hive.cli('init-config', 'bob');
  await hive.cli('request-spawn', 'bob');
  await countIs(2);
  await page.goto(`${hive.url}/agents/alice`);
  await page.locator('#bell').waitFor();
  await countIs(2);
  await until(async () => (await page.title()).startsWith('(2) alice'), 'the count in the agent page title');

  await page.click('#bell');
  const approval = page.locator('#bell-panel li.notif[data-kind="approval"]');
  await approval.waitFor();
  assert.equal(await approval.locator('a').getAttribute('href'), '/#approvals');
  await approval.locator('button.notif-read').click();
  await countIs(1);
  assert.ok((await page.title()).startsWith('(1) alice'));
  assert.equal(await page.locator('#bell-panel li.notif.unread').count(), 1);

  // The choice of kinds is kept in this browser.
  const box = page.locator('#bell-panel input[data-kind="approval"]');
  assert.ok(await box.isChecked());
  await box.uncheck();
  assert.deepEqual(JSON.parse(await page.evaluate(() => localStorage.getItem('hyperhive.notify.kinds'))).includes('approval'), false);

  await page.click('#bell-read-all');
  await countIs(0);
  assert.ok(!(await page.title()).startsWith('('), await page.title());
  const left = JSON.parse(await hive.cli('notifications', '--unread', '--json') || '[]');
  assert.deepEqual(left, []);
  await page.screenshot({ path: `${OUT}/notifications.png` });
  assert.deepEqual(refused, [], 'the CSP refused nothing');
});
