-- The door of a route (sluice.app.door, docs/security.md): origins,
-- subprotocols and the auth hook decide before the 101 (or before an HTTP
-- handler), and every refusal is an HTTP answer the client can read. The
-- npm `ws` client (door.js) is the client; raw sockets send what it won't.
local H = require "integration.helper"
local socket = require "socket"
local json = H.json

local APP = [[
local sluice = require "sluice"
local json = require "cjson"
local app = sluice.app { name = "door" }
local function greet(conn)
  conn:send(json.encode({ auth = conn.auth or json.null, protocol = conn.protocol or json.null }))
end
local function echo(conn, data) conn:send("echo: " .. data) end
app:ws("/open", { open = greet, message = echo })
app:ws("/chat", { protocols = { "v2.chat", "v1.chat" }, open = greet, message = echo })
app:ws("/site", { origins = { "https://app.example", "http://localhost:8080" }, open = greet,
  message = echo })
app:ws("/auth", {
  protocols = { "v1.chat" },
  auth = function(req)
    local key = req.headers["x-api-key"]
    if key == "raise" then error("boom in auth") end
    if key == "defer" then req:defer() end
    if key == "weird" then return "yes" end
    if key == "nil" then return end
    if key == "busy" then return 429, "too many tries", { ["Retry-After"] = 30 } end
    if key ~= "k1" then
      return 401, "missing or unknown x-api-key", { ["WWW-Authenticate"] = 'ApiKey realm="door"' }
    end
    return true, { user = "ann", method = req.method, path = req.path, query = req.query_string,
      trace = req.headers["x-trace-id"], host = req.headers.host, offered = req.protocols,
      chosen = req.protocol, peer = req.peer }
  end,
  open = greet, message = echo,
})
app:http("GET", "/private", function(req)
  return 200, { user = req.auth.user, key = req.headers["x-api-key"] }
end, {
  auth = function(req)
    if req.headers["x-api-key"] == "k1" then return true, { user = "bob" } end
    return 401, "no key"
  end,
  origins = { "https://app.example" },
})
-- auth answering later (an HTTP route's request can wait)
app:http("GET", "/later", function(req) return 200, { user = req.auth } end, {
  auth = function(req)
    local done = req:defer()
    app:timer(50, function()
      if req.headers["x-api-key"] == "k1" then done(true, "carol") else done(403, "not you") end
    end)
  end,
})
return app
]]

-- door.js URL [options...] → its JSON result
local function door(gw, path, ...)
  local url = path:match("^/") and ("ws://127.0.0.1:" .. gw.port .. path) or path
  return H.client("door.js", { url, ... })
end

-- A hand-made upgrade request with extra header lines: status, whole answer.
local function raw_upgrade(port, path, extra, connection)
  local c = socket.tcp()
  c:settimeout(5)
  assert(c:connect("127.0.0.1", port))
  c:send("GET " .. path .. " HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n" ..
    (connection or "Connection: Upgrade\r\n") ..
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" .. extra .. "\r\n")
  local out, _, partial = c:receive "*a"
  c:close()
  out = out or partial or ""
  return tonumber(out:match "^HTTP/1%.%d (%d%d%d)"), out
end

-- What an opened connection reported: its subprotocol, the greeting its
-- open handler sent (conn.auth, conn.protocol) and the echo of --send.
local function opened(r)
  assert.is_true(r.opened, "not opened: " .. json.encode(r))
  return r.protocol, json.decode(r.messages[1]), r.messages[2]
end
local NULL = json.null

local function body_of(answer) return json.decode(answer:match("\r\n\r\n(.*)$")) end

describe("the door of a route", function()
  local gw

  local app_file

  setup(function()
    local dir = H.tmpdir()
    app_file = dir .. "/app.lua"
    H.write(app_file, APP)
    gw = H.start { app = dir .. "/app.lua", ready = "http" }
  end)

  teardown(function() if gw then gw:stop() end end)

  it("a route without a door opens, and answers a client offering a subprotocol with 400", function()
    local r = door(gw, "/open", "--send", "hi")
    assert.same({ "", { auth = NULL, protocol = NULL }, "echo: hi" }, { opened(r) })
    r = door(gw, "/open", "--protocol", "chat")
    assert.equal(400, r.status)
    assert.same({ status = 400, error = "this route takes no subprotocol (offered: chat)" }, json.decode(r.body))
    assert.equal("close", r.headers.connection)
  end)

  it("selects the route's preferred subprotocol among those offered; none matching is a 400", function()
    local r = door(gw, "/chat", "--protocol", "v1.chat", "--protocol", "v2.chat", "--send", "x")
    assert.same({ "v2.chat", { auth = NULL, protocol = "v2.chat" }, "echo: x" }, { opened(r) })
    r = door(gw, "/chat", "--protocol", "mqtt", "--protocol", "v1.chat")
    assert.same({ "v1.chat", { auth = NULL, protocol = "v1.chat" } }, { opened(r) })
    r = door(gw, "/chat", "--protocol", "mqtt", "--protocol", "v3.chat")
    assert.equal(400, r.status)
    assert.same({ status = 400, error = "none of the offered subprotocols (mqtt, v3.chat) is served here; " ..
      "this route takes: v2.chat, v1.chat" }, json.decode(r.body))
    -- offering none is allowed (RFC 6455): no subprotocol then
    r = door(gw, "/chat")
    assert.same({ "", { auth = NULL, protocol = NULL } }, { opened(r) })
  end)

  it("a Sec-WebSocket-Protocol libwebsockets cannot take is answered 400, not dropped", function()
    local want = { status = 400, error = "Sec-WebSocket-Protocol: not a list of at most 32 names " ..
      "of up to 63 characters, 127 bytes in all" }
    for _, header in ipairs({
      'Sec-WebSocket-Protocol: "v1.chat"\r\n',                         -- a quoted string
      "Sec-WebSocket-Protocol: v1.chat,,v2.chat\r\n",                  -- an empty list element
      "Sec-WebSocket-Protocol: " .. ("p"):rep(64) .. "\r\n",           -- a name over 63
      "Sec-WebSocket-Protocol: " .. ("abcdefg, "):rep(15) .. "v1.chat\r\n",   -- over 127 bytes
    }) do
      local status, answer = raw_upgrade(gw.port, "/chat", header)
      assert.equal(400, status, header)
      assert.same(want, body_of(answer))
    end
  end)

  it("an upgrade whose Connection header does not list upgrade is answered 400, not dropped", function()
    local want = { status = 400, error = "Connection: upgrade expected (at most 127 bytes)" }
    for _, connection in ipairs({ "", "Connection: keep-alive\r\n", "Connection: ,,\r\n",
      "Connection: keep-alive, " .. ("x"):rep(120) .. ", Upgrade\r\n" }) do
      local status, answer = raw_upgrade(gw.port, "/open", "", connection)
      assert.equal(400, status, connection)
      assert.same(want, body_of(answer))
    end
    local status = raw_upgrade(gw.port, "/open", "", "Connection: keep-alive, Upgrade\r\n")
    assert.equal(101, status)
  end)

  it("refuses an origin not on the route's list with 403; listed (any case) or absent, it opens", function()
    local r = door(gw, "/site", "--header", "Origin:https://evil.example")
    assert.equal(403, r.status)
    assert.same({ status = 403, error = "origin https://evil.example is not allowed here" }, json.decode(r.body))
    r = door(gw, "/site", "--header", "Origin:https://App.Example")
    assert.is_true(r.opened)
    r = door(gw, "/site", "--header", "Origin:http://localhost:8080")
    assert.is_true(r.opened)
    r = door(gw, "/site", "--header", "Origin:http://localhost:8081")
    assert.equal(403, r.status)
    r = door(gw, "/site")       -- npm ws sends no Origin: not a browser
    assert.is_true(r.opened)
  end)

  it("auth sees the whole request, custom headers included; its claims become conn.auth", function()
    local r = door(gw, "/auth?a=1&b=two%20words", "--protocol", "v1.chat", "--header", "X-Api-Key:k1",
      "--header", "X-Trace-Id:t-42", "--send", "hello")
    assert.same({ "v1.chat", { protocol = "v1.chat", auth = { user = "ann", method = "GET", path = "/auth",
      query = "a=1&b=two%20words", trace = "t-42", host = "127.0.0.1:" .. gw.port, offered = { "v1.chat" },
      chosen = "v1.chat", peer = "127.0.0.1" } }, "echo: hello" }, { opened(r) })
  end)

  it("auth's refusals are the HTTP answers it chose, headers included", function()
    local r = door(gw, "/auth")
    assert.equal(401, r.status)
    assert.equal('ApiKey realm="door"', r.headers["www-authenticate"])
    assert.same({ status = 401, error = "missing or unknown x-api-key" }, json.decode(r.body))
    r = door(gw, "/auth", "--header", "X-Api-Key:busy")
    assert.equal(429, r.status)
    assert.equal("30", r.headers["retry-after"])
    assert.same({ status = 429, error = "too many tries" }, json.decode(r.body))
    -- a hook that returns nothing refuses (fails closed)
    r = door(gw, "/auth", "--header", "X-Api-Key:nil")
    assert.equal(403, r.status)
    assert.same({ status = 403, error = "refused by the route's auth" }, json.decode(r.body))
  end)

  it("a failing auth hook is a 500 for that client and a logged error; the gateway serves on", function()
    local r = door(gw, "/auth", "--header", "X-Api-Key:raise")
    assert.equal(500, r.status)
    assert.same({ status = 500, error = "the route's auth failed (see the gateway's log)" }, json.decode(r.body))
    assert.truthy(H.wait_for(5, function() return gw:stderr():find("auth failed: [^\n]*boom in auth") end))
    r = door(gw, "/auth", "--header", "X-Api-Key:weird")
    assert.equal(500, r.status)
    assert.truthy(H.wait_for(5, function()
      return gw:stderr():find("auth must return true [, claims] or a status (300-599) and a reason, got string yes", 1, true)
    end))
    -- a WebSocket upgrade cannot wait: deferring is a failure, said why
    r = door(gw, "/auth", "--header", "X-Api-Key:defer")
    assert.equal(500, r.status)
    assert.truthy(H.wait_for(5, function()
      return gw:stderr():find("a WebSocket upgrade cannot wait for a deferred answer", 1, true)
    end))
    r = door(gw, "/open", "--send", "still here")
    assert.equal("echo: still here", r.messages[2])
  end)

  it("the same door for app:http routes: auth, claims as req.auth, custom headers, origins", function()
    local base = "http://127.0.0.1:" .. gw.port .. "/private"
    local r = door(gw, base)
    assert.equal(401, r.status)
    assert.same({ status = 401, error = "no key" }, json.decode(r.body))
    r = door(gw, base, "--header", "X-Api-Key:k1")
    assert.equal(200, r.status)
    assert.same({ user = "bob", key = "k1" }, json.decode(r.body))
    r = door(gw, base, "--header", "X-Api-Key:k1", "--header", "Origin:https://evil.example")
    assert.equal(403, r.status)
    assert.same({ status = 403, error = "origin https://evil.example is not allowed here" }, json.decode(r.body))
  end)

  it("a reload swaps the doors with the handlers", function()
    local site = "/site"
    H.write(app_file, (APP:gsub('"https://app.example", "http://localhost:8080"', '"https://new.example"')))
    gw:signal "HUP"
    assert.truthy(H.wait_for(10, function() return gw:stderr():find("reload: generation 2 serving", 1, true) end),
      gw:stderr())
    local r = door(gw, site, "--header", "Origin:https://app.example")
    assert.equal(403, r.status)
    r = door(gw, site, "--header", "Origin:https://new.example")
    assert.is_true(r.opened)
    -- a typo in the new code's declaration: refused with its line, the old doors serve on
    H.write(app_file, (APP:gsub('origins = { "https://app.example", "http://localhost:8080" }',
      'origins = { "https://app.example" }, orgins = {}')))
    gw:signal "HUP"
    assert.truthy(H.wait_for(10, function()
      return gw:stderr():find("reload failed, generation 2 keeps serving: [^\n]*app.lua:10: bad argument #2 to " ..
        "'ws' %(unknown key 'orgins'")
    end), gw:stderr())
    r = door(gw, site, "--header", "Origin:https://new.example")
    assert.is_true(r.opened)
  end)

  it("an HTTP route's auth may answer later (req:defer()), custom headers still readable", function()
    local base = "http://127.0.0.1:" .. gw.port .. "/later"
    local r = door(gw, base, "--header", "X-Api-Key:k1")
    assert.equal(200, r.status)
    assert.same({ user = "carol" }, json.decode(r.body))
    r = door(gw, base, "--header", "X-Api-Key:k2")
    assert.equal(403, r.status)
    assert.same({ status = 403, error = "not you" }, json.decode(r.body))
  end)
end)
