'use strict';
// Connects, sends the given frames in order, and collects what comes back.
//   node probe.js --url ws://127.0.0.1:P/ [--text S]... [--binary S]... [--size N]...
//        [--await N]... [--replies N] [--wait S] [--log FILE]
// --text sends a text frame, --binary the bytes of S as a binary frame,
// --size a text frame of N bytes; --await N holds the steps after it until
// N replies have arrived. Stops after N replies (closing with 1000),
// when the server closes, or after --wait seconds (default 5). --log
// appends each reply to FILE as it arrives (one JSON string per line), so
// that a spec can look at the conversation while it is going on.
// Prints one JSON line: opened, status (HTTP status if the upgrade was
// refused), replies (strings), close {code, reason, by}, error.
const fs = require('fs');
const WebSocket = require('ws');
const parse = require('./args');

const o = parse(process.argv.slice(2), { repeat: ['text', 'binary', 'size', 'await'] });
const want = o.replies === undefined ? Infinity : Number(o.replies);
const result = { opened: false, replies: [], close: null };
let closing = false;

function finish() {
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(0);
}
function closeNow() {
  if (closing) return;
  closing = true;
  if (ws.readyState === WebSocket.OPEN) ws.close(1000); else finish();
  setTimeout(finish, 2000);       // a server that never answers the close
}

const ws = new WebSocket(o.url, { maxPayload: 64 * 1024 * 1024 });
setTimeout(closeNow, Number(o.wait || 5) * 1000);
ws.on('unexpected-response', (req, res) => { result.status = res.statusCode; finish(); });
let next = 0;      // the step to run next
function runSteps() {
  for (; next < o.steps.length; next++) {
    const [kind, v] = o.steps[next];
    if (kind === 'await') {
      if (result.replies.length < Number(v)) return;
    } else if (kind === 'text') ws.send(v);
    else if (kind === 'binary') ws.send(Buffer.from(v), { binary: true });
    else ws.send('x'.repeat(Number(v)));
  }
}
ws.on('open', () => {
  result.opened = true;
  runSteps();
  if (want === 0) closeNow();
});
ws.on('message', (data) => {
  if (closing) return;
  const text = data.toString();
  result.replies.push(text);
  if (o.log) fs.appendFileSync(o.log, JSON.stringify(text) + '\n');
  if (result.replies.length >= want) closeNow();
  else runSteps();
});
ws.on('error', (e) => { result.error = e.message; });
ws.on('close', (code, reason) => {
  result.close = { code, reason: reason.toString(), by: closing ? 'client' : 'server' };
  finish();
});
