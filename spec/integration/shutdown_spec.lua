-- SIGTERM under load: nothing the gateway accepted is lost. Every row it
-- read before the signal is, before its connection closes with 1001,
-- either acked (and then in Kafka exactly once) or reported failed. A row
-- reported failed before it was sent (PURGE_QUEUE) is not in Kafka; one
-- whose request had reached a broker that did not answer in time
-- (PURGE_INFLIGHT) may be, at most once ("possibly persisted": Kafka's
-- own caveat). The clients keep sending after the signal: those rows are
-- not read, or read and discarded after our close frame, and never
-- answered (docs/reliability.md, "Shutdown"). Apache Kafka of its own
-- (tools/kafka.sh, one node), frozen with SIGSTOP to make it slow or
-- gone, keeps the data after the gateway has exited, so kcat can check it.
local H = require "integration.helper"
local socket = require "socket"
local json = H.json

local TOPIC = "movie-results"

local function kafka_ids(bootstrap, prefix, want)
  local count = {}
  for _, r in ipairs(H.kcat_consume(bootstrap, TOPIC, want, 20)) do
    local ok, row = pcall(json.decode, r.value)
    if ok and type(row) == "table" and type(row.id) == "string" and row.id:sub(1, #prefix) == prefix then
      count[row.id] = (count[row.id] or 0) + 1
    end
  end
  return count
end

local F = require "integration.faults_support"
local stream = F.stream
local function finish(h) return F.finish(h, 40) end

describe("SIGTERM under load", function()
  local broker

  setup(function()
    broker = H.start_kafka { brokers = 1 }
    H.create_topic(broker.bootstrap, TOPIC, 4)
  end)

  teardown(function()
    if broker then broker:stop() end
    H.cleanup()
  end)

  -- Streams rows, signals the gateway while some are in flight, and
  -- checks the accounting. Returns the client's result, the gateway's
  -- stats just before the signal, and the Kafka counts. after_exit runs
  -- once the gateway has exited, before Kafka is read.
  local function shutdown_under_load(prefix, before_signal, after_exit)
    local gw = H.start { app = H.root .. "/bench/soak/rows.lua", kafka = broker.bootstrap }
    -- 4 clients at 6000 rows/s in all, for longer than the test lasts:
    -- they are still sending when the signal comes and after it.
    local h = stream(gw, { "--connections", "4", "--rows", "60000", "--rate", "6000",
                           "--batch", "5", "--prefix", prefix, "--timeout", "30" })
    H.sleep(1.5)
    if before_signal then before_signal() end
    local _, stats = gw:healthz()
    local t0 = H.now()
    gw:signal "TERM"
    local code = gw:wait(30)
    local took = H.now() - t0
    if after_exit then after_exit() end
    local r = finish(h)
    print(("# %s: at SIGTERM %d accepted, %d delivered, %d in flight; client: sent %d, acked %d, failed %d, unanswered %d; exit %s after %.1f s"):format(
      prefix, stats.produced, stats.delivered, stats.in_flight, r.sent, r.acks, r.failed,
      r.unanswered, tostring(code), took))
    assert.are.equal(0, code, "the gateway did not exit 0:\n" .. gw:stderr())
    assert.is_true(stats.in_flight > 0, "nothing was in flight at SIGTERM: the test proves nothing")
    assert.is_true(r.sent > stats.produced, "the clients stopped sending before SIGTERM: the test proves nothing")
    -- Every connection was closed by the server with 1001.
    assert.are.equal(4, #r.closes)
    for _, c in ipairs(r.closes) do
      assert.are.same({ code = 1001, by = "server", reason = "server shutting down" },
                      { code = c.code, by = c.by, reason = c.reason })
    end
    -- Everything accepted before the signal was answered.
    assert.is_true(r.acks + r.failed >= stats.produced,
      ("%d rows accepted before SIGTERM, only %d answered"):format(stats.produced, r.acks + r.failed))
    assert.are.equal(0, r.duplicates)
    assert.are.equal(0, r.unexpected)
    local count = kafka_ids(broker.bootstrap, prefix, r.acks)
    -- Acked ⇔ in Kafka (once); failed ⇒ not in Kafka.
    for _, id in ipairs(r.ids.acked) do
      assert(count[id] == 1, ("acked row %s is in Kafka %d times"):format(id, count[id] or 0))
    end
    for _, id in ipairs(r.ids.failed_by_code.PURGE_QUEUE or {}) do
      assert(count[id] == nil, ("row %s was reported failed before it was sent, but is in Kafka"):format(id))
    end
    local failed_stored = 0
    for _, id in ipairs(r.ids.failed) do
      assert((count[id] or 0) <= 1, ("row %s was reported failed and is in Kafka %d times"):format(id, count[id] or 0))
      failed_stored = failed_stored + (count[id] or 0)
    end
    local stored = 0
    for _ in pairs(count) do stored = stored + 1 end
    assert.are.equal(r.acks + failed_stored, stored, "rows in Kafka that their client was never told about")
    r.failed_stored = failed_stored
    return r, stats, gw, took
  end

  it("flushes what is in flight to a stalled broker, acks it, then closes with 1001", function()
    -- Frozen from 1 s before the signal until 3 s after it: within the
    -- 10 s flush.
    local ok, r, _, gw = pcall(shutdown_under_load, "S", function()
      broker:signal(1, "STOP"); broker:signal(1, "CONT", 4); H.sleep(1)
    end)
    broker:signal(1, "CONT")
    assert(ok, r)
    assert.are.equal(0, r.failed)
    -- Nothing read after the drain began: the clients kept sending, and
    -- exactly the rows accepted when it began were acked.
    local accepted = tonumber(gw:stderr():match("of the (%d+) records accepted await Kafka's answer"))
    assert(accepted, "no drain line in the log:\n" .. gw:stderr())
    assert.are.equal(accepted, r.acks)
  end)

  -- While the drain waits for a frozen broker: the port takes no new
  -- connection, and a second SIGTERM ends the process at once.
  it("takes no connection while draining, and a second SIGTERM ends the drain", function()
    local gw = H.start { app = H.root .. "/bench/soak/rows.lua", kafka = broker.bootstrap }
    local h = stream(gw, { "--connections", "1", "--rows", "2000", "--rate", "200",
                           "--prefix", "D", "--timeout", "30" })
    broker:signal(1, "STOP")
    local ok, err = pcall(function()
      assert(H.wait_for(30, function()
        local _, s = gw:healthz()
        return type(s) == "table" and s.in_flight > 0
      end), "no row in flight")
      gw:signal "TERM"
      assert(H.wait_for(20, function() return gw:stderr():match("draining: ") end),
        ("no drain (exit status %s):\n%s"):format(tostring(gw:exit_code()), gw:stderr()))
      local c, cerr = socket.connect("127.0.0.1", gw.port)
      if c then c:close() end
      assert.are.equal("connection refused", cerr)
      assert.is_nil(gw:exit_code())   -- still draining (10 s flush)
      gw:signal "TERM"
      assert.are.equal(128 + 15, gw:wait(20))
    end)
    broker:signal(1, "CONT")
    h:kill()
    assert(ok, err)
  end)

  it("reports as failed, before closing, what a down broker could not store", function()
    -- kcat cannot read a partition whose leader is down: up again first.
    local up = false
    local function bring_up() if not up then broker:signal(1, "CONT"); up = true end end
    local ok, r, _, gw, took = pcall(shutdown_under_load, "X",
      -- rows produced from now on stay in flight
      function() broker:signal(1, "STOP"); H.sleep(1) end, bring_up)
    bring_up()
    assert(ok, r)
    assert.is_true(r.failed > 0)
    assert.matches("unconfirmed after 10000 ms", gw:stderr())
    print(("# X: %d rows reported failed, %d of them stored when the broker woke (PURGE_INFLIGHT)")
      :format(r.failed, r.failed_stored))
  end)

  it("does not wait beyond its bound for a client that never answers the close", function()
    local gw = H.start { app = H.root .. "/bench/soak/rows.lua", kafka = broker.bootstrap }
    -- A WebSocket client that sends rows and then neither reads nor
    -- answers: our close frame is never replied to.
    local c = assert(socket.connect("127.0.0.1", gw.port))
    c:send("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" ..
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    c:settimeout(5)
    local status = c:receive "*l"
    assert.matches("101", status)
    local row = json.encode { id = "N-1", actorId = "nm1", movieId = "tt1" }
    -- a masked text frame (mask 0: the payload as is)
    c:send(string.char(0x81, 0x80 + #row, 0, 0, 0, 0) .. row)
    H.wait_for(10, function() local _, s = gw:healthz(); return s and s.delivered >= 1 end)
    local t0 = H.now()
    gw:signal "TERM"
    local code = gw:wait(20)
    local took = H.now() - t0
    c:close()
    print(("# silent client: exit %s after %.1f s"):format(tostring(code), took))
    assert.are.equal(0, code, gw:stderr())
    -- It gave up on the client's close reply after its bound, and said so.
    assert.matches("1 WebSocket client did not answer the close within 4000 ms; closed anyway", gw:stderr(), 1, true)
  end)
end)
