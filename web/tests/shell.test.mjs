// Browser test of the agent page's shell: a real hive-c0re (the nspawn runtime
// when root with systemd-nspawn, else the process runtime) whose agents run a
// stand-in harness that only sleeps, headless chromium, the xterm.js terminal
// on its WebSocket to a PTY in alice's container.
//
// Run: cargo build -p hive-c0re && (cd web && npm ci && npm run build && node --test tests/shell.test.mjs)

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { BIN, OUT, cspViolations, freePort, launchBrowser, loginLink, openLoginLink, requireBuilt, sleep, until } from './hive.mjs';

const CAN_NSPAWN = process.getuid() === 0 && ['/usr/bin/systemd-nspawn', '/bin/systemd-nspawn'].some((p) => fs.existsSync(p));
// HIVE_TEST_RUNTIME=process tries the process runtime where nspawn would run.
const RUNTIME = process.env.HIVE_TEST_RUNTIME ?? (CAN_NSPAWN ? 'nspawn' : 'process');
const NSPAWN = RUNTIME === 'nspawn';
// Root of the container under nspawn; the daemon's own user under the process runtime.
const EXPECTED_UID = NSPAWN ? 0 : process.getuid();

let hive;
let browser;

/** The dashboard token this test's hive uses. */
const TOKEN = 'shell-test-token';

/** A page logged in to the dashboard (a new login link sets the cookie). */
async function loggedInPage(opts) {
  const page = await browser.newPage(opts);
  await openLoginLink(page, await loginLink(hive.cli));
  return page;
}

/** `hive-c0re serve --runtime RUNTIME` in a temp dir, with alice running. */
async function startHive() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hive-shell-'));
  // A root daemon runs agents as their own uids: they must pass through to their dirs.
  fs.chmodSync(dir, 0o711);
  const bin = path.join(dir, 'bin');
  fs.mkdirSync(bin);
  for (const harness of ['hive-ag3nt', 'hive-m1nd']) {
    fs.writeFileSync(path.join(bin, harness), '#!/bin/sh\nexec sleep 100000\n', { mode: 0o755 });
  }
  const port = await freePort();
  const env = { ...process.env, HIVE_STATE_DIR: path.join(dir, 'state'), HIVE_RUN_DIR: path.join(dir, 'run'), HIVE_BIN_DIR: bin, HIVE_CLAUDE_BIN: '/bin/false', RUST_LOG: process.env.RUST_LOG ?? 'warn' };
  for (const k of ['ANTHROPIC_API_KEY', 'ANTHROPIC_BASE_URL', 'CLAUDE_CODE_OAUTH_TOKEN']) delete env[k];
  // A fixed token (HIVE_DASHBOARD_TOKEN) instead of the one hive-c0re keeps in its state dir.
  env.HIVE_DASHBOARD_TOKEN = TOKEN;
  const h = { dir, env, port, url: `http://127.0.0.1:${port}`, log: '' };
  h.proc = spawn(BIN, ['serve', '--runtime', RUNTIME, '--no-manager', '--dashboard', `127.0.0.1:${port}`], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  h.proc.stdout.on('data', (d) => { h.log += d; });
  h.proc.stderr.on('data', (d) => { h.log += d; });
  h.cli = (...args) => new Promise((resolve, reject) => {
    const p = spawn(BIN, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d) => { out += d; });
    p.stderr.on('data', (d) => { out += d; });
    p.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`hive-c0re ${args.join(' ')}: ${out}`))));
  });
  await until(async () => {
    if (h.proc.exitCode !== null) throw new Error(`hive-c0re serve exited ${h.proc.exitCode}:\n${h.log}`);
    return fetch(`${h.url}/api/agents`, { headers: { 'x-hive-token': TOKEN } }).then((r) => r.ok, () => false);
  }, 'the dashboard to answer', 15000);
  await h.cli('spawn', 'alice');
  await until(async () => JSON.parse((await h.cli('status', '--json')).trim()).running, 'alice to run', 30000);
  return h;
}

before(async () => {
  requireBuilt();
  fs.mkdirSync(OUT, { recursive: true });
  console.log(`# runtime: ${RUNTIME}${CAN_NSPAWN ? '' : ' (the nspawn runtime needs root and systemd-nspawn)'}`);
  hive = await startHive();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  if (hive?.proc && hive.proc.exitCode === null) {
    const gone = new Promise((resolve) => hive.proc.once('exit', resolve));
    hive.proc.kill('SIGTERM');
    await Promise.race([gone, sleep(10000).then(() => hive.proc.kill('SIGKILL'))]);
  }
  if (process.env.KEEP_HIVE) console.log(`hive left in ${hive?.dir}`);
  else if (hive) fs.rmSync(hive.dir, { recursive: true, force: true });
});

/** Host pids of live processes whose argv is exactly `argv`. */
function pidsRunning(argv) {
  const want = `${argv.join('\0')}\0`;
  return fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p)).map(Number).filter((pid) => {
    try {
      return fs.readFileSync(`/proc/${pid}/cmdline`, 'latin1') === want && !/^State:\s+Z/m.test(fs.readFileSync(`/proc/${pid}/status`, 'latin1'));
    } catch {
      return false;
    }
  });
}

function statusField(pid, key) {
  try {
    return fs.readFileSync(`/proc/${pid}/status`, 'latin1').match(new RegExp(`^${key}:\\s*(.*)$`, 'm'))?.[1];
  } catch {
    return undefined;
  }
}

const alive = (pid) => { const s = statusField(pid, 'State'); return s !== undefined && !s.startsWith('Z'); };
const hostUid = (pid) => Number(statusField(pid, 'Uid').split(/\s+/)[0]);
const parentOf = (pid) => Number(statusField(pid, 'PPid'));

/** The lines xterm.js shows (its DOM renderer), spaces normalised. */
async function screen(page) {
  const text = await page.locator('#shell-term .xterm-rows').innerText();
  return text.replace(/\u00a0/g, ' ').split('\n').map((l) => l.trimEnd());
}

/** Opens alice's page and its shell; resolves once the prompt shows. */
async function openShell(page) {
  await page.goto(`${hive.url}/agents/alice`);
  await page.click('#shell-open');
  await until(async () => (await screen(page)).some((l) => /[#$]$/.test(l)), 'the shell prompt', 20000);
  await page.click('#shell-term');
}

async function typeLine(page, line) {
  await page.keyboard.type(line);
  await page.keyboard.press('Enter');
}

test(`the agent page's shell answers id -u with ${EXPECTED_UID} (${RUNTIME} runtime)`, async () => {
  const page = await loggedInPage({ viewport: { width: 1400, height: 1000 } });
  page.on('pageerror', (e) => console.error('page error:', e.message));
  const refused = cspViolations(page);
  const started = Date.now();
  await openShell(page);
  await typeLine(page, 'id -u');
  await until(async () => {
    const lines = await screen(page);
    return lines.some((l, i) => l.endsWith('id -u') && lines[i + 1] === String(EXPECTED_UID));
  }, 'id -u to answer', 10000);
  console.log(`# open page → shell → id -u answered in ${Date.now() - started} ms`);
  assert.equal(await page.locator('.shell-status').innerText(), 'connected · root in h-alice');
  assert.deepEqual(refused, [], 'xterm.js runs under the content security policy');
  if (NSPAWN) {
    // The same shell seen from the host: an unprivileged uid of alice's range.
    await typeLine(page, 'sleep 4242.51');
    const [pid] = await until(() => { const p = pidsRunning(['sleep', '4242.51']); return p.length && p; }, 'the sleep on the host');
    const shellPid = parentOf(pid);
    for (const p of [pid, shellPid]) {
      const uid = hostUid(p);
      assert.ok(uid >= 65536, `process ${p} of the shell runs as host uid ${uid}`);
    }
    console.log(`# shell pid ${shellPid} on the host runs as uid ${hostUid(shellPid)}; inside, id -u is 0`);
    await page.keyboard.press('Control+C');
    await until(() => !alive(pid), 'Ctrl-C to stop the sleep');
  }
  await page.screenshot({ path: path.join(OUT, 'shell.png'), fullPage: true });
  await typeLine(page, 'exit 3');
  await until(async () => (await screen(page)).some((l) => l.includes('[shell exited with code 3]')), 'the exit line');
  assert.equal(await page.locator('.shell-status').innerText(), 'exited with code 3');
  assert.equal((await page.locator('#shell-open').innerText()).trim(), 'Open again');
  await page.close();
});

test('closing the page ends every process of its shell', async () => {
  const page = await loggedInPage({ viewport: { width: 1400, height: 1000 } });
  await openShell(page);
  await typeLine(page, 'sleep 4242.52 & sleep 4242.53');
  const [bg] = await until(() => { const p = pidsRunning(['sleep', '4242.52']); return p.length && p; }, 'the background sleep');
  const [fg] = await until(() => { const p = pidsRunning(['sleep', '4242.53']); return p.length && p; }, 'the foreground sleep');
  const session = [bg, fg, parentOf(bg)];
  await page.close();
  await until(() => session.every((p) => !alive(p)), `the shell's processes ${session} to end`, 10000);
});

test('resizing the page resizes the PTY', async () => {
  const page = await loggedInPage({ viewport: { width: 1400, height: 1000 } });
  await openShell(page);
  await typeLine(page, 'stty size');
  const first = await until(async () => { const l = await screen(page); const i = l.findIndex((x) => x.endsWith('stty size')); return i >= 0 && /^\d+ \d+$/.test(l[i + 1] ?? '') && l[i + 1]; }, 'stty size');
  await page.setViewportSize({ width: 900, height: 1000 });
  await page.click('#shell-term');
  await typeLine(page, 'stty size');
  const second = await until(async () => { const v = (await screen(page)).filter((x) => /^\d+ \d+$/.test(x)).at(-1); return v !== first && v; }, 'a new stty size');
  assert.ok(Number(second.split(' ')[1]) < Number(first.split(' ')[1]), `${second} is narrower than ${first}`);
  await page.close();
});

test('a link the agent prints opens only as a web page, after saying where it goes, in a tab of its own', async () => {
  const page = await loggedInPage({ viewport: { width: 1400, height: 1000 } });
  const refused = cspViolations(page);
  const dialogs = [];
  let accept = false;
  page.on('dialog', (d) => { dialogs.push(d.message()); accept ? d.accept() : d.dismiss(); });
  const popups = [];
  page.context().on('page', (p) => popups.push(p));
  await openShell(page);
  // OSC 8 links, as a file the agent wrote would hold them (the web one on loopback: nothing leaves the host).
  await typeLine(page, String.raw`printf '\033]8;;javascript:alert(1)\033\\JSLINK\033]8;;\033\\\n\033]8;;http://127.0.0.1:9/x\033\\WEBLINK\033]8;;\033\\\n\033]8;;http://github.com@127.0.0.1:9/y\033\\ATLINK\033]8;;\033\\\n'`);
  const cell = (text) => page.locator('#shell-term .xterm-rows span', { hasText: text }).last();
  // Clicked where it shows, clear of the page's sticky header.
  const click = async (text) => {
    await cell(text).evaluate((el) => el.scrollIntoView({ block: 'center' }));
    const box = await cell(text).boundingBox();
    await page.mouse.click(box.x + box.width / 2, box.y + box.height / 2);
  };
  await cell('ATLINK').waitFor();
  await click('JSLINK');
  await sleep(500);
  assert.deepEqual(dialogs, [], 'a javascript: link asks nothing and runs nothing');
  assert.equal(popups.length, 0, 'a javascript: link opens nothing');
  // A name before an @ reads as the host: such a link opens nothing.
  await click('ATLINK');
  await sleep(500);
  assert.deepEqual(dialogs, []);
  assert.equal(popups.length, 0, 'a link with a user name opens nothing');
  // A web link says where it goes first (the words shown are the agent's): declined, nothing opens.
  await click('WEBLINK');
  await until(() => dialogs.length === 1, 'the link to ask first');
  assert.match(dialogs[0], /host: 127\.0\.0\.1:9\nhttp:\/\/127\.0\.0\.1:9\/x/);
  await sleep(500);
  assert.equal(popups.length, 0, 'a declined link opens nothing');
  accept = true;
  await click('WEBLINK');
  await until(() => popups.length === 1, 'the web link to open a tab');
  await until(() => popups[0].url().startsWith('http://127.0.0.1:9/x') || popups[0].url().startsWith('chrome-error://'), 'the tab to go to the link');
  assert.equal(await popups[0].evaluate(() => window.opener).catch(() => null), null, 'the tab has no way back to the dashboard');
  assert.equal(dialogs.length, 2);
  assert.deepEqual(refused, []);
  await page.close();
});

/** A WebSocket handshake by hand; resolves with the HTTP status (101 when upgraded). */
function handshake({ token, origin, cookie, query = '' } = {}) {
  return new Promise((resolve, reject) => {
    const headers = { Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Version': '13', 'Sec-WebSocket-Key': crypto.randomBytes(16).toString('base64') };
    if (token) headers['X-Hive-Token'] = token;
    if (origin) headers.Origin = origin;
    if (cookie) headers.Cookie = cookie;
    const req = http.request({ host: '127.0.0.1', port: hive.port, path: `/api/agents/alice/shell${query}`, headers });
    req.on('upgrade', (res, socket) => { socket.destroy(); resolve(res.statusCode); });
    req.on('response', (res) => { res.resume(); resolve(res.statusCode); });
    req.on('error', reject);
    req.end();
  });
}

test('a shell needs the dashboard login (401) and the dashboard origin (403)', async () => {
  const own = hive.url;
  const cookie = `hive_login_${hive.port}`;
  // The login a browser gets for a login link.
  const loggedIn = await fetch(await loginLink(hive.cli), { redirect: 'manual' });
  assert.equal(loggedIn.status, 200);
  const login = loggedIn.headers.get('set-cookie').split(';')[0].split('=')[1];
  const key = (await loggedIn.text()).match(/<meta name="hive-page-key" content="([0-9a-f]+)">/)[1];
  assert.ok(!login.includes(TOKEN), 'the login holds no token');
  assert.equal(await handshake({ origin: own }), 401, 'no login');
  assert.equal(await handshake({ token: 'not-the-token', origin: own }), 401, 'a wrong token');
  assert.equal(await handshake({ origin: own, query: `?token=${TOKEN}` }), 401, 'the token in the address is no login');
  assert.equal(await handshake({ origin: own, query: `?login=${TOKEN}` }), 401, 'nor as a login code');
  assert.equal(await handshake({ token: TOKEN, origin: 'http://evil.example' }), 403, 'another origin');
  assert.equal(await handshake({ cookie: `${cookie}=wrong`, origin: own }), 401, 'a wrong cookie');
  assert.equal(await handshake({ cookie: `${cookie}=${TOKEN}`, origin: own }), 401, 'the token is no login');
  assert.equal(await handshake({ token: login, origin: own }), 401, 'a login is no token');
  assert.equal(await handshake({ cookie: `hive_login=${login}`, origin: own }), 401, "another dashboard's cookie");
  assert.equal(await handshake({ cookie: `${cookie}=${login}`, origin: own }), 401, 'the login cookie without its page key');
  assert.equal(await handshake({ cookie: `${cookie}=${login}`, origin: own, query: '?key=00' }), 401, 'a wrong page key');
  assert.equal(await handshake({ cookie: `${cookie}=${login}`, origin: own, query: `?key=${key}` }), 101, 'the login cookie and its page key');
  assert.equal(await handshake({ token: TOKEN }), 101, 'the token header (a script)');
  // The browser's own WebSocket from a page of the dashboard's origin that did not log in: refused before it opens.
  const stranger = await browser.newPage();
  const refused = await stranger.goto(`${hive.url}/agents/alice`);
  assert.equal(refused.status(), 401);
  assert.ok(!(await stranger.content()).includes(TOKEN), 'the login page does not show the token');
  const opened = await stranger.evaluate(() => new Promise((resolve) => {
    const ws = new WebSocket(`ws://${location.host}/api/agents/alice/shell`);
    ws.onopen = () => resolve(true);
    ws.onerror = () => resolve(false);
  }));
  assert.equal(opened, false);
  await stranger.close();
  const body = await fetch(`${hive.url}/api/agents/alice/shell`).then((r) => r.json().then((j) => [r.status, j.error]));
  assert.equal(body[0], 401);
  assert.match(body[1], /not logged in.*hive-c0re urls/);
  // A page that logged in opens its shell with the cookie and the page key
  // its login kept in this origin's storage; the cookie alone opens none.
  const page = await loggedInPage();
  await page.goto(`${hive.url}/agents/alice`);
  const opens = (withKey) => page.evaluate((withKey) => new Promise((resolve) => {
    const key = withKey ? `?key=${localStorage.getItem('hive-page-key')}` : '';
    const ws = new WebSocket(`ws://${location.host}/api/agents/alice/shell${key}`);
    ws.onopen = () => { ws.close(); resolve(true); };
    ws.onerror = () => resolve(false);
  }), withKey);
  assert.equal(await opens(true), true);
  assert.equal(await opens(false), false);
  await page.close();
});

// The attack a logout answers: someone else's browser (or a stolen login)
// holding a shell open. Logging every browser out ends it at once, with
// every process of it, and the page says why.
test('hive-c0re logout closes an open shell and its processes, and the page says so', async () => {
  const page = await loggedInPage({ viewport: { width: 1400, height: 1000 } });
  await openShell(page);
  await typeLine(page, 'sleep 4242.54');
  const [pid] = await until(() => { const p = pidsRunning(['sleep', '4242.54']); return p.length && p; }, 'the sleep');
  await hive.cli('logout');
  await until(() => !alive(pid), 'the shell\'s sleep to end', 10000);
  await until(async () => (await screen(page)).some((l) => l.includes('logged every browser out')), 'the logout in the terminal');
  // The live stream ended too: its reconnection is refused, and the page shows it is logged out.
  await until(async () => (await page.locator('#banner').innerText()).startsWith('Logged out:'), 'the logged-out banner', 15000);
  await page.close();
});

test('a stopped agent gets a sentence in the terminal', async () => {
  await hive.cli('kill', 'alice');
  const page = await loggedInPage({ viewport: { width: 1400, height: 1000 } });
  await page.goto(`${hive.url}/agents/alice`);
  await page.click('#shell-open');
  const sentence = 'alice is not running: start it with hive-c0re start alice';
  await until(async () => (await screen(page)).some((l) => l.includes(sentence)), 'the sentence');
  assert.equal(await page.locator('.shell-status').innerText(), sentence);
  await page.close();
  // Let the handshakes of the token test (101, then dropped) settle: no shell is left behind.
  await sleep(200);
});
