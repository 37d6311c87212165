-- Broker faults under load. A separate fault broker process (three
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

describe("broker faults under load", function()
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

  it("loses and duplicates nothing when the partition leader is down for 5 s", function()
    -- About 10 s of steady load; the leader goes away 2 s in.
    local h = stream(gw, { "--connections", "4", "--rows", "20000", "--rate", "2000",
                           "--batch", "5", "--prefix", "D", "--timeout", "120" })
    H.sleep(2)
    local before = stats(gw).delivered
    broker:fault "/down?id=1"
    H.sleep(5)
    local during = stats(gw)
    broker:fault "/up?id=1"
    local r = finish(h)
    print(("# leader down: delivered %d before, %d after 5 s down; %d in flight"):format(
      before, during.delivered, during.in_flight))
    -- The outage was real: nothing was stored while the leader was down,
    -- yet the gateway kept accepting rows.
    assert.is_true(during.delivered - before < 2000, "rows were stored while the leader was down")
    assert.is_true(during.in_flight > 0)
    local _, mine = check_accounting(broker, r, "D")
    -- The default message.timeout.ms (300 s) outlasts the outage: all acked.
    assert.are.equal(20000, r.sent)
    assert.are.equal(20000, r.acks)
    assert.are.equal(20000, mine)
  end)

  it("acks everything exactly once through transient produce errors", function()
    local h = stream(gw, { "--connections", "4", "--rows", "10000", "--rate", "2500",
                           "--batch", "5", "--prefix", "E", "--timeout", "120" })
    H.sleep(1)
    -- Retriable errors, as a broker under leader election or overload answers.
    for _ = 1, 3 do
      broker:fault "/errors?api=Produce&codes=NOT_LEADER_FOR_PARTITION,REQUEST_TIMED_OUT,NOT_ENOUGH_REPLICAS,LEADER_NOT_AVAILABLE,NOT_ENOUGH_REPLICAS_AFTER_APPEND"
      H.sleep(1)
    end
    local r = finish(h)
    local _, mine = check_accounting(broker, r, "E")
    assert.are.equal(10000, r.acks)
    assert.are.equal(10000, mine)
    assert.are.same({}, r.errors)
  end)

  it("reports rows the broker refuses for good to their client, and stores none of them", function()
    local h = stream(gw, { "--connections", "2", "--rows", "4000", "--rate", "2000",
                           "--batch", "5", "--prefix", "F", "--timeout", "120" })
    H.sleep(1)
    -- Not retriable: the records of the next two produce requests fail.
    broker:fault "/errors?api=Produce&codes=TOPIC_AUTHORIZATION_FAILED,TOPIC_AUTHORIZATION_FAILED"
    local r = finish(h)
    local count, mine = check_accounting(broker, r, "F")
    assert.is_true(r.failed > 0, "no row was reported failed")
    assert.is_true(r.acks > 0)
    assert.matches("^TOPIC_AUTHORIZATION_FAILED: ", r.errors[1])
    for _, id in ipairs(r.ids.failed) do
      assert(count[id] == nil, "row " .. id .. " was reported failed but is in Kafka")
    end
    assert.are.equal(r.acks, mine)
  end)

end)
