-- Bad input gets its specific answer and the gateway keeps serving everyone
-- else (docs/limits.md). Raw TCP sockets (luasocket) send what no proper
-- client would; the npm `ws` client (probe.js) checks the well-behaved path.
local H = require "integration.helper"
local socket = require "socket"
local json = H.json

local APP = [[
local sluice = require "sluice"
local app = sluice.app {
  name = "bad-input",
  max_message = 4096,
  handler_timeout = 1,              -- seconds of one handler call
  -- VM instructions of one handler call: a few ms of CPU, so that a loop
  -- meets this limit before the 1 s one even on a machine loaded 50 times over
  handler_instructions = 2000000,
  handshake_timeout = 1,
  max_pending = 8,
}
app:ws("/echo", {
  message = function(conn, data)
    if data == "spin" then while true do end end
    if data == "sleep" then
      require("socket").sleep(1.5)   -- in C: the next Lua instruction is over time
      for _ = 1, 1000 do end
    end
    conn:send("echo: " .. data)
  end,
})
app:http("GET", "/healthz", function() return 200, app:stats() end)
app:http("POST", "/body", function(req) return 200, "got " .. req.body end)
return app
]]

-- ---- a raw WebSocket client ---------------------------------------------

local KEY = "dGhlIHNhbXBsZSBub25jZQ=="

local function tcp(port, timeout)
  local c = socket.tcp()
  c:settimeout(timeout or 5)
  assert(c:connect("127.0.0.1", port))
  return c
end

-- Sends request bytes, returns the status code and the whole raw answer.
local function http_raw(port, request, timeout)
  local c = tcp(port, timeout)
  c:send(request)
  local out, _, partial = c:receive "*a"
  c:close()
  out = out or partial or ""
  return tonumber(out:match "^HTTP/1%.%d (%d%d%d)"), out
end

local function upgrade(path, extra)
  return "GET " .. path .. " HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n" ..
         "Connection: Upgrade\r\n" .. (extra or "") .. "\r\n"
end

local function ws_open(port, path)
  local c = tcp(port)
  c:send(upgrade(path or "/echo", "Sec-WebSocket-Key: " .. KEY .. "\r\nSec-WebSocket-Version: 13\r\n"))
  local status = c:receive "*l"
  assert(status and status:match " 101 ", "upgrade refused: " .. tostring(status))
  repeat local l = c:receive "*l" until l == "" or not l
  return c
end

-- One frame: b0 = FIN/RSV/opcode byte; masked as clients must unless told.
local function frame(b0, payload, unmasked)
  local len, mbit = #payload, unmasked and 0 or 0x80
  local hdr = string.char(b0)
  if len < 126 then hdr = hdr .. string.char(mbit + len)
  else hdr = hdr .. string.char(mbit + 126, len // 256, len % 256) end
  if unmasked then return hdr .. payload end
  local key = { 0x37, 0xfa, 0x21, 0x3d }
  local out = {}
  for i = 1, len do out[i] = string.char(payload:byte(i) ~ key[(i - 1) % 4 + 1]) end
  return hdr .. string.char(table.unpack(key)) .. table.concat(out)
end

-- Reads frames until a close frame or the end: returns the texts received
-- and the close code and reason (nil if the socket ended without one).
local function read_until_close(c)
  local texts = {}
  while true do
    local h = c:receive(2)
    if not h then return texts, nil end
    local op, len = h:byte(1) & 15, h:byte(2) & 127
    if len == 126 then local x = c:receive(2); len = x:byte(1) * 256 + x:byte(2) end
    local p = len > 0 and c:receive(len) or ""
    if op == 8 then return texts, p:byte(1) * 256 + p:byte(2), p:sub(3) end
    texts[#texts + 1] = p
  end
end

local function read_text(c)
  local h = assert(c:receive(2))
  local len = h:byte(2) & 127
  if len == 126 then local x = c:receive(2); len = x:byte(1) * 256 + x:byte(2) end
  return len > 0 and c:receive(len) or ""
end

-- Sends raw bytes on a fresh WebSocket and returns the close it gets.
local function violate(port, bytes)
  local c = ws_open(port)
  c:send(bytes)
  local texts, code, reason = read_until_close(c)
  c:close()
  return code, reason, texts
end

describe("bad input", function()
  local gw, bystander

  -- A client that connected first and talks between the tests: it must
  -- never notice what the others did.
  local function bystander_ok(n)
    bystander:send(frame(0x81, "still here " .. n))
    return read_text(bystander) == "echo: still here " .. n
  end

  setup(function()
    local dir = H.tmpdir()
    H.write(dir .. "/app.lua", APP)
    gw = H.start { app = dir .. "/app.lua" }
    bystander = ws_open(gw.port)
  end)

  teardown(function()
    if bystander then bystander:close() end
    if gw then gw:stop() end
    H.cleanup()
  end)

  it("invalid UTF-8 in a text frame: 1007", function()
    local code, reason = violate(gw.port, frame(0x81, "ok \xff\xfe"))
    assert.are.equal(1007, code)
    assert.are.equal("bad utf8", reason)
    -- split across fragments, invalid only when joined
    code = violate(gw.port, frame(0x01, "ab\xe2\x82") .. frame(0x80, "\x28"))
    assert.are.equal(1007, code)
    assert.is_true(bystander_ok(1))
  end)

  it("a message over max_message: 1009 (npm ws client)", function()
    local r = H.client("probe.js", { "--url", gw.url .. "/echo", "--size", "5000", "--wait", "10" })
    assert.is_true(r.opened)
    assert.are.same({ code = 1009, reason = "message too big", by = "server" }, r.close)
    -- in fragments that only together pass the limit
    local code = violate(gw.port, frame(0x01, ("a"):rep(3000)) .. frame(0x80, ("b"):rep(3000)))
    assert.are.equal(1009, code)
    r = H.client("probe.js", { "--url", gw.url .. "/echo", "--size", "4000", "--replies", "1" })
    assert.are.equal("echo: " .. ("x"):rep(4000), r.replies[1])
    assert.is_true(bystander_ok(2))
  end)

  it("bad handshakes: HTTP 4xx", function()
    local status = http_raw(gw.port, "\0\1\2 not http at all\r\n\r\n")
    assert.are.equal(403, status)
    local out
    status, out = http_raw(gw.port, upgrade("/echo", "Sec-WebSocket-Key: " .. KEY .. "\r\nSec-WebSocket-Version: 8\r\n"))
    assert.are.equal(426, status)
    assert.matches("\r\nsec%-websocket%-version: 13\r\n", out:lower())
    status = http_raw(gw.port, upgrade("/echo", "Sec-WebSocket-Version: 13\r\n"))
    assert.are.equal(400, status)
    status = http_raw(gw.port, upgrade("/nowhere", "Sec-WebSocket-Key: " .. KEY .. "\r\nSec-WebSocket-Version: 13\r\n"))
    assert.are.equal(404, status)
    assert.is_true(bystander_ok(3))
  end)

  it("protocol violations: 1002", function()
    local cases = {
      ["reserved opcode"] = { frame(0x83, "x"), "bad opc" },
      ["RSV bits without an extension"] = { frame(0xC1, "x"), "rsv bits" },
      ["fragmented control frame"] = { frame(0x09, "p"), "frag ctl" },
      ["continuation with nothing to continue"] = { frame(0x80, "x"), "bad cont" },
      ["new message inside a fragmented one"] = { frame(0x01, "a") .. frame(0x81, "b"), "bad cont" },
    }
    for what, case in pairs(cases) do
      local code, reason = violate(gw.port, case[1])
      assert.are.equal(1002, code, what)
      assert.are.equal(case[2], reason, what)
    end
    -- libwebsockets 4.1.6 drops a control frame over 125 bytes without a
    -- close frame (docs/limits.md): the client sees the socket end.
    local code, _, texts = violate(gw.port, frame(0x89, ("p"):rep(126)))
    assert.is_nil(code)
    assert.are.same({}, texts)
    assert.is_true(bystander_ok(4))
  end)

  it("a handler that loops forever is stopped; the connection stays", function()
    local r = H.client("probe.js", { "--url", gw.url .. "/echo",
      "--text", "spin", "--text", "after", "--replies", "2", "--wait", "20" })
    assert.is_nil(r.error)
    assert.are.same({ error = "handler failed", code = "HANDLER" }, json.decode(r.replies[1]))
    assert.are.equal("echo: after", r.replies[2])
    assert.matches("handler stopped: over its limit of 2000000 instructions", gw:stderr(), 1, true)
    assert.is_true(bystander_ok(5))
  end)

  it("a handler over its time limit is stopped; the connection stays", function()
    local r = H.client("probe.js", { "--url", gw.url .. "/echo",
      "--text", "sleep", "--text", "after", "--replies", "2", "--wait", "20" })
    assert.are.same({ error = "handler failed", code = "HANDLER" }, json.decode(r.replies[1]))
    assert.are.equal("echo: after", r.replies[2])
    assert.matches("handler stopped: ran longer than 1000 ms", gw:stderr(), 1, true)
    local status, stats = H.http_json(gw.port, "/healthz")
    assert.are.equal(200, status)
    assert.are.equal(2, stats.handler_errors)
    assert.is_true(bystander_ok(6))
  end)

  it("slow-loris: a request head not complete within handshake_timeout gets 408", function()
    local c = tcp(gw.port, 10)
    local t0 = H.now()
    c:send("GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    for _ = 1, 3 do c:send("X-Slow: a\r\n"); H.sleep(0.2) end   -- trickles, never ends
    local out, err, partial = c:receive "*a"
    c:close()
    out = out or partial
    local took = H.now() - t0
    assert.matches("^HTTP/1%.1 408", out)
    -- not before handshake_timeout (1 s); that it ends at all is the 408
    assert.is_true(took >= 0.9, ("closed after %.1f s"):format(took))
    assert.is_nil(err)
    assert.is_true(bystander_ok(7))
  end)

  it("pipelined requests with bodies do not stall the gateway", function()
    -- lws 4.1.6 spun forever on this (found by fuzz/fuzz_server.c)
    local c = tcp(gw.port)
    c:send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" ..
           "POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab" ..
           "POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\ncd")
    local out, _, partial = c:receive "*a"
    c:close()
    out = out or partial
    -- The first is answered, then the connection closes (no keep-alive:
    -- docs/limits.md); a pipelined body is never read from a wrong offset.
    assert.matches("^HTTP/1%.1 200", out)
    assert.is_nil(out:find("got PO", 1, true))
    local status, answer = http_raw(gw.port,
      "POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab")
    assert.are.equal(200, status)
    assert.matches("\r\n\r\ngot ab$", answer)
    assert.matches("\r\nconnection: close\r\n", answer:lower())
    local t0 = H.now()
    assert.are.equal(200, (H.http(gw.port, "/healthz")))
    assert.is_true(H.now() - t0 < 3)
    assert.is_true(bystander_ok(9))
  end)

  it("a flood of sockets that send nothing: 503 beyond max_pending, then served again", function()
    local idle = {}
    for i = 1, 8 do idle[i] = tcp(gw.port) end
    H.sleep(0.3)
    local status, out = http_raw(gw.port, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert.are.equal(503, status, out)
    assert.is_true(bystander_ok(8))   -- open WebSockets are not affected
    for _, c in ipairs(idle) do c:close() end
    local ok = H.wait_for(5, function() return H.http(gw.port, "/healthz") == 200 end)
    assert.truthy(ok)
    local r = H.client("probe.js", { "--url", gw.url .. "/echo", "--text", "hi", "--replies", "1" })
    assert.are.equal("echo: hi", r.replies[1])
  end)
end)

describe("bad input to the movies app", function()
  local gw
  setup(function() gw = H.start {} end)
  teardown(function() if gw then gw:stop() end end)

  it("malformed JSON: an error frame, and the connection stays", function()
    local r = H.client("probe.js", { "--url", gw.url .. "/stream",
      "--text", "{not json", "--text", "[1,", "--text", "42", "--replies", "3", "--wait", "10" })
    assert.is_nil(r.error)
    assert.are.equal(3, #r.replies)
    assert.matches("^malformed JSON: ", json.decode(r.replies[1]).error)
    assert.matches("^malformed JSON: ", json.decode(r.replies[2]).error)
    assert.matches("^invalid row", json.decode(r.replies[3]).error)
    assert.are.equal("client", r.close.by)
  end)
end)
