-- GET /metrics as Prometheus reads it: scraped over HTTP and parsed by
-- prometheus_client's text-format parser (spec/clients/scrape.py), with
-- traffic from independent clients (node `ws`, kcat) on Apache Kafka.
local H = require "integration.helper"
local json = H.json

local python = os.getenv "SLUICE_PYTHON" or "python3"

-- families, content type of one scrape (fails the test on a parse error).
local function scrape(port, path)
  local code, out, err = H.run(("%s %s %s"):format(H.q(python), H.q(H.clients .. "/scrape.py"),
    H.q(("http://127.0.0.1:%d%s"):format(port, path or "/metrics"))))
  assert(code == 0, "scrape.py failed: " .. tostring(err))
  local r = json.decode(H.lines(out)[#H.lines(out)])
  assert(r.error == nil, "the exposition does not parse: " .. tostring(r.error))
  return r
end

-- The value of sample `name` with exactly these labels, or nil.
local function value(r, family, name, labels)
  local f = r.families[family]
  if not f then return nil end
  for _, s in ipairs(f.samples) do
    if s[1] == name then
      local same = true
      for k, v in pairs(labels or {}) do if s[2][k] ~= v then same = false end end
      for k in pairs(s[2]) do if (labels or {})[k] == nil then same = false end end
      if same then return s[3] end
    end
  end
end

local APP = [[
local sluice = require "sluice"
local mport = tonumber(os.getenv "METRICS_PORT" or "")
local app = sluice.app {
  name = os.getenv "GROUP",
  kafka = { ["message.max.bytes"] = "3000000" },   -- the broker takes ~1 MB: bigger fails there
  metrics = mport and { listen = "127.0.0.1:" .. mport, path = "/m", kafka_statistics = 0.2 } or nil,
}
local TOPIC = os.getenv "TOPIC"
local seen = app:metric("app_messages_total", { help = "Messages by kind.", labels = { "kind" } })
local sizes = app:metric("app_message_size", { type = "histogram", buckets = { 5, 10 } })
local last = app:metric("app_last_size", { type = "gauge", help = "Size of the last message." })
local function reply(err, report, conn) conn:send(err and ("error " .. report.code) or "ok") end
app:ws("/in", {
  message = function(conn, data)
    seen:inc({ kind = data:sub(1, 3) })
    sizes:observe(#data)
    last:set(#data)
    if data == "boom" then error("boom") end
    local value = data
    if data == "big" then value = string.rep("x", 1500000) end      -- refused by the broker
    if data == "huge" then value = string.rep("x", 4000000) end     -- refused here
    local ok, err, code = app:produce(TOPIC, value, reply, conn)
    if not ok then conn:send("refused " .. (err:match("^%u+: ([%u_]+):") or code)) end
  end,
})
app:consume(os.getenv "IN_TOPIC", { from = "earliest" }, function(rec) end)
-- a declared route: its valid rows never enter Lua
app:ws("/rows", { route = { schema = { { "id", "number" }, { "v", "string" } },
  topic = TOPIC .. "-rows", ack = "id" } })
return app
]]

describe("GET /metrics", function()
  local gw, dir, bootstrap
  local P = H.prefix "metrics"
  local TOPIC, IN = P .. "out", P .. "in"

  setup(function()
    bootstrap = H.kafka()
    H.create_topic(bootstrap, { TOPIC, IN, TOPIC .. "-rows" }, 1)
    for i = 1, 7 do assert(H.kcat_produce(bootstrap, IN, "r" .. i)) end
    dir = H.tmpdir()
    H.write(dir .. "/app.lua", APP)
    gw = H.start { app = dir .. "/app.lua", kafka = bootstrap, ready = "http",
      env = ("TOPIC=%s IN_TOPIC=%s GROUP=%sg"):format(TOPIC, IN, P) }
  end)

  teardown(function()
    if gw then gw:stop() end
    H.cleanup()
  end)

  it("counts a route's traffic, Kafka's acks and errors by code, handlers and the app's own metrics", function()
    local r0 = scrape(gw.port)
    assert.equal(200, r0.status)
    assert.equal("text/plain; version=0.0.4; charset=utf-8", r0.content_type)
    assert.equal(1, value(r0, "sluice_info", "sluice_info", { version = "0.1.0", lua = "Lua 5.4" }))

    -- five good messages, one handler error, one refused here, then (alone
    -- in its batch) one the broker refuses
    local r = H.client("probe.js", { "--url", gw.url .. "/in", "--text", "one", "--text", "two",
      "--text", "three", "--text", "four", "--text", "fives", "--text", "boom", "--text", "huge",
      "--await", "7", "--text", "big", "--replies", "8", "--wait", "30" })
    table.sort(r.replies)
    local HANDLER = '{"error":"handler failed","code":"HANDLER"}'
    assert.same({ "error MSG_SIZE_TOO_LARGE", "ok", "ok", "ok", "ok", "ok", "refused MSG_SIZE_TOO_LARGE", HANDLER },
      r.replies)

    local m
    -- the consumer read the 7 records already there
    assert.truthy(H.wait_for(30, function()
      m = scrape(gw.port)
      return value(m, "sluice_kafka_consumer_position", "sluice_kafka_consumer_position",
        { group = P .. "g", topic = IN, partition = "0" }) == 7
    end, 0.3), "the consumer's position never reached 7")
    local part = { group = P .. "g", topic = IN, partition = "0" }
    assert.equal(7, value(m, "sluice_kafka_partition_high_watermark", "sluice_kafka_partition_high_watermark", part))
    assert.equal(0, value(m, "sluice_kafka_consumer_lag_records", "sluice_kafka_consumer_lag_records", part))
    assert.equal(7, value(m, "sluice_kafka_consumed", "sluice_kafka_consumed_total"))
    assert.equal(1, value(m, "sluice_kafka_consumer_assigned_partitions", "sluice_kafka_consumer_assigned_partitions"))

    local route = { route = "/in" }
    assert.equal("gauge", m.families.sluice_ws_connections.type)
    assert.equal(0, value(m, "sluice_ws_connections", "sluice_ws_connections", route))
    assert.equal(1, value(m, "sluice_ws_connections_opened", "sluice_ws_connections_opened_total", route))
    assert.equal(8, value(m, "sluice_ws_messages_received", "sluice_ws_messages_received_total", route))
    assert.equal(#"onetwothreefourfivesboomhugebig",
      value(m, "sluice_ws_received_bytes", "sluice_ws_received_bytes_total", route))
    assert.equal(8, value(m, "sluice_ws_messages_sent", "sluice_ws_messages_sent_total", route))
    assert.equal(5 * #"ok" + #"error MSG_SIZE_TOO_LARGE" + #"refused MSG_SIZE_TOO_LARGE" + #HANDLER,
      value(m, "sluice_ws_sent_bytes", "sluice_ws_sent_bytes_total", route))
    assert.equal(0, value(m, "sluice_ws_send_queue_bytes", "sluice_ws_send_queue_bytes", route))

    local topic = { topic = TOPIC }
    assert.equal("counter", m.families.sluice_kafka_produced.type)
    assert.equal(6, value(m, "sluice_kafka_produced", "sluice_kafka_produced_total", topic))
    assert.equal(5, value(m, "sluice_kafka_delivered", "sluice_kafka_delivered_total", topic))
    assert.equal(1, value(m, "sluice_kafka_delivery_failed", "sluice_kafka_delivery_failed_total", topic))
    local code = { topic = TOPIC, code = "MSG_SIZE_TOO_LARGE" }
    assert.equal(1, value(m, "sluice_kafka_delivery_errors", "sluice_kafka_delivery_errors_total", code))
    assert.equal(1, value(m, "sluice_kafka_produce_refused", "sluice_kafka_produce_refused_total", code))
    assert.equal(0, value(m, "sluice_kafka_in_flight_records", "sluice_kafka_in_flight_records"))

    local msg = { handler = "message" }
    assert.equal("histogram", m.families.sluice_handler_seconds.type)
    assert.equal(8, value(m, "sluice_handler_seconds", "sluice_handler_seconds_count", msg))
    assert.equal(8, value(m, "sluice_handler_seconds", "sluice_handler_seconds_bucket",
      { handler = "message", le = "+Inf" }))
    assert.equal(7, value(m, "sluice_handler_seconds", "sluice_handler_seconds_count", { handler = "consume" }))
    assert.equal(1, value(m, "sluice_handler_errors", "sluice_handler_errors_total", msg))
    assert.equal(0, value(m, "sluice_handler_errors", "sluice_handler_errors_total", { handler = "consume" }))

    assert.equal(1, value(m, "sluice_reload_generation", "sluice_reload_generation"))
    assert.equal(0, value(m, "sluice_reload_failures", "sluice_reload_failures_total"))
    assert.equal("counter", m.families.process_cpu_seconds.type)
    assert.is_true(value(m, "process_resident_memory_bytes", "process_resident_memory_bytes") > 0)

    assert.equal("Messages by kind.", m.families.app_messages.help)
    assert.equal(1, value(m, "app_messages", "app_messages_total", { kind = "one" }))
    assert.equal(1, value(m, "app_messages", "app_messages_total", { kind = "thr" }))
    assert.equal(1, value(m, "app_messages", "app_messages_total", { kind = "boo" }))
    -- sizes 3 3 5 4 5 4 4 3: all within 5
    assert.equal(8, value(m, "app_message_size", "app_message_size_bucket", { le = "5" }))
    assert.equal(8, value(m, "app_message_size", "app_message_size_bucket", { le = "+Inf" }))
    assert.equal(31, value(m, "app_message_size", "app_message_size_sum"))
    assert.equal(3, value(m, "app_last_size", "app_last_size"))
  end)

  it("keeps the app's metrics across a reload and counts reloads, refused ones too", function()
    local before = value(scrape(gw.port), "app_messages", "app_messages_total", { kind = "one" })
    H.write(dir .. "/app.lua", APP .. "\n-- changed\n")
    gw:signal "HUP"
    local m
    assert.truthy(H.wait_for(20, function()
      m = scrape(gw.port)
      return value(m, "sluice_reload_generation", "sluice_reload_generation") == 2
    end, 0.2), "no reload")
    assert.equal(1, value(m, "sluice_reloads", "sluice_reloads_total"))
    assert.equal(before, value(m, "app_messages", "app_messages_total", { kind = "one" }))
    H.write(dir .. "/app.lua", "return (")
    gw:signal "HUP"
    assert.truthy(H.wait_for(20, function()
      m = scrape(gw.port)
      return value(m, "sluice_reload_failures", "sluice_reload_failures_total") == 1
    end, 0.2), "the broken reload was not counted")
    assert.equal(2, value(m, "sluice_reload_generation", "sluice_reload_generation"))
  end)

  it("counts the rows of a declared route, which spend no time in Lua", function()
    -- (the app as reloaded above: its route declared anew)
    local function lua_calls(m, what)
      return value(m, "sluice_handler_seconds", "sluice_handler_seconds_count", { handler = what }) or 0
    end
    local m0 = scrape(gw.port)
    local r = H.client("probe.js", { "--url", gw.url .. "/rows", "--text", '{"id":1,"v":"a"}',
      "--text", '[{"id":2,"v":"b"},{"id":3,"v":"c"}]', "--text", '{"id":4}', "--replies", "4", "--wait", "30" })
    table.sort(r.replies)
    assert.same({ '{"ack":1}', '{"ack":2}', '{"ack":3}', '{"error":"INVALID: v is missing","id":4}' }, r.replies)
    local m = scrape(gw.port)
    local route, topic = { route = "/rows" }, { topic = TOPIC .. "-rows" }
    assert.equal(3, value(m, "sluice_ws_messages_received", "sluice_ws_messages_received_total", route))
    assert.equal(4, value(m, "sluice_ws_messages_sent", "sluice_ws_messages_sent_total", route))
    assert.equal(3, value(m, "sluice_kafka_produced", "sluice_kafka_produced_total", topic))
    assert.equal(3, value(m, "sluice_kafka_delivered", "sluice_kafka_delivered_total", topic))
    assert.equal(0, value(m, "sluice_kafka_delivery_failed", "sluice_kafka_delivery_failed_total", topic))
    -- Lua ran once: for the refused row (the route's default refusal)
    assert.equal(lua_calls(m0, "message") + 1, lua_calls(m, "message"))
    assert.equal(lua_calls(m0, "delivery"), lua_calls(m, "delivery"))
  end)
end)

describe("metrics on a port of their own", function()
  local gw, mport
  local P = H.prefix "metrics_port"

  setup(function()
    local bootstrap = H.kafka()
    local dir = H.tmpdir()
    H.write(dir .. "/app.lua", APP)
    mport = H.free_port()
    gw = H.start { app = dir .. "/app.lua", kafka = bootstrap, ready = "http",
      env = ("TOPIC=%sout IN_TOPIC=%sin GROUP=%sg METRICS_PORT=%d"):format(P, P, P, mport) }
  end)

  teardown(function()
    if gw then gw:stop() end
    H.cleanup()
  end)

  it("serves them at the configured path there only, with the producer's broker round-trip times", function()
    assert.equal(404, (H.http(gw.port, "/m")))
    assert.equal(404, (H.http(gw.port, "/metrics")))
    assert.equal(404, (H.http(mport, "/metrics")))
    local r = H.client("probe.js", { "--url", gw.url .. "/in", "--text", "one", "--replies", "1", "--wait", "20" })
    assert.same({ "ok" }, r.replies)
    local m, rtts
    -- librdkafka's statistics come every 0.2 s (metrics.kafka_statistics)
    assert.truthy(H.wait_for(20, function()
      m = scrape(mport, "/m")
      rtts = m.families.sluice_kafka_broker_rtt_seconds.samples
      return #rtts > 0
    end, 0.2), "no broker round-trip time")
    local host, port = H.kafka():match "^([^:,]+):(%d+)"
    local names = {}
    for _, s in ipairs(rtts) do names[s[2].broker .. " " .. s[2].quantile] = true end
    assert.same({ [("%s:%s/1 0.5"):format(host, port)] = true, [("%s:%s/1 0.99"):format(host, port)] = true }, names)
    assert.equal(1, value(m, "sluice_kafka_delivered", "sluice_kafka_delivered_total", { topic = P .. "out" }))
  end)
end)
