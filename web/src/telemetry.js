// The agent page's telemetry panel: headline figures, four time charts of
// its turns (duration, tool calls, inbox depth, notes size) and bar lists
// of exits, tool usage and messages by class, over a chosen window.

import { api } from './api.js';
import { timeChart } from './charts.js';
import { bars, byValue, bytes, lastTurnAge, perTurn, rate, refresher, stuckTag, turnTime } from './stats.js';
import { $, fill, h, toast } from './ui.js';

const EXIT_COLORS = { ok: 'good', retried: 'warn', failure: 'bad', cancelled: 'dim', interrupted: 'bad' };
const WINDOW_KEY = 'hive.stats.window';

/** One headline figure. */
const figure = (key, label, value, title) =>
  h('div', { class: 'figure', dataset: { stat: key }, title }, h('span', { class: 'fig-v' }, value), h('span', { class: 'fig-k' }, label));

function showFigures(s, a) {
  const growth = a.notes_growth_bytes ? ` (${a.notes_growth_bytes > 0 ? '+' : ''}${bytes(a.notes_growth_bytes)})` : '';
  fill($('#stats-figures'),
    figure('turns', 'turns', String(a.turns)),
    figure('turns_per_minute', 'turns / min', rate(a.turns_per_minute)),
    figure('duration_p50_ms', 'p50 turn', turnTime(a.duration_p50_ms, a.turns)),
    figure('duration_p95_ms', 'p95 turn', turnTime(a.duration_p95_ms, a.turns)),
    figure('tool_calls_per_turn', 'tool calls / turn', perTurn(a.tool_calls_per_turn)),
    figure('inbox', 'inbox now / max', `${a.inbox_depth_current} / ${a.inbox_depth_max}`),
    figure('approvals_pending', 'approvals queued', String(s.approvals_pending), 'approvals waiting for the operator, hive-wide'),
    figure('since_last_turn', 'since last turn', lastTurnAge(a.seconds_since_last_turn)),
    figure('notes', 'notes', `${bytes(a.notes_bytes)}${growth}`, 'size of notes.md after the last turn (change over the window)'),
    figure('tokens', 'tokens in / out', `${a.tokens_in.toLocaleString()} / ${a.tokens_out.toLocaleString()}`),
    a.cost_usd > 0 && figure('cost', 'cost', `$${a.cost_usd.toFixed(4)}`));
}

function showBreakdowns(a) {
  fill($('#stats-exits'), bars(byValue(a.exit_classes), { colorOf: (k) => EXIT_COLORS[k] ?? 'warn', emptyText: 'no turns' }));
  fill($('#stats-tools'), bars(byValue(a.tool_usage), { emptyText: 'no tool calls' }));
  fill($('#stats-sent'), bars(byValue(a.sent_per_turn), { fmt: perTurn, emptyText: 'none sent' }));
  fill($('#stats-received'), bars(byValue(a.received_per_turn), { fmt: perTurn, emptyText: 'none received' }));
}

/**
 * Mounts the panel for agent `name`; returns `poke()`, which refreshes it
 * (throttled) — the page pokes on every change of the agent.
 */
export function mountTelemetry(name) {
  const select = $('#stats-window');
  select.value = localStorage.getItem(WINDOW_KEY) ?? select.value;
  const colors = { duration: '#ebcb8b', tools: '#88c0d0', inbox: '#d08770', notes: '#b48ead' };
  const charts = {
    duration: timeChart($('#chart-duration'), { label: 'duration', color: colors.duration, value: (v) => (v >= 60 ? `${(v / 60).toFixed(1)}m` : `${+v.toFixed(1)}s`) }),
    tools: timeChart($('#chart-tools'), { label: 'tool calls', color: colors.tools, kind: 'bars', whole: true, value: (v) => perTurn(v) }),
    inbox: timeChart($('#chart-inbox'), { label: 'inbox', color: colors.inbox, kind: 'steps', whole: true, value: (v) => perTurn(v) }),
    notes: timeChart($('#chart-notes'), { label: 'notes', color: colors.notes, whole: true, value: bytes, empty: 'no notes.md in this window' }),
  };
  let failed = false;
  const load = async () => {
    let s;
    try {
      s = await api.stats(name, select.value);
      failed = false;
    } catch (e) {
      // Once per outage, not every refresh.
      if (!failed) toast(`telemetry: ${e.message}`, 'error');
      failed = true;
      return;
    }
    const a = s.agents.find((x) => x.agent === name);
    if (!a) return;
    const now = Date.now() / 1000;
    const window = [now - s.window_seconds, now];
    const pts = a.turns_series;
    const xs = pts.map((p) => p.ts);
    charts.duration(xs, pts.map((p) => p.duration_ms / 1000), window);
    charts.tools(xs, pts.map((p) => p.tool_calls), window);
    charts.inbox(xs, pts.map((p) => p.inbox_depth), window);
    charts.notes(xs, pts.map((p) => p.notes_bytes ?? null), window);
    showFigures(s, a);
    showBreakdowns(a);
    fill($('#stats-stuck'), stuckTag(a, s.stuck_after_seconds));
    $('#telemetry').dataset.loaded = String(a.turns);
  };
  const poke = refresher(load);
  select.addEventListener('change', () => {
    localStorage.setItem(WINDOW_KEY, select.value);
    load();
  });
  return poke;
}
