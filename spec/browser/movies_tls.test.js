// The movies page over https in headless Chromium: the gateway serves the
// page and its WebSocket (wss://) with a certificate from a CA this test
// makes (spec/clients/testca.sh, the openssl command). The CA is trusted the
// way a user trusts one, in the NSS database of the browser's HOME
// (certutil), not by turning certificate checks off. Run by ctest
// (spec/tests.d/browser.cmake).
'use strict';

const { test, after } = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { ROOT, OUT, waitFor, freePort, startGateway, killGateways, topicRecords,
  launchChromium } = require('./support');

after(killGateways);

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-tls-browser-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

let gw, trusted, untrusted;

test('the page loads over https from a CA the browser trusts, and streams over wss', async () => {
  execFileSync('sh', [path.join(ROOT, 'spec', 'clients', 'testca.sh'), path.join(dir, 'ca')]);
  const home = path.join(dir, 'home');
  const nssdb = 'sql:' + path.join(home, '.pki', 'nssdb');
  fs.mkdirSync(path.join(home, '.pki', 'nssdb'), { recursive: true });
  execFileSync('certutil', ['-N', '-d', nssdb, '--empty-password']);
  execFileSync('certutil', ['-A', '-d', nssdb, '-n', 'sluice test CA', '-t', 'C,,', '-i',
    path.join(dir, 'ca', 'ca.pem')]);

  const port = await freePort();
  gw = await startGateway(port, await freePort(), {
    cert: path.join(dir, 'ca', 'server.pem'), key: path.join(dir, 'ca', 'server.key'),
    ca: path.join(dir, 'ca', 'ca.pem'),
  });
  assert.match(gw.log(), new RegExp(`listening on https://0\\.0\\.0\\.0:${port}/ \\(WebSocket and HTTP over TLS\\)\n`));
  assert.match(gw.log(), new RegExp(`movies: open https://localhost:${port}/ in a browser\n`));

  trusted = await launchChromium({ HOME: home });
  const page = await (await trusted.newContext()).newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  const response = await page.goto(gw.url);
  assert.equal(response.status(), 200);
  const security = await response.securityDetails();
  assert.equal(security.subjectName, 'localhost');
  assert.equal(security.issuer, 'sluice test CA');
  assert.match(security.protocol, /^TLS 1\.[23]$/);
  await page.waitForSelector('#conn[data-state="open"]', { timeout: 15000 });
  assert.equal(await page.evaluate(() => location.protocol), 'https:');

  await page.fill('#actor', 'Brad Pitt');
  await page.click('#search');
  await page.waitForSelector('#results:not([hidden]) tbody tr', { timeout: 10000 });
  await page.click('#stream');
  await waitFor('every row to show stored', async () => {
    const s = await page.$$eval('#results td.status', (tds) => tds.map((td) => td.dataset.status));
    return s.length === 15 && s.every((x) => x === 'stored');
  }, 30000);
  const records = await topicRecords(gw.bootstrap, 'movie-results', 15);
  assert.equal(records.length, 15);
  assert.ok(records.every((r) => r.key === 'nm0000093'));
  await page.screenshot({ path: path.join(OUT, 'movies-tls.png'), fullPage: true });
  assert.deepEqual(errors, []);
});

test('a browser that does not trust the CA refuses the page (the check is real)', async () => {
  const home = path.join(dir, 'home-untrusting');
  fs.mkdirSync(home, { recursive: true });
  untrusted = await launchChromium({ HOME: home });
  const page = await (await untrusted.newContext()).newPage();
  await assert.rejects(page.goto(gw.url), /net::ERR_CERT_AUTHORITY_INVALID/);
  // and the gateway still serves the browser that trusts it
  const again = await (await trusted.newContext()).newPage();
  assert.equal((await again.goto(gw.url)).status(), 200);
  await again.waitForSelector('#conn[data-state="open"]', { timeout: 15000 });
});

test('shutdown', async () => {
  if (trusted) await trusted.close();
  if (untrusted) await untrusted.close();
  if (gw) await gw.stop();
});
