'use strict';
// Hot reload benchmark (not a test): how long from a file write to the new
// code serving, and how long the event loop stalls during a reload.
//
//   node bench/reload/reload_bench.js [--sluice build/bin/sluice] [--app DIR/app.lua]
//        [--reloads 30] [--interval 400] [--debounce 100] [--rows 3000] [--out FILE]
//
// It copies the app's directory (default: the movies app) to a temp dir,
// runs `sluice run app.lua --watch` on it, and meanwhile:
//  - streams movie rows over one WebSocket at --rows rows/s (acked by the
//    movies protocol) so the gateway is busy as in real use;
//  - probes the loop back to back with GET /_sluice/health on a keep-alive
//    connection; each answer's latency is a sample of how long the loop
//    was unable to answer, and its `generation` says which code serves;
//  - every --interval ms rewrites app.lua (temp file + rename, as editors
//    save) with a new marker comment.
// write→serving: from the rename to the first health answer with the new
// generation (includes the --debounce quiet time). Stall: the longest probe
// latency between the write and 50 ms after serving, against the longest
// probe latency in quiet periods (baseline). The gateway's own "load X ms,
// swap Y ms" log lines are collected too.
// Prints a JSON report (and writes it to --out).
const fs = require('fs');
const os = require('os');
const path = require('path');
const http = require('http');
const { spawn } = require('child_process');

const root = path.resolve(__dirname, '../..');
const WebSocket = require(path.join(root, 'spec/clients/node_modules/ws'));

function args(argv) {
  const o = {};
  for (let i = 0; i < argv.length; i += 2) o[argv[i].replace(/^--/, '')] = argv[i + 1];
  return o;
}
const o = args(process.argv.slice(2));
const sluice = o.sluice || path.join(root, 'build/bin/sluice');
const srcApp = o.app || path.join(root, 'scripts/apps/movies/app.lua');
const reloads = Number(o.reloads || 30);
const interval = Number(o.interval || 400);
const debounce = Number(o.debounce || 100);
const rowsPerSec = Number(o.rows || 3000);

const now = () => Number(process.hrtime.bigint()) / 1e6;   // ms
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function copyDir(from, to) {
  fs.mkdirSync(to, { recursive: true });
  for (const e of fs.readdirSync(from, { withFileTypes: true })) {
    const a = path.join(from, e.name), b = path.join(to, e.name);
    if (e.isDirectory()) copyDir(a, b); else fs.copyFileSync(a, b);
  }
}

function quantile(xs, q) {
  if (!xs.length) return null;
  const s = [...xs].sort((a, b) => a - b);
  return +s[Math.min(s.length - 1, Math.floor(q * s.length))].toFixed(3);
}
function summary(xs) {
  return { n: xs.length, median: quantile(xs, 0.5), p95: quantile(xs, 0.95),
           max: xs.length ? +Math.max(...xs).toFixed(3) : null };
}

async function main() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-reload-bench-'));
  copyDir(path.dirname(srcApp), dir);
  const app = path.join(dir, path.basename(srcApp));
  const original = fs.readFileSync(app, 'utf8');
  const port = 20000 + Math.floor(Math.random() * 20000);
  const gw = spawn(sluice, ['run', app, '--watch', '--watch-debounce', String(debounce),
    '--listen', String(port), '--embedded-port', '0'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  gw.stderr.on('data', (d) => { stderr += d; });

  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  function health() {
    return new Promise((resolve) => {
      const t0 = now();
      const req = http.get({ host: '127.0.0.1', port, path: '/_sluice/health', agent }, (res) => {
        let body = '';
        res.on('data', (d) => { body += d; });
        res.on('end', () => {
          let gen = null;
          try { gen = JSON.parse(body).generation; } catch (e) { /* not JSON */ }
          resolve({ t0, t1: now(), gen });
        });
      });
      req.on('error', () => resolve({ t0, t1: now(), gen: null, error: true }));
    });
  }
  for (let i = 0; i < 200; i++) {              // wait until it serves
    const h = await health();
    if (h.gen === 1) break;
    await sleep(50);
  }

  // Background load: movie rows over one WebSocket, acked by the gateway.
  const ws = new WebSocket(`ws://127.0.0.1:${port}/`);
  let sent = 0, acked = 0, errors = 0, load = true;
  await new Promise((r) => ws.on('open', r));
  ws.on('message', (d) => { const m = JSON.parse(d.toString()); if (m.ack !== undefined) acked++; else errors++; });
  const t0load = Date.now();
  const loadTimer = setInterval(() => {
    if (!load) return;
    const due = Math.floor((Date.now() - t0load) * rowsPerSec / 1000) - sent;
    for (let i = 0; i < due && sent - acked < 5000; i++) {
      const a = sent % 50;
      ws.send(JSON.stringify({ id: sent, actorName: `Actor ${a}`, actorId: `nm${String(a).padStart(7, '0')}`,
        movieId: `tt${String(sent).padStart(7, '0')}`, movieName: `Movie ${sent}`, movieMinutes: 90 }));
      sent++;
    }
  }, 5);

  // Probe continuously; reload every `interval` ms.
  const samples = [];                          // { t0, t1, gen }
  let probing = true;
  const prober = (async () => {
    while (probing) samples.push(await health());
  })();
  await sleep(1000);
  const writes = [];
  for (let i = 1; i <= reloads; i++) {
    const tmp = path.join(dir, '.app.lua.tmp');
    fs.writeFileSync(tmp, `${original}\n-- reload bench revision ${i}\n`);
    const t = now();
    fs.renameSync(tmp, app);
    writes.push({ gen: i + 1, t });
    await sleep(interval);
  }
  await sleep(500);
  probing = false;
  await prober;
  load = false;
  clearInterval(loadTimer);
  ws.close();
  gw.kill('SIGTERM');
  await new Promise((r) => gw.on('exit', r));
  agent.destroy();

  // write→serving and stall per reload; baseline from quiet samples.
  const serving = [], stalls = [], windows = [];
  for (const w of writes) {
    const first = samples.find((s) => s.gen !== null && s.gen >= w.gen && s.t1 >= w.t);
    if (!first) continue;
    serving.push(first.t1 - w.t);
    const end = first.t1 + 50;
    windows.push([w.t, end]);
    const lat = samples.filter((s) => s.t1 >= w.t && s.t0 <= end).map((s) => s.t1 - s.t0);
    stalls.push(lat.length ? Math.max(...lat) : 0);
  }
  const quiet = samples.filter((s) => !windows.some(([a, b]) => s.t1 >= a - 20 && s.t0 <= b))
    .map((s) => s.t1 - s.t0);
  const load_ms = [...stderr.matchAll(/load ([\d.]+) ms, swap ([\d.]+) ms/g)].map((m) => +m[1]);
  const swap_ms = [...stderr.matchAll(/load ([\d.]+) ms, swap ([\d.]+) ms/g)].map((m) => +m[2]);
  const report = {
    app: path.basename(path.dirname(srcApp)) + '/' + path.basename(srcApp),
    reloads_written: writes.length,
    reloads_done: load_ms.length,
    reload_failures: (stderr.match(/reload failed/g) || []).length,
    debounce_ms: debounce,
    write_to_serving_ms: summary(serving),
    write_to_serving_minus_debounce_ms: summary(serving.map((x) => x - debounce)),
    gateway_load_ms: summary(load_ms),
    gateway_swap_ms: summary(swap_ms),
    probe_latency_during_reload_max_ms: summary(stalls),
    probe_latency_quiet_ms: summary(quiet),
    probes: samples.length,
    background_rows: { sent, acked, errors, rows_per_s: rowsPerSec },
  };
  const text = JSON.stringify(report, null, 2);
  process.stdout.write(text + '\n');
  if (o.out) fs.writeFileSync(o.out, text + '\n');
  fs.rmSync(dir, { recursive: true, force: true });
  process.exit(0);
}

main().catch((e) => { console.error(e); process.exit(1); });
