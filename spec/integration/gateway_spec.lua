-- The movies gateway end to end: a real `sluice run` process on Apache
-- Kafka (the suite's shared broker, topics of this run's own), checked
-- with node `ws` clients and kcat.
local H = require "integration.helper"
local json = H.json

describe("movies gateway", function()
  local gw, kafka
  local P = H.prefix "gateway"
  local RESULTS, DLQ, STATS = P .. "movie-results", P .. "movie-results.dlq", P .. "movie-stats"

  -- The gateway alone: the app's stream processing (processing.lua, tested
  -- by integration.stream and browser.movies) would produce records of its
  -- own once its consumer group has joined, so /healthz's counts and the
  -- movie-stats subscribers' messages would depend on timing.
  -- The topics exist before the gateway starts, as on a cluster run by
  -- operators: a consumer of a topic that does not exist yet may only
  -- see it at a later metadata refresh.
  setup(function()
    kafka = H.kafka()
    H.create_topic(kafka, RESULTS, 4)
    H.create_topic(kafka, STATS, 1)
    gw = H.start { kafka = kafka, env = "SLUICE_MOVIES_PROCESSING=0 SLUICE_MOVIES_PREFIX=" .. P }
  end)

  teardown(function()
    if gw then
      local _, killed = gw:stop()
      if killed then print("# sluice needed SIGKILL; stderr:\n" .. gw:stderr()) end
    end
    H.cleanup()
  end)

  local function index_by_id(records)
    local by_id, dup = {}, 0
    for _, r in ipairs(records) do
      local ok, row = pcall(json.decode, r.value)
      if ok and type(row) == "table" and row.id ~= nil then
        local id = tostring(row.id)
        if by_id[id] then dup = dup + 1 end
        by_id[id] = { key = r.key, row = row }
      end
    end
    return by_id, dup
  end

  it("acks 10,000 rows over 10 connections exactly once and stores them keyed by actorId", function()
    local r = H.client("load.js", { "--url", gw.url .. "/", "--connections", "10",
                                    "--rows", "10000", "--prefix", "L", "--timeout", "120" })
    r.elapsed_ms = nil
    local closes = {}
    for i = 1, 10 do closes[i] = { code = 1000, reason = "", by = "client" } end
    -- Each connection closed at the answer to its marker, sent after its
    -- last ack: a duplicate ack would have been counted.
    assert.are.same({ sent = 10000, acks = 10000, duplicates = 0, unexpected = 0, missing = 0,
                      error_count = 0, errors = {}, other = {}, closes = closes }, r)

    local records = H.kcat_consume(kafka, RESULTS, 10000, 60)
    assert.are.equal(10000, #records)
    local by_id, dup = index_by_id(records)
    assert.are.equal(0, dup)
    for conn = 0, 9 do
      for seq = conn, 9999, 10 do
        local id = ("L%d-%d"):format(conn, seq)
        local rec = by_id[id]
        assert(rec, "row " .. id .. " is not in movie-results")
        local actor = ("nm%07d"):format(seq % 50)
        assert.are.equal(actor, rec.row.actorId)
        assert.are.equal(actor, rec.key)
        assert.are.equal(80 + seq % 60, rec.row.movieMinutes)
      end
    end
  end)

  it("reports its counts on /healthz", function()
    local status, h = gw:healthz()
    assert.are.equal(200, status)
    assert.are.equal("ok", h.status)
    assert.are.equal(10000, h.produced)
    assert.are.equal(10000, h.delivered)
    assert.are.equal(0, h.delivery_failed)
    assert.are.equal(0, h.in_flight)
    assert.are.equal(0, h.handler_errors)
    -- the load clients are gone; one new client is counted
    assert.are.equal(0, H.wait_for(5, function()
      local _, j = gw:healthz()
      return j.connections == 0 and 0
    end))
    local c = H.client_bg("probe.js", { "--url", gw.url .. "/", "--wait", "3" })
    local n = H.wait_for(5, function()
      local _, j = gw:healthz()
      return j.connections == 1 and 1
    end)
    c:kill()
    assert.are.equal(1, n)
  end)

  it("acks each row of a JSON array, and rows without id by their sequence number", function()
    local rows = {}
    for i = 1, 3 do
      rows[i] = { id = "A" .. i, actorName = "A", actorId = "nm0000001",
                  movieId = "tt000000" .. i, movieName = "M", movieMinutes = 90 }
    end
    local noid = { actorName = "B", actorId = "nm0000002", movieId = "tt1",
                   movieName = "N", movieMinutes = 100 }
    local r = H.client("probe.js", { "--url", gw.url .. "/stream",
      "--text", json.encode(rows), "--text", json.encode(noid), "--replies", "4", "--wait", "10" })
    -- The array's rows share an actor, hence a partition: acked in order.
    -- The fourth row (another actor) may be acked among them.
    local ordered, other = {}, {}
    for _, s in ipairs(r.replies) do
      local list = s:match('^{"ack":"A') and ordered or other
      list[#list + 1] = s
    end
    assert.are.same({ '{"ack":"A1"}', '{"ack":"A2"}', '{"ack":"A3"}' }, ordered)
    assert.are.same({ '{"ack":4}' }, other)
    assert.are.same({ code = 1000, by = "client" }, { code = r.close.code, by = r.close.by })
  end)

  it("delivers a record produced with kcat to subscribed WebSocket clients of every gateway", function()
    -- A second gateway on the same Kafka: each instance sees every stats
    -- record (a consumer group of its own), not a share of the partitions.
    local gw2 = H.start { kafka = kafka, env = "SLUICE_MOVIES_PROCESSING=0 SLUICE_MOVIES_PREFIX=" .. P }
    finally(function() gw2:stop() end)
    local dir = H.tmpdir()
    local function subscriber(url, n, subscribe)
      local args = { "--url", url, "--count", "1", "--timeout", "40", "--ready-file", dir .. "/ready" .. n }
      if subscribe then args[#args + 1] = "--subscribe"; args[#args + 1] = "movie-stats" end
      return H.client_bg("subscribe.js", args)
    end
    local subs = { subscriber(gw.url .. "/", 1, true), subscriber(gw.url .. "/stats", 2),
                   subscriber(gw2.url .. "/stats", 3) }
    assert.truthy(H.wait_for(10, function()
      return H.read(dir .. "/ready1") and H.read(dir .. "/ready2") and H.read(dir .. "/ready3")
    end), "the subscribers were not confirmed")
    -- The stats consumers start at "latest" once assigned: keep producing
    -- distinct records, all with one key (one partition), until every
    -- subscriber got one.
    local sent = {}
    local deadline = H.now() + 30
    local i = 0
    local function all_done()
      for _, h in ipairs(subs) do if not h:done() then return false end end
      return true
    end
    repeat
      i = i + 1
      local v = json.encode { stat = "top-actor", n = i }
      assert(H.kcat_produce(kafka, STATS, v, "k"))
      sent[v] = true
      H.sleep(0.5)
    until all_done() or H.now() > deadline
    for _, h in ipairs(subs) do
      local r = h:result(5)
      assert.is_true(r.subscribed)
      assert.are.equal(1, #r.messages, "no stats record reached the client")
      assert.is_true(sent[r.messages[1]], "unexpected message " .. tostring(r.messages[1]))
    end
  end)

  it("answers bad input with error frames, keeps the connection, and dead-letters it", function()
    local bad_json = '{"id": "D1", "actorId": '
    local bad_row = json.encode { id = "D2", actorName = "X", actorId = 42,
                                  movieId = "tt1", movieName = "Y", movieMinutes = 1 }
    local good = json.encode { id = "D3", actorName = "X", actorId = "nm0000003",
                               movieId = "tt1", movieName = "Y", movieMinutes = 1 }
    local r = H.client("probe.js", { "--url", gw.url .. "/",
      "--text", bad_json, "--text", bad_row, "--binary", "binary-payload",
      "--text", good, "--replies", "4", "--wait", "10" })
    assert.are.same({
      '{"error":"malformed JSON: Expected value but found T_END at character 25"}',
      '{"error":"invalid row: actorId must be a non-empty string","id":"D2"}',
      '{"error":"binary frames are not accepted"}',
      '{"ack":"D3"}',
    }, r.replies)
    assert.are.same({ code = 1000, by = "client" }, { code = r.close.code, by = r.close.by })

    local dlq = H.kcat_consume(kafka, DLQ, 3, 30)
    assert.are.equal(3, #dlq)
    -- No key, so any partition: each message once, with its reason.
    local values = {}
    for _, rec in ipairs(dlq) do
      assert.is_nil(values[rec.value], "dead-lettered twice: " .. rec.value)
      values[rec.value] = rec.headers
    end
    assert.are.same({
      [bad_json] = "error=malformed JSON: Expected value but found T_END at character 25",
      [bad_row] = "error=invalid row: actorId must be a non-empty string",
      ["binary-payload"] = "error=binary frames are not accepted",
    }, values)
  end)

  it("closes an oversized message's connection with 1009 while others keep going", function()
    -- A paced load on one connection, running while the big frame arrives.
    local other = H.client_bg("load.js", { "--url", gw.url .. "/", "--connections", "1",
      "--rows", "100", "--interval", "20", "--prefix", "O", "--timeout", "30" })
    H.sleep(0.5)
    local r = H.client("probe.js", { "--url", gw.url .. "/", "--size", tostring(1024 * 1024 + 1024),
                                     "--wait", "10" })
    assert.are.same({ opened = true, replies = {}, close = { code = 1009, reason = "message too big", by = "server" } }, r)
    local o = other:result(40)
    o.elapsed_ms = nil
    assert.are.same({ sent = 100, acks = 100, duplicates = 0, unexpected = 0, missing = 0,
                      error_count = 0, errors = {}, other = {},
                      closes = { { code = 1000, reason = "", by = "client" } } }, o)
    assert.is_truthy(H.alive(gw.pid))
  end)

  it("tells the user which URL to open in a browser", function()
    local said = {}
    for line in gw:stderr():gmatch "[^\n]+" do
      local what = line:match "^%d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d sluice info: (.*)$"
      if what and (what:match "^listening on " or what:match "^movies: ") then said[#said + 1] = what end
    end
    assert.are.same({ ("listening on http://0.0.0.0:%d/ (WebSocket and HTTP)"):format(gw.port),
                      ("movies: open http://localhost:%d/ in a browser"):format(gw.port) }, said)
  end)

  it("tells the user to open localhost when it listens on every IPv6 address", function()
    local gw6 = H.start { host = "[::]" }   -- dual stack: /healthz over IPv4 answered
    local said = {}
    for line in gw6:stderr():gmatch "[^\n]+" do
      local what = line:match "^%d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d sluice info: (.*)$"
      if what and (what:match "^listening on " or what:match "^movies: ") then said[#said + 1] = what end
    end
    gw6:stop()
    assert.are.same({ ("listening on http://[::]:%d/ (WebSocket and HTTP)"):format(gw6.port),
                      ("movies: open http://localhost:%d/ in a browser"):format(gw6.port) }, said)
  end)

  it("refuses WebSocket upgrades on unknown paths with 404", function()
    local r = H.client("probe.js", { "--url", gw.url .. "/no-such-route", "--wait", "3" })
    assert.are.equal(404, r.status)
    assert.is_false(r.opened)
  end)
end)
