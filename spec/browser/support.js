// What the browser specs share: waiting, free ports, a gateway process
// (with a watchdog), kcat, and Debian's Chromium through playwright-core.
'use strict';

const { spawn, execFileSync } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const https = require('node:https');
const net = require('node:net');
const path = require('node:path');

let chromium;
try {
  ({ chromium } = require('playwright-core'));
} catch (e) {
  console.error('playwright-core is missing: run `npm ci` in spec/browser (./test.sh does it)');
  process.exit(1);
}

const ROOT = path.resolve(process.env.SLUICE_ROOT || path.join(__dirname, '..', '..'));
const BIN = process.env.SLUICE_BIN || path.join(ROOT, 'build', 'bin', 'sluice-lua5.4');
const KCAT = process.env.SLUICE_KCAT || 'kcat';
const CHROMIUM = process.env.SLUICE_CHROMIUM || '/usr/bin/chromium';
const OUT = path.resolve(process.env.SLUICE_OUT || path.join(ROOT, 'build', 'browser'));
const APP_DIR = path.join(ROOT, 'scripts', 'apps', 'movies');
const APP = path.join(APP_DIR, 'app.lua');

fs.mkdirSync(OUT, { recursive: true });

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitFor(what, fn, timeoutMs = 30000, stepMs = 200) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await fn();
    if (last) return last;
    if (Date.now() > deadline) throw new Error('timed out waiting for ' + what);
    await sleep(stepMs);
  }
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

// tls: { ca } for an https gateway (checked against that CA, as localhost).
function httpStatus(port, urlPath, tls) {
  return new Promise((resolve) => {
    const get = tls ? https.get : http.get;
    const where = tls ? { host: 'localhost', ca: tls.ca } : { host: '127.0.0.1' };
    const req = get({ ...where, port, path: urlPath, timeout: 3000 }, (res) => {
      res.resume();
      resolve(res.statusCode);
    });
    req.on('error', () => resolve(0));
    req.on('timeout', () => { req.destroy(); resolve(0); });
  });
}

// ---- the gateway --------------------------------------------------------------

let gateways = 0;
const running = new Set();

// Starts `sluice run app.lua --listen PORT --embedded-port KAFKA` through a
// small shell that records the gateway's pid and kills it should this
// process die without cleaning up (e.g. killed by ctest's timeout).
// tls: { cert, key, ca } files: served over https (--tls-cert, --tls-key).
// tls: {cert, key, ca} to serve https; opts.kafka: an external broker
// (bootstrap) instead of the embedded one; opts.env: extra environment.
async function startGateway(port, kafkaPort, tls, opts = {}) {
  const n = ++gateways;
  const logPath = path.join(OUT, `gateway-${n}.log`);
  const pidPath = path.join(OUT, `gateway-${n}.pid`);
  fs.rmSync(pidPath, { force: true });
  const log = fs.openSync(logPath, 'w');
  const watchdog = `"$0" "$@" & pid=$!; echo $pid > '${pidPath}'; ` +
    `(while kill -0 ${process.pid} 2>/dev/null && kill -0 $pid 2>/dev/null; do sleep 1; done; ` +
    `kill -KILL $pid 2>/dev/null) >/dev/null 2>&1 & wait $pid`;
  const tlsArgs = tls ? ['--tls-cert', tls.cert, '--tls-key', tls.key] : [];
  const broker = opts.kafka ? ['--kafka', opts.kafka] : ['--embedded-port', String(kafkaPort)];
  const child = spawn('sh', ['-c', watchdog, BIN, 'run', APP, '--listen', String(port), ...broker,
    ...tlsArgs], { stdio: ['ignore', log, log], env: { ...process.env, ...(opts.env || {}) } });
  fs.closeSync(log);
  let exited = null;
  child.on('exit', (code, sig) => { exited = sig || code; running.delete(pid); });
  const pid = Number(await waitFor('the gateway pid', () => {
    const text = fs.existsSync(pidPath) && fs.readFileSync(pidPath, 'utf8').trim();
    return text || (exited !== null ? 'exited' : '');
  }, 10000, 20));
  if (!pid) throw new Error(`gateway did not start; see ${logPath}`);
  running.add(pid);
  await waitFor('the gateway to answer /healthz', async () => {
    if (exited !== null) throw new Error(`gateway exited (${exited}); see ${logPath}`);
    return (await httpStatus(port, '/healthz', tls && { ca: fs.readFileSync(tls.ca) })) === 200;
  }, 30000);
  const signal = (sig) => { try { process.kill(pid, sig); } catch (e) { /* gone already */ } };
  return {
    port, bootstrap: opts.kafka || '127.0.0.1:' + kafkaPort, log: () => fs.readFileSync(logPath, 'utf8'),
    url: tls ? `https://localhost:${port}/` : `http://127.0.0.1:${port}/`,
    signal,
    stop: async () => {
      if (exited !== null) return;
      signal('SIGTERM');
      await waitFor('the gateway to exit', () => exited !== null, 15000).catch(() => signal('SIGKILL'));
    },
    exited: () => exited,
  };
}

function killGateways() {
  for (const pid of running) { try { process.kill(pid, 'SIGKILL'); } catch (e) { /* gone */ } }
}

// ---- kcat ----------------------------------------------------------------------

function kcatRead(bootstrap, topic) {
  let out;
  try {
    out = execFileSync(KCAT, ['-C', '-b', bootstrap, '-t', topic, '-o', 'beginning', '-e', '-q',
      '-m', '10', '-f', '%k\t%s\n'], { encoding: 'utf8', timeout: 30000, stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    return [];       // the topic does not exist yet
  }
  return out.split('\n').filter(Boolean).map((line) => {
    const tab = line.indexOf('\t');
    return { key: line.slice(0, tab), value: line.slice(tab + 1) };
  });
}

function kcatProduce(bootstrap, topic, value) {
  execFileSync(KCAT, ['-P', '-b', bootstrap, '-t', topic], { input: value + '\n', timeout: 30000 });
}

// Waits until `want` records are in the topic, then a little longer to see
// that no more arrive; returns them.
async function topicRecords(bootstrap, topic, want) {
  await waitFor(`${want} records in ${topic}`, () => kcatRead(bootstrap, topic).length >= want, 30000, 500);
  await sleep(1500);
  return kcatRead(bootstrap, topic);
}


// Debian's chromium, headless; env: extra environment (HOME: whose NSS
// database of trusted CAs it reads).
function launchChromium(env = {}) {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,   // playwright adds --headless and a fresh temporary --user-data-dir
    // Under tools/test-sanitize.sh the gateway runs with the ASan runtime
    // preloaded; the browser (and its launcher script) must not.
    env: { ...Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'LD_PRELOAD')), ...env },
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

module.exports = { ROOT, OUT, APP_DIR, sleep, waitFor, freePort, startGateway, killGateways,
  kcatRead, kcatProduce, topicRecords, launchChromium };
