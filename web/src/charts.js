// Time charts of an agent's turns, drawn with uPlot (bundled from npm, no
// CDN). A chart is made once and then only gets new data, so a live refresh
// neither flickers nor leaks canvases; it follows its box's width.

import uPlot from 'uplot';

import { h } from './ui.js';

const HEIGHT = 150;
/** Tick steps of counts and sizes: whole numbers only (no "0.5 tool calls"). */
const WHOLE = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 2e5, 5e5, 1e6, 2e6, 5e6, 1e7, 1e8, 1e9];
/** Least span of the time axis, in seconds, so a lone turn has room around it. */
const MIN_SPAN = 120;
const AXIS = { stroke: '#8590a6', grid: { stroke: '#232a3a', width: 1 }, ticks: { stroke: '#2a3142', width: 1 }, font: '11px system-ui, sans-serif' };

/** How each kind of series is drawn. */
const PATHS = {
  line: () => uPlot.paths.linear(),
  bars: () => uPlot.paths.bars({ size: [0.6, 14, 3], align: 0 }),
  steps: () => uPlot.paths.stepped({ align: 1 }),
};

/**
 * The time axis for points `xs` in the window [from, to]: from shortly
 * before the first point to the end of the window, so a young agent's few
 * turns are spread out rather than stacked at the right edge.
 */
export function timeRange(xs, [from, to]) {
  if (xs.length === 0) return [from, to];
  const first = Math.max(from, xs[0]);
  const pad = Math.max(15, (to - first) * 0.05);
  return [Math.max(from, Math.min(first - pad, to - MIN_SPAN)), to];
}

/**
 * A chart in `box` of one series over time. `spec`: {label, color, kind
 * (line | bars | steps), whole (integer ticks), value(v) for the axis and
 * legend, empty (what to say without data)}. Returns
 * `update(xs, ys, [from, to])` (unix seconds; ys may hold nulls).
 */
export function timeChart(box, spec) {
  const empty = h('div', { class: 'chart-empty' }, spec.empty ?? 'no turns in this window');
  const plotBox = h('div', { class: 'chart-plot' });
  box.append(plotBox, empty);
  let range = [Date.now() / 1000 - 3600, Date.now() / 1000];
  const fmt = spec.value ?? ((v) => String(v));
  const opts = {
    width: Math.max(200, box.clientWidth),
    height: HEIGHT,
    legend: { show: true, live: true },
    cursor: { points: { size: 7 } },
    // The window, not the data, sets the time axis: a lone turn sits where it happened.
    scales: { x: { time: true, range: () => range }, y: { range: (_u, _min, max) => [0, max > 0 ? max * 1.15 : 1] } },
    axes: [
      { ...AXIS, space: 60 },
      { ...AXIS, size: 52, values: (_u, ticks) => ticks.map(fmt), ...(spec.whole ? { incrs: WHOLE } : {}) },
    ],
    series: [
      {},
      {
        label: spec.label,
        stroke: spec.color,
        width: 1.5,
        // A line stays a line: a filled area would read as bars when turns come close together.
        fill: (spec.kind ?? 'line') === 'line' ? undefined : `${spec.color}99`,
        paths: PATHS[spec.kind ?? 'line'](),
        points: { show: spec.kind !== 'bars', size: 5, fill: spec.color },
        spanGaps: true,
        value: (_u, v) => (v == null ? '—' : fmt(v)),
      },
    ],
  };
  const plot = new uPlot(opts, [[], []], plotBox);
  new ResizeObserver(() => {
    const width = Math.max(200, box.clientWidth);
    if (width !== plot.width) plot.setSize({ width, height: HEIGHT });
  }).observe(box);
  return (xs, ys, window) => {
    range = timeRange(xs, window);
    empty.hidden = ys.some((v) => v != null);
    plot.setData([xs, ys]);
  };
}
