// The movies page: query the data set, stream the rows to the gateway over
// a WebSocket, show what Kafka confirmed, and a live panel of movie-stats.
// Plain browser JavaScript, no build step. Everything that comes from the
// user or the network is shown with textContent, never parsed as HTML.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const el = {
    conn: $('conn'), form: $('form'), actor: $('actor'), movie: $('movie'),
    message: $('message'), stream: $('stream'), summary: $('summary'),
    table: $('results'), tbody: document.querySelector('#results tbody'),
    liveConn: $('live-conn'), liveResume: $('live-resume'), liveStatus: $('live-status'), liveTop: $('live-top'),
    liveTotals: $('live-totals'), liveLast: $('live-last'), liveTopNone: $('live-top-none'),
    liveWindowBox: $('live-window-box'), liveWindow: $('live-window'), liveWindowRange: $('live-window-range'),
  };

  const TOPIC = 'movie-results';
  const FIELDS = ['actorName', 'actorId', 'movieId', 'movieName', 'movieMinutes'];
  const BATCH = 100;               // rows per WebSocket message
  const ACK_PATIENCE_MS = 15000;   // after this, a row without answer is flagged

  // ---- helpers ---------------------------------------------------------------

  function node(tag, text, cls) {
    const n = document.createElement(tag);
    if (text !== undefined) n.textContent = String(text);
    if (cls) n.className = cls;
    return n;
  }

  function setMessage(text, kind) {
    el.message.textContent = text || '';
    el.message.dataset.kind = kind || 'info';
    el.message.hidden = !text;
  }

  function quoteList(names) {
    return names.map((n) => '“' + n + '”').join(', ');
  }

  // ---- a WebSocket that comes back ----------------------------------------------
  // Reconnects with exponential backoff (0.5 s doubling to 10 s, with jitter)
  // and reports its state: connecting, open, or closed with the retry time.
  function keepConnected(path, handlers) {
    const url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + path;
    let ws = null, attempt = 0, retryAt = 0, timer = null, ticker = null;

    function state(s, detail) { handlers.state(s, detail); }

    // A gateway with SLUICE_MOVIES_SECRET hands out short-lived tokens
    // (a fresh one for every connection); 404: none needed.
    async function tokenQuery() {
      const res = await fetch('/api/token', { cache: 'no-store' });
      if (res.status === 404) return '';
      if (!res.ok) throw new Error('HTTP ' + res.status);
      return '?token=' + encodeURIComponent((await res.json()).token);
    }

    async function open() {
      clearTimeout(timer);
      state('connecting');
      let query;
      try {
        query = await tokenQuery();
      } catch (e) {
        return schedule('cannot get a token: ' + e.message);
      }
      try {
        ws = new WebSocket(url + query);
      } catch (e) {
        return schedule('cannot open: ' + e.message);
      }
      ws.onopen = () => { attempt = 0; state('open'); handlers.open(ws); };
      ws.onmessage = (ev) => { if (typeof ev.data === 'string') handlers.message(ev.data); };
      ws.onclose = (ev) => {
        ws = null;
        handlers.close();
        schedule(ev.code === 1006 ? 'connection lost' : 'closed (' + ev.code + (ev.reason ? ': ' + ev.reason : '') + ')');
      };
    }

    function schedule(why) {
      const delay = Math.min(10000, 500 * 2 ** attempt) * (0.75 + Math.random() * 0.5);
      attempt = Math.min(attempt + 1, 10);
      retryAt = Date.now() + delay;
      timer = setTimeout(open, delay);
      const tick = () => {
        const s = Math.max(0, Math.ceil((retryAt - Date.now()) / 1000));
        state('closed', why + ' — retrying in ' + s + ' s');
      };
      clearInterval(ticker);
      tick();
      ticker = setInterval(() => { if (ws || Date.now() > retryAt) clearInterval(ticker); else tick(); }, 500);
    }

    open();
    return { socket: () => (ws && ws.readyState === WebSocket.OPEN ? ws : null) };
  }

  function showConn(target, s, detail, names) {
    target.dataset.state = s;
    target.textContent = s === 'open' ? names.open
      : s === 'connecting' ? 'Connecting…'
      : s === 'stalled' ? detail
      : names.closed + ': ' + detail;
  }

  // ---- rows and their status ----------------------------------------------------
  // status: new → queued (waiting for a connection) → sent → stored | failed.

  let rows = [];
  const byId = new Map();

  const STATUS_TEXT = {
    new: 'not sent', queued: 'waiting for connection', sent: 'sent', stored: 'stored',
  };

  function setStatus(row, status, reason) {
    if (status === 'sent' && row.status !== 'sent') row.sentAt = Date.now();
    row.status = status;
    row.reason = reason || '';
    row.statusCell.dataset.status = status;
    const text = status === 'failed' ? 'failed: ' + row.reason
      : row.reason ? STATUS_TEXT[status] + ' (' + row.reason + ')' : STATUS_TEXT[status];
    row.statusCell.firstChild.textContent = text;
    row.statusCell.title = text;
    scheduleSummary();
  }

  // After a reconnect, say so once every row is stored again.
  let resending = false;

  function showRows(list) {
    rows = [];
    byId.clear();
    el.tbody.replaceChildren();
    resending = false;
    list.forEach((r, i) => {
      const data = {};
      FIELDS.forEach((f) => { data[f] = r[f]; });
      // The same actor and film always get the same id: acks find their row,
      // and a consumer can drop a row that was resent after a reconnect.
      const id = data.actorId + '/' + data.movieId;
      if (byId.has(id)) return;
      const tr = node('tr');
      tr.dataset.id = id;
      tr.append(node('td', i + 1, 'num'), node('td', data.actorName), node('td', data.actorId, 'id'),
        node('td', data.movieName), node('td', data.movieId, 'id'), node('td', r.movieYear ?? '', 'num'),
        node('td', data.movieMinutes, 'num'), node('td', r.credit ?? ''));
      const cell = node('td', undefined, 'status');
      cell.append(node('span'));
      tr.append(cell);
      el.tbody.append(tr);
      const row = { id, data, tr, statusCell: cell, status: 'new', reason: '', sentAt: 0 };
      rows.push(row);
      byId.set(id, row);
      setStatus(row, 'new');
    });
    el.table.hidden = rows.length === 0;
    updateSummary();
  }

  let summaryPending = false;
  function scheduleSummary() {
    if (summaryPending) return;
    summaryPending = true;
    requestAnimationFrame(() => { summaryPending = false; updateSummary(); });
  }

  function updateSummary() {
    const count = (s) => rows.filter((r) => r.status === s).length;
    const stored = count('stored'), failed = count('failed');
    const waiting = count('queued') + count('sent');
    el.stream.disabled = rows.length === 0 || count('new') + failed === 0;
    el.stream.textContent = failed > 0 && count('new') === 0 ? 'Stream again (' + failed + ' failed)' : 'Stream';
    if (rows.length === 0) { el.summary.textContent = ''; return; }
    let text = stored + ' of ' + rows.length + ' rows stored in ' + TOPIC;
    const extra = [];
    if (waiting) extra.push(waiting + ' waiting');
    if (failed) extra.push(failed + ' failed');
    if (extra.length) text += ' (' + extra.join(', ') + ')';
    el.summary.textContent = text;
    el.summary.dataset.complete = String(stored === rows.length);
    if (resending && waiting === 0) {
      resending = false;
      setMessage(failed ? 'Connected again; ' + failed + ' rows failed (see their status).'
        : 'Connected again: every row is stored.', failed ? 'error' : 'ok');
    }
  }

  // ---- search ---------------------------------------------------------------------

  let searchSeq = 0;
  async function search() {
    const actor = el.actor.value.trim(), movie = el.movie.value.trim();
    if (!actor.replace(/[\s,]/g, '') && !movie.replace(/[\s,]/g, '')) {
      setMessage('Type an actor and/or a movie name (comma-separated lists work too).', 'error');
      el.actor.focus();
      return;
    }
    const seq = ++searchSeq;
    const params = new URLSearchParams();
    if (actor) params.set('actor', actor);
    if (movie) params.set('movie', movie);
    setMessage('Searching…', 'info');
    let res, body;
    try {
      res = await fetch('/api/fetch?' + params, { cache: 'no-store' });
      body = await res.json();
    } catch (e) {
      if (seq === searchSeq) setMessage('The gateway did not answer the search (' + e.message + '). Is it running?', 'error');
      return;
    }
    if (seq !== searchSeq) return;     // a newer search is on its way
    if (!res.ok || !body || !Array.isArray(body.rows)) {
      setMessage('Search refused: ' + ((body && body.error) || 'HTTP ' + res.status) + '.', 'error');
      return;
    }
    showRows(body.rows);
    const parts = [];
    const unknown = body.unknown || {};
    if (unknown.actors && unknown.actors.length) parts.push('No actor named ' + quoteList(unknown.actors) + ' in the data set.');
    if (unknown.movies && unknown.movies.length) parts.push('No movie named ' + quoteList(unknown.movies) + ' in the data set.');
    if (rows.length === 0) {
      setMessage((parts.join(' ') || 'Nothing matches that query.') + ' Try Brad Pitt, Quentin Tarantino or Pulp Fiction.', 'error');
    } else {
      parts.unshift(rows.length + (rows.length === 1 ? ' row' : ' rows') + ' found.');
      setMessage(parts.join(' '), parts.length > 1 ? 'warn' : 'info');
    }
  }

  el.form.addEventListener('submit', (ev) => { ev.preventDefault(); search(); });
  document.querySelectorAll('.example').forEach((b) => b.addEventListener('click', () => {
    el.actor.value = b.dataset.actor || '';
    el.movie.value = b.dataset.movie || '';
    search();
  }));

  // ---- streaming -----------------------------------------------------------------

  function flush() {
    const ws = stream.socket();
    const queued = rows.filter((r) => r.status === 'queued');
    if (!queued.length) return;
    if (!ws) {
      setMessage('Not connected to the gateway: ' + queued.length + ' rows will be sent when the connection is back.', 'warn');
      return;
    }
    for (let i = 0; i < queued.length; i += BATCH) {
      const chunk = queued.slice(i, i + BATCH);
      ws.send(JSON.stringify(chunk.map((r) => Object.assign({ id: r.id }, r.data))));
      chunk.forEach((r) => setStatus(r, 'sent'));
    }
  }

  el.stream.addEventListener('click', () => {
    const todo = rows.filter((r) => r.status === 'new' || r.status === 'failed');
    todo.forEach((r) => setStatus(r, 'queued'));
    setMessage('', '');
    flush();
  });

  function onStreamMessage(text) {
    let m;
    try { m = JSON.parse(text); } catch (e) { return; }
    if (!m || typeof m !== 'object') return;
    if ('ack' in m) {
      const row = byId.get(String(m.ack));
      if (row) setStatus(row, 'stored');
    } else if (typeof m.error === 'string') {
      const row = m.id !== undefined ? byId.get(String(m.id)) : null;
      if (row) setStatus(row, 'failed', m.error);
      else setMessage('The gateway answered: ' + m.error, 'error');
    }
  }

  const stream = keepConnected('/stream', {
    state: (s, detail) => {
      showConn(el.conn, s, detail, { open: 'Connected', closed: 'Gateway unreachable' });
      if (s === 'closed' && rows.some((r) => r.status === 'queued' || r.status === 'sent')) {
        setMessage('The connection to the gateway is down; rows not yet stored will be sent again when it is back.', 'error');
      }
    },
    open: () => {
      if (rows.some((r) => r.status === 'queued')) {
        resending = true;
        setMessage('Connected again: sending the rows not yet stored.', 'info');
      }
      flush();
    },
    message: onStreamMessage,
    close: () => {
      // Rows sent without an answer may or may not be stored: send them again
      // (same ids) once the connection is back.
      rows.filter((r) => r.status === 'sent').forEach((r) => setStatus(r, 'queued', 'will resend'));
    },
  });

  // A row that stays unanswered is flagged rather than left spinning.
  setInterval(() => {
    if (!stream.socket()) return;
    const now = Date.now();
    const late = rows.filter((r) => r.status === 'sent' && now - r.sentAt > ACK_PATIENCE_MS);
    late.forEach((r) => { if (!r.reason) setStatus(r, 'sent', 'no answer yet'); });
    if (late.length) {
      showConn(el.conn, 'stalled', 'Connected, but no answer for ' + late.length + ' rows', {});
    } else if (el.conn.dataset.state === 'stalled') {
      showConn(el.conn, 'open', '', { open: 'Connected' });
    }
  }, 1000);

  // ---- live panel: movie-stats --------------------------------------------------------
  // The records' shape belongs to the stream processing (processing.lua),
  // so the renderer is tolerant:
  //  - a list under top/topActors/top_actors/actors/leaders is a window's
  //    top actors (shown with its start/end when given);
  //  - a record about one actor (actorId/actorName) is kept per actor, and
  //    the actors are ranked by minutes, else movies, else their first number;
  //  - a record about one movie (movieId/movieName) is counted per movie;
  //  - the numbers of any other record are shown as totals.

  const live = { records: 0, window: null, actors: new Map(), movies: new Map(), totals: new Map(), last: [] };

  const isObj = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
  const NAME_KEYS = ['actorName', 'name', 'actor', 'actorId', 'key', 'id'];
  const FIGURE_ORDER = ['movies', 'minutes', 'rows', 'count', 'cast', 'total', 'value'];
  const RANK_KEYS = ['minutes', 'movies', 'rows', 'count', 'total', 'value'];
  const TIME_KEYS = new Set(['start', 'end', 'timestamp', 'ts', 'time', 'offset', 'partition']);

  const nameOf = (e) => { for (const k of NAME_KEYS) if (e[k] !== undefined && e[k] !== null) return String(e[k]); return '?'; };
  // [key, number] pairs of a record, known figures first, times left out
  const numbersOf = (e) => Object.entries(e)
    .filter(([k, v]) => typeof v === 'number' && Number.isFinite(v) && !TIME_KEYS.has(k))
    .sort(([a], [b]) => {
      const ia = FIGURE_ORDER.indexOf(a), ib = FIGURE_ORDER.indexOf(b);
      return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib);
    });
  const rankOf = (nums) => {
    for (const k of RANK_KEYS) { const hit = nums.find(([n]) => n === k); if (hit) return hit[1]; }
    return nums.length ? nums[0][1] : 0;
  };
  const entry = (e) => { const nums = numbersOf(e); return { name: nameOf(e), nums, rank: rankOf(nums) }; };

  function timeText(v) {
    if (typeof v === 'number' && v > 1e11) return new Date(v).toLocaleTimeString('en-GB');
    if (typeof v === 'string' && !Number.isNaN(Date.parse(v))) return new Date(v).toLocaleTimeString('en-GB');
    return v === undefined || v === null ? '' : String(v);
  }

  function absorb(rec) {
    for (const k of ['top', 'topActors', 'top_actors', 'actors', 'leaders']) {
      if (Array.isArray(rec[k])) {
        const w = isObj(rec.window) ? rec.window : rec;
        live.window = { from: timeText(w.start), to: timeText(w.end),
          list: rec[k].filter(isObj).slice(0, 10).map(entry) };
        return;
      }
    }
    if (rec.actorId !== undefined || rec.actorName !== undefined) {
      live.actors.set(String(rec.actorId ?? rec.actorName), entry(rec));
    } else if (rec.movieId !== undefined || rec.movieName !== undefined) {
      live.movies.set(String(rec.movieId ?? rec.movieName), entry(rec));
    } else {
      for (const [k, v] of numbersOf(rec)) live.totals.set(k, v);
    }
  }

  // The live panel resumes where it was after a reconnect: every record
  // carries its position, and the subscription names the last one seen.
  let position = null;

  function onResume(rec) {
    el.liveResume.hidden = false;
    el.liveResume.dataset.recovered = String(rec.recovered);
    el.liveResume.textContent = rec.recovered
      ? 'Reconnected: resumed from the last record seen, nothing missed'
      : 'Reconnected: the records sent meanwhile are no longer in Kafka — live from now on (' +
        String(rec.reason || '') + ')';
  }

  function onStats(text) {
    let rec;
    try { rec = JSON.parse(text); } catch (e) { rec = undefined; }
    if (isObj(rec) && rec.subscribed !== undefined) {
      if (rec.recovered !== undefined) onResume(rec);
      return;
    }
    if (isObj(rec) && typeof rec.position === 'string' && rec.stats !== undefined) {
      position = rec.position;
      rec = rec.stats;
      text = JSON.stringify(rec);
    }
    live.records++;
    live.last.unshift(text.length > 240 ? text.slice(0, 240) + '…' : text);
    live.last.length = Math.min(live.last.length, 5);
    if (isObj(rec)) absorb(rec);
    else if (Array.isArray(rec)) rec.filter(isObj).forEach(absorb);
    scheduleLive();
  }

  let livePending = false;
  function scheduleLive() {
    if (livePending) return;
    livePending = true;
    requestAnimationFrame(() => { livePending = false; renderLive(); });
  }

  function figures(nums) {
    return nums.slice(0, 3).map(([k, v]) => k + ' ' + v.toLocaleString('en')).join(' · ');
  }

  function listItems(list) {
    return list.map((e) => {
      const li = node('li');
      li.append(node('span', e.name, 'who'));
      const f = figures(e.nums);
      if (f) li.append(' ', node('span', f, 'figures'));
      return li;
    });
  }

  function renderLive() {
    if (live.records) {
      el.liveStatus.textContent = live.records + (live.records === 1 ? ' record' : ' records') +
        ' received, last at ' + new Date().toLocaleTimeString('en-GB');
    }
    const ranked = [...live.actors.values()].sort((a, b) => b.rank - a.rank).slice(0, 10);
    el.liveTop.replaceChildren(...listItems(ranked));
    el.liveTopNone.hidden = ranked.length > 0;
    el.liveWindowBox.hidden = !live.window;
    if (live.window) {
      el.liveWindowRange.textContent = live.window.from && live.window.to
        ? live.window.from + '–' + live.window.to : '';
      el.liveWindow.replaceChildren(...listItems(live.window.list));
    }
    const totals = [['records received', live.records]];
    if (live.actors.size) totals.push(['actors seen', live.actors.size]);
    if (live.movies.size) totals.push(['movies seen', live.movies.size]);
    for (const [k, v] of live.totals) totals.push([k, v]);
    el.liveTotals.replaceChildren(...totals.flatMap(([k, v]) =>
      [node('dt', k), node('dd', typeof v === 'number' ? v.toLocaleString('en') : v)]));
    el.liveLast.replaceChildren(...live.last.map((t) => node('li', t)));
  }

  keepConnected('/stream', {
    state: (s, detail) => showConn(el.liveConn, s, detail, { open: 'Live', closed: 'Offline' }),
    open: (ws) => ws.send(JSON.stringify(position === null
      ? { subscribe: 'movie-stats', positions: true }
      : { subscribe: 'movie-stats', since: position })),
    message: onStats,
    close: () => {},
  });
  renderLive();
})();
