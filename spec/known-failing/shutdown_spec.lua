-- SIGTERM under load: nothing the gateway accepted is lost. Every row it
-- read before the signal is, before its connection closes with 1001,
-- either acked (and then in Kafka exactly once) or reported failed (and
-- then not in Kafka). A separate fault broker process (bench/soak/broker.lua)
-- keeps the data after the gateway has exited, so kcat can check it.
local H = require "integration.helper"
local json = H.json

local TOPIC = "movie-results"

local function kafka_ids(bootstrap, prefix, want)
  local count = {}
  for _, r in ipairs(H.kcat_consume(bootstrap, TOPIC, want, 30)) do
    local ok, row = pcall(json.decode, r.value)
    if ok and type(row) == "table" and type(row.id) == "string" and row.id:sub(1, #prefix) == prefix then
      count[row.id] = (count[row.id] or 0) + 1
    end
  end
  return count
end

local function stream(gw, args)
  local out = H.tmpdir() .. "/ids.json"
  local full = { "--url", gw.url .. "/", "--out", out }
  for _, a in ipairs(args) do full[#full + 1] = a end
  local h = H.client_bg("stream.js", full)
  h.out = out
  return h
end

local function finish(h)
  local r = h:result(90)
  local ids = H.read(h.out)
  assert(ids, "stream.js wrote no id list")
  r.ids = json.decode(ids)
  return r
end

describe("SIGTERM under load", function()
  local broker

  setup(function()
    broker = H.start_fault_broker { brokers = 3 }
    broker:fault("/topic?name=" .. TOPIC .. "&partitions=4")
    for p = 0, 3 do broker:fault(("/leader?topic=%s&partition=%d&id=1"):format(TOPIC, p)) end
  end)

  teardown(function()
    if broker then broker:stop() end
    H.cleanup()
  end)

  -- Streams rows, signals the gateway while some are in flight, and
  -- checks the accounting. Returns the client's result, the gateway's
  -- stats just before the signal, and the Kafka counts.
  local function shutdown_under_load(prefix, before_signal)
    local gw = H.start { app = H.root .. "/bench/soak/rows.lua", kafka = broker.bootstrap }
    local h = stream(gw, { "--connections", "4", "--rows", "40000", "--rate", "4000",
                           "--batch", "5", "--prefix", prefix, "--timeout", "60" })
    H.sleep(2)
    if before_signal then before_signal() end
    local _, stats = gw:healthz()
    gw:signal "TERM"
    local code = gw:wait(30)
    local r = finish(h)
    print(("# %s: at SIGTERM %d accepted, %d delivered, %d in flight; client: sent %d, acked %d, failed %d, unanswered %d; exit %s"):format(
      prefix, stats.produced, stats.delivered, stats.in_flight, r.sent, r.acks, r.failed,
      r.unanswered, tostring(code)))
    assert.are.equal(0, code, "the gateway did not exit 0:\n" .. gw:stderr())
    assert.is_true(stats.in_flight > 0, "nothing was in flight at SIGTERM: the test proves nothing")
    -- Every connection was closed by the server with 1001.
    assert.are.equal(4, #r.closes)
    for _, c in ipairs(r.closes) do
      assert.are.same({ code = 1001, by = "server" }, { code = c.code, by = c.by })
    end
    -- Everything accepted before the signal was answered.
    assert.is_true(r.acks + r.failed >= stats.produced,
      ("%d rows accepted before SIGTERM, only %d answered"):format(stats.produced, r.acks + r.failed))
    assert.are.equal(0, r.duplicates)
    local count = kafka_ids(broker.bootstrap, prefix, r.acks)
    -- Acked ⇔ in Kafka (once); failed ⇒ not in Kafka.
    for _, id in ipairs(r.ids.acked) do
      assert(count[id] == 1, ("acked row %s is in Kafka %d times"):format(id, count[id] or 0))
    end
    for _, id in ipairs(r.ids.failed) do
      assert(count[id] == nil, ("row %s was reported failed but is in Kafka"):format(id))
    end
    local stored = 0
    for id in pairs(count) do stored = stored + 1 end
    assert.are.equal(r.acks, stored, "rows in Kafka that their client was never told about")
    return r, stats, gw
  end

  it("flushes what is in flight to a slow broker, acks it, then closes with 1001", function()
    for id = 1, 3 do broker:fault(("/rtt?id=%d&ms=400"):format(id)) end
    local r = shutdown_under_load("S")
    for id = 1, 3 do broker:fault(("/rtt?id=%d&ms=0"):format(id)) end
    assert.are.equal(0, r.failed)
  end)

  it("reports as failed, before closing, what a down broker could not store", function()
    local r, _, gw = shutdown_under_load("X", function() broker:fault "/down?id=1" end)
    broker:fault "/up?id=1"
    assert.is_true(r.failed > 0)
    assert.matches("unconfirmed", gw:stderr())
  end)
end)
