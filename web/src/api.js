// The dashboard's server API: JSON calls and the one live stream
// (server-sent events) with reconnects. The page never sees the dashboard's
// token: the browser sends the HttpOnly login cookie with every request, and
// the page adds its login's page key, which the login link's landing page
// kept in this origin's storage (see login.js).

const enc = encodeURIComponent;

/** Where the login's page key is kept (localStorage of this origin). */
export const PAGE_KEY = 'hive-page-key';

/** This page's login key, for the API, the live stream and the shell. */
export function pageKey() {
  return localStorage.getItem(PAGE_KEY) ?? '';
}

/** A refusal or failure, carrying the server's sentence. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

const sessionListeners = [];
let loggedIn = true;

/**
 * `fn(sentence)` runs when the server answers that this browser is not logged
 * in (the sentence says why and how to log in again); `fn(null)` when a
 * request goes through again after that.
 */
export function onSession(fn) {
  sessionListeners.push(fn);
}

function sessionIs(ok, sentence) {
  if (ok === loggedIn) return;
  loggedIn = ok;
  for (const fn of sessionListeners) fn(ok ? null : sentence);
}

async function request(method, path, body) {
  const init = { method, headers: { 'X-Hive-Key': pageKey() }, credentials: 'same-origin' };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch {
    throw new ApiError(0, 'hive-c0re is not answering: is it running?');
  }
  const text = await resp.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (resp.status === 401) sessionIs(false, data?.error ?? 'this browser is not logged in to the dashboard');
  else sessionIs(true);
  if (!resp.ok) throw new ApiError(resp.status, data?.error ?? `${resp.status} ${resp.statusText}`);
  return data;
}

const get = (path) => request('GET', path);
const post = (path, body = {}) => request('POST', path, body);
const agentPath = (name, rest = '') => `/api/agents/${enc(name)}${rest}`;

/** The last send that failed, with its key: {name, body, key}, or null. */
let unsent = null;

/** A fresh send key (getRandomValues, as randomUUID needs https). */
function newKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

export const api = {
  agents: () => get('/api/agents'),
  /** Everything that waits on the operator (NeedsYou). */
  needsYou: () => get('/api/needs_you'),
  /** A page of the hive-wide feed (Feed): {limit} or {before, limit}. */
  feed: (query) => get(`/api/feed?${new URLSearchParams(query)}`),
  /** The hive-wide model API backoff, or null. */
  backoff: () => get('/api/backoff'),
  agent: (name) => get(agentPath(name)),
  /** History, oldest first: {limit}, {before, limit} or {since, limit}. */
  events: (name, query) => get(agentPath(name, `/events?${new URLSearchParams(query)}`)),
  messages: (name, limit = 20) => get(agentPath(name, `/messages?limit=${limit}`)),
  operatorMessages: (limit = 50) => get(`/api/operator/messages?limit=${limit}`),
  model: (name) => get(agentPath(name, '/model')),
  /** A model name, or null to go back to the configured one. */
  setModel: (name, model) => post(agentPath(name, '/model'), { model }),
  /**
   * A message from the operator, under a key of its own; the same text sent
   * to the same agent again after a failure reuses the failed try's key, so
   * a try whose answer was lost (the database out of reach) is stored once.
   */
  send: async (name, body) => {
    const key = unsent?.name === name && unsent.body === body ? unsent.key : newKey();
    try {
      const r = await post(agentPath(name, '/messages'), { body, key });
      unsent = null;
      return r;
    } catch (e) {
      unsent = { name, body, key };
      throw e;
    }
  },
  /** Today's budget: {usd?, tokens?} new limits, or {reset: true} to lift it until 00:00 UTC. */
  setBudget: (name, body) => post(agentPath(name, '/budget'), body),
  /** start, stop, kill, restart, destroy, pause, resume, cancel, compact, compact-notes. */
  act: (name, action) => post(agentPath(name, `/${action}`)),
  /** Every scheduled prompt, soonest first. */
  schedules: () => get('/api/schedules'),
  /** `when`: 30s, an RFC 3339 time, every:15m or cron:EXPR. */
  addSchedule: (name, when, text) => post(agentPath(name, '/schedules'), { when, text }),
  removeSchedule: (id) => post(`/api/schedules/${id}/delete`),
  /** Every secret's name, scope (`agent`, absent when hive-wide) and time set; never a value. */
  secrets: () => get('/api/secrets'),
  approvals: () => get('/api/approvals'),
  diff: (id) => get(`/api/approvals/${id}/diff`),
  /** `seen`: the `diff_id` of the diff the card shows; refused (409) when the diff changed since. */
  approve: (id, seen) => post(`/api/approvals/${id}/approve`, seen ? { seen } : {}),
  deny: (id, note) => post(`/api/approvals/${id}/deny`, note ? { note } : {}),
  questions: () => get('/api/questions'),
  answer: (id, answer) => post(`/api/questions/${id}/answer`, { answer }),
  cancelQuestion: (id) => post(`/api/questions/${id}/cancel`),
  ping: () => post('/api/ping'),
  /** {notifications (newest first), unread}. */
  notifications: () => get('/api/notifications?limit=30'),
  /** {id} or {all: true}; answers {unread}. */
  readNotifications: (body) => post('/api/notifications/read', body),
  /** Each webhook's queue: name, format, target, pending, attempts, last_error, last_ok. */
  webhooks: () => get('/api/webhooks'),
  /** {alarm}: the free-space alarm (SpaceAlarm), or null while space is fine. */
  space: () => get('/api/space'),
  /** {alarm}: the database alarm (DatabaseAlarm) while this node cannot reach the hive's database, or null. */
  database: () => get('/api/database'),
  /** Telemetry (StatsSummary) of one agent, or of all without a name; `since` e.g. '1h'. */
  stats: (name, since = '1h') => get(`/api/stats?${new URLSearchParams(name ? { agent: name, since } : { since })}`),
};

// How many frames of each name have arrived (see `snapshot`).
const framesSeen = new Map();

/**
 * Fetches with `get`, and again when a live frame named in `frames` arrived
 * while it was in flight: a snapshot read before the server sent that frame
 * is older than it and would undo it (a card that arrived, then vanished).
 * After three tries in a busy hive it answers the last; later frames mend it.
 */
export async function snapshot(frames, get) {
  const seen = () => frames.reduce((n, f) => n + (framesSeen.get(f) ?? 0), 0);
  for (let tries = 1; ; tries++) {
    const before = seen();
    const value = await get();
    if (seen() === before || tries === 3) return value;
  }
}

/**
 * Follows `/api/stream` (the hive's, or one agent's). `handlers` maps frame
 * names to functions of the parsed data; `hello(data, first)` runs on every
 * (re)connect, after which the page (re)fetches what it shows. `onConn`
 * hears 'live' and 'reconnecting'. When the stream is refused, a ping finds
 * out whether the login is gone (see `onSession`).
 */
export function live(agent, handlers, onConn) {
  const path = agent ? `/api/stream?agent=${enc(agent)}&` : '/api/stream?';
  let first = true;
  let delay = 1000;
  const connect = () => {
    // An EventSource sends no header of ours: the key goes in the query.
    const es = new EventSource(`${path}key=${enc(pageKey())}`);
    es.addEventListener('hello', (e) => {
      delay = 1000;
      onConn('live');
      handlers.hello?.(JSON.parse(e.data), first);
      first = false;
    });
    for (const [name, fn] of Object.entries(handlers)) {
      if (name === 'hello') continue;
      es.addEventListener(name, (e) => {
        framesSeen.set(name, (framesSeen.get(name) ?? 0) + 1);
        fn(JSON.parse(e.data));
      });
    }
    es.onerror = () => {
      onConn('reconnecting');
      // EventSource retries network errors itself; an HTTP error closes it for good.
      if (es.readyState === EventSource.CLOSED) {
        api.ping().catch(() => {});
        setTimeout(connect, delay);
        delay = Math.min(delay * 2, 15000);
      }
    };
  };
  connect();
}
