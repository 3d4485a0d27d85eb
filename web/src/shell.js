// The agent page's shell: an xterm.js terminal on a WebSocket attached to a
// PTY that hive-c0re opens in the agent's container (root of its user
// namespace, in /state). Protocol: crates/hive-c0re/src/dashboard/shell.rs.
// Closing the panel, the page or the socket ends the shell's whole session.

import { FitAddon } from '@xterm/addon-fit';
import { Terminal } from '@xterm/xterm';
import '@xterm/xterm/css/xterm.css';
import './shell.css';
import { pageKey } from './api.js';
import { icon } from './icons.js';
import { fill, h } from './ui.js';

const encoder = new TextEncoder();

/** The rules above, which esbuild puts beside this page's bundle (agent.js → agent.css). */
function ensureStylesheet() {
  const href = '/assets/agent.css';
  if (document.querySelector(`link[href="${href}"]`)) return;
  document.head.append(h('link', { rel: 'stylesheet', href }));
}

/** Fills `panel` with the shell's controls; the shell opens on demand. */
export function mountShell(panel, name) {
  if (!panel) return;
  ensureStylesheet();
  const status = h('span', { class: 'shell-status dim' }, `root in h-${name}, /state`);
  const openBtn = h('button', { type: 'button', class: 'primary', id: 'shell-open' }, icon('play'), ' Open shell');
  const closeBtn = h('button', { type: 'button', id: 'shell-close', hidden: true }, '■ Close');
  const host = h('div', { class: 'shell-term', id: 'shell-term', hidden: true });
  panel.replaceChildren(
    h('div', { class: 'shell-head' }, h('h2', {}, 'Shell'), status, h('span', { class: 'spacer' }), openBtn, closeBtn),
    host,
  );

  let term = null;
  let fit = null;
  let ws = null;

  function openWebLink(uri) {
    let url;
    try {
      url = new URL(uri);
    } catch {
      return;
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') return;
    // A name before an @ reads as the host at a glance (https://github.com@evil.example/).
    if (url.username || url.password) return;
    // The words a link shows are the agent's, and need not be where it goes.
    if (!window.confirm(`Open this link the agent's shell printed?\n\nhost: ${url.host}\n${url.href}`)) return;
    window.open(url.href, '_blank', 'noopener,noreferrer');
  }

  const setStatus = (text, cls = 'dim') => {
    status.textContent = text;
    status.className = `shell-status ${cls}`;
  };

  function ensureTerminal() {
    if (term) return;
    host.hidden = false;
    term = new Terminal({
      cursorBlink: true,
      convertEol: false,
      fontFamily: "ui-monospace, 'DejaVu Sans Mono', Menlo, Consolas, monospace",
      fontSize: 13,
      scrollback: 5000,
      theme: { background: '#0a0c10' },
      // What the shell prints is the agent's (a file it wrote, a process it
      // named), links included (OSC 8): only a web page opens, once the
      // operator saw where it goes, in a tab of its own with no way back to
      // this one; any other scheme does nothing.
      linkHandler: { activate: (_event, uri) => openWebLink(uri) },
    });
    fit = new FitAddon();
    term.loadAddon(fit);
    term.open(host);
    term.onData((d) => ws?.readyState === WebSocket.OPEN && ws.send(encoder.encode(d)));
    term.onBinary((d) => ws?.readyState === WebSocket.OPEN && ws.send(Uint8Array.from(d, (c) => c.charCodeAt(0))));
    term.onResize(({ rows, cols }) => ws?.readyState === WebSocket.OPEN && ws.send(JSON.stringify({ type: 'resize', rows, cols })));
    new ResizeObserver(() => !host.hidden && fit.fit()).observe(host);
  }

  function open() {
    ensureTerminal();
    fit.fit();
    term.reset();
    // A WebSocket sends no header of ours: the page key goes in the query.
    const q = new URLSearchParams({ rows: term.rows, cols: term.cols, key: pageKey() });
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const sock = new WebSocket(`${scheme}://${location.host}/api/agents/${encodeURIComponent(name)}/shell?${q}`);
    sock.binaryType = 'arraybuffer';
    ws = sock;
    let ended = false;
    setStatus('connecting…');
    openBtn.hidden = true;
    closeBtn.hidden = false;
    sock.onopen = () => {
      setStatus(`connected · root in h-${name}`, 'live');
      term.focus();
    };
    sock.onmessage = (e) => {
      if (typeof e.data !== 'string') {
        term.write(new Uint8Array(e.data));
        return;
      }
      const m = JSON.parse(e.data);
      ended = true;
      if (m.type === 'exit') {
        term.write(`\r\n\x1b[2m[shell exited with code ${m.code}]\x1b[0m\r\n`);
        setStatus(`exited with code ${m.code}`);
      } else if (m.type === 'error') {
        term.write(`\r\n\x1b[31m${m.message}\x1b[0m\r\n`);
        setStatus(m.message, 'bad');
      }
    };
    sock.onclose = () => {
      if (ws !== sock) return;
      ws = null;
      if (!ended) {
        term.write('\r\n\x1b[2m[connection closed]\x1b[0m\r\n');
        setStatus('closed');
      }
      openBtn.hidden = false;
      fill(openBtn, icon('play'), ' Open again');
      closeBtn.hidden = true;
    };
  }

  openBtn.addEventListener('click', open);
  closeBtn.addEventListener('click', () => ws?.close());
  // Closing the page closes the socket anyway; say so early.
  window.addEventListener('pagehide', () => ws?.close());
}
