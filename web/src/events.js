// The kinds of event an agent's history holds, as hive_sh4re::event::EventKind
// names them and in its order (a Rust test in hive-sh4re compares the two).

export const EVENT_KINDS = [
  'state',
  'turn_start',
  'turn_end',
  'turn_error',
  'stream',
  'stderr',
  'session_lost',
  'session_reset',
  'compact_stream',
  'compact_stderr',
  'compact_end',
  'notes_compaction_stream',
  'notes_compaction',
  'operator',
  'container_crash',
  'budget_warning',
  'over_budget',
  'history_dropped',
];

/** The kinds by name, for `switch (ev.kind) { case KIND.turn_start: ... }`. */
export const KIND = Object.freeze(Object.fromEntries(EVENT_KINDS.map((k) => [k, k])));
