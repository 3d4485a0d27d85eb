// Browser test of the hive page's approvals panel: a real hive-c0re (process
// runtime, stand-in harness), headless chromium. Approvals are queued for
// real through host.sock (the CLI); the config repo is committed to with git,
// as the manager would.
//
// Run: cargo build -p hive-c0re && (cd web && npm ci && npm run build && node --test tests/approvals.test.mjs)

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import { OUT, cspViolations, launchBrowser, makeHive, requireBuilt, sleep, until } from './hive.mjs';

const run = promisify(execFile);
let hive;
let browser;
let page;
let refused;

before(async () => {
  requireBuilt();
  fs.mkdirSync(OUT, { recursive: true });
  // Heads read every 0.2 s, so a repo that moves on shows within the test.
  hive = await makeHive({ env: { HIVE_CONFIG_POLL_SECS: '0.2' } });
  await hive.start();
  await hive.cli('spawn', 'alice');
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

/** Commits alice's agent.toml with `edit` applied, as the manager would; answers the sha. */
async function commit(edit, message) {
  const repo = path.join(hive.env.HIVE_STATE_DIR, 'configs', 'alice');
  const file = path.join(repo, 'agent.toml');
  fs.writeFileSync(file, edit(fs.readFileSync(file, 'utf8')));
  const git = (...args) => run('git', ['-C', repo, '-c', 'safe.directory=*', '-c', 'user.name=test', '-c', 'user.email=test@localhost', ...args]);
  await git('commit', '-qam', message);
  return (await git('rev-parse', 'HEAD')).stdout.trim();
}

/** The status of approval `id`, from `approvals --json`. */
async function status(id) {
  const all = (await hive.cli('approvals', '--json')).trim().split('\n').map((l) => JSON.parse(l));
  return all.find((a) => String(a.id) === String(id))?.status;
}

const requestCommit = async (sha, description) => (await hive.cli('request-apply-commit', 'alice', sha, '--description', description)).match(/#(\d+)/)[1];

test('what the operator is doing on a card survives a new approval arriving, and the card warns of what matters', async () => {
  const sha = await commit((t) => t.replace('model = "haiku"', 'model = "sonnet"'), 'sonnet');
  const first = await requestCommit(sha, 'alice on sonnet');
  const card = page.locator(`.approval[data-id="${first}"]`);
  await card.waitFor();
  await until(async () => /\+model = "sonnet"/.test(await card.locator('pre.diff').innerText()), 'the diff to load');
  assert.equal(await card.locator('li.warning').count(), 0, 'nothing to warn of yet');
  // An override set now masks the model change: the card says so, live.
  await hive.cli('model', 'alice', 'opus');
  await card.locator('li.warning[data-kind=model_override]', { hasText: 'override opus masks it' }).waitFor();

  // The operator: folds and opens the diff again and scrolls in it, types a reason, arms Deny.
  const toggle = card.locator('button.fold-toggle');
  await toggle.click();
  assert.ok(await card.locator('pre.diff').isHidden());
  await toggle.click();
  await until(async () => /\+model = "sonnet"/.test(await card.locator('pre.diff').innerText()), 'the diff to show again');
  await card.evaluate((c) => { c.querySelector('pre.diff').dataset.mine = 'opened by the operator'; });
  await card.locator('input.note').fill('sonnet is too slow for alice');
  const deny = card.locator('button[data-decide=deny]');
  await deny.click();
  assert.equal(await deny.innerText(), 'click again to confirm');

  // A new approval arrives for real (host.sock): the same request again.
  const second = await requestCommit(sha, 'alice on sonnet, again');
  await page.locator(`.approval[data-id="${second}"]`).waitFor();
  // The first card now warns of the duplicate, and everything the operator did is intact.
  await card.locator('li.warning[data-kind=duplicate]', { hasText: `approval #${second} asks the same` }).waitFor();
  assert.equal(await card.locator('input.note').inputValue(), 'sonnet is too slow for alice');
  assert.equal(await deny.innerText(), 'click again to confirm', 'Deny is still armed');
  assert.ok(await deny.evaluate((b) => b.classList.contains('armed')));
  assert.equal(await card.locator('pre.diff').getAttribute('data-mine'), 'opened by the operator', 'the same diff element, not a rebuilt one');
  assert.ok(await card.locator('pre.diff').isVisible());
  assert.match(await card.locator('pre.diff').innerText(), /\+model = "sonnet"/);
  await page.locator(`.approval[data-id="${second}"] li.warning[data-kind=duplicate]`, { hasText: `approval #${first} asks the same` }).waitFor();

  // The repo moves on: the card says by how much, in place, and the armed click still decides it.
  await sleep(4500); // Deny disarmed by itself meanwhile (4 s).
  await commit((t) => `${t}# later 1\n`, 'later 1');
  const head = await commit((t) => `${t}# later 2\n`, 'later 2');
  await card.locator('li.warning[data-kind=repo_moved]', { hasText: `${head.slice(0, 12)} is 2 commits ahead of the requested ${sha.slice(0, 12)}` }).waitFor({ timeout: 10000 });
  assert.equal(await card.locator('input.note').inputValue(), 'sonnet is too slow for alice');
  await page.screenshot({ path: path.join(OUT, 'approvals-warnings.png'), fullPage: true });
  await deny.click();
  await deny.click();
  await until(async () => {
    const all = (await hive.cli('approvals', '--json')).trim().split('\n').map((l) => JSON.parse(l));
    const a = all.find((x) => String(x.id) === first);
    return a.status === 'denied' && a.note === 'sonnet is too slow for alice';
  }, 'the first approval to be denied with the typed reason');
  await card.waitFor({ state: 'detached' });
  assert.ok(await page.locator(`.approval[data-id="${second}"]`).isVisible(), 'the other card stays');
  await page.locator(`.approval[data-id="${second}"] li.warning[data-kind=duplicate]`).waitFor({ state: 'detached' });
  assert.deepEqual(refused, [], 'no content security policy violation');
});

test('a spawn request that names a node says on its card which node the agent will live on', async () => {
  const node = JSON.parse((await hive.cli('nodes', '--json')).trim().split('\n')[0]).name;
  const id = (await hive.cli('request-spawn', 'bob', '--node', node, '--description', 'a helper')).match(/#(\d+)/)[1];
  const card = page.locator(`.approval[data-id="${id}"]`);
  await card.locator('.meta .node', { hasText: ` on node ${node}` }).waitFor();
  await hive.cli('deny', id);
  await card.waitFor({ state: 'detached' });
  assert.deepEqual(refused, [], 'no content security policy violation');
});

test('a list fetched before a live frame arrived does not take away the card that frame brought', async () => {
  // The page fetches the approvals after each hello; here that answer is held
  // back until a new approval's frame has shown its card, as on a slow link.
  const fresh = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  let fetches = 0;
  let release;
  const held = new Promise((r) => { release = r; });
  await fresh.route('**/api/approvals', async (route) => {
    fetches += 1;
    if (fetches > 1) return route.continue();
    const stale = await route.fetch();
    await held;
    await route.fulfill({ response: stale });
  });
  const late = cspViolations(fresh);
  await hive.logIn(fresh);
  await until(async () => fetches === 1, 'the page to ask for the approvals');
  const sha = await commit((t) => `${t}# stale-list\n`, 'stale list');
  const id = await requestCommit(sha, 'arrives while the list is in flight');
  const card = fresh.locator(`.approval[data-id="${id}"]`);
  await card.waitFor();
  // At least once more: on a loaded machine a resync may make the page fetch again as well.
  const asked = fetches;
  release();
  await until(async () => fetches > asked, 'the page to fetch the approvals again: a frame landed while the first answer was in flight');
  await fresh.waitForLoadState('networkidle');
  assert.ok(await card.isVisible(), 'the card the frame brought is still there');
  await hive.cli('deny', id);
  await card.waitFor({ state: 'detached' });
  assert.deepEqual(late, [], 'no content security policy violation');
  await fresh.close();
});

test('an open diff is shown again against what runs now once another approval deployed', async () => {
  // Two requests against what runs now; the operator reads the second's diff.
  const tighten = await commit((t) => `${t}# tightened by the operator\n`, 'tighten');
  const tight = await requestCommit(tighten, 'the operator tightens alice');
  const typo = await commit((t) => t.replace('# tightened by the operator\n', '# a typo fixed\n'), 'typo');
  const manager = await requestCommit(typo, 'a typo fix');
  const card = page.locator(`.approval[data-id="${manager}"]`);
  await card.waitFor();
  await until(async () => /\+# a typo fixed/.test(await card.locator('pre.diff').innerText()), 'the diff to load');
  assert.doesNotMatch(await card.locator('pre.diff').innerText(), /tightened/, 'nothing to undo yet');
  assert.ok(await card.locator('p.diff-changed').isHidden());

  // The operator's own request is approved: approving the typo fix now would undo it, and the card shows so.
  await hive.cli('approve', tight);
  await until(async () => (await status(tight)) === 'approved', 'the operator\'s request to be deployed');
  await until(async () => /-# tightened by the operator/.test(await card.locator('pre.diff').innerText()), 'the diff against what runs now');
  await card.locator('p.diff-changed', { hasText: 'another approval was deployed since this diff was shown' }).waitFor();
  await hive.cli('deny', manager);
  await card.waitFor({ state: 'detached' });
  assert.deepEqual(refused, [], 'no content security policy violation');
});

test('approving sends the diff the card shows, and one that moved since it was read is refused', async () => {
  // This page never hears of the deploy below in time (as when it was made
  // on another node): every reload of the second card's diff answers the
  // diff as first read.
  let frozen = null; // the approval whose diff is held as read
  let served = null;
  await page.route('**/api/approvals/*/diff', async (route) => {
    if (served === null || !route.request().url().includes(`/approvals/${frozen}/diff`)) return route.continue();
    return route.fulfill({ status: 200, contentType: 'application/json', body: served });
  });
  const a = await commit((t) => `${t}# first\n`, 'first');
  const one = await requestCommit(a, 'first');
  const b = await commit((t) => t.replace('# first\n', '# second\n'), 'second');
  const two = await requestCommit(b, 'second');
  frozen = two;
  const card = page.locator(`.approval[data-id="${two}"]`);
  await card.waitFor();
  await until(async () => /\+# second/.test(await card.locator('pre.diff').innerText()), 'the diff to load');
  // The very answer the page read: fetched again now, before the deploy.
  served = await page.evaluate(async (id) => {
    const r = await fetch(`/api/approvals/${id}/diff`, { headers: { 'X-Hive-Key': localStorage.getItem('hive-page-key') ?? '' } });
    return r.text();
  }, two);
  assert.match(served, /"diff_id":"[0-9a-f]{64}"/, served);
  const posted = [];
  page.on('request', (r) => { if (r.method() === 'POST' && r.url().includes('/approve')) posted.push(r.postData()); });

  await hive.cli('approve', one);
  await until(async () => (await status(one)) === 'approved', 'the first to be deployed');
  const approve = card.locator('button[data-decide=approve]');
  await approve.click();
  await approve.click();
  await page.locator('.toast.error', { hasText: 'diff is no longer the one you read' }).waitFor();
  assert.equal(posted.length, 1);
  assert.deepEqual(JSON.parse(posted[0]), { seen: JSON.parse(served).diff_id }, 'the approve names the diff shown');
  assert.equal(await status(two), 'pending', 'nothing deployed from a diff that moved');
  await page.unroute('**/api/approvals/*/diff');
  await hive.cli('deny', two);
  await card.waitFor({ state: 'detached' });
  assert.deepEqual(refused, [], 'no content security policy violation');
});

test('Approve stays off until the card has loaded its diff, so an approve always names the diff read', async () => {
  // The diff endpoint fails (as a broken link or a loaded server would): the
  // card has no diff id to send, and an approve without one would deploy
  // unchecked against what runs now, undoing a deploy made meanwhile.
  let failing = true;
  await page.route('**/api/approvals/*/diff', (route) => {
    if (!failing) return route.continue();
    return route.fulfill({ status: 500, contentType: 'application/json', body: JSON.stringify({ error: 'the diff broke for the test' }) });
  });
  const posted = [];
  const onRequest = (r) => { if (r.method() === 'POST' && r.url().includes('/approve')) posted.push(r.postData()); };
  page.on('request', onRequest);
  const sha = await commit((t) => `${t}# read before approving\n`, 'read first');
  const id = await requestCommit(sha, 'approve only what was read');
  const card = page.locator(`.approval[data-id="${id}"]`);
  await card.waitFor();
  const diff = card.locator('pre.diff');
  const approve = card.locator('button[data-decide=approve]');
  const deny = card.locator('button[data-decide=deny]');
  const hint = card.locator('.approve-hint');
  await until(async () => /the diff broke for the test/.test(await diff.innerText()), 'the diff to fail to load');

  // Clicked anyway, twice as an armed click would be: nothing is sent, nothing deployed.
  await approve.click({ force: true });
  await approve.click({ force: true });
  await sleep(700);
  assert.deepEqual(posted, [], 'no approve is sent without the diff read');
  assert.equal(await status(id), 'pending');
  assert.ok(await approve.isDisabled(), 'Approve is off while the diff has not loaded');
  assert.equal(await approve.getAttribute('title'), 'the diff did not load: reload it to approve');
  assert.equal(await hint.innerText(), 'the diff did not load: reload it to approve');
  assert.match(await diff.innerText(), /did not load .*reload/);
  assert.ok(await deny.isEnabled(), 'Deny needs no diff');
  await page.screenshot({ path: path.join(OUT, 'approvals-no-diff.png'), fullPage: true });

  // Folded without a loaded diff: the card says to show it first.
  const toggle = card.locator('button.fold-toggle');
  await toggle.click();
  assert.ok(await diff.isHidden());
  assert.ok(await approve.isDisabled());
  assert.equal(await hint.innerText(), 'read the diff first: show it to approve');

  // The endpoint answers again and the operator opens the diff: Approve is on, and the approve names that diff.
  failing = false;
  await toggle.click();
  await until(async () => /\+# read before approving/.test(await diff.innerText()), 'the diff to load');
  assert.ok(await approve.isEnabled());
  assert.equal(await approve.getAttribute('title'), '');
  assert.ok(await hint.isHidden());
  const diffId = (await hive.cli('approvals', 'show', id)).match(/--seen ([0-9a-f]{64})/)?.[1];
  assert.ok(diffId, 'approvals show names the diff id');
  await approve.click();
  await approve.click();
  await until(async () => (await status(id)) === 'approved', 'the approval to be deployed');
  assert.equal(posted.length, 1);
  assert.deepEqual(JSON.parse(posted[0]), { seen: diffId }, 'the approve names the diff shown');
  page.off('request', onRequest);
  await page.unroute('**/api/approvals/*/diff');
  await card.waitFor({ state: 'detached' });
  assert.deepEqual(refused, [], 'no content security policy violation');
});
