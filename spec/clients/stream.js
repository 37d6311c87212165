'use strict';
// Streams movie rows over N WebSocket connections and accounts for every
// row: acked, reported failed, or never answered. For the fault, shutdown
// and soak tests.
//   node stream.js --url ws://127.0.0.1:P/ [--connections 4] [--prefix S]
//        (--rows N | --duration S) [--rate R] [--batch B]
//        [--timeout S] [--out FILE] [--report S] [--marker TEXT]
// --rows N: send N rows in all (spread over connections), as fast as the
//   socket takes them, or at --rate rows/s in all; then wait for answers.
// --duration S: send at --rate rows/s (default 1000) for S seconds, then
//   wait (up to --timeout) for the answers.
// --report S: every S seconds print a JSON line {t, acked, failed, sent,
//   p50, p99, max} (latency in ms of the acks of that interval).
// --out FILE: write {acked: [ids], failed: [ids], unanswered: [ids],
//   failed_by_code: {CODE: [ids]}} (CODE: the error text before ':').
// --marker TEXT: once every row is answered, each connection sends TEXT, a
//   message the app answers at once without Kafka, and closes at the answer
//   (a message that is neither an ack nor an error with an id): whatever
//   the gateway sent before it (a duplicate answer too) has been counted.
//   Without it, connections close at the last answer.
// Last line printed: the summary (sent, acks, failed, duplicates,
//   unexpected, unanswered, closes [{code, reason, by}], latency {p50, p90,
//   p99, max}, elapsed_ms, errors (first 5 error texts)).
const fs = require('fs');
const WebSocket = require('ws');
const parse = require('./args');

const o = parse(process.argv.slice(2));
const url = o.url;
const nconn = Number(o.connections || 1);
const prefix = o.prefix || '';
const batch = Number(o.batch || 1);
const totalRows = o.rows !== undefined ? Number(o.rows) : Infinity;
const duration = o.duration !== undefined ? Number(o.duration) * 1000 : Infinity;
const rate = o.rate !== undefined ? Number(o.rate) : (o.duration !== undefined ? 1000 : 0);
const timeoutMs = Number(o.timeout || 120) * 1000;
const reportEvery = Number(o.report || 0) * 1000;

const start = Date.now();
const sentAt = new Map();       // id -> ms; deleted when answered
const acked = new Set();
const ackedAt = {};   // id -> [partition, offset], when the ack says where
const failed = new Set();
const failedByCode = {};
const result = { sent: 0, acks: 0, failed: 0, duplicates: 0, unexpected: 0,
                 errors: [], closes: [] };
let lat = [];                   // latencies of this report interval
const allLat = [];
let open = nconn;
let stopped = false;            // no more rows to send
let seqNext = 0;

function max(a) {
  let m = null;
  for (const v of a) if (m === null || v > m) m = v;
  return m;
}

function pct(a, p) {
  if (!a.length) return null;
  const s = Float64Array.from(a).sort();
  return s[Math.min(s.length - 1, Math.floor(p * s.length))];
}

function row(id, seq) {
  const a = seq % 50;
  return {
    id, actorName: `Actor ${a}`, actorId: 'nm' + String(a).padStart(7, '0'),
    movieId: 'tt' + String(seq).padStart(7, '0'), movieName: `Movie ${seq}`,
    movieMinutes: 80 + (seq % 60),
  };
}

function finish() {
  result.unanswered = sentAt.size;
  result.elapsed_ms = Date.now() - start;
  result.latency = { p50: pct(allLat, 0.5), p90: pct(allLat, 0.9), p99: pct(allLat, 0.99),
                     max: max(allLat) };
  if (o.out) {
    fs.writeFileSync(o.out, JSON.stringify({ acked: [...acked], failed: [...failed],
                                             unanswered: [...sentAt.keys()], acked_at: ackedAt,
                                             failed_by_code: failedByCode }));
  }
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(0);
}

const conns = [];
function closeAll() {
  for (const c of conns) {
    if (c.ws.readyState === WebSocket.OPEN) { c.closedByClient = true; c.ws.close(1000); }
  }
}
function maybeDone() {
  if (!stopped || sentAt.size !== 0) return;
  if (o.marker === undefined) { closeAll(); return; }
  for (const c of conns) {
    if (!c.draining && c.ws.readyState === WebSocket.OPEN) { c.draining = true; c.ws.send(o.marker); }
  }
}
setTimeout(() => { result.timed_out = true; closeAll(); setTimeout(finish, 2000); }, timeoutMs);
if (duration !== Infinity) setTimeout(() => { stopped = true; maybeDone(); }, duration);

if (reportEvery) {
  setInterval(() => {
    process.stdout.write(JSON.stringify({ t: Math.round((Date.now() - start) / 1000),
      sent: result.sent, acked: result.acks, failed: result.failed, unanswered: sentAt.size,
      p50: pct(lat, 0.5), p99: pct(lat, 0.99), max: max(lat) }) + '\n');
    lat = [];
  }, reportEvery);
}

// Sends up to n rows on connection c (as batches of `batch`).
function sendRows(c, n) {
  while (n > 0 && !stopped && c.ws.readyState === WebSocket.OPEN) {
    const chunk = [];
    for (let i = 0; i < batch && i < n && seqNext < totalRows; i++) {
      const seq = seqNext++;
      const id = `${prefix}${c.index}-${seq}`;
      chunk.push(row(id, seq));
    }
    if (!chunk.length) break;
    const now = Date.now();
    for (const r of chunk) sentAt.set(r.id, now);
    c.ws.send(JSON.stringify(batch === 1 ? chunk[0] : chunk));
    result.sent += chunk.length;
    n -= chunk.length;
    if (seqNext >= totalRows) { stopped = true; }
  }
}

function answer(id, ok, text) {
  const t0 = sentAt.get(id);
  if (t0 === undefined) {
    if (acked.has(id) || failed.has(id)) result.duplicates++; else result.unexpected++;
    return;
  }
  sentAt.delete(id);
  if (ok) {
    acked.add(id);
    result.acks++;
    const l = Date.now() - t0;
    lat.push(l);
    allLat.push(l);
  } else {
    failed.add(id);
    result.failed++;
    const code = String(text).split(':')[0];
    (failedByCode[code] = failedByCode[code] || []).push(id);
    if (result.errors.length < 5) result.errors.push(text);
  }
  maybeDone();
}

for (let i = 0; i < nconn; i++) {
  const c = { index: i, closedByClient: false, ws: new WebSocket(url) };
  conns.push(c);
  c.ws.on('open', () => {
    if (rate > 0) {
      // Rows per 10 ms tick for this connection, carrying the fraction.
      const per = rate / nconn / 100;
      let credit = 0;
      const t = setInterval(() => {
        if (stopped) { clearInterval(t); return; }
        credit += per;
        const n = Math.floor(credit);
        credit -= n;
        sendRows(c, n);
      }, 10);
      c.ws.on('close', () => clearInterval(t));
    } else {
      // As fast as possible, round-robin: each connection sends its share.
      sendRows(c, Math.ceil(totalRows / nconn));
    }
  });
  c.ws.on('message', (data) => {
    let m;
    try { m = JSON.parse(data.toString()); } catch (e) { result.unexpected++; return; }
    if (m.ack !== undefined && m.error === undefined) {
      if (m.partition !== undefined) ackedAt[String(m.ack)] = [m.partition, m.offset];
      answer(String(m.ack), true);
    }
    else if (m.error !== undefined && m.id !== undefined) answer(String(m.id), false, m.error);
    else if (c.draining && !c.closedByClient) { c.closedByClient = true; c.ws.close(1000); }
    else { result.unexpected++; if (result.errors.length < 5) result.errors.push(m); }
  });
  c.ws.on('error', (e) => { if (result.errors.length < 5) result.errors.push('socket: ' + e.message); });
  c.ws.on('close', (code, reason) => {
    result.closes.push({ code, reason: reason.toString(), by: c.closedByClient ? 'client' : 'server' });
    if (--open === 0) finish();
  });
}
