// One WebSocket (npm `ws`) or HTTPS request through a gateway's door, as a
// third-party client sees it; prints one JSON line with what happened.
//
//   node door.js URL [--protocol P]... [--header NAME:VALUE]... [--ca FILE]
//                [--cert FILE --key FILE] [--send TEXT] [--hold FILE]
//
// ws:// or wss:// URL: {"opened":true,"protocol":P,"messages":[first
// message, and the reply to --send]} or, refused before the upgrade,
// {"status":N,"headers":{...},"body":"..."}, or {"error":"..."} when the
// connection failed without an HTTP answer. --hold FILE: once open, create
// FILE.open, then wait until FILE exists before sending (a connection kept
// across an event).
// http:// or https:// URL: a GET, {"status":N,"headers":{...},"body":"..."}.
'use strict';

const fs = require('node:fs');
const http = require('node:http');
const https = require('node:https');
const WebSocket = require('ws');

const args = process.argv.slice(2);
const url = args.shift();
const protocols = [];
const headers = {};
const tls = {};
let send = null;
let hold = null;
while (args.length) {
  const a = args.shift();
  const v = args.shift();
  if (a === '--protocol') protocols.push(v);
  else if (a === '--header') { const i = v.indexOf(':'); headers[v.slice(0, i)] = v.slice(i + 1); }
  else if (a === '--ca') tls.ca = fs.readFileSync(v);
  else if (a === '--cert') tls.cert = fs.readFileSync(v);
  else if (a === '--key') tls.key = fs.readFileSync(v);
  else if (a === '--send') send = v;
  else if (a === '--hold') hold = v;
  else { console.error('unknown option ' + a); process.exit(2); }
}

function done(result) {
  console.log(JSON.stringify(result));
  process.exit(0);
}

function answer(res) {
  let body = '';
  res.setEncoding('utf8');
  res.on('data', (d) => { body += d; });
  res.on('end', () => done({ status: res.statusCode, headers: res.headers, body }));
}

setTimeout(() => done({ error: 'timeout' }), hold ? 120000 : 20000).unref();

if (/^https?:/.test(url)) {
  const get = url.startsWith('https:') ? https.get : http.get;
  get(url, { headers, ...tls }, answer).on('error', (e) => done({ error: e.code || e.message }));
} else {
  const ws = new WebSocket(url, protocols, { headers, ...tls });
  const messages = [];
  ws.on('unexpected-response', (req, res) => answer(res));
  ws.on('error', (e) => done({ error: e.code || e.message }));
  ws.on('open', () => {
    if (send === null) return;
    const go = () => ws.send(send);
    if (!hold) return go();
    fs.writeFileSync(hold + '.open', '');
    const wait = setInterval(() => { if (fs.existsSync(hold)) { clearInterval(wait); go(); } }, 50);
  });
  ws.on('message', (m) => {
    messages.push(m.toString());
    if (messages.length === (send === null ? 1 : 2)) {
      ws.close();
      done({ opened: true, protocol: ws.protocol, messages });
    }
  });
}
