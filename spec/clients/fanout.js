'use strict';
// N WebSocket clients on one URL, each keeping every message it receives.
//   node fanout.js --url ws://127.0.0.1:P/path --clients N --count K
//        [--timeout S] [--ready-file PATH]
// --ready-file is created once all N are open. Each client closes (1000)
// 300 ms after its K-th message (so that a duplicate sent after the last
// record is still seen); the run ends when all have, or at the timeout.
// Prints one JSON line: opened, messages (one list per client, in order of
// arrival), timed_out, errors.
const fs = require('fs');
const WebSocket = require('ws');
const parse = require('./args');

const o = parse(process.argv.slice(2));
const n = Number(o.clients || 1);
const count = Number(o.count || 1);
const result = { opened: 0, messages: [], errors: [] };
let done = 0;
let finished = false;

function finish() {
  if (finished) return;
  finished = true;
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(0);
}
function oneDone() { if (++done === n) finish(); }
setTimeout(() => { result.timed_out = true; finish(); }, Number(o.timeout || 30) * 1000);

for (let i = 0; i < n; i++) {
  const got = [];
  result.messages.push(got);
  const ws = new WebSocket(o.url);
  let closed = false;
  ws.on('open', () => {
    if (++result.opened === n && o['ready-file']) fs.writeFileSync(o['ready-file'], 'ready\n');
  });
  ws.on('message', (data) => {
    got.push(data.toString());
    if (got.length === count) setTimeout(() => ws.close(1000), 300);
  });
  ws.on('error', (e) => { result.errors.push(e.message); });
  ws.on('close', () => { if (!closed) { closed = true; oneDone(); } });
}
