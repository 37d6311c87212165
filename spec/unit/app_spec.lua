-- The sluice library against the real C core, in one process: a server
-- app, WebSocket clients through app:connect, raw HTTP through luasocket,
-- and the embedded Kafka broker. Everything is driven by app:step().
local sluice = require "sluice"
local cjson = require "cjson"
local socket = require "socket"
local support = require "unit.support"

local wait, message = support.wait, support.message

-- fn() must raise an error whose message contains `text`.
local function raises(text, fn)
  local ok, err = pcall(fn)
  assert.is_false(ok, "expected an error containing: " .. text)
  assert.matches(text, tostring(err), 1, true)
end

describe("sluice.app: WebSocket and HTTP", function()
  local app
  local server_closed = {}     -- route /close: what the server's close handler saw
  local kept_conn              -- a server-side conn kept after it closed

  setup(function()
    app = support.app { name = "unit-ws" }

    app:ws("/echo", {
      message = function(conn, data, binary) assert(conn:send(data, binary)) end,
    })

    app:ws("/count", {
      open = function(conn) conn.data.n = 0 end,
      message = function(conn, data)
        conn.data.n = conn.data.n + 1
        conn:send(data .. ":" .. conn.data.n)
      end,
    })

    app:ws("/close", {
      message = function(conn, data)
        local code, reason = data:match("^(%d+) (.*)$")
        conn:close(tonumber(code), reason)
      end,
      close = function(conn, code, reason)
        server_closed[#server_closed + 1] = { code = code, reason = reason }
        kept_conn = conn
      end,
    })

    app:ws("/raise", {
      message = function(conn, data)
        if data == "boom" then error("boom from the handler") end
        conn:send("ok " .. data)
      end,
    })

    app:ws("/room", {})
    app:ws("/other", {})

    app:ws("/info", {
      open = function(conn)
        conn:send(cjson.encode { path = conn.path, q = conn.query.q,
          qs = conn.query_string, id = conn.id, open = conn:is_open() })
      end,
    })

    app:http("GET", "/hello", function(req)
      return 200, { hello = req.query.name, method = req.method, path = req.path,
                    qs = req.query_string, peer = type(req.peer) }
    end)
    app:http("POST", "/json", function(req)
      local v, err, code = req:json()
      if not v then return 400, { error = err, code = code } end
      return 201, { got = v, type = req.headers["content-type"] }
    end)
    app:http("DELETE", "/gone", function() return 204 end)
    app:http("GET", "/text", function()
      return nil, "plain words", { ["x-extra"] = "yes" }
    end)
    app:http("GET", "/raise", function() error("http boom") end)
    app:http("GET", "/later", function(req)
      local respond = req:defer()
      app:timer(20, function() respond(202, { late = true }) end)
    end)

    assert(app:start())
  end)

  teardown(function()
    if app then app:close() end
  end)

  it("listens on the port it reports", function()
    local res = support.http(app, "GET", "/hello?name=port")
    assert.equal(200, res.status)
    -- the embedded broker's stable bootstrap address
    assert.equal(app.broker:bootstrap(), app.bootstrap)
    assert.matches("^127%.0%.0%.1:%d+$", app.bootstrap)
  end)

  it("listens on an IPv6 address given as \"[host]:port\" and logs it bracketed, as in a URL", function()
    local app6 = support.app { listen = "[::1]:0" }
    app6:http("GET", "/six", function() return 200, "over IPv6" end)
    assert(app6:start())
    local line = ("listening on http://[::1]:%d/ (WebSocket and HTTP)"):format(app6.port)
    local said
    for _, l in ipairs(support.logs(app6)) do if l == "info: " .. line then said = l end end
    local c = assert(require("socket").tcp6())
    c:settimeout(0)
    c:connect("::1", app6.port)
    support.wait(app6, function() local _, w = require("socket").select(nil, { c }, 0); return #w > 0 end, "connected")
    c:send("GET /six HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    local got = ""
    support.wait(app6, function()
      local data, err, part = c:receive("*a")
      got = got .. (data or part or "")
      return err == "closed" or data
    end, "the answer")
    c:close()
    app6:close()
    assert.equal("info: " .. line, said)
    assert.matches("^HTTP/1.1 200 OK\r\n", got)
    assert.matches("\r\n\r\nover IPv6$", got)
  end)

  it("echoes text and binary messages", function()
    local c = support.open_client(app, "/echo")
    assert(c.conn:send("hello"))
    assert.same({ "hello", false }, { message(app, c, 1) })
    local bytes = "\0\1\2\255"
    assert(c.conn:send(bytes, true))
    assert.same({ bytes, true }, { message(app, c, 2) })
    c.conn:close()
    wait(app, function() return c.closed end, "client close")
  end)

  it("joins a message larger than libwebsockets' receive buffer", function()
    local c = support.open_client(app, "/echo")
    local big = string.rep("0123456789abcdef", 16384)   -- 256 KiB
    assert(c.conn:send(big))
    local got = message(app, c, 1)
    assert.equal(#big, #got)
    assert.is_true(got == big)
    c.conn:close()
  end)

  it("gives each connection its own conn.data", function()
    local a = support.open_client(app, "/count")
    local b = support.open_client(app, "/count")
    a.conn:send("a"); a.conn:send("a")
    b.conn:send("b")
    assert.equal("a:1", message(app, a, 1))
    assert.equal("a:2", message(app, a, 2))
    assert.equal("b:1", message(app, b, 1))
    assert.are_not.equal(a.conn.id, b.conn.id)
    a.conn:close(); b.conn:close()
  end)

  it("exposes the upgrade request on the server's conn", function()
    local c = support.open_client(app, "/info?q=a%20b&x=1")
    local info = cjson.decode((message(app, c, 1)))
    assert.equal("/info", info.path)
    assert.equal("a b", info.q)
    assert.equal("q=a%20b&x=1", info.qs)
    assert.is_true(info.open)
    assert.is_number(info.id)
    c.conn:close()
  end)

  it("delivers the close code and reason to the client and the server", function()
    local c = support.open_client(app, "/close")
    c.conn:send("4001 done here")
    wait(app, function() return c.closed end, "client close")
    assert.same({ code = 4001, reason = "done here" }, c.closed)
    wait(app, function() return #server_closed > 0 end, "server close handler")
    assert.equal(4001, server_closed[#server_closed].code)
    assert.is_false(c.conn:is_open())
  end)

  it("returns CLOSED from send on a closed connection", function()
    local c = support.open_client(app, "/close")
    c.conn:send("1000 bye")
    wait(app, function() return c.closed and kept_conn end, "close")
    local ok, err, code = kept_conn:send("too late")
    assert.is_nil(ok)
    assert.equal("CLOSED", code)
    assert.matches("^CLOSED: ", err)
    ok, err, code = c.conn:send("too late")
    assert.same({ nil, "CLOSED" }, { ok, code })
    assert.matches("^CLOSED: ", err)
  end)

  it("answers a raising handler with the HANDLER frame and keeps the connection", function()
    local before = app:stats().handler_errors
    local c = support.open_client(app, "/raise")
    c.conn:send("boom")
    assert.equal('{"error":"handler failed","code":"HANDLER"}', (message(app, c, 1)))
    c.conn:send("again")
    assert.equal("ok again", (message(app, c, 2)))
    assert.is_true(c.conn:is_open())
    assert.equal(before + 1, app:stats().handler_errors)
    local logged = table.concat(support.logs(app), "\n")
    assert.matches("boom from the handler", logged, 1, true)
    assert.matches("traceback", logged, 1, true)
    c.conn:close()
  end)

  it("broadcasts to every connection on a route and counts them", function()
    local room = { support.open_client(app, "/room"), support.open_client(app, "/room"),
                   support.open_client(app, "/room") }
    local other = support.open_client(app, "/other")
    assert.equal(3, app:broadcast("/room", "hi all"))
    for _, c in ipairs(room) do assert.equal("hi all", (message(app, c, 1))) end
    support.settle(app, 0.2)
    assert.equal(0, #other.messages)
    assert.equal(0, app:broadcast("/nobody", "x"))
    room[1].conn:close()
    wait(app, function() return room[1].closed end, "close")
    wait(app, function() return app:broadcast("/room", "again") == 2 end, "two left")
    for _, c in ipairs(room) do c.conn:close() end
    other.conn:close()
  end)

  it("broadcasts to a table of connections, a set or a map by id", function()
    local a, b = support.open_client(app, "/room"), support.open_client(app, "/room")
    local set = app.conns_by_path["/room"]
    -- The previous test's connections are gone once only ours are left.
    wait(app, function()
      local n = 0
      for _ in pairs(set) do n = n + 1 end
      return n == 2
    end, "only two on /room")
    local by_id = {}
    for conn in pairs(set) do by_id[conn.id] = conn end
    assert.equal(2, app:broadcast(by_id, "to the map"))
    assert.equal(2, app:broadcast(set, "to the set", true))
    for _, c in ipairs { a, b } do
      assert.equal("to the map", (message(app, c, 1)))
      assert.equal("to the set", (message(app, c, 2)))
    end
    assert.equal(0, app:broadcast({}, "nobody"))
    a.conn:close()
    b.conn:close()
  end)

  it("counts open connections in stats", function()
    support.settle(app, 0.1)
    local before = app:stats().connections
    local c = support.open_client(app, "/echo")
    wait(app, function() return app:stats().connections > before end, "connection counted")
    c.conn:close()
    wait(app, function() return app:stats().connections == before end, "connection uncounted")
  end)

  it("refuses an upgrade to a path with no route (client sees 1006)", function()
    local c = support.client(app, "/nowhere")
    wait(app, function() return c.closed end, "refused upgrade")
    assert.is_false(c.opened)
    assert.equal(1006, c.closed.code)
  end)

  it("reports a failed connection with close 1006", function()
    local dead = support.app { listen = 0 }
    assert(dead:start())
    local port = dead.port
    dead:close()
    local closed
    local conn = app:connect("ws://127.0.0.1:" .. port .. "/", {
      close = function(_, code, reason) closed = { code, reason } end,
    })
    assert.equal("sluice.ws.conn", getmetatable(conn).__name)
    wait(app, function() return closed end, "connect failure")
    assert.same({ 1006, "Unable to connect" }, closed)
  end)

  it("answers GET with a JSON body and decoded query", function()
    local res = support.http(app, "GET", "/hello?name=J%C3%BCrgen")
    assert.equal(200, res.status)
    assert.matches("^application/json", res.headers["content-type"])
    assert.same({ hello = "Jürgen", method = "GET", path = "/hello", qs = "name=J%C3%BCrgen",
                  peer = "string" }, cjson.decode(res.body))

  end)

  it("decodes each query parameter exactly once", function()
    -- %26 is a literal "&" inside a value; %2520 is the text "%20"
    local res = support.http(app, "GET", "/hello?name=%26b%2520c")
    assert.equal("&b%20c", cjson.decode(res.body).hello)
  end)

  it("round-trips a JSON POST body", function()
    local res = support.http(app, "POST", "/json", '{"a":[1,2,3],"b":"x"}',
      { ["Content-Type"] = "application/json" })
    assert.equal(201, res.status)
    assert.same({ got = { a = { 1, 2, 3 }, b = "x" }, type = "application/json" },
      cjson.decode(res.body))
  end)

  it("gives req:json() a BAD_JSON failure for a malformed body", function()
    local res = support.http(app, "POST", "/json", "{nope")
    assert.equal(400, res.status)
    local body = cjson.decode(res.body)
    assert.equal("BAD_JSON", body.code)
    assert.matches("^BAD_JSON: ", body.error)
  end)

  it("sends a string body as text/plain with the handler's headers, status 200", function()
    local res = support.http(app, "GET", "/text")
    assert.equal(200, res.status)
    assert.equal("plain words", res.body)
    assert.matches("^text/plain", res.headers["content-type"])
    assert.equal("yes", res.headers["x-extra"])
  end)

  it("answers 500 when an HTTP handler raises", function()
    local before = app:stats().handler_errors
    local res = support.http(app, "GET", "/raise")
    assert.equal(500, res.status)
    assert.same({ error = "handler failed", code = "HANDLER" }, cjson.decode(res.body))
    assert.equal(before + 1, app:stats().handler_errors)
  end)

  it("answers later through req:defer()", function()
    local res = support.http(app, "GET", "/later")
    assert.equal(202, res.status)
    assert.same({ late = true }, cjson.decode(res.body))
  end)

  -- The 15 s comment that keeps SSE streams open needs a timer only while
  -- a stream is open: without one the loop sleeps. (A client that left
  -- is noticed when a write to it fails: the comment, or an event.)
  it("keeps the SSE keep-alive timer armed only while a stream is open", function()
    local opened = {}
    app:sse("/sse-keepalive", function(stream) opened[#opened + 1] = stream end)
    local clients = {}
    local function open_stream()
      local tcp = assert(socket.tcp())
      assert(tcp:connect("127.0.0.1", app.port))
      tcp:settimeout(0)
      assert(tcp:send("GET /sse-keepalive HTTP/1.1\r\nHost: x\r\n\r\n"))
      local got = ""
      wait(app, function()
        got = got .. (select(3, tcp:receive(8192)) or "")
        return got:find("\r\n\r\n", 1, true)
      end, "the stream's head")
      assert.matches("^HTTP/1%.1 200", got)
      clients[#clients + 1] = tcp
      return opened[#opened]
    end
    local a, b = open_stream(), open_stream()
    assert.is_true(app._sse_timer:armed())
    a:close()
    assert.is_true(app._sse_timer:armed())      -- b still open
    b:close()
    assert.is_false(app._sse_timer:armed())
    local c = open_stream()                     -- and again for a new one
    assert.is_true(app._sse_timer:armed())
    c:close()
    assert.is_false(app._sse_timer:armed())
    for _, tcp in ipairs(clients) do tcp:close() end
  end)

  it("answers 404 in JSON for a path with no route and no static file", function()
    for _, req in ipairs { { "GET", "/no/such/thing" }, { "POST", "/hello", "x" } } do
      local res = support.http(app, req[1], req[2], req[3])
      assert.equal("HTTP/1.1 404 Not Found", res.status_line)
      assert.equal("application/json", res.headers["content-type"])
      assert.equal('{"status":404,"error":"Not Found"}', res.body)
    end
  end)

  it("says the reason phrase of every status, and sends no body with 204", function()
    local res = support.http(app, "POST", "/json", '{"a":1}', { ["content-type"] = "application/json" })
    assert.equal("HTTP/1.1 201 Created", res.status_line)
    res = support.http(app, "DELETE", "/gone")
    assert.equal("HTTP/1.1 204 No Content", res.status_line)
    assert.is_nil(res.headers["content-length"])
    assert.is_nil(res.headers["content-type"])
    assert.equal("", res.body)
  end)
end)

describe("sluice.app: static files", function()
  it("serves `static` relative to the app file's directory", function()
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p '" .. dir .. "/www/sub'"))
    local function write(path, text)
      local f = assert(io.open(dir .. "/" .. path, "w")); f:write(text); f:close()
    end
    write("www/index.html", "<p>home</p>")
    write("www/sub/data.json", '{"ok":true}')
    write("app.lua", 'local app = require("sluice").app { listen = 0, embedded = { port = 0 },'
      .. ' static = "www", log = function() end }\nreturn app')
    finally(function() os.execute("rm -rf '" .. dir .. "'") end)
    local app = assert(loadfile(dir .. "/app.lua"))()
    finally(function() app:close() end)
    assert(app:start())
    local res = support.http(app, "GET", "/sub/data.json")
    assert.equal(200, res.status)
    assert.equal('{"ok":true}', res.body)
    assert.matches("^application/json", res.headers["content-type"])
    res = support.http(app, "GET", "/")
    assert.equal(200, res.status)
    assert.equal("<p>home</p>", res.body)
    assert.matches("^text/html", res.headers["content-type"])
    assert.equal(404, support.http(app, "GET", "/missing.txt").status)
    assert.equal(404, support.http(app, "GET", "/../app.lua").status)
  end)
end)

describe("sluice.app: timers", function()
  local app
  setup(function() app = support.app { listen = false } end)
  teardown(function() if app then app:close() end end)

  it("fires once without repeat_ms", function()
    local fired = 0
    local t = app:timer(10, function() fired = fired + 1 end)
    assert.is_true(t:armed())
    wait(app, function() return fired == 1 end, "timer")
    assert.is_false(t:armed())
    support.settle(app, 0.1)
    assert.equal(1, fired)
    t:close()
  end)

  it("repeats until stopped, passing itself", function()
    local fired, seen = 0, nil
    local t
    t = app:timer(5, function(timer)
      fired = fired + 1
      seen = timer
    end, 10)
    wait(app, function() return fired >= 3 end, "three firings")
    assert.equal(t, seen)
    assert.is_true(t:armed())
    t:stop()
    assert.is_false(t:armed())
    local at_stop = fired
    support.settle(app, 0.1)
    assert.equal(at_stop, fired)
    t:close()
    t:close()   -- idempotent
  end)

  it("raises when a closed timer is used", function()
    local t = app:timer(1000, function() end)
    t:close()
    raises("attempt to use a closed sluice.timer", function() t:stop() end)
  end)
end)

describe("sluice.app: Kafka on the embedded broker", function()
  local app
  setup(function()
    app = support.app { name = "unit-kafka", listen = false, embedded = { port = 0, partitions = 4 } }
  end)
  teardown(function() if app then app:close() end end)

  it("calls on_delivery once with topic, partition and offset", function()
    local reports = {}
    assert.is_true(app:produce("unit-delivery", { key = "k", value = "v1", partition = 2 },
      function(err, report) reports[#reports + 1] = { err = err, report = report } end))
    assert.is_true(app:produce("unit-delivery", { key = "k", value = "v2", partition = 2 },
      function(err, report) reports[#reports + 1] = { err = err, report = report } end))
    wait(app, function() return #reports == 2 end, "two delivery reports", 20)
    support.settle(app, 0.1)
    assert.equal(2, #reports)
    for i, r in ipairs(reports) do
      assert.is_nil(r.err)
      assert.equal("unit-delivery", r.report.topic)
      assert.equal(2, r.report.partition)
      assert.equal(i - 1, r.report.offset)
      -- integers, as a user prints them ("0", not "0.0" on Lua 5.4)
      assert.equal(tostring(i - 1), tostring(r.report.offset))
      assert.equal("2", tostring(r.report.partition))
      -- the embedded broker answers each produce with log-append time
      -- 1234, which librdkafka reports (docs/limits.md); consumers see
      -- the create time (next test)
      assert.equal("1234", tostring(r.report.timestamp))
    end
    local s = app:stats()
    assert.same({ 2, 2, 0, 0 }, { s.produced, s.delivered, s.delivery_failed, s.in_flight })
  end)

  it("consumes a produced record with key, value and headers", function()
    local t0 = math.floor(support.now() * 1000)
    assert.is_true(app:produce("unit-consume", {
      key = "actor-1", value = '{"x":1}', headers = { trace = "abc" }, partition = 1,
    }))
    -- (with a callback and its context too: the headers are read past them)
    local reported = {}
    assert.is_true(app:produce("unit-consume", {
      key = "actor-1", value = "second", headers = { { "h", "1" }, { "h2", "2" } }, partition = 1,
    }, function(err, report, ctx) reported[#reported + 1] = { err, report.offset, ctx } end, { n = 2 }))
    local got = {}
    local consumer = app:consume("unit-consume", { from = "earliest", group = "unit-consume-g" },
      function(rec) got[#got + 1] = rec end)
    wait(app, function() return #got >= 2 end, "two consumed records", 30)
    local t1 = math.ceil(support.now() * 1000)
    local r = got[1]
    assert.equal("unit-consume", r.topic)
    assert.equal(1, r.partition)
    assert.equal(0, r.offset)
    assert.equal("0", tostring(r.offset))
    assert.equal("1", tostring(r.partition))
    assert.equal("actor-1", r.key)
    assert.equal('{"x":1}', r.value)
    assert.same({ trace = "abc" }, r.headers)
    assert.is_true(t0 <= r.timestamp and r.timestamp <= got[2].timestamp and got[2].timestamp <= t1)
    assert.equal("second", got[2].value)
    assert.equal(1, got[2].offset)
    assert.same({ h = "1", h2 = "2" }, got[2].headers)
    assert.same({ { nil, 1, { n = 2 } } }, reported)
    assert.equal(2, #got)
    assert.equal(2, app:stats().consumed)
    consumer:close()
    raises("attempt to use a closed sluice.consumer", function() consumer:pause() end)
  end)

  it("reports a record Kafka never took with MSG_TIMED_OUT, once", function()
    local dead = support.app { listen = false, kafka = {
      ["bootstrap.servers"] = "127.0.0.1:1", ["message.timeout.ms"] = "300" } }
    local calls = {}
    assert.is_true(dead:produce("unit-nowhere", "lost", function(err, report)
      calls[#calls + 1] = { err = err, report = report }
    end))
    wait(dead, function() return #calls > 0 end, "delivery failure", 15)
    support.settle(dead, 0.2)
    assert.equal(1, #calls)
    assert.equal("MSG_TIMED_OUT: Local: Message timed out", calls[1].err)
    -- the producer's own errors are logged by name (how many: up to librdkafka)
    -- and librdkafka's own log lines reach the app's logger
    wait(dead, function()
      local named, own
      for _, line in ipairs(support.logs(dead)) do
        named = named or line == "warn: kafka producer: ALL_BROKERS_DOWN: 1/1 brokers are down"
        own = own or line:match "^error: kafka sluice#producer%-%d+: FAIL: %[thrd:127%.0%.0%.1:1/bootstrap%]: "
      end
      return named and own
    end, "the producer's errors logged")
    local s = dead:stats()
    assert.equal(1, s.delivery_failed)
    assert.equal(0, s.delivered)
    assert.equal(0, s.in_flight)
    dead:close()
  end)

  -- An idempotent producer whose sequence numbers the broker refuses can
  -- no longer promise anything: librdkafka makes that fatal. The record is
  -- reported failed, the error logged as an error, and every later record
  -- refused at once with the reason (until the gateway is restarted).
  it("reports a fatal producer error and refuses every later record with it", function()
    local a = support.app { listen = false }
    local calls = {}
    local function report(err) calls[#calls + 1] = err or "stored" end
    assert.is_true(a:produce("unit-fatal", "one", report))
    wait(a, function() return #calls == 1 end, "the first record stored", 20)
    assert(a.broker:push_errors("Produce", { "OUT_OF_ORDER_SEQUENCE_NUMBER" }))
    assert.is_true(a:produce("unit-fatal", "two", report))
    wait(a, function() return #calls == 2 end, "the second record's report", 20)
    assert.same({ "stored", "OUT_OF_ORDER_SEQUENCE_NUMBER: Broker: Broker received an out of order sequence number" },
      calls)
    wait(a, function()
      for _, line in ipairs(support.logs(a)) do
        if line:match "^error: kafka producer: OUT_OF_ORDER_SEQUENCE_NUMBER: ProduceRequest for unit%-fatal " then
          return true
        end
      end
    end, "the fatal error logged as an error")
    assert.same({ nil, "KAFKA: FATAL: Local: Fatal error", "KAFKA" }, { a:produce("unit-fatal", "three", report) })
    a:close()
  end)

  it("passes the context to a shared on_delivery, once per record, past a raising one", function()
    local N = 60
    local seen, errors_before = {}, app:stats().handler_errors
    local function delivered(err, report, ctx)
      assert(err == nil, err)
      seen[ctx.i] = (seen[ctx.i] or 0) + 1
      assert.equal(ctx.i - 1, report.offset)
      if ctx.i == 7 or ctx.i == 23 then error("boom " .. ctx.i) end
    end
    for i = 1, N do
      assert.is_true(app:produce("unit-shared", { value = tostring(i), partition = 0 },
        delivered, { i = i }))
    end
    wait(app, function()
      for i = 1, N do if not seen[i] then return false end end
      return true
    end, "every delivery report", 20)
    support.settle(app, 0.2)
    for i = 1, N do assert.equal(1, seen[i], "callbacks of record " .. i) end
    assert.equal(errors_before + 2, app:stats().handler_errors)
    local logged = table.concat(support.logs(app), "\n")
    assert.matches("delivery callback failed: [^\n]*boom 7", logged)
    assert.matches("delivery callback failed: [^\n]*boom 23", logged)
  end)

  it("hands a batch consumer lists of records in order; a raising batch counts as processed", function()
    local N = 30
    for i = 1, N do
      assert.is_true(app:produce("unit-batch", { key = "k", value = tostring(i), partition = 0,
        headers = { n = tostring(i) } }))
    end
    local got, batches, errors_before = {}, 0, app:stats().handler_errors
    local consumer = app:consume("unit-batch", { from = "earliest", group = "unit-batch-g", batch = true },
      function(records)
        batches = batches + 1
        for _, r in ipairs(records) do got[#got + 1] = r end
        if batches == 1 then error("batch boom") end
      end)
    wait(app, function() return #got >= N end, "every record", 30)
    support.settle(app, 0.2)
    assert.equal(N, #got)
    for i, r in ipairs(got) do
      assert.equal(i - 1, r.offset)
      assert.equal(tostring(i), r.value)
      assert.equal("k", r.key)
      assert.same({ n = tostring(i) }, r.headers)
      assert.equal("unit-batch", r.topic)
    end
    assert.equal(errors_before + 1, app:stats().handler_errors)
    assert.matches("consume handler failed: [^\n]*batch boom", table.concat(support.logs(app), "\n"))
    consumer:close()
  end)

  -- Broadcast consumers join no group (docs/api.md). In the app's own
  -- embedded broker everything was written after the app started, so the
  -- default start ("end" as of the app's start) is all of it.
  it("starts a broadcast consumer where the app says, on every partition, in no group", function()
    for p = 0, 3 do
      for i = 1, 2 do assert.is_true(app:produce("unit-bcast", { value = p .. "." .. i, partition = p })) end
    end
    wait(app, function() return app:stats().in_flight == 0 end, "records stored", 20)
    local got = { default = {}, offsets = {} }
    local function keep(list) return function(rec) list[#list + 1] = rec.value end end
    local events = {}
    local default = app:consume("unit-bcast", { broadcast = true, rebalance = function(event, parts)
      events[#events + 1] = event .. ":" .. #parts
    end }, keep(got.default))
    local offsets = app:consume("unit-bcast", { broadcast = true,
      from = { offsets = { ["unit-bcast"] = { [2] = 1 } } } }, keep(got.offsets))
    -- Then one more record on each partition: once those arrived, nothing
    -- older can still come.
    wait(app, function() return default.assigned == 4 and offsets.assigned == 4 end, "assignments", 30)
    for p = 0, 3 do assert.is_true(app:produce("unit-bcast", { value = p .. ".3", partition = p })) end
    wait(app, function() return #got.default == 12 and #got.offsets == 11 end, "broadcast records", 30)
    local all = { "0.1", "0.2", "0.3", "1.1", "1.2", "1.3", "2.1", "2.2", "2.3", "3.1", "3.2", "3.3" }
    table.sort(got.default)
    assert.same(all, got.default)
    -- partition 2 from offset 1; the partitions not named as "end" (here:
    -- the embedded broker's beginning)
    table.sort(got.offsets)
    table.remove(all, 7)
    assert.same(all, got.offsets)
    assert.same({ "assigned:4" }, events)
    assert.same({ nil, "STATE: a consumer in no group (assign mode) has nothing to commit", "STATE" },
      { default:commit() })
    default:close()
    assert.same({ "assigned:4", "revoked:4" }, events)
    offsets:close()
  end)

  it("produces a plain string as the value, with no key", function()
    assert.is_true(app:produce("unit-plain", "just a value"))
    local got
    local consumer = app:consume({ "unit-plain" }, { from = "earliest", group = "unit-plain-g" },
      function(rec) got = rec end)
    wait(app, function() return got end, "consumed record", 30)
    assert.equal("just a value", got.value)
    assert.is_nil(got.key)
    consumer:close()
  end)

  -- Backpressure (docs/reliability.md): reads stop when more than
  -- max_in_flight records are in flight and resume at half of it. The log
  -- line and the count in flight are taken as the producer calls back.
  it("stops reading WebSockets above max_in_flight records in flight, resumes at half", function()
    local seen = {}
    local a
    a = support.app { listen = 0, max_in_flight = 4, log = function(level, msg)
      if msg:match "^Kafka " then seen[#seen + 1] = { level, msg, a.producer:in_flight() } end
    end }
    assert(a:start())
    local done = 0
    local function count() done = done + 1 end
    assert.is_true(a:produce("unit-bp", "first", count))
    wait(a, function() return done == 1 end, "the first record stored", 20)
    assert(a.broker:set_down(1))
    for i = 1, 4 do assert.is_true(a:produce("unit-bp", "r" .. i, count)) end
    assert.same({}, seen)                  -- 4 in flight: at the mark, not above
    assert.is_true(a:produce("unit-bp", "r5", count))
    assert.same({ { "warn", "Kafka is behind: pausing reads from WebSocket clients", 5 } }, seen)
    assert(a.broker:set_up(1))
    wait(a, function() return done == 6 end, "every record stored", 60)
    assert.same({ { "warn", "Kafka is behind: pausing reads from WebSocket clients", 5 },
                  { "info", "Kafka caught up: resuming reads from WebSocket clients", 2 } }, seen)
    a:close()
  end)

  it("counts exactly in stats: zeros before the first record, then the partitions assigned", function()
    local a = support.app { listen = false, embedded = { port = 0, partitions = 4 } }
    assert(a:start())
    assert.same({ connections = 0, handler_errors = 0, produced = 0, delivered = 0, delivery_failed = 0,
                  in_flight = 0, consumed = 0, assigned = 0, rebalances = 0, generation = 1 }, a:stats())
    local c = a:consume("unit-stats", { group = "unit-stats-g" }, function() end)
    wait(a, function() return a:stats().assigned > 0 end, "the partitions assigned", 30)
    local s = a:stats()
    assert.same({ 4, 1 }, { s.assigned, s.rebalances })   -- one assignment of 4 partitions
    c:close()
    a:close()
  end)

  -- Idempotence keeps a retried batch from being written twice; the
  -- producer reports the settings it runs with (the core's defaults and
  -- the user's, applied).
  it("runs its producer idempotent with acks=all unless the user chose other acks", function()
    assert.is_true(app:produce("unit-conf", "x"))   -- the producer starts with the first record
    local p = app.producer
    assert.equal("true", p:config("enable.idempotence"))
    assert.equal("-1", p:config("acks"))            -- librdkafka's spelling of "all"
    assert.equal("0", p:config("linger.ms"))
    assert.same({ nil, "INVAL: no such Kafka property: no.such.property", "INVAL" },
      { p:config("no.such.property") })
    local function effective(props)
      local other = support.app { listen = false, kafka = props }
      assert.is_true(other:produce("unit-conf", "x"))
      local got = { other.producer:config("acks"), other.producer:config("enable.idempotence") }
      other:close()
      return got
    end
    assert.same({ "1", "false" }, effective { acks = "1" })
    assert.same({ "-1", "true" }, effective { acks = "all" })
    assert.same({ "-1", "false" }, effective { ["enable.idempotence"] = "false" })
  end)
end)

describe("sluice.app: misuse and expected failures", function()
  it("raises on misuse, naming the argument", function()
    local app = support.app { listen = false }
    raises("bad argument #1 to 'produce' (string expected, got number)", function() app:produce(42) end)
    raises("bad argument #2 to 'produce' (string or table expected, got boolean)",
      function() app:produce("topic", true) end)
    raises("bad argument #2 to 'ws' (table expected, got string)",
      function() app:ws("/x", "not a table") end)
    raises("bad argument #2 to 'timer' (function expected, got string)",
      function() app:timer(10, "not a function") end)
    raises("bad argument #3 to 'consume' (function expected, got nil)",
      function() app:consume("t", {}) end)
    raises("bad argument #2 to 'consume' (batch must be a boolean)",
      function() app:consume("t", { batch = 1 }, function() end) end)
    raises("bad argument #2 to 'consume' (from must be \"end\", \"beginning\", \"latest\", an offset, " ..
      "{ time = ms } or { offsets = { [topic] = { [partition] = offset } } } for a broadcast consumer)",
      function() app:consume("t", { broadcast = true, from = "committed" }, function() end) end)
    raises("for a broadcast consumer", function()
      app:consume("t", { broadcast = true, from = { time = "noon" } }, function() end) end)
    raises("bad argument #2 to 'consume' (from must be \"earliest\", \"latest\", \"committed\" or an offset)",
      function() app:consume("t", { from = "end" }, function() end) end)
    raises("bad argument #3 to 'produce' (function expected, got string)",
      function() app:produce("t", "v", "not a function") end)
    app:close()
  end)

  it("checks a route's rate at app:ws, pointing at the caller's line", function()
    local app = support.app { listen = false }
    local line = debug.getinfo(1, "l").currentline
    local ok, err = pcall(app.ws, app, "/r", { rate = { messages = 10, burts = 5 } })
    assert.is_false(ok)
    -- pcall calls app.ws directly: the caller is pcall itself, so no
    -- file:line; through a Lua function it is that function's line.
    assert.equal("bad argument #2 to 'ws' (rate: unknown field 'burts' (messages, bytes, burst, " ..
      "burst_bytes, policy))", err)
    local function declare(rate) app:ws("/r", { rate = rate }) end
    ok, err = pcall(declare, { bytes = 0 })
    assert.matches(("app_spec.lua:%d: bad argument #2 to 'ws' (rate: 'bytes' must be a positive number)")
      :format(line + 7), err, 1, true)
    raises("(rate: policy must be \"pause\" or \"close\")",
      function() declare { messages = 1, policy = "drop" } end)
    raises("(rate: give messages or bytes (per second))", function() declare { burst = 3 } end)
    raises("(rate: a table expected, got number)", function() declare(5) end)
    raises("bad argument #1 to 'app' (option 'max_connections_per_address' must be number, got string)",
      function() support.app { listen = false, max_connections_per_address = "3" } end)
    declare { messages = 10, bytes = 1e6, burst = 20, burst_bytes = 2e6, policy = "close" }
    assert.same({ messages = 10, bytes = 1e6, burst = 20, burst_bytes = 2e6, policy = "close" }, app.routes["/r"].rate)
    app:close()
  end)

  it("raises on misuse of the producer binding, naming the argument", function()
    local core = require "sluice.core"
    local a = support.app { listen = false }
    assert(a:start())
    raises("bad argument #3 to 'producer' (table expected, got number)", function()
      core.producer(a.loop, {}, 42)
    end)
    a:close()
  end)

  it("keeps nothing of a refused record: its context is collected", function()
    local a = support.app { listen = false }
    assert(a:start())
    local weak = setmetatable({}, { __mode = "k" })
    local context = {}
    weak[context] = true
    assert.same({ nil, "KAFKA: MSG_SIZE_TOO_LARGE: Broker: Message size too large", "KAFKA" },
      { a:produce("t", { value = string.rep("x", 2000000) }, function() end, context) })
    context = nil
    collectgarbage(); collectgarbage()
    assert.is_nil(next(weak))
    a:close()
  end)

  -- Every binding's callbacks and tables live in the registry while their
  -- object is open: a closed app must give every one of them back.
  it("leaves nothing in the Lua registry once an app is closed", function()
    local function live()
      local n = 0
      for _, v in pairs(debug.getregistry()) do if type(v) ~= "number" then n = n + 1 end end
      return n
    end
    local function cycle()
      local a = support.app {}
      a:ws("/", { message = function(c, d) c:send(d) end })
      a:http("GET", "/x", function() return 200, "x" end)
      a:consume("t", { group = "g" }, function() end)
      a:timer(60000, function() end)
      assert(a:start())
      local c = support.open_client(a, "/")
      c.conn:send("hi")
      support.wait(a, function() return #c.messages > 0 end, "the echo")
      local stored
      assert(a:produce("t", { value = "v" }, function(err) stored = err == nil end, {}))
      support.wait(a, function() return stored end, "the record stored")
      a:close()
    end
    cycle()
    collectgarbage(); collectgarbage()
    local before = live()
    for _ = 1, 3 do cycle() end
    collectgarbage(); collectgarbage()
    assert.equal(before, live())
  end)

  it("reports each delivery once when a delivery callback flushes the producer", function()
    local a = support.app { listen = false }
    assert(a:start())
    local seen, dup = {}, 0
    local function produce(i)
      assert(a:produce("t", { value = tostring(i) }, function(err)
        assert.is_nil(err)
        if seen[i] then dup = dup + 1 end
        seen[i] = true
        if i == 1 then   -- a new report arrives inside this callback
          produce(51)
          a.producer:flush(5000)
        end
      end))
    end
    for i = 1, 50 do produce(i) end
    local n = 0
    support.wait(a, function() n = 0; for _ in pairs(seen) do n = n + 1 end; return n == 51 end, "51 reports")
    support.settle(a, 0.3)
    a:close()
    assert.equal(0, dup)
  end)

  it("raises on an unknown option, naming it", function()
    raises("lisen", function() sluice.app { listen = false, lisen = 80 } end)
  end)

  -- Declarations are checked whole: a typo in a key raises where the app
  -- declares it (file:line of that line), instead of being ignored.
  it("raises on unknown keys of app:ws, app:http, app:consume and sluice.stream, at the declaring line", function()
    local stream = require "sluice.stream"
    local app = support.app { listen = false }
    local f = function() end
    local function at(fn)
      local line
      local ok, err = pcall(fn, function() line = debug.getinfo(2, "l").currentline end)
      assert.is_false(ok)
      return (tostring(err):gsub("^.-app_spec%.lua:(%d+): ", function(n)
        assert.equal(line, tonumber(n), "the error points at the declaring line")
        return "HERE: "
      end))
    end
    assert.equal("HERE: bad argument #2 to 'ws' (unknown key 'mesage'; known: auth, close, message, open, " ..
      "origins, protocols, rate, route)", at(function(mark) mark(); app:ws("/x", { mesage = f }) end))
    assert.equal("HERE: bad argument #4 to 'http' (unknown option 'orgins'; known: auth, origins)",
      at(function(mark) mark(); app:http("GET", "/x", f, { orgins = {} }) end))
    assert.equal("HERE: bad argument #2 to 'consume' (unknown option 'gruop'; known: batch, broadcast, from, " ..
      "group, kafka, manual, rebalance)", at(function(mark) mark(); app:consume("t", { gruop = "g" }, f) end))
    assert.equal(0, #app.consumer_decls)
    assert.equal("HERE: bad argument #2 to 'topology' (unknown option 'comit_ms'; known: commit_ms, " ..
      "create_topics, epoch_records, group, kafka, max_in_flight, name, processing, punctuate_ms, replication, transactional_id, wall_clock)",
      at(function(mark) mark(); stream.topology(app, { comit_ms = 5 }) end))
    local topo = stream.topology(app, { name = "typos" })
    assert.equal("HERE: bad argument #2 to 'from' (unknown option 'valeu'; known: timestamp, value)",
      at(function(mark) mark(); topo:from("a", { valeu = "json" }) end))
    assert.equal("HERE: bad argument #1 to 'count' (unknown option 'windw'; known: emit, grace, merge, store, window)",
      at(function(mark) mark(); topo:from("a"):count({ windw = 1 }) end))
    assert.equal("HERE: bad argument #2 to 'to' (unknown option 'kye'; known: key, partition, value)",
      at(function(mark) mark(); topo:from("a"):to("b", { kye = f }) end))
    assert.equal("HERE: bad argument #2 to 'table' (unknown option 'stor'; known: store, value)",
      at(function(mark) mark(); topo:table("t", { stor = "s" }) end))
    local tbl = topo:table("t2")
    assert.equal("HERE: bad argument #3 to 'join' (unknown option 'lefft'; known: left)",
      at(function(mark) mark(); topo:from("a"):join(tbl, f, { lefft = true }) end))
    -- the door's values too
    assert.equal("HERE: bad argument #2 to 'ws' ('auth' must be a function, got string)",
      at(function(mark) mark(); app:ws("/x", { auth = "yes" }) end))
    assert.equal("HERE: bad argument #2 to 'ws' (origin 'https://a.example/' is not scheme://host[:port] " ..
      "(no path, no trailing slash))", at(function(mark) mark(); app:ws("/x", { origins = { "https://a.example/" } }) end))
    assert.equal("HERE: bad argument #2 to 'ws' ('origins' must be a non-empty list of strings, got string)",
      at(function(mark) mark(); app:ws("/x", { origins = "https://a.example" }) end))
    assert.equal("HERE: bad argument #2 to 'ws' (subprotocol 'v1 chat' is not a token of at most 63 characters)",
      at(function(mark) mark(); app:ws("/x", { protocols = { "v1 chat" } }) end))
    assert.equal("HERE: bad argument #2 to 'ws' ('protocols' #2 must be a string, got number)",
      at(function(mark) mark(); app:ws("/x", { protocols = { "v1", 2 } }) end))
    -- nothing was declared by the refused calls
    assert.is_nil(app.routes["/x"])
    assert.is_nil(app.http_routes["GET /x"])
    app:close()
  end)

  it("checks the tls option whole", function()
    raises("bad argument #1 to 'app' (option 'tls' needs both cert and key (PEM files))",
      function() sluice.app { listen = false, tls = { cert = "a.pem" } } end)
    raises("bad argument #1 to 'app' (unknown key 'crt' in option 'tls' (known: ca, cert, key))",
      function() sluice.app { listen = false, tls = { crt = "a.pem", key = "a.key" } } end)
    raises("bad argument #1 to 'app' (tls.key must be a file name, got number)",
      function() sluice.app { listen = false, tls = { cert = "a.pem", key = 1 } } end)
    raises("bad argument #1 to 'app' (option 'tls' must be a table, got string)",
      function() sluice.app { listen = false, tls = "a.pem" } end)
  end)

  it("raises on a max_in_flight that is not a whole number of records", function()
    for _, bad in ipairs { 0, -5, 2.5 } do
      raises("bad argument #1 to 'app' (max_in_flight must be a whole number of records, at least 1)",
        function() sluice.app { listen = false, max_in_flight = bad } end)
    end
    raises("option 'max_in_flight' must be number, got string",
      function() sluice.app { listen = false, max_in_flight = "many" } end)
    sluice.app { listen = false, max_in_flight = 1 }:close()
  end)

  it("returns ADDRINUSE when the port is taken", function()
    local first = support.app { listen = 0 }
    assert(first:start())
    local second = support.app { listen = first.port }
    local ok, err, code = second:start()
    assert.same({ nil, "ADDRINUSE: the HTTP and WebSocket port " .. first.port ..
      " is in use (choose another with --listen PORT or listen = PORT)", "ADDRINUSE" },
      { ok, err, code })
    second:close()
    first:close()
  end)
end)

describe("sluice.app: a script that ends without app:close()", function()
  -- The interpreter running this spec, for a child script: the unit specs
  -- run once per Lua, each with its own LUA_PATH/LUA_CPATH in the environment.
  local lua = jit and "luajit" or ("lua" .. _VERSION:match("%d+%.%d+"))

  it("is closed in order when the interpreter exits: the record in flight is reported", function()
    local script = os.tmpname()
    local f = assert(io.open(script, "w"))
    f:write([[
      local sluice = require "sluice"
      local app = sluice.app { listen = 0, embedded = { port = 0 }, log = function() end }
      assert(app:start())
      assert(app:produce("unit-exit", { key = "k", value = "v" }, function(err, r)
        io.stdout:write("report: ", err or ("offset " .. r.offset), "\n")
      end))
      io.stdout:write("script ends\n")
    ]])
    f:close()
    local p = assert(io.popen(lua .. " " .. script .. " 2>&1"))
    local out = p:read("*a")
    p:close()
    os.remove(script)
    -- Nobody stepped the loop: the report can only come from the close at exit.
    assert.equal("script ends\nreport: offset 0\n", out)
  end)
end)
