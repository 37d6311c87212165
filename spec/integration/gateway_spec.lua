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
    assert.are.same({}, r.errors)
    assert.are.equal(10000, r.sent)
    assert.are.equal(10000, r.acks)
    assert.are.equal(0, r.duplicates)
    assert.are.equal(0, r.unexpected)
    assert.are.equal(0, r.missing)
    assert.is_nil(r.timed_out)
    for _, c in ipairs(r.closes) do assert.are.equal("client", c.by) end

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
    local acks = {}
    for _, s in ipairs(r.replies) do acks[#acks + 1] = json.decode(s).ack end
    table.sort(acks, function(a, b) return tostring(a) < tostring(b) end)
    assert.are.same({ 4, "A1", "A2", "A3" }, acks)
    assert.are.equal("client", r.close.by)
  end)

  it("delivers a record produced with kcat to subscribed WebSocket clients", function()
    local dir = H.tmpdir()
    local by_msg = H.client_bg("subscribe.js", { "--url", gw.url .. "/",
      "--subscribe", "movie-stats", "--count", "1", "--timeout", "40",
      "--ready-file", dir .. "/ready1" })
    local by_path = H.client_bg("subscribe.js", { "--url", gw.url .. "/stats",
      "--count", "1", "--timeout", "40", "--ready-file", dir .. "/ready2" })
    assert.truthy(H.wait_for(10, function()
      return H.read(dir .. "/ready1") and H.read(dir .. "/ready2")
    end), "the subscribers were not confirmed")
    -- The stats consumer starts at "latest" once assigned: keep producing
    -- distinct records until both subscribers got one.
    local sent = {}
    local deadline = H.now() + 30
    local i = 0
    repeat
      i = i + 1
      local v = json.encode { stat = "top-actor", n = i }
      assert(H.kcat_produce(kafka, STATS, v, "k" .. i))
      sent[v] = true
      H.sleep(0.5)
    until (by_msg:done() and by_path:done()) or H.now() > deadline
    for _, h in ipairs { by_msg, by_path } do
      local r = h:result(5)
      assert.is_true(r.subscribed)
      assert.is_true(#r.messages >= 1, "no stats record reached the client")
      for _, m in ipairs(r.messages) do
        assert.is_true(sent[m], "unexpected message " .. tostring(m))
      end
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
    assert.are.equal(4, #r.replies)
    local m = {}
    for i, s in ipairs(r.replies) do m[i] = json.decode(s) end
    assert.matches("^malformed JSON: ", m[1].error)
    assert.matches("^invalid row: actorId ", m[2].error)
    assert.are.equal("D2", m[2].id)
    assert.are.equal("binary frames are not accepted", m[3].error)
    assert.are.same({ ack = "D3" }, m[4])
    assert.are.equal("client", r.close.by)

    local dlq = H.kcat_consume(kafka, DLQ, 3, 30)
    assert.are.equal(3, #dlq)
    local values = {}
    for _, rec in ipairs(dlq) do
      values[rec.value] = rec.headers
    end
    assert.truthy(values[bad_json], "malformed JSON not in the DLQ")
    assert.truthy(values[bad_row], "wrong-shaped row not in the DLQ")
    assert.truthy(values["binary-payload"], "binary frame not in the DLQ")
    assert.matches("error=malformed JSON: ", values[bad_json], 1, true)
    assert.matches("error=invalid row: actorId", values[bad_row], 1, true)
  end)

  it("closes an oversized message's connection with 1009 while others keep going", function()
    -- A paced load on one connection, running while the big frame arrives.
    local other = H.client_bg("load.js", { "--url", gw.url .. "/", "--connections", "1",
      "--rows", "100", "--interval", "20", "--prefix", "O", "--timeout", "30" })
    H.sleep(0.5)
    local r = H.client("probe.js", { "--url", gw.url .. "/", "--size", tostring(1024 * 1024 + 1024),
                                     "--wait", "10" })
    assert.are.equal("server", r.close.by)
    assert.are.equal(1009, r.close.code)
    local o = other:result(40)
    assert.are.same({}, o.errors)
    assert.are.equal(100, o.acks)
    assert.are.equal(0, o.missing)
    assert.are.equal("client", o.closes[1].by)
    assert.is_truthy(H.alive(gw.pid))
  end)

  it("refuses WebSocket upgrades on unknown paths with 404", function()
    local r = H.client("probe.js", { "--url", gw.url .. "/no-such-route", "--wait", "3" })
    assert.are.equal(404, r.status)
    assert.is_false(r.opened)
  end)
end)
