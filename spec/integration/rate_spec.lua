-- Per-connection rate limits (app:ws rate = {...}, core/src/ws_rate.c) and
-- the cap on connections per client address (max_connections_per_address,
-- core/src/ws_upgrade.c), against node `ws` clients that exceed them while
-- a polite client on the same gateway keeps getting its acks. The rates
-- that must not refill during the spec are tiny (0.01 tokens/s), so every
-- count below is exact whatever the machine's load.
local H = require "integration.helper"
local socket = require "socket"
local cjson = require "cjson"

local APP = [[
local sluice = require "sluice"
local app = sluice.app { max_connections_per_address = 12 }
local function ack(conn, data)
  conn.data.n = (conn.data.n or 0) + 1
  conn:send("ack " .. conn.data.n)
end
-- burst 5, then one token per 100 s: read until a message leaves it short
app:ws("/slow", { rate = { messages = 0.01, burst = 5 }, message = ack })
app:ws("/refill", { rate = { messages = 20, burst = 5 }, message = ack })
app:ws("/strict", { rate = { messages = 0.01, burst = 5, policy = "close" }, message = ack })
app:ws("/bytes", { rate = { bytes = 0.01, burst_bytes = 1000, policy = "close" }, message = ack })
return app
]]

-- The value of a metric sample in a /metrics text (nil if absent).
local function metric(text, name, route)
  local line = text:match("\n" .. name .. '{route="' .. route .. '"} (%d+)')
  return tonumber(line)
end

-- A WebSocket upgrade from a given local address, with LuaSocket (so that
-- the source address can be chosen). Returns status, body, socket.
local function upgrade(port, path, from)
  local c = socket.tcp()
  c:settimeout(5)
  assert(c:bind(from, 0))
  assert(c:connect("127.0.0.1", port))
  c:send("GET " .. path .. " HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n" ..
    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNsdWljZSBub25jZQ==\r\n" ..
    "Sec-WebSocket-Version: 13\r\n\r\n")
  local status = tonumber((c:receive "*l" or ""):match "^HTTP/1%.1 (%d%d%d)")
  local length
  while true do
    local h = c:receive "*l"
    if not h or h == "" then break end
    length = tonumber(h:lower():match "^content%-length:%s*(%d+)") or length
  end
  local body = length and c:receive(length)
  return status, body, c
end

describe("rate limits", function()
  local gw, dir

  setup(function()
    dir = H.tmpdir()
    H.write(dir .. "/app.lua", APP)
    gw = H.start { app = dir .. "/app.lua", ready = "http" }
  end)
  teardown(function()
    if gw then gw:stop() end
    H.cleanup()
  end)

  it("pause: clients flooding over their rate stop being read, without closing; a polite one is served", function()
    -- Four clients each send 1 MB at once (500 messages of 2,000 bytes).
    local greedy = {}
    finally(function() for _, g in ipairs(greedy) do g:kill() end end)
    for i = 1, 4 do
      local args = { "--url", gw.url .. "/slow", "--wait", "2", "--log", dir .. "/greedy" .. i .. ".log" }
      for _ = 1, 500 do args[#args + 1] = "--size"; args[#args + 1] = "2000" end
      greedy[i] = H.client_bg("probe.js", args)
    end
    -- Each: its burst of 5, and the message that left the bucket short.
    assert.truthy(H.wait_for(10, function()
      for i = 1, 4 do
        if #H.lines(H.read(dir .. "/greedy" .. i .. ".log")) < 6 then return false end
      end
      return true
    end))
    -- Meanwhile, a polite client on the same route: its own bucket.
    local polite = H.client("probe.js", { "--url", gw.url .. "/slow", "--text", "a", "--text", "b",
      "--text", "c", "--replies", "3", "--wait", "10" })
    assert.same({ "ack 1", "ack 2", "ack 3" }, polite.replies)
    assert.same({ code = 1000, reason = "", by = "client" }, polite.close)
    for i = 1, 4 do
      local r = greedy[i]:result(15)
      -- 500 sent, 6 read: the rest waits in TCP buffers until the bucket
      -- refills, and so does the client's own close frame when it gives
      -- up after 2 s: unanswered (close null); the server never closed it.
      assert.same({ "ack 1", "ack 2", "ack 3", "ack 4", "ack 5", "ack 6" }, r.replies)
      assert.is_true(r.opened)
      assert.equal(cjson.null, r.close)
      assert.is_nil(r.error)
    end
    -- The gateway took 4 x 6 of their 2,000 messages, and the polite 3.
    local _, text = H.http(gw.port, "/metrics")
    assert.equal(4 * 6 + 3, metric(text, "sluice_ws_messages_received_total", "/slow"))
    assert.equal(4 * 6 * 2000 + 3, metric(text, "sluice_ws_received_bytes_total", "/slow"))
    assert.equal(4, metric(text, "sluice_ws_rate_paused_total", "/slow"))
    assert.equal(0, metric(text, "sluice_ws_rate_closed_total", "/slow"))
  end)

  it("pause: while a paused client waits, the event loop is not woken", function()
    local args = { "--url", gw.url .. "/slow", "--wait", "30", "--log", dir .. "/idle.log" }
    for _ = 1, 20 do args[#args + 1] = "--size"; args[#args + 1] = "10" end
    local greedy = H.client_bg("probe.js", args)
    finally(function() greedy:kill() end)
    assert.truthy(H.wait_for(10, function() return #H.lines(H.read(dir .. "/idle.log")) >= 6 end))
    assert.truthy(H.wait_quiet(gw.pid, 1, 30), "the gateway's loop never went quiet")
    local before = H.loop_wakeups(gw.pid)
    H.sleep(3)
    assert.equal(0, H.loop_wakeups(gw.pid) - before)
    assert.equal(6, #H.lines(H.read(dir .. "/idle.log")))
  end)

  it("pause: the bucket refills and every message is read, in order", function()
    local args = { "--url", gw.url .. "/refill", "--replies", "30", "--wait", "30" }
    for i = 1, 30 do args[#args + 1] = "--text"; args[#args + 1] = "m" .. i end
    local r = H.client("probe.js", args)
    assert.equal(30, #r.replies)
    assert.equal("ack 30", r.replies[30])
    assert.same({ code = 1000, reason = "", by = "client" }, r.close)
    local _, text = H.http(gw.port, "/metrics")
    local paused = metric(text, "sluice_ws_rate_paused_total", "/refill")
    assert.truthy(paused >= 1 and paused <= 25, "paused " .. tostring(paused) .. " times")
  end)

  it("close: over its message or byte rate a client is closed with 1008 and a reason", function()
    local args = { "--url", gw.url .. "/strict", "--wait", "10" }
    for i = 1, 20 do args[#args + 1] = "--text"; args[#args + 1] = "m" .. i end
    local polite = H.client_bg("probe.js", { "--url", gw.url .. "/strict", "--text", "x",
      "--await", "1", "--text", "y", "--replies", "2", "--wait", "10" })
    local r = H.client("probe.js", args)
    assert.same({ "ack 1", "ack 2", "ack 3", "ack 4", "ack 5" }, r.replies)
    assert.same({ code = 1008, reason = "rate limit: messages/s", by = "server" }, r.close)
    local p = polite:result(15)
    assert.same({ "ack 1", "ack 2" }, p.replies)
    assert.same({ code = 1000, reason = "", by = "client" }, p.close)

    local b = H.client("probe.js", { "--url", gw.url .. "/bytes", "--size", "300", "--size", "300",
      "--size", "300", "--size", "300", "--size", "300", "--wait", "10" })
    assert.same({ "ack 1", "ack 2", "ack 3" }, b.replies)
    assert.same({ code = 1008, reason = "rate limit: bytes/s", by = "server" }, b.close)
    local _, text = H.http(gw.port, "/metrics")
    assert.equal(1, metric(text, "sluice_ws_rate_closed_total", "/strict"))
    assert.equal(1, metric(text, "sluice_ws_rate_closed_total", "/bytes"))
    assert.equal(0, metric(text, "sluice_ws_rate_paused_total", "/strict"))
  end)

  it("caps connections per client address with HTTP 429; other addresses still connect", function()
    local open = {}
    finally(function() for _, c in ipairs(open) do c:close() end end)
    -- The cap is 12, not less: the earlier tests' paused clients (on
    -- /slow, which never refills here) stay open on the gateway after they
    -- leave, since a paused connection does not read and so does not see
    -- its client go, and they count against 127.0.0.1, where the other
    -- tests' clients connect from.
    for i = 1, 12 do
      local status, _, c = upgrade(gw.port, "/refill", "127.0.0.2")
      assert.equal(101, status, "connection " .. i)
      open[#open + 1] = c
    end
    local status, body, c = upgrade(gw.port, "/refill", "127.0.0.2")
    c:close()
    assert.equal(429, status)
    assert.equal('{"status":429,"error":"too many connections from this address (max_per_address)"}', body)
    -- Another address is not affected.
    local r = H.client("probe.js", { "--url", gw.url .. "/refill", "--text", "hi", "--replies", "1" })
    assert.same({ "ack 1" }, r.replies)
    -- One of the twelve leaves: its place is free again.
    open[1]:close()
    table.remove(open, 1)
    assert.truthy(H.wait_for(10, function()
      local s, _, c2 = upgrade(gw.port, "/refill", "127.0.0.2")
      if s == 101 then open[#open + 1] = c2 else c2:close() end
      return s == 101
    end, 0.1))
  end)
end)
