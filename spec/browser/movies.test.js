// The movies page in a real browser: Debian's chromium driven by
// playwright-core (no browser download), against a real gateway with the
// embedded broker, checked with kcat. Run by ctest (spec/tests.d/browser.cmake):
//
//   SLUICE_BIN=build/bin/sluice-lua5.4 SLUICE_ROOT=. SLUICE_OUT=build/browser \
//     node spec/browser/movies.test.js
//
// Screenshots and the gateways' logs go to SLUICE_OUT.
'use strict';

const { test, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { OUT, APP_DIR, sleep, waitFor, freePort, startGateway, killGateways, kcatProduce,
  topicRecords, launchChromium } = require('./support');

// SLUICE_FAKE_STATS=1 exercises the no-processing path even when it exists.
const HAS_PROCESSING = fs.existsSync(path.join(APP_DIR, 'processing.lua')) && !process.env.SLUICE_FAKE_STATS;
const DATA = JSON.parse(fs.readFileSync(path.join(APP_DIR, 'data', 'movies.json'), 'utf8'));

after(killGateways);

// ---- the data set, read independently of the app ----------------------------

function expectedRowsFor(actorId) {
  const rows = [];
  for (const m of DATA.movies) {
    if (m.cast.some(([id]) => id === actorId)) {
      rows.push({ actorName: DATA.people[actorId], actorId, movieId: m.id, movieName: m.title,
        movieMinutes: m.minutes, movieYear: m.year });
    }
  }
  return rows;
}

// ---- the browser -----------------------------------------------------------------

let browser, gw, pageA, pageB;
const kafkaPort = {};

async function tableRows(page) {
  return page.$$eval('#results tbody tr', (trs) => trs.map((tr) => {
    const td = [...tr.querySelectorAll('td')].map((c) => c.textContent);
    return { id: tr.dataset.id, actorName: td[1], actorId: td[2], movieName: td[3], movieId: td[4],
      movieYear: Number(td[5]), movieMinutes: Number(td[6]),
      status: tr.querySelector('td.status').dataset.status };
  }));
}

// Asserts that the text of `selector` becomes `want` within 5 s (the page
// updates its summary on the next animation frame).
async function expectText(page, selector, want) {
  await page.waitForFunction(([sel, w]) => document.querySelector(sel).textContent === w,
    [selector, want], { timeout: 5000 }).catch(() => {});
  assert.equal(await page.textContent(selector), want);
}

async function statuses(page) {
  return page.$$eval('#results td.status', (tds) => tds.map((td) => td.dataset.status));
}

async function search(page, actor, movie) {
  await page.fill('#actor', actor || '');
  await page.fill('#movie', movie || '');
  await page.click('#search');
}

test('the page loads from the gateway and connects', async () => {
  const port = await freePort();
  kafkaPort.value = await freePort();
  gw = await startGateway(port, kafkaPort.value);
  browser = await launchChromium();
  const ctxA = await browser.newContext({ viewport: { width: 1360, height: 900 } });
  const ctxB = await browser.newContext({ viewport: { width: 1360, height: 900 } });
  pageA = await ctxA.newPage();
  pageB = await ctxB.newPage();
  const errors = [];
  pageA.on('pageerror', (e) => errors.push(e.message));
  await pageA.goto(gw.url);
  await pageB.goto(gw.url);
  // what demo.sh shows a new user: the URL to open
  assert.match(gw.log(), new RegExp(`sluice info: movies: open http://localhost:${port}/ in a browser\n`));
  assert.equal(await pageA.title(), 'sluice · movies');
  await pageA.waitForSelector('#conn[data-state="open"]', { timeout: 15000 });
  await pageA.waitForSelector('#live-conn[data-state="open"]', { timeout: 15000 });
  await pageB.waitForSelector('#live-conn[data-state="open"]', { timeout: 15000 });
  assert.equal(await pageA.textContent('#conn'), 'Connected');
  assert.deepEqual(errors, []);
});

test('querying "Brad Pitt" shows exactly his rows of the data set', async () => {
  await search(pageA, 'Brad Pitt');
  await pageA.waitForSelector('#results:not([hidden]) tbody tr', { timeout: 10000 });
  const shown = await tableRows(pageA);
  const expected = expectedRowsFor('nm0000093');
  assert.equal(expected.length, 15);
  const key = (r) => r.movieId;
  const sortBy = (a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0);
  assert.deepEqual(
    shown.map(({ actorName, actorId, movieId, movieName, movieMinutes, movieYear }) =>
      ({ actorName, actorId, movieId, movieName, movieMinutes, movieYear })).sort(sortBy),
    expected.sort(sortBy));
  // a few facts spelled out, so that a wrong data set cannot pass
  const fight = shown.find((r) => r.movieName === 'Fight Club');
  assert.deepEqual([fight.movieId, fight.movieMinutes, fight.movieYear], ['tt0137523', 139, 1999]);
  assert.ok(shown.every((r) => r.status === 'new'));
  assert.match(await pageA.textContent('#message'), /15 rows found/);
  await expectText(pageA, '#summary', '0 of 15 rows stored in movie-results');
  assert.equal(await pageA.isEnabled('#stream'), true);
});

test('Stream: every row shows stored, and exactly those rows are in movie-results keyed by actorId', async () => {
  await pageA.click('#stream');
  await waitFor('every row to show stored', async () => {
    const s = await statuses(pageA);
    return s.length === 15 && s.every((x) => x === 'stored');
  }, 30000);
  await expectText(pageA, '#summary', '15 of 15 rows stored in movie-results');
  assert.equal(await pageA.isEnabled('#stream'), false);

  const shown = await tableRows(pageA);
  const records = await topicRecords(gw.bootstrap, 'movie-results', 15);
  assert.equal(records.length, 15, 'movie-results holds exactly the 15 streamed rows');
  const stored = records.map((r) => {
    assert.equal(r.key, 'nm0000093', 'keyed by actorId');
    return JSON.parse(r.value);
  });
  const want = shown.map((r) => ({ id: r.id, actorName: r.actorName, actorId: r.actorId,
    movieId: r.movieId, movieName: r.movieName, movieMinutes: r.movieMinutes }));
  const byId = (a, b) => (a.id < b.id ? -1 : 1);
  assert.deepEqual(stored.sort(byId), want.sort(byId));
});

test('a second browser\'s live panel shows movie-stats as it arrives', async () => {
  const liveList = (sel) => pageB.$$eval(sel + ' li', (lis) => lis.map((li) => li.textContent));
  if (HAS_PROCESSING) {
    // processing.lua turns the streamed rows into per-actor records: the
    // second browser ranks Brad Pitt with his 15 films and their minutes
    const want = 'Brad Pitt movies 15 · minutes 2,032 · rows 15';
    await waitFor('movie-stats from processing.lua in the second browser',
      async () => (await liveList('#live-top')).includes(want), 90000, 500);
  } else {
    // no processing yet: publish a window's top actors as it would, until
    // the app's stats consumer (starting at "latest") has its partitions
    const record = JSON.stringify({ type: 'top', start: Date.UTC(2026, 0, 1, 12, 0), end: Date.UTC(2026, 0, 1, 12, 1),
      actors: [{ actorId: 'nm0000093', actorName: 'Brad Pitt', minutes: 2032 },
        { actorId: 'nm0000233', actorName: 'Quentin Tarantino', minutes: 1302 }] });
    await waitFor('movie-stats in the second browser', async () => {
      if ((await liveList('#live-window')).length) return true;
      kcatProduce(gw.bootstrap, 'movie-stats', record);
      await sleep(1000);
      return (await liveList('#live-window')).length > 0;
    }, 45000, 100);
    assert.deepEqual(await liveList('#live-window'), ['Brad Pitt minutes 2,032', 'Quentin Tarantino minutes 1,302']);
  }
  assert.match(await pageB.textContent('#live-status'), /^\d+ records? received, last at /);
  await pageA.bringToFront();
  await pageA.waitForTimeout(300);
  await pageA.screenshot({ path: path.join(OUT, 'movies.png'), fullPage: true });
  await pageB.screenshot({ path: path.join(OUT, 'movies-second-browser.png'), fullPage: true });
});

test('bad input gets a clear message and nothing is injected into the page', async () => {
  const page = await (await browser.newContext()).newPage();
  await page.goto(gw.url);
  const before = await page.evaluate(() => ({ scripts: document.scripts.length, imgs: document.images.length }));

  // empty form (and a form of only commas and spaces)
  await search(page, '', '');
  await page.waitForSelector('#message[data-kind="error"]:not([hidden])');
  assert.equal(await page.textContent('#message'), 'Type an actor and/or a movie name (comma-separated lists work too).');
  await search(page, ' , ', '  ');
  assert.match(await page.textContent('#message'), /^Type an actor/);
  // the API says the same to anyone
  const api = await page.evaluate(async () => { const r = await fetch('/api/fetch?actor=%20,'); return [r.status, await r.json()]; });
  assert.deepEqual(api, [400, { error: 'type an actor and/or a movie name' }]);

  // an unknown actor
  await search(page, 'Nobody Atall');
  await page.waitForFunction(() => document.querySelector('#message').textContent.includes('Nobody'));
  assert.equal(await page.textContent('#message'),
    'No actor named “Nobody Atall” in the data set. Try Brad Pitt, Quentin Tarantino or Pulp Fiction.');
  assert.equal(await page.isHidden('#results'), true);
  assert.equal(await page.isEnabled('#stream'), false);

  // quotes and markup are shown as text, never run
  const evil = `O'Brien "Bob" <script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">`;
  await search(page, evil, '</td><b>bold</b>');
  await page.waitForFunction(() => document.querySelector('#message').textContent.includes('Brien'));
  const msg = await page.textContent('#message');
  assert.ok(msg.includes(`No actor named “O'Brien "Bob" <script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">” in the data set.`), msg);
  assert.ok(msg.includes('No movie named “</td><b>bold</b>”'), msg);
  await page.waitForTimeout(300);
  const afterState = await page.evaluate(() => ({ scripts: document.scripts.length, imgs: document.images.length,
    bold: document.querySelectorAll('b').length, pwned: window.__pwned }));
  assert.deepEqual(afterState, { scripts: before.scripts, imgs: before.imgs, bold: 0, pwned: undefined });
  await page.context().close();
});

test('the gateway stopped mid-stream: the page shows it, then recovers when it returns', async () => {
  const n = expectedRowsFor('nm0000233').length;
  assert.equal(n, 9);
  await search(pageA, 'Quentin Tarantino');
  await pageA.waitForFunction((k) => document.querySelector('#summary').textContent.startsWith(`0 of ${k} rows`), n);
  // Freeze the gateway so that no answer comes, stream, then kill it.
  gw.signal('SIGSTOP');
  await pageA.click('#stream');
  await waitFor('rows to show sent', async () => (await statuses(pageA)).every((s) => s === 'sent'), 10000);
  // A frozen gateway is not a silent hang: after 15 s without answers the
  // page says so.
  await pageA.waitForSelector('#conn[data-state="stalled"]', { timeout: 30000 });
  assert.equal(await pageA.textContent('#conn'), `Connected, but no answer for ${n} rows`);
  assert.equal(await pageA.textContent('#results tbody td.status'), 'sent (no answer yet)');
  await pageA.screenshot({ path: path.join(OUT, 'movies-gateway-frozen.png'), fullPage: true });
  gw.signal('SIGKILL');
  gw.signal('SIGCONT');
  await pageA.waitForSelector('#conn[data-state="closed"]', { timeout: 15000 });
  assert.match(await pageA.textContent('#conn'), /^Gateway unreachable: connection lost — retrying in \d+ s$/);
  assert.equal(await pageA.getAttribute('#message', 'data-kind'), 'error');
  assert.match(await pageA.textContent('#message'), /connection to the gateway is down/);
  assert.ok((await statuses(pageA)).every((s) => s === 'queued'));
  assert.match(await pageA.textContent('#results tbody td.status'), /^waiting for connection \(will resend\)$/);
  await expectText(pageA, '#summary', `0 of ${n} rows stored in movie-results (${n} waiting)`);
  await pageA.screenshot({ path: path.join(OUT, 'movies-gateway-down.png'), fullPage: true });
  await waitFor('the gateway to be gone', () => gw.exited() !== null, 10000);

  // The same gateway comes back (a new process: its embedded broker is empty).
  gw = await startGateway(gw.port, kafkaPort.value);
  await pageA.waitForSelector('#conn[data-state="open"]', { timeout: 30000 });
  await waitFor('every row to show stored after the reconnect', async () => {
    const s = await statuses(pageA);
    return s.length === n && s.every((x) => x === 'stored');
  }, 30000);
  await expectText(pageA, '#summary', `${n} of ${n} rows stored in movie-results`);
  await pageA.waitForSelector('#message[data-kind="ok"]');
  assert.equal(await pageA.textContent('#message'), 'Connected again: every row is stored.');
  const shown = await tableRows(pageA);
  assert.equal(new Set(shown.map((r) => r.id)).size, n, 'no duplicate rows in the table');
  const records = await topicRecords(gw.bootstrap, 'movie-results', n);
  assert.equal(records.length, n, 'each row stored once by the new gateway');
  assert.deepEqual(records.map((r) => JSON.parse(r.value).id).sort(), shown.map((r) => r.id).sort());
  assert.ok(records.every((r) => r.key === 'nm0000233'));
  await pageA.screenshot({ path: path.join(OUT, 'movies-recovered.png'), fullPage: true });
});

test('after its gateway restarts, an EventSource (Last-Event-ID) and the live panel (positions) resume with no gap', async () => {
  // A broker of their own (a gateway's embedded Kafka, nothing writing
  // movie-stats but kcat), and the gateway under test on it, restarted.
  const env = { SLUICE_MOVIES_PROCESSING: '0' };
  const kafka = await startGateway(await freePort(), await freePort(), null, { env });
  const port = await freePort();
  let gw2 = await startGateway(port, null, null, { kafka: kafka.bootstrap, env });
  const page = await (await browser.newContext()).newPage();
  await page.goto(gw2.url);
  await page.evaluate(() => {
    window.sse = { events: [], recovered: [], opened: 0 };
    const es = new EventSource('/events');
    es.onopen = () => { window.sse.opened++; };
    es.onmessage = (e) => window.sse.events.push([e.lastEventId, JSON.parse(e.data).n]);
    es.addEventListener('recovered', (e) => window.sse.recovered.push(JSON.parse(e.data)));
  });
  await page.waitForSelector('#live-conn[data-state="open"]', { timeout: 15000 });
  // Chromium offers permessage-deflate and the movies app takes it
  assert.equal(await page.evaluate(() => new Promise((resolve) => {
    const ws = new WebSocket(location.origin.replace('http', 'ws') + '/stream');
    ws.onopen = () => { resolve(ws.extensions); ws.close(); };
    ws.onerror = () => resolve('error');
  })), 'permessage-deflate');
  await waitFor('the EventSource to open', () => page.evaluate(() => window.sse.opened === 1), 15000, 100);
  // (records over 64 bytes: compressed on the page's WebSocket)
  const note = 'a movie-stats record long enough to be worth compressing';
  const write = (from, to) => { for (let n = from; n <= to; n++) kcatProduce(kafka.bootstrap, 'movie-stats', JSON.stringify({ n, note })); };
  const seen = () => page.evaluate(() => window.sse.events.map(([, n]) => n));
  const panel = () => page.$$eval('#live-last li', (lis) => lis.map((li) => li.textContent));
  write(1, 3);
  await waitFor('3 events', async () => (await seen()).length >= 3, 30000, 100);
  await waitFor('3 records in the live panel', async () => (await panel()).length >= 3, 30000, 100);
  // every event's id is the position after it: "partition:next:timestamp,…"
  const ids = await page.evaluate(() => window.sse.events.map(([id]) => id));
  assert.ok(ids.every((id) => /^\d+:\d+:-?\d+(,\d+:\d+:-?\d+)*$/.test(id)), ids.join(' '));

  await gw2.stop();
  await page.waitForSelector('#live-conn[data-state="closed"]', { timeout: 15000 });
  write(4, 6);                                 // while nobody serves the page
  gw2 = await startGateway(port, null, null, { kafka: kafka.bootstrap, env });
  await waitFor('6 events', async () => (await seen()).length >= 6, 60000, 100);
  write(7, 7);                                 // live again
  await waitFor('7 events', async () => (await seen()).length >= 7, 30000, 100);
  await sleep(500);
  assert.deepEqual((await seen()).sort((a, b) => a - b), [1, 2, 3, 4, 5, 6, 7]);
  assert.deepEqual(await page.evaluate(() => window.sse.recovered), [{ recovered: true }]);
  assert.equal(await page.evaluate(() => window.sse.opened), 2);

  // the live panel: told it resumed, and the records of the outage are there
  await page.waitForSelector('#live-resume[data-recovered="true"]', { timeout: 30000 });
  assert.equal(await page.textContent('#live-resume'), 'Reconnected: resumed from the last record seen, nothing missed');
  await waitFor('7 records in the live panel', async () =>
    /^7 records received/.test(await page.textContent('#live-status')), 30000, 100);
  // (the latest five; records of different partitions may arrive in any order)
  const latest = (await panel()).map((t) => JSON.parse(t).n);
  assert.equal(latest.length, 5);
  for (const n of [4, 5, 6, 7]) assert.ok(latest.includes(n), `record ${n} not in the panel: ${latest}`);
  await page.screenshot({ path: path.join(OUT, 'movies-resumed.png'), fullPage: true });
  await page.context().close();
  await gw2.stop();
  await kafka.stop();
});

test('with SLUICE_MOVIES_SECRET the page fetches a token for each WebSocket and streams as before', async () => {
  const other = await startGateway(await freePort(), await freePort(), null,
    { env: { SLUICE_MOVIES_SECRET: 'browser-spec-secret-0123456789abcdefghij', SLUICE_MOVIES_PROCESSING: '0' } });
  try {
    const page = await (await browser.newContext()).newPage();
    const sockets = [];
    page.on('websocket', (ws) => sockets.push(ws.url()));
    await page.goto(other.url);
    await page.waitForSelector('#conn[data-state="open"]', { timeout: 15000 });
    await page.waitForSelector('#live-conn[data-state="open"]', { timeout: 15000 });
    assert.deepEqual(sockets.map((u) => u.replace(/\?token=[\w-]+\.[\w-]+\.[\w-]+$/, '?token=JWT')).sort(),
      // the rows' socket and the live panel's (which subscribes with positions on /stream)
      [`ws://127.0.0.1:${other.port}/stream?token=JWT`, `ws://127.0.0.1:${other.port}/stream?token=JWT`]);
    await search(page, 'Brad Pitt');
    await page.waitForSelector('#results:not([hidden]) tbody tr', { timeout: 10000 });
    await page.click('#stream');
    await waitFor('every row to show stored', async () => {
      const s = await statuses(page);
      return s.length === 15 && s.every((x) => x === 'stored');
    }, 30000);
    assert.equal((await topicRecords(other.bootstrap, 'movie-results', 15)).length, 15);
    await page.context().close();
  } finally {
    await other.stop();
  }
});

test('shutdown', async () => {
  if (browser) await browser.close();
  if (gw) await gw.stop();
});
