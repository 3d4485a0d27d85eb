// How an agent's events look in its terminal: each event becomes one or more
// rows. Kinds (`KIND`, from events.js, the list of hive_sh4re's EventKind):
// `stream` (one claude stream-json line), `state`, `turn_start`, `turn_end`,
// `turn_error`, `stderr`, `compact_*` (a `/compact` run),
// `notes_compaction[_stream]`, `container_crash`, `operator`,
// `budget_warning`, `over_budget` and `history_dropped`; anything else
// shows as raw JSON.

import { KIND } from './events.js';
import { icon } from './icons.js';
import { duration, h } from './ui.js';

const INPUT_CHARS = 160;
const FOLD_CHARS = 600;

const clip = (s, n) => {
  const t = String(s ?? '');
  return t.length > n ? `${t.slice(0, n - 1)}…` : t;
};

function row(ev, cls, ...children) {
  return h('div', { class: `row ${cls}`, dataset: { id: ev.id, kind: ev.kind }, title: `#${ev.id} · ${new Date(ev.ts).toLocaleString()}` }, ...children);
}

/** Long text shows its first lines; a click shows the rest. */
function foldable(text, lines = 6) {
  const all = String(text ?? '');
  const split = all.split('\n');
  if (split.length <= lines && all.length <= FOLD_CHARS) return h('span', { class: 'fold' }, all);
  const head = clip(split.slice(0, lines).join('\n'), FOLD_CHARS);
  const box = h('span', { class: 'fold' }, head);
  const more = h('button', { type: 'button', class: 'more' }, ` … ${split.length > lines ? `${split.length - lines} more lines` : 'more'}`);
  more.addEventListener('click', () => {
    box.textContent = all;
    more.remove();
  });
  return h('span', {}, box, more);
}

/** `mcp__hyperhive__send` → `hyperhive:send`. */
const toolName = (name) => String(name ?? '?').replace(/^mcp__(.+?)__/, '$1:');

/** The one argument that says what a tool call does, else its JSON, clipped. */
export function compactInput(name, input) {
  if (input === null || typeof input !== 'object') return clip(JSON.stringify(input ?? ''), INPUT_CHARS);
  if (String(name).endsWith('__send') && input.to) return clip(`${input.to}: ${input.body ?? ''}`.replace(/\s+/g, ' '), INPUT_CHARS);
  const key = ['command', 'file_path', 'path', 'pattern', 'url', 'query', 'description', 'prompt'].find((k) => typeof input[k] === 'string');
  if (key) return clip(input[key].replace(/\s+/g, ' '), INPUT_CHARS);
  return clip(JSON.stringify(input), INPUT_CHARS);
}

function resultText(content) {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) return content.map((c) => (c.type === 'text' ? c.text : c.type === 'image' ? '[image]' : JSON.stringify(c))).join('\n');
  return JSON.stringify(content ?? '');
}

function streamRows(ev, p) {
  switch (p.type) {
    case 'system':
      if (p.subtype === 'init') {
        const bits = [`● session ${clip(p.session_id ?? '?', 9)}`, p.model && `model ${p.model}`, Array.isArray(p.tools) && `${p.tools.length} tools`];
        return [row(ev, 'sys', bits.filter(Boolean).join(' · '))];
      }
      return [row(ev, 'sys', `● ${p.subtype ?? 'system'}`)];
    case 'assistant':
      return (p.message?.content ?? []).map((c) => {
        if (c.type === 'text') return row(ev, 'text', c.text);
        if (c.type === 'thinking') return row(ev, 'thinking', '✻ ', foldable(c.thinking, 3));
        if (c.type === 'tool_use') {
          return row(ev, 'tool', h('span', { class: 'tool-name' }, `● ${toolName(c.name)}`), h('span', { class: 'tool-input' }, `(${compactInput(c.name, c.input)})`));
        }
        return row(ev, 'dim', clip(JSON.stringify(c), 200));
      });
    case 'user': {
      const content = p.message?.content;
      if (typeof content === 'string') return [row(ev, 'prompt', '› ', foldable(content, 4))];
      return (content ?? []).map((c) => {
        if (c.type === 'tool_result') return row(ev, c.is_error ? 'result error' : 'result', '↳ ', foldable(resultText(c.content), 4));
        if (c.type === 'text') return row(ev, 'prompt', '› ', foldable(c.text, 4));
        return row(ev, 'dim', clip(JSON.stringify(c), 200));
      });
    }
    case 'result': {
      const bad = p.is_error || (p.subtype && p.subtype !== 'success');
      const bits = [
        bad ? `✗ ${p.subtype ?? 'error'}` : '✓ done',
        p.duration_ms != null && duration(p.duration_ms),
        p.num_turns != null && `${p.num_turns} steps`,
        typeof p.total_cost_usd === 'number' && `$${p.total_cost_usd.toFixed(4)}`,
      ];
      return [row(ev, bad ? 'outcome error' : 'outcome', bits.filter(Boolean).join(' · '))];
    }
    default:
      return [row(ev, 'dim', clip(JSON.stringify(p), 300))];
  }
}

/**
 * A line of a compaction's claude run: its replayed conversation and
 * bookkeeping would bury the terminal, so only what the operator wants to
 * know shows — that it started, anything the model said, how it ended.
 */
function compactRows(ev, p, what) {
  if (typeof p !== 'object' || p === null) return [row(ev, 'dim', `${what}: ${clip(p, 300)}`)];
  if (p.type === 'system' && p.subtype === 'init') return [row(ev, 'compact', icon('compacting'), ` ${what} · session ${clip(p.session_id ?? '?', 9)}`)];
  if (p.type === 'assistant') return streamRows(ev, p);
  if (p.type === 'result') {
    const bad = p.is_error || (p.subtype && p.subtype !== 'success');
    const bits = [bad ? `✗ ${what} failed` : `✓ ${what} done`, p.duration_ms != null && duration(p.duration_ms)];
    return [row(ev, bad ? 'outcome error' : 'outcome', bits.filter(Boolean).join(' · '))];
  }
  return [];
}

const clock = (ts) => new Date(ts).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });

/** `history_dropped` as one line (the CLI's `events` writes the same). */
function historyDroppedLine(p) {
  const mib = Math.round((p.bytes_per_minute ?? 0) / (1024 * 1024));
  return `⚠ history over ${mib} MiB this minute: the hive drops the rest of the minute's`;
}

/** `budget_warning` / `over_budget` as one line (the CLI's `events` writes the same). */
function budgetLine(over, p) {
  const amount = (v) => (p.measure === 'usd' ? `$${Number(v ?? 0).toFixed(2)}` : `${Math.round(v ?? 0)} tokens`);
  const whose = p.scope === 'hive' ? "the hive's" : 'its';
  const what = over ? `💸 over ${whose} budget, held` : `💸 80 % of ${whose} budget`;
  return `${what}: ${amount(p.spent)} of ${amount(p.limit)} on ${p.day ?? 'today'} (UTC)`;
}

/** The rows of one event. */
export function renderEvent(ev) {
  // A stream line is whatever JSON the agent's harness reported: one that
  // breaks the renderer shows raw, and never takes the terminal down with it.
  try {
    return rowsOf(ev);
  } catch {
    return [row(ev, 'dim', `${ev.kind} ${clip(JSON.stringify(ev.payload ?? null), 300)}`)];
  }
}

function rowsOf(ev) {
  const p = ev.payload ?? {};
  switch (ev.kind) {
    case KIND.stream:
      return typeof p === 'object' ? streamRows(ev, p) : [row(ev, 'dim', clip(p, 300))];
    case KIND.state:
      return [row(ev, 'state', `◦ ${p.state ?? '?'}${p.model ? ` · ${p.model}` : ''}`)];
    case KIND.turn_start:
      return [
        row(ev, 'turn', h('span', { class: 'rule' }, `── turn · ${clock(ev.ts)}${p.model ? ` · ${p.model}` : ''} ──`)),
        p.prompt && row(ev, 'prompt', foldable(p.prompt, 3)),
      ].filter(Boolean);
    case KIND.turn_end: {
      const code = p.exit_code ?? p.exit;
      const cls = p.exit_class && p.exit_class !== 'ok' ? p.exit_class : null;
      const bad = (code != null && code !== 0) || cls;
      const bits = ['turn end', code != null && `exit ${code}`, cls, p.duration_ms != null && duration(p.duration_ms)];
      return [
        // Why a turn did not finish (the API's word, or the harness that went away).
        p.error && row(ev, 'crash', icon('failed'), ` ${clip(p.error, 300)}`),
        row(ev, bad ? 'turn error' : 'turn', h('span', { class: 'rule' }, `── ${bits.filter(Boolean).join(' · ')} ──`)),
      ].filter(Boolean);
    }
    case KIND.turn_error:
      return [row(ev, 'crash', icon('failed'), ` the turn could not run: ${clip(p.error ?? JSON.stringify(p), 300)}`)];
    case KIND.stderr:
    case KIND.compact_stderr:
      return [row(ev, 'stderr', `! ${clip(typeof p === 'string' ? p : JSON.stringify(p), 300)}`)];
    case KIND.compact_stream:
      return compactRows(ev, p, 'compact');
    case KIND.compact_end: {
      const bad = p.error || (p.exit_code != null && p.exit_code !== 0);
      const bits = ['compact end', p.exit_code != null && `exit ${p.exit_code}`, p.error && clip(p.error, 200)];
      return [row(ev, bad ? 'turn error' : 'turn compact', h('span', { class: 'rule' }, `── ${bits.filter(Boolean).join(' · ')} ──`))];
    }
    case KIND.notes_compaction_stream:
      return compactRows(ev, p, 'notes rewrite');
    case KIND.notes_compaction: {
      const kb = (b) => `${((b ?? 0) / 1024).toFixed(1)} KB`;
      return [p.rewritten
        ? row(ev, 'compact', icon('notes'), ` notes rewritten: ${kb(p.before_bytes)} → ${kb(p.after_bytes)}`)
        : row(ev, 'turn error', icon('notes'), ` the notes rewrite failed (exit ${p.exit_code ?? '?'}); notes.md kept as it was`)];
    }
    case KIND.container_crash: {
      const next = p.gave_up ? ' — gave up: the agent stays failed until started' : p.attempt ? ` (attempt ${p.attempt})` : '';
      return [row(ev, 'crash', icon('failed'), ` harness ${p.exit ?? 'crashed'}${next}`), p.log_tail && row(ev, 'crash-log', foldable(p.log_tail, 3))].filter(Boolean);
    }
    case KIND.budget_warning:
    case KIND.over_budget:
      return [row(ev, ev.kind === KIND.over_budget ? 'crash' : 'stderr', budgetLine(ev.kind === KIND.over_budget, p))];
    case KIND.history_dropped:
      return [row(ev, 'stderr', historyDroppedLine(p))];
    case KIND.operator:
      return [row(ev, 'operator', p.command ? `» operator: ${p.command}` : `» operator: ${clip(p.message ?? JSON.stringify(p), 300)}`)];
    default:
      return [row(ev, 'dim', `${ev.kind} ${clip(JSON.stringify(p), 300)}`)];
  }
}

/** A row the terminal writes itself (help, command output): not an event. */
export function localRow(text, cls = 'local') {
  return h('div', { class: `row ${cls}` }, text);
}

/** The last turn as far as `ev` tells: start, end, duration, exit. Events come oldest first. */
export function turnFacts(prev, ev) {
  const p = ev.payload ?? {};
  if (ev.kind === KIND.turn_start) return { start: ev.ts };
  if (ev.kind === KIND.turn_end) {
    return { ...prev, end: ev.ts, duration_ms: p.duration_ms ?? prev.duration_ms, exit: p.exit_code ?? p.exit ?? prev.exit, exit_class: p.exit_class };
  }
  if (ev.kind === KIND.stream && p.type === 'result') {
    // claude's result line, as the harness reported it: only figures and words are taken.
    const ms = Number.isFinite(p.duration_ms) ? p.duration_ms : undefined;
    const subtype = typeof p.subtype === 'string' ? p.subtype : undefined;
    return { ...prev, end: prev.end ?? ev.ts, duration_ms: prev.duration_ms ?? ms, outcome: p.is_error ? 'error' : subtype };
  }
  return prev;
}
