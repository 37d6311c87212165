-- Broker faults under load, part 2 (split for time; part 1: faults_spec.lua). A separate fault broker process (three
-- embedded brokers, bench/soak/broker.lua) is broken from outside while the
-- gateway (a real `sluice run` of bench/soak/rows.lua: the movies row
-- protocol, nothing else; reaching it with --kafka) streams
-- rows from node `ws` clients; kcat reads what Kafka holds afterwards.
-- What must hold (docs/reliability.md): every acked row is in Kafka exactly
-- once, every other row was reported failed to its client, no client is
-- disconnected because of the broker, and a consumer group resumes from
-- its committed offsets without skipping or re-delivering.
local H = require "integration.helper"
local json = H.json

local TOPIC = "movie-results"

-- Every row id in the topic → how many times it is there.
local function ids_in_kafka(bootstrap, want, timeout)
  local records = H.kcat_consume(bootstrap, TOPIC, want, timeout or 60)
  local count = {}
  for _, r in ipairs(records) do
    local ok, row = pcall(json.decode, r.value)
    if ok and type(row) == "table" and row.id then
      count[row.id] = (count[row.id] or 0) + 1
    end
  end
  return count, #records
end

-- Runs stream.js to completion in the background; returns the handle.
local function stream(gw, args)
  local out = H.tmpdir() .. "/ids.json"
  local full = { "--url", gw.url .. "/", "--out", out }
  for _, a in ipairs(args) do full[#full + 1] = a end
  local h = H.client_bg("stream.js", full)
  h.out = out
  return h
end

local function finish(h, timeout)
  local r = h:result(timeout or 120)
  local ids = H.read(h.out)
  assert(ids, "stream.js wrote no id list")
  r.ids = json.decode(ids)
  return r
end

-- The accounting every fault scenario must pass; returns the Kafka counts.
local function check_accounting(broker, r, prefix)
  print(("# %s: sent %d, acked %d, failed %d, latency p50 %s p99 %s max %s ms, %.1f s"):format(
    prefix, r.sent, r.acks, r.failed, tostring(r.latency.p50), tostring(r.latency.p99),
    tostring(r.latency.max), r.elapsed_ms / 1000))
  assert.is_nil(r.timed_out, "the client timed out waiting for answers")
  assert.are.equal(0, r.unanswered, "rows neither acked nor reported failed")
  assert.are.equal(0, r.duplicates)
  assert.are.equal(0, r.unexpected)
  assert.are.equal(r.sent, r.acks + r.failed)
  for _, c in ipairs(r.closes) do
    assert.are.same({ code = 1000, by = "client" }, { code = c.code, by = c.by })
  end
  local count, total = ids_in_kafka(broker.bootstrap, r.acks)
  local wrong = {}
  for _, id in ipairs(r.ids.acked) do
    if count[id] ~= 1 then wrong[#wrong + 1] = id .. "x" .. (count[id] or 0) end
  end
  if #wrong > 0 then
    local again = ids_in_kafka(broker.bootstrap, total + 1, 5)
    local n2 = 0
    for _, id in ipairs(r.ids.acked) do if again[id] ~= 1 then n2 = n2 + 1 end end
    print(("# %d acked rows not exactly once in %d records (re-read: %d): %s"):format(
      #wrong, total, n2, table.concat(wrong, " ", 1, math.min(#wrong, 20))))
  end
  assert.are.equal(0, #wrong, "acked rows not in Kafka exactly once")
  local mine = 0
  for id, n in pairs(count) do
    if id:sub(1, #prefix) == prefix then
      mine = mine + 1
      assert(n == 1, ("row %s is in Kafka %d times"):format(id, n))
    end
  end
  return count, mine
end

-- The gateway's counters (GET /healthz), retried: it is busy.
local function stats(gw)
  local h = H.wait_for(10, function()
    local status, body = gw:healthz()
    return status == 200 and type(body) == "table" and body.delivered and body
  end, 0.2)
  assert(h, "GET /healthz did not answer")
  return h
end

describe("broker faults under load (RTT, leader moves, consumer groups)", function()
  local broker, gw

  setup(function()
    broker = H.start_fault_broker { brokers = 3 }
    -- Every partition led by broker 1: "the leader" below is one broker.
    broker:fault("/topic?name=" .. TOPIC .. "&partitions=4")
    for p = 0, 3 do broker:fault(("/leader?topic=%s&partition=%d&id=1"):format(TOPIC, p)) end
    gw = H.start { app = H.root .. "/bench/soak/rows.lua", kafka = broker.bootstrap }
  end)

  teardown(function()
    for _, p in ipairs({ gw, broker }) do
      if p then
        local _, killed = p:stop()
        if killed then print("# needed SIGKILL; stderr:\n" .. p:stderr()) end
      end
    end
    H.cleanup()
  end)

  it("keeps serving and stays exact with 300 ms added round-trip time", function()
    for id = 1, 3 do broker:fault(("/rtt?id=%d&ms=300"):format(id)) end
    local h = stream(gw, { "--connections", "4", "--rows", "6000", "--rate", "2000",
                           "--batch", "5", "--prefix", "R", "--timeout", "120" })
    local r = finish(h)
    for id = 1, 3 do broker:fault(("/rtt?id=%d&ms=0"):format(id)) end
    local _, mine = check_accounting(broker, r, "R")
    assert.are.equal(6000, r.acks)
    assert.are.equal(6000, mine)
    -- Every ack waited for the slow broker: the added RTT is visible.
    assert.is_true(r.latency.p50 >= 300, "p50 " .. tostring(r.latency.p50))
  end)

  -- A consumer group member that prints each record it handles.
  local READER = [[
local sluice = require "sluice"
local app = sluice.app { name = "faults-reader", listen = 0, idle_timeout = false }
-- (a short session: the embedded broker hands a departed member's
-- partitions to its successor only once that member's session expired)
app:consume("movie-results", { from = "earliest",
                               kafka = { ["session.timeout.ms"] = "6000" } }, function(rec)
  io.stdout:write(("C %d %d %s\n"):format(rec.partition, rec.offset,
    rec.value:match('"id":"([^"]*)"') or "?"))
  io.stdout:flush()
end)
app:http("GET", "/healthz", function()
  local s = app:stats()
  return 200, { status = "ok", consumed = s.consumed, assigned = s.assigned }
end)
return app
]]

  -- What a reader printed: list of {p, o, id}.
  local function consumed(reader)
    local t = {}
    for p, o, id in (H.read(reader.out) or ""):gmatch "C (%d+) (%d+) (%S+)\n" do
      t[#t + 1] = { p = tonumber(p), o = tonumber(o), id = id }
    end
    return t
  end

  it("lets a consumer group resume from its committed offsets after faults", function()
    local app = H.tmpdir() .. "/reader.lua"
    H.write(app, READER)
    -- (run alone, this test brings its own data)
    if select(2, ids_in_kafka(broker.bootstrap, 0, 0)) < 5000 then
      assert.are.equal(5000, finish(stream(gw, { "--connections", "2", "--rows", "5000", "--prefix", "P" })).acks)
    end
    local _, total = ids_in_kafka(broker.bootstrap, 5000)

    -- Reader A reads everything while a broker goes down and comes back.
    local a = H.start { app = app, kafka = broker.bootstrap }
    assert(H.wait_for(30, function() return #consumed(a) > 0 end), "reader A consumed nothing")
    broker:fault "/down?id=2"
    H.sleep(3)
    broker:fault "/up?id=2"
    local seen = {}
    local function distinct()
      local n = 0
      seen = {}
      for _, r in ipairs(consumed(a)) do
        local k = r.p .. ":" .. r.o
        if not seen[k] then seen[k] = r; n = n + 1 end
      end
      return n
    end
    H.wait_for(60, function() return distinct() >= total end, 0.5)
    assert.are.equal(total, distinct())
    assert.are.equal(0, select(1, a:stop()))   -- SIGTERM: commits, leaves the group
    -- No gap: every partition was read from 0 to its end.
    local last = {}
    for _, r in pairs(seen) do last[r.p] = math.max(last[r.p] or -1, r.o) end
    local sum = 0
    for p, o in pairs(last) do
      for off = 0, o do assert(seen[p .. ":" .. off], ("A skipped %d:%d"):format(p, off)) end
      sum = sum + o + 1
    end
    assert.are.equal(total, sum)

    -- 1,000 more rows, then reader B of the same group: exactly those.
    local r = finish(stream(gw, { "--connections", "2", "--rows", "1000", "--prefix", "C" }))
    assert.are.equal(1000, r.acks)
    local b = H.start { app = app, kafka = broker.bootstrap }
    H.wait_for(45, function() return #consumed(b) >= 1000 end, 0.2)
    H.sleep(2)   -- anything re-delivered would arrive meanwhile
    b:stop()
    if #consumed(b) ~= 1000 then print("# reader B stderr:\n" .. b:stderr()) end
    local got, ids = consumed(b), {}
    for _, rec in ipairs(got) do
      assert(rec.o > (last[rec.p] or -1),
        ("B re-delivered committed record %d:%d"):format(rec.p, rec.o))
      ids[rec.id] = (ids[rec.id] or 0) + 1
    end
    for _, id in ipairs(r.ids.acked) do
      assert(ids[id] == 1, ("B saw new row %s %d times"):format(id, ids[id] or 0))
    end
    assert.are.equal(1000, #got)
  end)

  it("moves to a new leader while the old one is down", function()
    local h = stream(gw, { "--connections", "4", "--rows", "8000", "--rate", "2000",
                           "--batch", "5", "--prefix", "M", "--timeout", "120" })
    H.sleep(1.5)
    broker:fault "/down?id=1"
    H.sleep(1)
    for p = 0, 3 do broker:fault(("/leader?topic=%s&partition=%d&id=2"):format(TOPIC, p)) end
    H.sleep(3)
    broker:fault "/up?id=1"
    local r = finish(h)
    local _, mine = check_accounting(broker, r, "M")
    assert.are.equal(8000, r.acks)
    assert.are.equal(8000, mine)
  end)
end)
