-- A handler that raises is reported to its client and the gateway keeps
-- serving: a small app of the spec's own, run with `sluice run`.
local H = require "integration.helper"
local json = H.json

local APP = [[
local sluice = require "sluice"
local app = sluice.app { name = "handler-errors" }

app:ws("/echo", {
  open = function(conn) conn.data.n = 0 end,
  message = function(conn, data)
    conn.data.n = conn.data.n + 1
    if data == "boom" then error("boom requested by the client") end
    conn:send(("echo %d: %s"):format(conn.data.n, data))
  end,
})

app:http("GET", "/healthz", function() return 200, { status = "ok" } end)
app:http("GET", "/boom", function() error("http boom requested") end)
app:http("GET", "/ok", function(req) return 200, { ok = true, q = req.query.q } end)
app:http("GET", "/counts", function() return 200, app:stats() end)

return app
]]

describe("a handler that raises", function()
  local gw

  setup(function()
    local dir = H.tmpdir()
    H.write(dir .. "/app.lua", APP)
    gw = H.start { app = dir .. "/app.lua" }
  end)

  teardown(function()
    if gw then gw:stop() end
    H.cleanup()
  end)

  it("in a ws message handler: the client gets a HANDLER error and stays connected", function()
    local r = H.client("probe.js", { "--url", gw.url .. "/echo",
      "--text", "hello", "--text", "boom", "--text", "after", "--replies", "3", "--wait", "10" })
    assert.is_nil(r.error)
    assert.are.equal(3, #r.replies)
    assert.are.equal("echo 1: hello", r.replies[1])
    assert.are.same({ error = "handler failed", code = "HANDLER" }, json.decode(r.replies[2]))
    assert.are.equal("echo 3: after", r.replies[3])   -- conn.data survived the error
    assert.are.equal("client", r.close.by)
    assert.matches("boom requested by the client", gw:stderr(), 1, true)
    assert.matches("traceback", gw:stderr(), 1, true)
  end)

  it("in an http handler: 500, and the gateway keeps serving", function()
    local status, body = H.http_json(gw.port, "/boom")
    assert.are.equal(500, status)
    assert.are.equal("table", type(body), "not a JSON body: " .. tostring(body))
    assert.are.equal("handler failed", body.error)
    status, body = H.http_json(gw.port, "/ok?q=a%20b")
    assert.are.equal(200, status)
    assert.are.same({ ok = true, q = "a b" }, body)
    assert.matches("http boom requested", gw:stderr(), 1, true)
  end)

  it("is counted in app:stats()", function()
    local status, body = H.http_json(gw.port, "/counts")
    assert.are.equal(200, status)
    assert.are.equal(2, body.handler_errors)
  end)
end)
