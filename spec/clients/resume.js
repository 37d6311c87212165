'use strict';
// A movies client that keeps its position in movie-stats (docs/api.md,
// appendix): subscribes with positions, or resumes from one.
//   node resume.js --url ws://127.0.0.1:P/stream [--since POSITION] --count N
//        [--timeout S] [--ready-file PATH]
// Sends {"subscribe":"movie-stats","positions":true} (or "since": POSITION),
// creates --ready-file once the subscription is answered, and stops after N
// records (or the timeout). Prints one JSON line: reply (the
// {"subscribed":…} object), records ([partition, offset, stats] in arrival
// order), position (the last record's), errors (other messages), close.
const fs = require('fs');
const WebSocket = require('ws');
const parse = require('./args');

const o = parse(process.argv.slice(2));
const count = Number(o.count || 1);
const result = { reply: null, records: [], position: null, errors: [], close: null };
let closing = false;

function finish() {
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(0);
}
function closeNow() {
  if (closing) return;
  closing = true;
  if (ws.readyState === WebSocket.OPEN) ws.close(1000); else finish();
  setTimeout(finish, 2000);
}

const ws = new WebSocket(o.url);
setTimeout(() => { result.timed_out = true; closeNow(); }, Number(o.timeout || 30) * 1000);
ws.on('open', () => {
  ws.send(JSON.stringify(o.since !== undefined
    ? { subscribe: 'movie-stats', since: o.since }
    : { subscribe: 'movie-stats', positions: true }));
});
ws.on('message', (data) => {
  if (closing) return;
  const m = JSON.parse(data.toString());
  if (m.subscribed !== undefined) {
    result.reply = m;
    if (o['ready-file']) fs.writeFileSync(o['ready-file'], 'ready\n');
  } else if (typeof m.position === 'string') {
    result.records.push([m.partition, m.offset, m.stats]);
    result.position = m.position;
    if (result.records.length >= count) closeNow();
  } else {
    result.errors.push(m);
  }
});
ws.on('error', (e) => { result.error = e.message; });
ws.on('close', (code, reason) => {
  result.close = { code, reason: reason.toString(), by: closing ? 'client' : 'server' };
  finish();
});
