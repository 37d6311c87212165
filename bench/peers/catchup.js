'use strict';
// Catch-ups running beside the fan-out: N movies clients that each, in a
// loop, subscribe to movie-stats from a position (--since, e.g. the start
// of every partition), read --records records (the catch-up, then live
// ones), close and start again. On SIGTERM it prints one JSON line:
// {catchups: completed, records: read, clients: N}.
//   node catchup.js --url ws://127.0.0.1:P/stream --clients N --since POS --records R
const WebSocket = require('ws');

const args = {};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].slice(2)] = process.argv[i + 1];
const want = Number(args.records);
const stats = { catchups: 0, records: 0, clients: Number(args.clients), not_recovered: 0 };

function client() {
  const ws = new WebSocket(args.url);
  let got = 0;
  ws.on('open', () => ws.send(JSON.stringify({ subscribe: 'movie-stats', since: args.since })));
  ws.on('message', (data) => {
    const text = data.toString();
    if (text.startsWith('{"subscribed"')) {
      if (!text.includes('"recovered":true')) stats.not_recovered++;
      return;
    }
    got++;
    stats.records++;
    if (got === want) {
      stats.catchups++;
      ws.close();
    }
  });
  ws.on('close', () => setTimeout(client, 10));
  ws.on('error', () => {});
}

for (let i = 0; i < stats.clients; i++) client();
process.on('SIGTERM', () => {
  process.stdout.write(JSON.stringify(stats) + '\n');
  process.exit(0);
});
