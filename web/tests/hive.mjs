// Test helpers (not a test file itself): a real hive-c0re in a temp dir,
// its CLI, agent sockets to play an agent's harness, and headless chromium.

import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { chromium } from 'playwright-core';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const BIN = process.env.HIVE_C0RE_BIN ?? path.join(REPO, 'target/debug/hive-c0re');
export const OUT = path.join(REPO, 'test-output');
const run = promisify(execFile);

/** Fails early, with what to do, when the binary or the front end is not built. */
export function requireBuilt() {
  if (!fs.existsSync(BIN)) throw new Error(`${BIN} is missing: run cargo build -p hive-c0re first`);
  if (!fs.existsSync(path.join(REPO, 'web/dist/hive.html'))) throw new Error('web/dist is missing: run npm ci && npm run build in web/, then cargo build -p hive-c0re (it embeds web/dist)');
}

/** The login link `hive-c0re urls` prints (`cli` runs a hive-c0re verb). */
/**
 * Opens a login link in `page` as the operator does: its landing page keeps
 * the login's page key and goes on to the page; resolves once it is there.
 */
export async function openLoginLink(page, link) {
  await page.goto(link);
  await page.waitForURL((u) => !u.searchParams.has('login'));
  await page.waitForLoadState();
}

export async function loginLink(cli) {
  const link = (await cli('urls')).match(/^log in:\s+(\S+)/m)?.[1];
  if (!link) throw new Error('hive-c0re urls printed no login link');
  return link;
}

/** A TCP port nobody listens on right now. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/**
 * A hive in a fresh temp dir. Agents run a stand-in harness that only sleeps,
 * so nothing here needs claude: the test plays the harness itself through
 * each agent's socket (see `agentSocket`). `binDir` (real harnesses) and
 * `env` (e.g. claude's model server) change that; see claude.mjs.
 */
export async function makeHive({ binDir, env: extra = {} } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hive-dash-'));
  // A root daemon runs agents as their own uids: they must pass through to their dirs.
  fs.chmodSync(dir, 0o711);
  let bin = binDir;
  if (!bin) {
    bin = path.join(dir, 'bin');
    fs.mkdirSync(bin);
    for (const harness of ['hive-ag3nt', 'hive-m1nd']) {
      fs.writeFileSync(path.join(bin, harness), '#!/bin/sh\nexec sleep 100000\n', { mode: 0o755 });
    }
  }
  const port = await freePort();
  const env = {
    ...process.env,
    HIVE_STATE_DIR: path.join(dir, 'state'),
    HIVE_RUN_DIR: path.join(dir, 'run'),
    HIVE_BIN_DIR: bin,
    HIVE_CONFIG: '/dev/null', // this host's /etc/hyperhive/hive.toml is not the test's
    HIVE_CLAUDE_BIN: '/bin/false',
    RUST_LOG: process.env.RUST_LOG ?? 'warn',
  };
  for (const k of ['HIVE_DASHBOARD_TOKEN', 'ANTHROPIC_API_KEY', 'ANTHROPIC_BASE_URL', 'CLAUDE_CODE_OAUTH_TOKEN']) delete env[k];
  Object.assign(env, extra);
  const hive = {
    dir,
    env,
    url: `http://127.0.0.1:${port}`,
    proc: null,
    log: '',
    /** The dashboard's token, from the state dir as a script's operator reads it (for requests made by hand). */
    token: null,
    /** Starts (or restarts) `hive-c0re serve` and waits until the dashboard answers. */
    async start() {
      const proc = spawn(BIN, ['serve', '--runtime', 'process', '--no-manager', '--dashboard', `127.0.0.1:${port}`], { env, stdio: ['ignore', 'pipe', 'pipe'] });
      proc.stdout.on('data', (d) => { hive.log += d; });
      proc.stderr.on('data', (d) => { hive.log += d; });
      hive.proc = proc;
      await until(async () => {
        if (proc.exitCode !== null) throw new Error(`hive-c0re serve exited ${proc.exitCode}:\n${hive.log}`);
        // Not logged in, it answers 401: enough to know it is up.
        return fetch(`${hive.url}/api/agents`).then((r) => r.status === 401, () => false);
      }, 'the dashboard to answer', 15000);
      hive.token = fs.readFileSync(path.join(env.HIVE_STATE_DIR, 'dashboard.token'), 'utf8').trim();
    },
    /** The login link `hive-c0re urls` prints. */
    loginLink: () => loginLink(hive.cli),
    /** Logs a page's browser in the way the operator does: opening a new login link; lands on the hive page. */
    async logIn(page) {
      await openLoginLink(page, await hive.loginLink());
    },
    /** fetch() with the token in the X-Hive-Token header, as a script would. */
    fetch(p, init = {}) {
      return fetch(`${hive.url}${p}`, { ...init, headers: { 'X-Hive-Token': hive.token, ...init.headers } });
    },
    /** SIGTERM and wait for the daemon to go. */
    async stop() {
      const proc = hive.proc;
      if (!proc || proc.exitCode !== null) return;
      const gone = new Promise((resolve) => proc.once('exit', resolve));
      proc.kill('SIGTERM');
      await Promise.race([gone, sleep(10000).then(() => proc.kill('SIGKILL'))]);
      await gone;
    },
    /** Runs a hive-c0re verb; returns stdout. */
    async cli(...args) {
      const { stdout } = await run(BIN, args, { env });
      return stdout;
    },
    /** Runs a hive-c0re verb with `input` on its stdin (`secret set`); returns stdout. */
    async cliWithInput(input, ...args) {
      const child = execFile(BIN, args, { env });
      const done = new Promise((resolve, reject) => {
        let out = '';
        child.stdout.on('data', (d) => { out += d; });
        child.on('error', reject);
        child.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`hive-c0re ${args.join(' ')} exited ${code}`))));
      });
      child.stdin.end(input);
      return done;
    },
    /** `status --json`, by agent name. */
    async status() {
      const lines = (await hive.cli('status', '--json')).trim().split('\n').filter(Boolean);
      return Object.fromEntries(lines.map((l) => JSON.parse(l)).map((r) => [r.name, r]));
    },
    socketPath: (name) => path.join(env.HIVE_RUN_DIR, 'agents', name, 'agent.sock'),
    cleanup() {
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
  return hive;
}

/** A connection to an agent's socket: `call(request)` answers the response object. */
export async function agentSocket(hive, name) {
  await until(() => fs.existsSync(hive.socketPath(name)), `${name}'s agent.sock`);
  const sock = net.createConnection(hive.socketPath(name));
  await new Promise((resolve, reject) => { sock.once('connect', resolve); sock.once('error', reject); });
  let buf = '';
  const waiting = [];
  sock.on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      waiting.shift()?.(JSON.parse(line));
    }
  });
  return {
    call(req) {
      return new Promise((resolve) => {
        waiting.push(resolve);
        sock.write(`${JSON.stringify(req)}\n`);
      });
    },
    close: () => sock.destroy(),
  };
}

/**
 * Plays one turn of `name`'s harness on `sock`, as a harness does: a message
 * from the operator, claimed by `next_turn`, claude's events, then `turn_end`
 * (hive-c0re writes the `turn_end` event; an agent may not).
 */
export async function playTurn(hive, sock, name, n, tag = 'turn') {
  await hive.cli('send', name, `${tag} ${n}`);
  const got = await sock.call({ op: 'next_turn', wait_ms: 5000 });
  if (!got.ok || !got.messages?.length) throw new Error(`no turn for ${name}: ${JSON.stringify(got)}`);
  const logged = await sock.call({ op: 'events', items: turnEvents(n, tag) });
  if (!logged.ok) throw new Error(JSON.stringify(logged));
  const stats = { duration_ms: 1500 + n, exit_code: 0, exit_class: 'ok', tool_calls: { Bash: 1 }, messages_received: got.messages.length };
  const ended = await sock.call({ op: 'turn_end', stats, outcome: 'ack' });
  if (!ended.ok) throw new Error(JSON.stringify(ended));
}

/** One claude turn's worth of events, as a harness reports them. */
export function turnEvents(n, tag = 'turn') {
  return [
    { kind: 'turn_start', payload: { prompt: `[operator] ${tag} ${n}: please look at the failing test` } },
    { kind: 'stream', payload: { type: 'system', subtype: 'init', session_id: `session-${n}`, model: 'claude-haiku', tools: ['Bash', 'Read'] } },
    { kind: 'stream', payload: { type: 'assistant', message: { content: [{ type: 'text', text: `${tag} ${n}: looking at it` }, { type: 'tool_use', name: 'Bash', input: { command: `cargo test ${tag}-${n}` } }] } } },
    { kind: 'stream', payload: { type: 'user', message: { content: [{ type: 'tool_result', content: `${tag} ${n}: 1 failed`, is_error: true }] } } },
    { kind: 'stream', payload: { type: 'result', subtype: 'success', duration_ms: 1200 + n, num_turns: 2, session_id: `session-${n}` } },
  ];
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `check` until it is truthy (or throws its error after `ms`). */
export async function until(check, what, ms = 10000) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const v = await check();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ''}`);
    await sleep(100);
  }
}

/** Collects what the page's content security policy refused (chromium says so on the console). */
export function cspViolations(page) {
  const seen = [];
  page.on('console', (m) => {
    if (/Content Security Policy/i.test(m.text())) seen.push(m.text());
  });
  return seen;
}

/** Headless Debian chromium. */
export function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_BIN ?? '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-quic'],
  });
}
