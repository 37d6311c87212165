'use strict';
// Sends movie rows over N WebSocket connections and waits for every ack.
//   node load.js --url ws://127.0.0.1:P/ --connections 10 --rows 10000
//        [--prefix L] [--batch 1] [--interval MS] [--timeout S] [--list-acks]
// Row ids are "<prefix><conn>-<seq>"; actorId is derived from seq.
// After its last expected ack a connection sends a message the movies app
// answers at once, without Kafka ({"subscribe":"other"}), and closes at
// its answer: whatever the gateway sent before it (a duplicate ack too)
// has been counted by then.
// Prints one JSON line: sent, acks, duplicates, unexpected, missing, errors,
// closes (one per connection, with who closed it), elapsed_ms.
const WebSocket = require('ws');
const parse = require('./args');

const o = parse(process.argv.slice(2), { flags: ['list-acks'] });
const url = o.url;
const nconn = Number(o.connections || 1);
const nrows = Number(o.rows || 100);
const prefix = o.prefix || '';
const batch = Number(o.batch || 1);
const interval = Number(o.interval || 0);
const timeoutMs = Number(o.timeout || 60) * 1000;

function row(conn, seq) {
  const a = seq % 50;
  return {
    id: `${prefix}${conn}-${seq}`,
    actorName: `Actor ${a}`,
    actorId: 'nm' + String(a).padStart(7, '0'),
    movieId: 'tt' + String(seq).padStart(7, '0'),
    movieName: `Movie ${seq}`,
    movieMinutes: 80 + (seq % 60),
  };
}

const start = Date.now();
const expected = new Set();
const acked = new Map();            // id -> times acked
const result = { sent: 0, acks: 0, duplicates: 0, unexpected: 0, missing: 0,
                 error_count: 0, errors: [], closes: [], other: [] };
let open = nconn;

function finish() {
  result.missing = [...expected].filter((id) => !acked.has(id)).length;
  result.elapsed_ms = Date.now() - start;
  if (o['list-acks']) result.acked_ids = [...acked.keys()];
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(0);
}
const MARKER = '{"subscribe":"other"}';
const isMarkerReply = (m) => typeof m.error === 'string' && m.id === undefined &&
  m.error.startsWith('unknown subscription');
const timer = setTimeout(() => { result.timed_out = true; finish(); }, timeoutMs);

for (let c = 0; c < nconn; c++) {
  // rows are spread over connections: conn c sends rows c, c+n, c+2n, ...
  const rows = [];
  for (let seq = c; seq < nrows; seq += nconn) rows.push(row(c, seq));
  rows.forEach((r) => expected.add(r.id));
  let pending = rows.length;
  let closedByClient = false;
  const ws = new WebSocket(url);

  function sendSome(n) {
    while (n-- > 0 && rows.length && ws.readyState === WebSocket.OPEN) {
      const chunk = rows.splice(0, batch);
      ws.send(JSON.stringify(batch === 1 ? chunk[0] : chunk));
      result.sent += chunk.length;
    }
  }
  ws.on('open', () => {
    if (interval > 0) {
      const t = setInterval(() => { if (!rows.length) clearInterval(t); else sendSome(1); }, interval);
      ws.on('close', () => clearInterval(t));
    } else {
      sendSome(Infinity);
    }
    if (pending === 0) { closedByClient = true; ws.close(1000); }
  });
  function drained() {
    closedByClient = true;
    ws.close(1000);
  }
  ws.on('message', (data) => {
    let m;
    try { m = JSON.parse(data.toString()); } catch (e) { result.other.push(String(data)); return; }
    if (m.ack !== undefined && m.error === undefined) {
      const id = String(m.ack);
      if (!expected.has(id)) { result.unexpected++; return; }
      const n = acked.get(id) || 0;
      acked.set(id, n + 1);
      if (n > 0) { result.duplicates++; return; }
      result.acks++;
      if (--pending === 0) ws.send(MARKER);
    } else if (pending === 0 && isMarkerReply(m)) {
      drained();
    } else if (m.error !== undefined) {
      result.error_count++;
      if (result.errors.length < 5) result.errors.push(m);
    } else if (result.other.length < 5) {
      result.other.push(m);
    }
  });
  ws.on('error', (e) => { if (result.errors.length < 5) result.errors.push({ socket: e.message }); });
  ws.on('close', (code, reason) => {
    result.closes.push({ code, reason: reason.toString(), by: closedByClient ? 'client' : 'server' });
    if (--open === 0) { clearTimeout(timer); finish(); }
  });
}
