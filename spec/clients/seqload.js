'use strict';
// Sustained, paced load with sequence numbers, for the hot reload spec.
//   node seqload.js --url ws://127.0.0.1:P/seq [--connections 4] [--rate 20000]
//        [--batch 100] [--duration 12] [--keys 8] [--window 50] [--timeout 90]
//        [--stop-file PATH]
// Every message is "<msgid>\n<key> <seq>\n<key> <seq>..." (batch rows);
// msgid is "<conn>-<n>", keys are "c<conn>k<j>" and each key's seq counts
// 1, 2, 3... (one sender per key). The gateway answers each message with
// {"ack": msgid, "marker": M, "rows": N} once Kafka stored all its rows.
// The offered rate is `rate` rows/s in total for `duration` seconds, with at
// most `window` unacknowledged messages per connection. With --stop-file,
// sending goes on past `duration` until that file exists (the spec says
// when it is done, however long a loaded machine made it take).
// Prints one JSON line: sent_msgs, sent_rows, acks, acked_rows, duplicates,
// unexpected, missing, error_count, errors, closes, markers (in ack order,
// each with its count), keys (key -> last seq sent), send_ms, elapsed_ms,
// rows_per_s (rows acknowledged per second of sending), timed_out.
// Once a connection has sent its share and every ack is in, it sends a
// message with no rows, "<conn>-drain\n", which the gateway acks at once,
// and closes at that ack: whatever the gateway sent before it (a duplicate
// ack too) has been counted by then.
const fs = require('fs');
const WebSocket = require('ws');
const parse = require('./args');

const o = parse(process.argv.slice(2));
const url = o.url;
const nconn = Number(o.connections || 4);
const rate = Number(o.rate || 20000);
const batch = Number(o.batch || 100);
const durationMs = Number(o.duration || 12) * 1000;
const nkeys = Number(o.keys || 8);
const windowMsgs = Number(o.window || 50);
const timeoutMs = Number(o.timeout || 90) * 1000;
const stopFile = o['stop-file'];

const result = { sent_msgs: 0, sent_rows: 0, acks: 0, acked_rows: 0, duplicates: 0,
                 unexpected: 0, missing: 0, error_count: 0, errors: [], closes: [],
                 markers: [], keys: {}, other: [] };
const pendingIds = new Map();      // msgid -> rows
const ackedIds = new Set();
let start = 0;
let sendEnd = 0;
let open = nconn;
let finished = false;

function finish() {
  if (finished) return;
  finished = true;
  result.missing = pendingIds.size;
  result.elapsed_ms = Date.now() - start;
  result.send_ms = (sendEnd || Date.now()) - start;
  result.rows_per_s = Math.round(result.acked_rows / (result.send_ms / 1000));
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(0);
}
const killer = setTimeout(() => { result.timed_out = true; finish(); }, timeoutMs);

function noteMarker(m) {
  const last = result.markers[result.markers.length - 1];
  if (last && last.marker === m) last.count++;
  else result.markers.push({ marker: m, count: 1 });
}

const conns = [];
for (let c = 0; c < nconn; c++) {
  const st = { c, n: 0, unacked: 0, seq: new Array(nkeys).fill(0), next: 0,
               sentRows: 0, done: false, closedByClient: false };
  st.ws = new WebSocket(url);
  conns.push(st);
  st.ws.on('open', () => {
    if (!start) { start = Date.now(); pace(); }
  });
  st.ws.on('message', (data) => {
    let m;
    try { m = JSON.parse(data.toString()); } catch (e) {
      if (result.other.length < 5) result.other.push(String(data));
      return;
    }
    if (m.ack !== undefined && m.error === undefined) {
      const id = String(m.ack);
      if (id === `${st.c}-drain`) { st.closedByClient = true; st.ws.close(1000); return; }
      if (ackedIds.has(id)) { result.duplicates++; return; }
      if (!pendingIds.has(id)) { result.unexpected++; return; }
      ackedIds.add(id);
      result.acks++;
      result.acked_rows += pendingIds.get(id);
      pendingIds.delete(id);
      st.unacked--;
      noteMarker(String(m.marker));
      maybeClose(st);
    } else {
      result.error_count++;
      if (result.errors.length < 5) result.errors.push(m);
    }
  });
  st.ws.on('error', (e) => { if (result.errors.length < 5) result.errors.push({ socket: e.message }); });
  st.ws.on('close', (code, reason) => {
    result.closes.push({ code, reason: reason.toString(), by: st.closedByClient ? 'client' : 'server' });
    if (--open === 0) { clearTimeout(killer); finish(); }
  });
}

function maybeClose(st) {
  if (st.done && st.unacked === 0 && !st.draining && st.ws.readyState === WebSocket.OPEN) {
    st.draining = true;
    st.ws.send(`${st.c}-drain\n`);
  }
}

function sendOne(st) {
  const id = `${st.c}-${++st.n}`;
  const lines = [id];
  for (let i = 0; i < batch; i++) {
    const k = st.next;
    st.next = (st.next + 1) % nkeys;
    const key = `c${st.c}k${k}`;
    st.seq[k]++;
    result.keys[key] = st.seq[k];
    lines.push(`${key} ${st.seq[k]}`);
  }
  pendingIds.set(id, batch);
  st.unacked++;
  result.sent_msgs++;
  result.sent_rows += batch;
  st.ws.send(lines.join('\n'));
}

// Every 5 ms, send what the rate allows, spread over the connections.
function pace() {
  const t = setInterval(() => {
    const now = Date.now();
    const elapsed = now - start;
    if (elapsed >= durationMs && (!stopFile || fs.existsSync(stopFile))) {
      clearInterval(t);
      sendEnd = now;
      for (const st of conns) { st.done = true; maybeClose(st); }
      return;
    }
    let due = Math.floor((rate * elapsed) / 1000) - result.sent_rows;
    let progress = true;
    while (due >= batch && progress) {
      progress = false;
      for (const st of conns) {
        if (due < batch) break;
        if (st.ws.readyState !== WebSocket.OPEN || st.unacked >= windowMsgs) continue;
        sendOne(st);
        due -= batch;
        progress = true;
      }
    }
  }, 5);
}
