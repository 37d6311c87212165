-- Kubernetes-style probes and structured logs, as an operator uses them:
-- curl on /healthz/live and /healthz/ready, stderr read line by line as JSON.
local H = require "integration.helper"
local json = H.json
local socket = require "socket"

local APP = [[
local sluice = require "sluice"
local mport = tonumber(os.getenv "METRICS_PORT" or "")
local app = sluice.app { name = "health-app", metrics = mport and { listen = mport } or nil }
app:ws("/in", { message = function(conn, data)
  app:produce(os.getenv "TOPIC" or "t", data, function(err) conn:send(err and "failed" or "ok") end)
end })
app:consume(os.getenv "IN_TOPIC" or "in", function() end)
return app
]]

-- status, decoded body of GET path with curl.
local function curl(port, path)
  local code, out = H.run(("curl -s -w '\\n%%{http_code}' http://127.0.0.1:%d%s"):format(port, path))
  assert(code == 0, "curl failed")
  local lines = H.lines(out)
  local status = tonumber(table.remove(lines))
  local ok, body = pcall(json.decode, table.concat(lines, "\n"))
  return status, ok and body or lines[1]
end

local function app_file(dir)
  H.write(dir .. "/app.lua", APP)
  return dir .. "/app.lua"
end

describe("health probes and JSON logs", function()
  local gw, mport

  setup(function()
    mport = H.free_port()
    gw = H.start { app = app_file(H.tmpdir()), ready = "http", args = { "--log-format", "json" },
      env = "METRICS_PORT=" .. mport }
  end)

  teardown(function()
    if gw then gw:stop() end
    H.cleanup()
  end)

  it("is live at once and ready once its consumer holds partitions, on both ports", function()
    assert.same({ 200, { status = "live" } }, { curl(gw.port, "/healthz/live") })
    assert.same({ 200, { status = "live" } }, { curl(mport, "/healthz/live") })
    assert.truthy(H.wait_for(60, function() return curl(gw.port, "/healthz/ready") == 200 end, 0.2),
      "never ready")
    assert.same({ 200, { status = "ready" } }, { curl(mport, "/healthz/ready") })
  end)

  it("is not ready while it drains, and says why", function()
    -- A client that upgrades and then never answers the server's close:
    -- the shutdown waits for it (up to 4 s), serving meanwhile.
    local c = socket.tcp()
    c:settimeout(5)
    assert(c:connect("127.0.0.1", gw.port))
    c:send("GET /in HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" ..
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    assert.matches("^HTTP/1.1 101", c:receive "*l")
    finally(function() c:close() end)
    gw:signal "TERM"
    local status, body
    assert.truthy(H.wait_for(4, function()
      status, body = curl(mport, "/healthz/ready")
      return status == 503
    end, 0.05), "still ready while shutting down")
    assert.same({ status = "not_ready", failing = { { check = "draining", reason = "the app is shutting down" } } },
      body)
    assert.same({ 200, { status = "live" } }, { curl(mport, "/healthz/live") })
    assert.equal(0, gw:wait(15))
  end)

  it("logs one JSON object per line with ts, level, msg, app and pid", function()
    local lines = H.lines(gw:stderr())
    assert.truthy(#lines >= 3)
    local msgs = {}
    for _, l in ipairs(lines) do
      local ok, o = pcall(json.decode, l)
      assert(ok and type(o) == "table", "not a JSON line: " .. l)
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$", o.ts)
      assert.equal("health-app", o.app)
      assert.equal(gw.pid, o.pid)
      msgs[#msgs + 1] = o.level .. " " .. o.msg
    end
    local want = ("info listening on http://0.0.0.0:%d/ (WebSocket and HTTP)"):format(gw.port)
    local seen = {}
    for _, m in ipairs(msgs) do seen[m] = true end
    assert.truthy(seen[want], "no line: " .. want .. " in\n" .. table.concat(msgs, "\n"))
    assert.truthy(seen["info SIGTERM: shutting down"], table.concat(msgs, "\n"))
  end)
end)

describe("readiness with Apache Kafka down", function()
  local kafka, gw
  local P = H.prefix "health"

  setup(function()
    kafka = H.start_kafka { brokers = 1 }
    H.create_topic(kafka.bootstrap, { P .. "out", P .. "in" }, 1)
    gw = H.start { app = app_file(H.tmpdir()), kafka = kafka.bootstrap, ready = "http",
      env = ("TOPIC=%sout IN_TOPIC=%sin"):format(P, P) }
  end)

  teardown(function()
    if gw then gw:stop() end
    if kafka then kafka:stop() end
    H.cleanup()
  end)

  it("is not ready while records wait for brokers that are all down, and ready again once they are acked", function()
    assert.truthy(H.wait_for(60, function() return curl(gw.port, "/healthz/ready") == 200 end, 0.2), "never ready")
    assert.same({ "ok" }, H.client("probe.js", { "--url", gw.url .. "/in", "--text", "a", "--replies", "1",
      "--wait", "20" }).replies)
    kafka:signal(1, "KILL")
    local client = H.client_bg("probe.js", { "--url", gw.url .. "/in", "--text", "b", "--replies", "1",
      "--wait", "120" })
    finally(function() client:kill() end)
    local kafka_check
    assert.truthy(H.wait_for(60, function()
      local status, body = curl(gw.port, "/healthz/ready")
      if status ~= 503 then return false end
      for _, f in ipairs(body.failing) do if f.check == "kafka" then kafka_check = f end end
      return kafka_check ~= nil
    end, 0.2), "ready with every broker down")
    assert.matches("^1 records waiting: ALL_BROKERS_DOWN", kafka_check.reason)
    -- (once the killed process is gone)
    local restarted, err
    H.wait_for(30, function()
      restarted, err = pcall(kafka.restart, kafka, 1)
      return restarted or not tostring(err):find "is running"
    end, 0.5)
    assert(restarted, err)
    assert.truthy(H.wait_for(90, function() return curl(gw.port, "/healthz/ready") == 200 end, 0.3),
      "not ready again after the broker came back")
    assert.same({ "ok" }, client:result(30).replies)
  end)
end)
