-- SIGTERM while Kafka is unreachable: the gateway still exits, within the
-- producer flush deadline (10 s) plus the consumer close budget (5 s),
-- says why in its log, and reports every record Kafka never confirmed as
-- failed to the client that sent it.
local H = require "integration.helper"
local F = require "integration.faults_support"

-- The soak gateway (rows to movie-results, acked or failed per row) plus a
-- consumer in a group reading them back.
local APP = ([[
local app = dofile(%q)
local consumed = 0
app:consume("movie-results", { group = "shutdown-kafka" }, function() consumed = consumed + 1 end)
app:http("GET", "/consumed", function() return 200, { consumed = consumed } end)
return app
]]):format(H.root .. "/bench/soak/rows.lua")

describe("shutdown with the Kafka brokers gone", function()
  teardown(H.cleanup)

  it("SIGTERM while the broker process is stopped: bounded exit, unconfirmed rows reported failed", function()
    local broker, gw, stream
    finally(function()
      if broker then broker:signal "CONT" end
      if gw then gw:stop(2) end
      if broker then broker:stop() end
    end)
    broker = H.start_fault_broker { brokers = 1 }
    local dir = H.tmpdir()
    H.write(dir .. "/app.lua", APP)
    gw = H.start { app = dir .. "/app.lua", kafka = broker.bootstrap }
    stream = F.stream(gw, { "--connections", "2", "--duration", "40", "--rate", "200",
                            "--prefix", "K", "--timeout", "40" })
    assert.truthy(H.wait_for(20, function()
      local _, h = gw:healthz()
      return type(h) == "table" and (h.delivered or 0) >= 200
    end), "no rows were delivered")
    -- The consumer has joined its group once it reads rows back.
    assert.truthy(H.wait_for(20, function()
      local _, c = H.http_json(gw.port, "/consumed")
      return type(c) == "table" and c.consumed > 0
    end), "the consumer read nothing")

    -- A stopped process: connections stay open, nothing answers.
    broker:signal "STOP"
    H.sleep(1)
    local t0 = H.now()
    gw:signal "TERM"
    local code = gw:wait(30)
    local took = H.now() - t0
    local log = gw:stderr()
    print(("# exit after SIGTERM with the broker stopped: %.1f s"):format(took))
    assert.are.equal(0, code, "exit status; stderr:\n" .. log)
    -- Bounded: it exited by itself (gw:wait above), by the two deadlines
    -- whose expiry is logged below, not by an upper bound on wall time.
    assert.is_true(took > 10, "the flush did not wait for Kafka: nothing was tested")

    local unconfirmed = tonumber(log:match("(%d+) records still unconfirmed after 10000 ms"))
    assert(unconfirmed and unconfirmed > 0, "no unconfirmed records logged; stderr:\n" .. log)
    assert.matches("group close did not finish within %d+ ms", log)

    -- Each unconfirmed record reached its client as a failure before 1001.
    local r = F.finish(stream, 30)
    print(("# sent %d, acked %d, failed %d, unanswered %d"):format(r.sent, r.acks, r.failed, r.unanswered))
    assert.are.equal(unconfirmed, r.failed)
    assert.are.equal(0, r.duplicates)
    for _, c in ipairs(r.closes) do
      assert.are.same({ code = 1001, by = "server" }, { code = c.code, by = c.by })
    end
  end)
end)
