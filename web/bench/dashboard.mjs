// Dashboard API latency under load: `node bench/dashboard.mjs [--release] [--seconds N]`
// (from web/; `npm run bench`). Goal: p99 under 50 ms for every endpoint.
//
// Starts a real hive (hive-c0re serve, process runtime) whose three agents run
// the real claude against hive-model-sim, each sent an operator message every
// 200 ms for the whole run, so turns run all along. 50 SSE viewers follow
// /api/stream (hive page and agent pages, read in a worker thread so their
// traffic does not queue behind the measurements). Then, round-robin until
// each has 1000 samples or the time is up: GET /api/agents,
// GET /api/agents/alice/events?limit=200, GET /api/stats and POST a message
// (to a paused agent, so the samples do not pile work onto the turns).
// Latency is request start to the last body byte; only 127.0.0.1 is used.
//
// Binaries: target/debug by default, target/release with --release (build them
// first: cargo build --workspace [--release]; and npm run build).

import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';

const VIEWERS = 50;
const SAMPLES = 1000;
const SEND_EVERY_MS = 200;
const GOAL_P99_MS = 50;
const AGENTS = ['alice', 'bob', 'carol'];
const SINK = 'dave'; // paused: the measured sends queue here

if (isMainThread) await main();
else await viewers(workerData);

/** The worker: `n` SSE streams, read to the end; reports frames and bytes when asked. */
async function viewers({ url, token, n, agents }) {
  let frames = 0;
  let bytes = 0;
  let open = 0;
  const stop = new AbortController();
  const follow = async (i) => {
    const agent = i % 2 === 0 ? null : agents[i % agents.length];
    const r = await fetch(`${url}/api/stream${agent ? `?agent=${agent}` : ''}`, { signal: stop.signal, headers: { 'X-Hive-Token': token } });
    if (!r.ok) throw new Error(`viewer ${i}: ${r.status}`);
    open++;
    parentPort.postMessage({ open });
    const dec = new TextDecoder();
    for await (const chunk of r.body) {
      bytes += chunk.length;
      frames += (dec.decode(chunk, { stream: true }).match(/^event: /gm) ?? []).length;
    }
  };
  parentPort.on('message', (m) => {
    if (m === 'stop') {
      parentPort.postMessage({ frames, bytes, done: true });
      stop.abort();
      setTimeout(() => process.exit(0), 50);
    }
  });
  await Promise.allSettled(Array.from({ length: n }, (_, i) => follow(i).catch((e) => {
    if (e.name !== 'AbortError') parentPort.postMessage({ error: e.message });
  })));
}

async function main() {
  const args = process.argv.slice(2);
  const release = args.includes('--release');
  const seconds = Number(args[args.indexOf('--seconds') + 1]) || 50;
  const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
  process.env.HIVE_C0RE_BIN ??= path.join(repo, 'target', release ? 'release' : 'debug', 'hive-c0re');
  // The helpers read HIVE_C0RE_BIN when loaded.
  const { claudeHive, missing, startSim } = await import('../tests/claude.mjs');
  const { requireBuilt, until } = await import('../tests/hive.mjs');
  const why = missing();
  if (why) {
    console.log(`cannot run the dashboard benchmark: ${why}`);
    process.exit(2);
  }
  requireBuilt();
  const started = Date.now();
  const deadline = started + seconds * 1000;
  console.log(`binaries: ${path.dirname(process.env.HIVE_C0RE_BIN)}`);

  const sim = await startSim();
  const hive = await claudeHive(sim);
  let worker;
  let sending = true;
  try {
    await hive.start();
    for (const a of [...AGENTS, SINK]) await hive.cli('spawn', a);
    await hive.cli('pause', SINK);
    const { token } = hive;
    const get = (p) => hive.fetch(p);
    const post = (agent, body) => hive.fetch(`/api/agents/${agent}/messages`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ body }),
    });

    worker = new Worker(fileURLToPath(import.meta.url), { workerData: { url: hive.url, token, n: VIEWERS, agents: AGENTS } });
    let open = 0;
    worker.on('message', (m) => {
      if (m.open) open = m.open;
      if (m.error) console.error(`viewer error: ${m.error}`);
    });
    await until(() => open === VIEWERS, `${VIEWERS} SSE viewers`, 15000);

    // The load: every agent gets an operator message every 200 ms until the end.
    let loadSent = 0;
    const load = (async () => {
      for (let i = 0; sending; i++) {
        const t = Date.now();
        await Promise.all(AGENTS.map((a) => post(a, `load ${i}`).then((r) => { if (r.ok) loadSent++; return r.arrayBuffer(); })));
        await new Promise((r) => setTimeout(r, Math.max(0, SEND_EVERY_MS - (Date.now() - t))));
      }
    })();
    // Let the first turns start before measuring.
    await until(async () => {
      const rows = await (await get('/api/agents')).json();
      return rows.filter((r) => AGENTS.includes(r.name) && r.last_turn_at).length === AGENTS.length;
    }, 'every agent to finish a turn', 30000);

    const endpoints = [
      { name: 'GET /api/agents', run: () => get('/api/agents') },
      { name: 'GET /api/agents/alice/events?limit=200', run: () => get('/api/agents/alice/events?limit=200') },
      { name: 'GET /api/stats', run: () => get('/api/stats') },
      { name: `POST /api/agents/${SINK}/messages`, run: (i) => post(SINK, `sample ${i}`) },
    ];
    const times = endpoints.map(() => []);
    const sizes = endpoints.map(() => 0);
    const measureStart = Date.now();
    for (let i = 0; i < SAMPLES && Date.now() < deadline - 3000; i++) {
      for (const [k, e] of endpoints.entries()) {
        const t = performance.now();
        const r = await e.run(i);
        const body = await r.arrayBuffer();
        times[k].push(performance.now() - t);
        sizes[k] = body.byteLength;
        if (!r.ok) throw new Error(`${e.name}: ${r.status} ${Buffer.from(body).toString()}`);
      }
    }
    const measured = (Date.now() - measureStart) / 1000;
    sending = false;
    await load;

    const stats = await (await get('/api/stats')).json();
    const seen = await new Promise((resolve) => {
      worker.on('message', (m) => m.done && resolve(m));
      worker.postMessage('stop');
    });
    const turns = stats.agents.filter((a) => AGENTS.includes(a.agent)).reduce((n, a) => n + a.turns, 0);
    console.log(`\n${VIEWERS} SSE viewers read ${seen.frames} frames (${(seen.bytes / 1e6).toFixed(1)} MB); ` +
      `${AGENTS.length} agents ran ${turns} claude turns on ${loadSent} load messages; measured for ${measured.toFixed(1)} s\n`);
    const q = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)];
    const w = Math.max(...endpoints.map((e) => e.name.length));
    console.log(`${'endpoint'.padEnd(w)}  samples    p50 ms    p99 ms    max ms   body`);
    let ok = true;
    for (const [k, e] of endpoints.entries()) {
      const s = [...times[k]].sort((a, b) => a - b);
      const p99 = q(s, 0.99);
      ok &&= p99 < GOAL_P99_MS;
      console.log(`${e.name.padEnd(w)}  ${String(s.length).padStart(7)}  ${q(s, 0.5).toFixed(2).padStart(8)}  ${p99.toFixed(2).padStart(8)}  ${s.at(-1).toFixed(2).padStart(8)}   ${(sizes[k] / 1024).toFixed(1)} KB${p99 < GOAL_P99_MS ? '' : '   <- over the goal'}`);
    }
    console.log(`\ngoal: p99 < ${GOAL_P99_MS} ms on every endpoint: ${ok ? 'met' : 'MISSED'} (total ${((Date.now() - started) / 1000).toFixed(1)} s)`);
  } finally {
    sending = false;
    await worker?.terminate();
    await hive.stop();
    await sim.stop();
    hive.cleanup();
  }
}
