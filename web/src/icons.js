// The dashboard's icons as inline SVG: they render the same on a browser
// without an emoji font (emoji glyphs there are empty boxes). Text in
// messages and events is shown as written; only the UI's own glyphs are here.

const NS = 'http://www.w3.org/2000/svg';

// 16×16 shapes: each is a list of [element, attributes]; `currentColor` paints them.
const SHAPES = {
  idle: [['circle', { cx: 8, cy: 8, r: 5, fill: 'none', stroke: 'currentColor', 'stroke-width': 2 }]],
  thinking: [['circle', { cx: 3, cy: 8, r: 2 }], ['circle', { cx: 8, cy: 8, r: 2 }], ['circle', { cx: 13, cy: 8, r: 2 }]],
  compacting: [['path', { d: 'M2 4h12v3H2zM3 8h10v6H3zM6 9.5h4v1.5H6z' }]],
  napping: [['path', { d: 'M10 1.5a6.5 6.5 0 1 0 4.5 11A5.5 5.5 0 0 1 10 1.5z' }]],
  retrying: [['path', { d: 'M8 2.5a5.5 5.5 0 1 0 5.2 3.7l-1.9.7A3.5 3.5 0 1 1 8 4.5V7l4-3.5L8 0z' }]],
  waiting: [['path', { d: 'M3 1h10v2l-3.5 5L13 13v2H3v-2l3.5-5L3 3zM5 3l3 4 3-4z' }]],
  stopped: [['rect', { x: 3, y: 3, width: 10, height: 10 }]],
  failed: [['path', { d: 'M3.5 2L8 6.5 12.5 2 14 3.5 9.5 8l4.5 4.5-1.5 1.5L8 9.5 3.5 14 2 12.5 6.5 8 2 3.5z' }]],
  pause: [['rect', { x: 3, y: 2, width: 3.5, height: 12 }], ['rect', { x: 9.5, y: 2, width: 3.5, height: 12 }]],
  play: [['path', { d: 'M4 2l10 6-10 6z' }]],
  key: [['path', { d: 'M5 4a4 4 0 1 1-1 7.9V14H2v-2.1A4 4 0 0 1 5 4zm0 2.5a1.5 1.5 0 1 0 0 3 1.5 1.5 0 0 0 0-3zM8.5 7H15v2h-1v2h-2V9H8.5z' }]],
  heart: [['path', { d: 'M8 14L2.2 8.2A3.4 3.4 0 0 1 8 3.6a3.4 3.4 0 0 1 5.8 4.6z' }]],
  warn: [['path', { d: 'M8 1l7 13H1zM7 6v4h2V6zm0 5v2h2v-2z' }]],
  parent: [['path', { d: 'M3 3h7v2H6.4l7.3 7.3-1.4 1.4L5 6.4V10H3z' }]],
  notes: [['path', { d: 'M3 1h10v14H3zM5 4v1.5h6V4zm0 3v1.5h6V7zm0 3v1.5h4V10z' }]],
};
// States that share another's shape.
SHAPES.queued = SHAPES.waiting;
SHAPES.restarting = SHAPES.retrying;
SHAPES.waiting_on_you = SHAPES.warn;
SHAPES.over_budget = SHAPES.warn;
SHAPES.node_down = SHAPES.warn;

/** An inline SVG icon (`name` from SHAPES); hidden from screen readers, the text beside it says what it means. */
export function icon(name) {
  const svg = document.createElementNS(NS, 'svg');
  svg.setAttribute('class', `icon i-${name}`);
  svg.setAttribute('viewBox', '0 0 16 16');
  svg.setAttribute('width', '1em');
  svg.setAttribute('height', '1em');
  svg.setAttribute('fill', 'currentColor');
  svg.setAttribute('aria-hidden', 'true');
  svg.dataset.icon = name;
  for (const [tag, attrs] of SHAPES[name] ?? []) {
    const el = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
    svg.append(el);
  }
  return svg;
}
