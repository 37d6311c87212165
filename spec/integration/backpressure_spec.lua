-- Backpressure and slow clients, measured from outside: resident memory
-- from /proc, what clients receive, and how long acks take. On Apache
-- Kafka: a broker of its own for the test that freezes it, the suite's
-- shared one (a topic of its own) for the other.
--  * A fast client against a slow broker: once the producer has more than
--    its high-water mark in flight the gateway stops reading WebSockets,
--    so memory stays bounded; reading resumes when Kafka catches up and
--    every row is acked.
--  * A slow reader: its send queue is bounded (`send_queue`); past it the
--    connection is closed with 1008 "send queue full" while a normal
--    reader gets everything and a third client's acks stay fast.
local H = require "integration.helper"
local json = H.json
-- Under AddressSanitizer (tools/test-sanitize.sh sets SLUICE_SANITIZE) freed
-- memory sits in ASan's quarantine and every block carries redzones, so the
-- same bounded queue shows up to ~3x the resident memory.
local RSS_SLACK = os.getenv "SLUICE_SANITIZE" and 3 or 1

-- Samples fn() every `step` s while `busy()` is true; returns the samples.
local function sample(busy, step, fn)
  local t = {}
  while busy() do
    t[#t + 1] = fn()
    H.sleep(step)
  end
  return t
end

local function max_of(t, field)
  local m = 0
  for _, v in ipairs(t) do
    local x = field and v[field] or v
    if type(x) == "number" and x > m then m = x end
  end
  return m
end

describe("backpressure", function()
  teardown(function() H.cleanup() end)

  -- A gateway with a 2 MB send queue and at most 20,000 records in flight
  -- to Kafka: /feed gets a flood on demand, /rows acks rows like the movies
  -- app.
  local APP = [[
local sluice = require "sluice"
local cjson = require "cjson"
local TOPIC = os.getenv "BP_TOPIC"
local app = sluice.app { name = "bp", listen = 0, send_queue = 2 * 1024 * 1024, max_in_flight = 20000 }
app:ws("/feed", {})
app:ws("/rows", { message = function(conn, data)
  local v = cjson.decode(data)
  if type(v) ~= "table" then return conn:send('{"marker":true}') end  -- stream.js --marker
  local list = v[1] and v or { v }
  for _, row in ipairs(list) do
    local id = row.id
    local ok, err = app:produce(TOPIC, { key = row.actorId, value = cjson.encode(row) }, function(e)
      conn:send(e and cjson.encode { error = e, id = id } or cjson.encode { ack = id })
    end)
    if not ok then conn:send(cjson.encode { error = err, id = id }) end
  end
end })
-- GET /flood?n=N&size=S: broadcast N messages of S bytes to /feed, 20 per ms.
app:http("GET", "/flood", function(req)
  local n, payload, sent = tonumber(req.query.n), string.rep("x", tonumber(req.query.size)), 0
  app:timer(1, function(t)
    for _ = 1, 20 do
      if sent >= n then t:stop(); return end
      app:broadcast("/feed", payload)
      sent = sent + 1
    end
  end, 1)
  return 200, { ok = true }
end)
app:http("GET", "/healthz", function()
  local s = app:stats()
  return 200, { status = "ok", connections = s.connections, produced = s.produced, in_flight = s.in_flight }
end)
return app
]]

  it("stops reading a fast client while Kafka cannot take more, memory bounded, then resumes", function()
    local broker, gw
    finally(function()
      if gw then gw:stop() end
      if broker then broker:stop() end
    end)
    local dir = H.tmpdir()
    H.write(dir .. "/app.lua", APP)
    -- Apache Kafka of its own, frozen (SIGSTOP) while the client sends:
    -- it takes nothing, whatever the machine's speed.
    broker = H.start_kafka { brokers = 1 }
    H.create_topic(broker.bootstrap, "bp-rows", 4)
    gw = H.start { app = dir .. "/app.lua", kafka = broker.bootstrap, env = "BP_TOPIC=bp-rows" }
    broker:signal(1, "STOP")
    local rss0 = H.rss_kb(gw.pid)
    local rows = 80000
    local h = H.client_bg("stream.js", { "--url", gw.url .. "/rows", "--connections", "2", "--marker", "0",
      "--rows", tostring(rows), "--batch", "50", "--prefix", "B", "--timeout", "150" })
    local function stats() local _, s = gw:healthz(); return type(s) == "table" and s or {} end
    assert(H.wait_for(60, function() return (stats().in_flight or 0) >= 20000 end, 0.2),
      "the high-water mark was never reached")
    -- Held there: the client has more to send, the gateway reads no more.
    local t0 = H.now()
    local samples = sample(function() return H.now() - t0 < 3 end, 0.2, function()
      local s = stats()
      return { rss = H.rss_kb(gw.pid) or 0, in_flight = s.in_flight or 0, produced = s.produced or 0 }
    end)
    broker:signal(1, "CONT")
    local r = h:result(120)
    local peak_rss, peak_in_flight = max_of(samples, "rss"), max_of(samples, "in_flight")
    local first, last = samples[1], samples[#samples]
    print(("# fast client: %d rows in %.1f s; gateway RSS %d MB at start, %d MB peak while paused; in flight %d..%d, produced %d..%d while paused"):format(
      r.sent, r.elapsed_ms / 1000, rss0 // 1024, peak_rss // 1024, first.in_flight, last.in_flight,
      first.produced, last.produced))
    -- The gateway stopped reading: nothing more was accepted while paused,
    -- and the in-flight count stayed at the high-water mark (max_in_flight,
    -- plus the rest of the message being handled).
    assert.is_true(last.produced < rows, "the client sent everything anyway")
    assert.are.equal(first.produced, last.produced)
    assert.is_true(peak_in_flight < 20000 + 100, "in flight grew past the high-water mark: " .. peak_in_flight)
    local log = gw:stderr()
    assert.matches("pausing reads", log)
    assert.matches("resuming reads", log)
    -- Memory: bounded by the in-flight limit while paused, however much
    -- the client still wants to send.
    assert.is_true(peak_rss - rss0 < 120 * 1024 * RSS_SLACK, ("RSS grew by %d MB"):format((peak_rss - rss0) // 1024))
    -- Reading resumed: everything was taken in the end and acked once.
    assert.is_nil(r.timed_out)
    assert.are.equal(rows, r.sent)
    assert.are.equal(rows, r.acks)
    assert.are.equal(0, r.duplicates)
    for _, c in ipairs(r.closes) do assert.are.equal("client", c.by) end
    -- and Kafka has each row once (read back with kcat).
    local seen, twice = {}, 0
    local records = H.kcat_consume(broker.bootstrap, "bp-rows", rows, 60)
    for _, rec in ipairs(records) do
      local id = json.decode(rec.value).id
      if seen[id] then twice = twice + 1 end
      seen[id] = true
    end
    assert.are.equal(rows, #records)
    assert.are.equal(0, twice)
  end)

  it("closes a slow reader with 1008 past send_queue; others are served meanwhile", function()
    local gw
    finally(function() if gw then gw:stop() end end)
    local dir = H.tmpdir()
    H.write(dir .. "/app.lua", APP)
    gw = H.start { app = dir .. "/app.lua", kafka = H.kafka(), env = "BP_TOPIC=" .. H.prefix "backpressure" .. "rows" }

    -- Ack latency with nothing else going on, for comparison.
    local base = H.client("stream.js", { "--url", gw.url .. "/rows", "--rate", "200", "--marker", "0",
                                         "--duration", "3", "--prefix", "A" })
    assert.are.equal(base.sent, base.acks)

    local n, size = 60000, 1024          -- 60 MB in all, 30 times send_queue
    local slow = H.client_bg("reader.js", { "--url", gw.url .. "/feed", "--hold", "20", "--timeout", "40",
                                            "--ready-file", dir .. "/slow" })
    local fast = H.client_bg("reader.js", { "--url", gw.url .. "/feed", "--count", tostring(n),
                                            "--timeout", "40", "--ready-file", dir .. "/fast" })
    assert(H.wait_for(10, function() return H.read(dir .. "/slow") and H.read(dir .. "/fast") end))
    local rss0 = H.rss_kb(gw.pid)
    local lat = H.client_bg("stream.js", { "--url", gw.url .. "/rows", "--rate", "200", "--marker", "0",
                                           "--duration", "6", "--prefix", "Z" })
    H.sleep(1)
    assert.are.equal(200, (H.http(gw.port, ("/flood?n=%d&size=%d"):format(n, size))))
    local rss = sample(function() return not fast:done() end, 0.2, function() return H.rss_kb(gw.pid) or 0 end)
    local f = fast:result(10)
    local l = lat:result(30)
    local s = slow:result(40)
    local peak = max_of(rss)
    print(("# slow reader: got %d messages, closed %s %q; fast reader: %d/%d; RSS %d MB -> peak %d MB"):format(
      s.messages, tostring(s.close and s.close.code), s.close and s.close.reason or "", f.messages, n,
      rss0 // 1024, peak // 1024))
    print(("# ack latency p50/p99/max: alone %s/%s/%s ms, during the flood %s/%s/%s ms"):format(
      base.latency.p50, base.latency.p99, base.latency.max, l.latency.p50, l.latency.p99, l.latency.max))
    -- The policy: the slow reader is closed with 1008 and a reason.
    assert.are.same({ code = 1008, reason = "send queue full", by = "server" }, s.close)
    assert.is_true(s.messages < n)
    -- The normal reader got everything, and was not closed by the server.
    assert.are.equal(n, f.messages)
    assert.are.equal("client", f.close.by)
    -- Memory: the slow reader cost at most its queue, not the 60 MB flood.
    assert.is_true(peak - rss0 < 40 * 1024 * RSS_SLACK, ("RSS grew by %d MB"):format((peak - rss0) // 1024))
    -- The row client was served throughout: all acked, none closed.
    -- (how many it sent in its 6 s depends on the machine: not asserted)
    assert.is_true(l.sent > 0)
    assert.are.equal(l.sent, l.acks)
    for _, c in ipairs(l.closes) do assert.are.equal("client", c.by) end
    -- (How fast its acks stayed is printed above; bench/run.sh measures it.)
  end)
end)
