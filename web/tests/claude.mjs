// Test helpers (not a test file itself) for hives whose agents run the real
// claude CLI against hive-model-sim, the scripted model server: the
// harnesses from target/debug, claude from tools/claude (or HIVE_CLAUDE_BIN).

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BIN, REPO, makeHive, until } from './hive.mjs';

/** Where the workspace's binaries are (hive-ag3nt, hive-model-sim beside hive-c0re). */
export const BIN_DIR = path.dirname(BIN);
export const SIM_BIN = path.join(BIN_DIR, 'hive-model-sim');
export const CLAUDE_BIN = process.env.HIVE_CLAUDE_BIN ?? path.join(REPO, 'tools/claude/node_modules/.bin/claude');

/** Why a claude-driven test cannot run here, or null when it can. */
export function missing() {
  if (!fs.existsSync(CLAUDE_BIN)) return `no claude CLI at ${CLAUDE_BIN} (run scripts/deps.sh or set HIVE_CLAUDE_BIN)`;
  for (const b of ['hive-c0re', 'hive-ag3nt', 'hive-model-sim']) {
    if (!fs.existsSync(path.join(BIN_DIR, b))) return `${b} is not built in ${BIN_DIR} (cargo build --workspace)`;
  }
  return null;
}

/** The model server's built-in script (every message answered with `send`), to extend. */
export async function defaultScript() {
  const out = [];
  const p = spawn(SIM_BIN, ['--print-default-script'], { stdio: ['ignore', 'pipe', 'inherit'] });
  p.stdout.on('data', (d) => out.push(d));
  await new Promise((resolve, reject) => p.on('exit', (c) => (c === 0 ? resolve() : reject(new Error(`hive-model-sim --print-default-script exited ${c}`)))));
  return Buffer.concat(out).toString();
}

/** hive-model-sim on a loopback port, with `script` (TOML) or its built-in one. */
export async function startSim(script) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hive-sim-'));
  const portFile = path.join(dir, 'addr');
  const tokenFile = path.join(dir, 'token');
  const args = ['--listen', '127.0.0.1:0', '--port-file', portFile, '--control-token-file', tokenFile];
  if (script) {
    fs.writeFileSync(path.join(dir, 'script.toml'), script);
    args.push('--script', path.join(dir, 'script.toml'));
  }
  const proc = spawn(SIM_BIN, args, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, RUST_LOG: 'warn' } });
  let log = '';
  proc.stderr.on('data', (d) => { log += d; });
  const addr = await until(() => {
    if (proc.exitCode !== null) throw new Error(`hive-model-sim exited ${proc.exitCode}: ${log}`);
    return fs.existsSync(portFile) && fs.readFileSync(portFile, 'utf8').trim();
  }, 'hive-model-sim to listen');
  const url = `http://${addr}`;
  // The controls are not for the agents the sim serves: they carry the token (written before the port file).
  const headers = { 'x-sim-token': fs.readFileSync(tokenFile, 'utf8').trim() };
  return {
    url,
    /** Every /v1/messages request so far, oldest first (model, step, user_text, ...). */
    requests: () => fetch(`${url}/_sim/requests`, { headers }).then((r) => r.json()),
    /** Replaces the script. */
    async setScript(toml) {
      const r = await fetch(`${url}/_sim/script`, { method: 'POST', body: toml, headers });
      if (!r.ok) throw new Error(`the sim refused the script: ${await r.text()}`);
    },
    async stop() {
      if (proc.exitCode === null) {
        const gone = new Promise((resolve) => proc.once('exit', resolve));
        proc.kill('SIGTERM');
        await gone;
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A hive whose agents run the real harness and claude against `sim`. */
export function claudeHive(sim) {
  return makeHive({
    binDir: BIN_DIR,
    env: {
      HIVE_CLAUDE_BIN: CLAUDE_BIN,
      ANTHROPIC_BASE_URL: sim.url,
      ANTHROPIC_API_KEY: 'sk-test',
      CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1',
      DISABLE_TELEMETRY: '1',
    },
  });
}

/** GET a dashboard JSON route. */
export async function getJson(hive, route) {
  const r = await hive.fetch(route);
  if (!r.ok) throw new Error(`GET ${route}: ${r.status} ${await r.text()}`);
  return r.json();
}
