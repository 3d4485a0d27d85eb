// The state table (src/states.js) on its own, no browser: what an agent's row
// shows when its home node stopped heartbeating, and the needs-you item that
// names the node.

import assert from 'node:assert/strict';
import test from 'node:test';

import { needInfo, stateInfo, stateKey } from '../src/states.js';

test('an agent of a node that stopped heartbeating shows node down, not stopped', () => {
  const row = { name: 'x', running: false, failed: false, state: 'node_down', state_detail: 'no heartbeat from alpha' };
  assert.equal(stateKey(row), 'node_down');
  const info = stateInfo('node_down');
  assert.equal(info.label, 'node down');
  assert.equal(info.cls, 's-node_down');
  assert.equal(info.needsYou, true);
  // Health still comes first, and a plain stopped agent stays stopped.
  assert.equal(stateKey({ ...row, health: 'failed' }), 'failed');
  assert.equal(stateKey({ ...row, state: 'idle' }), 'stopped');
});

test('a node down in the needs-you list is one item that leads to the agents table', () => {
  const info = needInfo('node_down');
  assert.equal(info.label, 'node down');
  assert.equal(info.cls, 'n-node');
  assert.equal(info.where({ kind: 'node_down', agent: '', node: 'alpha' }), '#agents');
});
