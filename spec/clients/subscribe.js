'use strict';
// Connects, optionally subscribes, and prints the messages it receives.
//   node subscribe.js --url ws://127.0.0.1:P/stats [--subscribe TOPIC]
//        [--count N] [--timeout S] [--ready-file PATH] [--until TEXT] [--no-messages]
// With --subscribe it sends {"subscribe": TOPIC} and waits for
// {"subscribed": TOPIC}. --ready-file is created once subscribed (on open
// without --subscribe). Stops after N messages (default 1) or the timeout.
// --until TEXT: stop at the first message containing TEXT (result.matched)
// instead of after N. --no-messages: count them (received) without keeping them.
// Prints one JSON line: subscribed, messages (strings), received, matched,
// close, error.
const fs = require('fs');
const WebSocket = require('ws');
const parse = require('./args');

const o = parse(process.argv.slice(2), { flags: ['no-messages'] });
const count = Number(o.count || 1);
const result = { subscribed: false, messages: [], received: 0, close: null };
let closing = false;

function finish() {
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(0);
}
function ready() {
  result.subscribed = true;
  if (o['ready-file']) fs.writeFileSync(o['ready-file'], 'ready\n');
}
function closeNow() {
  if (closing) return;
  closing = true;
  if (ws.readyState === WebSocket.OPEN) ws.close(1000); else finish();
  setTimeout(finish, 2000);
}

const ws = new WebSocket(o.url);
setTimeout(() => { result.timed_out = true; closeNow(); }, Number(o.timeout || 20) * 1000);
ws.on('open', () => {
  if (o.subscribe) ws.send(JSON.stringify({ subscribe: o.subscribe }));
  else ready();
});
ws.on('message', (data) => {
  if (closing) return;              // enough: ignore what arrives while closing
  const text = data.toString();
  let m = null;
  try { m = JSON.parse(text); } catch (e) { /* not JSON: a plain message */ }
  if (m && typeof m === 'object' && m.subscribed !== undefined) {
    if (!result.subscribed) ready();
    return;
  }
  result.received++;
  if (!o['no-messages']) result.messages.push(text);
  if (o.until !== undefined) {
    if (text.includes(o.until)) { result.matched = text; closeNow(); }
  } else if (result.received >= count) closeNow();
});
ws.on('error', (e) => { result.error = e.message; });
ws.on('close', (code, reason) => {
  result.close = { code, reason: reason.toString(), by: closing ? 'client' : 'server' };
  finish();
});
