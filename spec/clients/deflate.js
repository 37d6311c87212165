'use strict';
// A WebSocket client with or without permessage-deflate (Node `ws`).
//   node deflate.js --url ws://127.0.0.1:P/path --deflate on|off [--window BITS]
//        [--echo BYTES] [--count N] [--timeout S] [--ready-file PATH]
// --window: asks for server_max_window_bits=BITS. --echo: sends one text message of BYTES (repetitive JSON) and checks the
// answer is the same text. --count: then keeps the next N messages. Prints
// one JSON line: extensions (negotiated), echo ("same" or what differed),
// messages, bytes_read (what came over the socket, frames and handshake).
const fs = require('fs');
const WebSocket = require('ws');
const parse = require('./args');

const o = parse(process.argv.slice(2));
const result = { extensions: null, echo: null, messages: [], bytes_read: 0 };
const want = Number(o.count || 0);
let sent = null;

const ws = new WebSocket(o.url, { perMessageDeflate: o.deflate === 'on' &&
  (o.window ? { serverMaxWindowBits: Number(o.window) } : true) });
function finish() {
  result.bytes_read = ws._socket ? ws._socket.bytesRead : result.bytes_read;
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(0);
}
setTimeout(() => { result.timed_out = true; finish(); }, Number(o.timeout || 30) * 1000);
function done() {
  if ((o.echo === undefined || result.echo !== null) && result.messages.length >= want) {
    result.bytes_read = ws._socket.bytesRead;
    ws.close(1000);
  }
}
ws.on('open', () => {
  result.extensions = ws.extensions;
  if (o['ready-file']) fs.writeFileSync(o['ready-file'], 'ready\n');
  if (o.echo !== undefined) {
    const unit = JSON.stringify({ actorName: 'Brad Pitt', movieName: 'Fight Club', minutes: 139 });
    sent = unit.repeat(Math.ceil(Number(o.echo) / unit.length)).slice(0, Number(o.echo));
    ws.send(sent);
  } else done();
});
ws.on('message', (data) => {
  const text = data.toString();
  if (sent !== null && result.echo === null) {
    result.echo = text === sent ? 'same' : `differs: ${text.length} bytes back for ${sent.length}`;
  } else {
    result.messages.push(text);
  }
  done();
});
ws.on('error', (e) => { result.error = e.message; });
ws.on('close', finish);
