-- Hot reload of a real `sluice run` process: editor-style saves (temp file
-- + rename, and vim's rename-away-then-write), a module in a subdirectory,
-- a deleted and re-created file, SIGHUP without --watch, a removed route
-- (its clients get 4001), and the built-in GET /_sluice/health. Clients
-- are the node `ws` probe and plain HTTP.
local H = require "integration.helper"
local json = H.json

local function app_text(marker, route)
  return ([[
local sluice = require "sluice"
local greet = require "lib.greet"
local app = sluice.app { name = "reload-spec" }
app:ws("/echo", {
  open = function(conn) conn.data.n = 0 end,
  message = function(conn, data)
    conn.data.n = conn.data.n + 1
    conn:send(greet.hello(data) .. " from %s #" .. conn.data.n)
  end,
})
app:ws(%q, { message = function(conn, data) conn:send("route " .. data) end })
app:http("GET", "/healthz", function() return 200, { status = "ok" } end)
app:http("GET", "/marker", function() return 200, { marker = %q, greet = greet.hello("x") } end)
return app
]]):format(marker, route or "/old", marker)
end

local function greet_text(word)
  return ('local M = {}\nfunction M.hello(s) return %q .. " " .. s end\nreturn M\n'):format(word)
end

local function health(gw)
  local status, body = H.http_json(gw.port, "/_sluice/health")
  assert.are.equal(200, status)
  return body
end

-- A probe that sends `text` on `path` and stays connected for `wait` s;
-- returns once its first reply has arrived (the message was handled by
-- the code running now, however slow the machine).
local function answered_probe(url, text, wait)
  local log = os.tmpname()
  local probe = H.client_bg("probe.js", { "--url", url, "--text", text, "--wait", tostring(wait), "--log", log })
  assert(H.wait_for(20, function() return (H.read(log) or "") ~= "" end, 0.05), "no reply to " .. text)
  os.remove(log)
  return probe
end

local function wait_generation(gw, gen, failures)
  local h = H.wait_for(10, function()
    local status, body = H.http_json(gw.port, "/_sluice/health")
    if status == 200 and body.generation == gen and (failures == nil or body.reload_failures == failures) then
      return body
    end
  end, 0.05)
  assert(h, ("generation %d not reached; stderr:\n%s"):format(gen, gw:stderr()))
  return h
end

local function marker(gw)
  local _, body = H.http_json(gw.port, "/marker")
  return body
end

describe("sluice run --watch", function()
  local gw, dir

  setup(function()
    dir = H.tmpdir()
    os.execute("mkdir -p " .. dir .. "/lib")
    H.write(dir .. "/app.lua", app_text "v1")
    H.write(dir .. "/lib/greet.lua", greet_text "hello")
    gw = H.start { app = dir .. "/app.lua", args = { "--watch", "--watch-debounce", "50" } }
  end)

  teardown(function()
    if gw then gw:stop() end
    H.cleanup()
  end)

  it("watches the app file and the module it requires, and serves the health endpoint", function()
    local h = health(gw)
    assert.are.equal(1, h.generation)
    assert.are.equal("ok", h.status)
    assert.are.equal(2, h.watching)
    assert.are.equal(json.null, h.last_reload_error)
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ$", h.loaded_at)
    assert.matches("hot reload: watching 2 files", gw:stderr(), 1, true)
  end)

  it("reloads on a save by temp file + rename; a connection stays open with its table", function()
    local probe = answered_probe(gw.url .. "/echo", "a", 10)
    local tmp = dir .. "/.app.lua.swp"
    H.write(tmp, app_text "v2")
    assert(os.rename(tmp, dir .. "/app.lua"))
    wait_generation(gw, 2)
    assert.are.equal("v2", marker(gw).marker)
    local r = probe:result(15)
    assert.are.same({ "hello a from v1 #1" }, r.replies)
    assert.are.equal("client", r.close.by)            -- nobody closed it but the client
    -- a new connection gets the new code
    r = H.client("probe.js", { "--url", gw.url .. "/echo", "--text", "b", "--replies", "1" })
    assert.are.same({ "hello b from v2 #1" }, r.replies)
  end)

  it("reloads on vim's save (original renamed away, new file written)", function()
    assert(os.rename(dir .. "/app.lua", dir .. "/app.lua~"))
    H.write(dir .. "/app.lua", app_text "v3")
    os.remove(dir .. "/app.lua~")
    local h = wait_generation(gw, 3)
    assert.are.equal("v3", marker(gw).marker)
    assert.is_true(h.reload_failures <= 1)   -- a reload may catch the moment without the file
  end)

  it("reloads a module in a subdirectory when it is edited in place", function()
    local before = health(gw)
    H.write(dir .. "/lib/greet.lua", greet_text "hi")
    wait_generation(gw, before.generation + 1)
    assert.are.equal("hi x", marker(gw).greet)
    assert.matches("reload %(changed: [^)]*lib/greet%.lua%)", gw:stderr())
  end)

  it("keeps serving when a module is deleted, and reloads when it is re-created", function()
    local before = health(gw)
    os.remove(dir .. "/lib/greet.lua")
    local h = wait_generation(gw, before.generation, before.reload_failures + 1)
    assert.are.equal("reload_failed", h.status)
    assert.matches("app.lua:2: module 'lib.greet' not found", h.last_reload_error, 1, true)
    assert.are.equal("hi x", marker(gw).greet)       -- the old code serves
    H.write(dir .. "/lib/greet.lua", greet_text "hey")
    h = wait_generation(gw, before.generation + 1)
    assert.are.equal("ok", h.status)
    assert.are.equal("hey x", marker(gw).greet)
  end)

  it("keeps serving on a syntax error, reporting file:line, until the file is fixed", function()
    local before = health(gw)
    H.write(dir .. "/lib/greet.lua", "local M = {\nfunction M.hello(s) return s end\nreturn M\n")
    local h = wait_generation(gw, before.generation, before.reload_failures + 1)
    assert.matches("lib/greet%.lua:%d+: ", h.last_reload_error)
    assert.matches(("reload failed, generation %d keeps serving: [^\n]*lib/greet%%.lua:%%d+:"):format(before.generation),
      gw:stderr())
    assert.are.equal("hey x", marker(gw).greet)
    H.write(dir .. "/lib/greet.lua", greet_text "fixed")
    wait_generation(gw, before.generation + 1)
    assert.are.equal("fixed x", marker(gw).greet)
  end)

  it("closes connections on a route the new code dropped with 4001 \"route removed\"", function()
    local before = health(gw)
    local probe = answered_probe(gw.url .. "/old", "x", 20)
    H.write(dir .. "/app.lua", app_text("v9", "/new"))
    wait_generation(gw, before.generation + 1)
    local r = probe:result(15)
    assert.are.same({ "route x" }, r.replies)
    assert.are.same({ code = 4001, reason = "route removed", by = "server" }, r.close)
    r = H.client("probe.js", { "--url", gw.url .. "/new", "--text", "y", "--replies", "1" })
    assert.are.same({ "route y" }, r.replies)
    r = H.client("probe.js", { "--url", gw.url .. "/old", "--wait", "3" })
    assert.are.equal(404, r.status)
  end)
end)

describe("sluice run without --watch", function()
  teardown(H.cleanup)

  it("reloads on SIGHUP, not on a file change", function()
    local dir = H.tmpdir()
    os.execute("mkdir -p " .. dir .. "/lib")
    H.write(dir .. "/app.lua", app_text "v1")
    H.write(dir .. "/lib/greet.lua", greet_text "hello")
    local gw = H.start { app = dir .. "/app.lua" }
    H.write(dir .. "/app.lua", app_text "v2")
    H.sleep(0.5)
    assert.are.equal(1, health(gw).generation)
    assert.are.equal(0, health(gw).watching)
    gw:signal "HUP"
    wait_generation(gw, 2)
    assert.are.equal("v2", marker(gw).marker)
    assert.matches("reload (SIGHUP)", gw:stderr(), 1, true)
    assert.are.equal(0, (gw:stop()))
  end)

  it("rejects a bad --watch-debounce with one line and exit 1", function()
    local code, _, err = H.run(H.q(H.bin) .. " run " .. H.q(H.movies) .. " --watch-debounce soon")
    assert.are.equal(1, code)
    assert.are.equal("sluice: --watch-debounce needs a number of ms (1-60000)\n", err)
  end)

  it("watches the movies app's files, rows.lua (loaded with dofile) included, and reloads it", function()
    local gw = H.start { args = { "--watch" } }
    local h = health(gw)
    assert.are.equal(#h.files, h.watching)
    local names = {}
    for _, f in ipairs(h.files) do names[f:match("[^/]*$")] = true end
    assert.is_true(names["app.lua"] and names["rows.lua"], "watched: " .. table.concat(h.files, ", "))
    assert.are.equal(1, h.generation)
    -- and it reloads cleanly (SIGHUP: no file is changed)
    gw:signal "HUP"
    h = wait_generation(gw, 2)
    assert.are.equal("ok", h.status)
    assert.are.equal(0, h.reload_failures)
    gw:stop()
  end)
end)
