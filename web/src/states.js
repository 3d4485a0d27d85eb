// The one table of what an agent's row can say: each displayed state's
// label, CSS class (a coloured dot, no emoji font needed), whether it waits
// on the operator, and its rank when the table is sorted by state. A new
// state (e.g. `queued`, `over budget`) is one line here.

/** Displayed state -> {label, cls, needsYou, rank}. */
export const STATES = {
  failed: { label: 'failed', cls: 's-failed', needsYou: true, rank: 0 },
  restarting: { label: 'restarting', cls: 's-restarting', needsYou: true, rank: 1 },
  node_down: { label: 'node down', cls: 's-node_down', needsYou: true, rank: 1 },
  waiting_on_you: { label: 'waiting on you', cls: 's-waiting-you', needsYou: true, rank: 2 },
  retrying: { label: 'retrying', cls: 's-retrying', needsYou: false, rank: 3 },
  waiting: { label: 'waiting', cls: 's-waiting', needsYou: false, rank: 4 },
  over_budget: { label: 'over budget', cls: 's-over_budget', needsYou: true, rank: 3 },
  queued: { label: 'queued', cls: 's-queued', needsYou: false, rank: 5 },
  thinking: { label: 'thinking', cls: 's-thinking', needsYou: false, rank: 5 },
  compacting: { label: 'compacting', cls: 's-compacting', needsYou: false, rank: 6 },
  napping: { label: 'napping', cls: 's-napping', needsYou: false, rank: 7 },
  idle: { label: 'idle', cls: 's-idle', needsYou: false, rank: 8 },
  stopped: { label: 'stopped', cls: 's-stopped', needsYou: false, rank: 9 },
};

/** What a state this page does not know yet shows as. */
const UNKNOWN = { cls: 's-other', needsYou: false, rank: 50 };

/** The state a row shows: health first (failed, restarting), then a node down, then stopped, then the turn loop's. */
export function stateKey(row) {
  if (row.health === 'failed' || row.failed) return 'failed';
  if (row.health === 'restarting') return 'restarting';
  // Its home node stopped heartbeating: not stopped, unreachable.
  if (row.state === 'node_down') return 'node_down';
  if (!row.running) return 'stopped';
  // A turn blocked on an operator question waits on the operator, not the model.
  if (row.question != null && row.state === 'thinking') return 'waiting_on_you';
  return row.state;
}

/** The table's entry for a displayed state. */
export function stateInfo(key) {
  return STATES[key] ?? { ...UNKNOWN, label: String(key).replace(/_/g, ' ') };
}

/** The counts the hive header shows, by these displayed states. */
export const TOTALS = ['thinking', 'idle', 'stopped', 'failed'];

/**
 * Kinds of "needs you" items (hive_sh4re::host::NeedItem.kind) -> label,
 * class, and where it is handled. New kinds are one line here.
 */
export const NEEDS = {
  question: { label: 'question', cls: 'n-question', where: (i) => `#question-${i.id}` },
  approval: { label: 'approval', cls: 'n-approval', where: (i) => `#approval-${i.id}` },
  failed: { label: 'failed', cls: 'n-failed', where: (i) => agentHref(i.agent) },
  restarting: { label: 'restarting', cls: 'n-restarting', where: (i) => agentHref(i.agent) },
  needs_login: { label: 'needs login', cls: 'n-login', where: (i) => agentHref(i.agent) },
  over_budget: { label: 'over budget', cls: 'n-budget', where: (i) => agentHref(i.agent) },
  // One item per node (`i.node`), not per agent living there: its agents are in the table below.
  node_down: { label: 'node down', cls: 'n-node', where: () => '#agents' },
  paused_mail: { label: 'paused, mail waiting', cls: 'n-paused', where: (i) => agentHref(i.agent) },
};

export function needInfo(kind) {
  return NEEDS[kind] ?? { label: String(kind).replace(/_/g, ' '), cls: 'n-other', where: (i) => agentHref(i.agent) };
}

export const agentHref = (name) => `/agents/${encodeURIComponent(name)}`;
