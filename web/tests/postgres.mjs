// Test helper (not a test file itself): a throwaway PostgreSQL cluster for a
// hive on PostgreSQL, as the Rust tests' TestCluster makes one: initdb as the
// `postgres` user in a temp dir, the server on a free loopback port, removed
// after. Trust authentication: it listens on 127.0.0.1 only, for one test.

import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { freePort, until } from './hive.mjs';

const run = promisify(execFile);

/** PostgreSQL's bin dir from Debian's package, or null when it is not installed. */
function pgBin() {
  const root = '/usr/lib/postgresql';
  if (!fs.existsSync(root)) return null;
  const versions = fs.readdirSync(root).filter((v) => fs.existsSync(path.join(root, v, 'bin/initdb'))).sort((a, b) => b - a);
  return versions.length ? path.join(root, versions[0], 'bin') : null;
}

/** Why no cluster can be started here (a sentence), or null when one can. */
export function missing() {
  if (!pgBin()) return 'PostgreSQL is not installed (scripts/deps.sh installs it)';
  if (process.getuid?.() !== 0) return 'starting a PostgreSQL cluster as the postgres user needs root';
  return null;
}

/**
 * Starts a cluster with one database, `hive`. Returns {url, sql(text), stop()}:
 * `url` is what `serve --database` takes, `sql` runs statements as the superuser.
 */
export async function startCluster() {
  const bin = pgBin();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hive-pg-'));
  const uid = Number((await run('id', ['-u', 'postgres'])).stdout.trim());
  const gid = Number((await run('id', ['-g', 'postgres'])).stdout.trim());
  fs.chownSync(dir, uid, gid);
  const data = path.join(dir, 'data');
  const asPostgres = { uid, gid, cwd: dir };
  await run(path.join(bin, 'initdb'), ['-D', data, '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--locale=C', '--no-sync'], asPostgres);
  const port = await freePort();
  const server = spawn(path.join(bin, 'postgres'), [
    '-D', data, '-c', `port=${port}`, '-c', 'listen_addresses=127.0.0.1', '-c', `unix_socket_directories=${dir}`,
    '-c', 'fsync=off', '-c', 'synchronous_commit=off',
  ], { ...asPostgres, stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  server.stderr.on('data', (d) => { log += d; });
  const sql = async (text, db = 'postgres') => {
    const { stdout } = await run(path.join(bin, 'psql'), ['-h', dir, '-p', String(port), '-U', 'postgres', '-d', db, '-v', 'ON_ERROR_STOP=1', '-Atc', text], asPostgres);
    return stdout;
  };
  await until(async () => {
    if (server.exitCode !== null) throw new Error(`postgres exited ${server.exitCode}:\n${log}`);
    return sql('SELECT 1').then(() => true, () => false);
  }, 'the PostgreSQL server to answer', 20000);
  await sql('CREATE DATABASE hive');
  return {
    url: `postgres://postgres@127.0.0.1:${port}/hive?sslmode=disable`,
    sql,
    async stop() {
      if (server.exitCode === null) {
        const gone = new Promise((resolve) => server.once('exit', resolve));
        server.kill('SIGINT'); // fast shutdown
        await gone;
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
