-- Broker faults under load: added round-trip time, consumer groups and
-- leader moves (the set-up, and what must hold: faults_support.lua).
local H = require "integration.helper"
local json = H.json

local F = require "integration.faults_support"
local TOPIC, ids_in_kafka, stream, finish, check_accounting, stats =
  F.TOPIC, F.ids_in_kafka, F.stream, F.finish, F.check_accounting, F.stats

describe("broker faults under load (RTT, leader moves, consumer groups)", function()
  local broker, gw

  setup(function()
    -- Every partition led by broker 1: "the leader" below is one broker.
    broker = H.start_fault_broker { brokers = 3, topic = TOPIC }
    gw = H.start { app = H.root .. "/bench/soak/rows.lua", kafka = broker.bootstrap }
  end)

  teardown(function() H.stop_all(gw, broker) end)

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

  -- The embedded broker checks no producer sequence numbers: a request the
  -- old leader appended just as it went down, retried to the new one, is
  -- appended again (Apache Kafka refuses the copy: a killed leader there
  -- leaves every acked row exactly once, integration.cluster_faults). So
  -- here: every acked row stored, each row acked once, copies reported.
  it("moves to a new leader while the old one is down: every acked row stored", function()
    local h = stream(gw, { "--connections", "4", "--rows", "8000", "--rate", "2000",
                           "--batch", "5", "--prefix", "M", "--timeout", "120" })
    H.sleep(1.5)
    broker:fault "/down?id=1"
    H.sleep(1)
    for p = 0, 3 do broker:fault(("/leader?topic=%s&partition=%d&id=2"):format(TOPIC, p)) end
    H.sleep(3)
    broker:fault "/up?id=1"
    local r = finish(h)
    local _, mine = check_accounting(broker, r, "M", "the embedded broker checks no sequence numbers")
    assert.are.equal(8000, r.acks)
    assert.are.equal(8000, mine)
  end)
end)
