'use strict';
// A WebSocket reader that counts what it receives, optionally reading
// nothing at first (a slow reader: its socket is paused, so the server's
// writes back up).
//   node reader.js --url ws://127.0.0.1:P/path [--hold S] [--count N]
//        [--timeout S] [--ready-file PATH]
// --hold S: do not read for S seconds after the upgrade, then read again.
// --count N: close (1000) after N messages. --ready-file is created on open.
// Prints one JSON line: opened, messages, bytes, close {code, reason, by},
// error.
const fs = require('fs');
const WebSocket = require('ws');
const parse = require('./args');

const o = parse(process.argv.slice(2));
const count = o.count !== undefined ? Number(o.count) : Infinity;
const result = { opened: false, messages: 0, bytes: 0, close: null };
let closing = false;

function finish() {
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(0);
}

const ws = new WebSocket(o.url, { maxPayload: 64 * 1024 * 1024 });
setTimeout(() => {
  result.timed_out = true;
  closing = true;
  if (ws.readyState === WebSocket.OPEN) ws.close(1000);
  setTimeout(finish, 2000);
}, Number(o.timeout || 30) * 1000);
ws.on('open', () => {
  result.opened = true;
  const hold = Number(o.hold || 0);
  if (hold > 0) {
    ws._socket.pause();
    setTimeout(() => ws._socket.resume(), hold * 1000);
  }
  if (o['ready-file']) fs.writeFileSync(o['ready-file'], 'ready\n');
});
ws.on('message', (data) => {
  result.messages++;
  result.bytes += data.length;
  if (result.messages >= count && !closing) { closing = true; ws.close(1000); }
});
ws.on('error', (e) => { result.error = e.message; });
ws.on('close', (code, reason) => {
  result.close = { code, reason: reason.toString(), by: closing ? 'client' : 'server' };
  finish();
});
