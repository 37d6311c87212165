-- Hot reload in one process, against the real core: an app loaded from
-- files in a temp directory (sluice.load), edited, and reloaded with
-- app:reload() or by the file watcher (app:watch, real inotify). Clients
-- are WebSockets through app:connect and raw HTTP; Kafka is the embedded
-- broker.
local sluice = require "sluice"
local cjson = require "cjson"
local support = require "unit.support"

local wait, message = support.wait, support.message

local function tmpdir()
  local p = io.popen "mktemp -d /tmp/sluice-reload-unit.XXXXXX"
  local d = p:read "*l"
  p:close()
  return d
end

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

-- An editor-style save: a temp file renamed over the original.
local function save_by_rename(path, text)
  local tmp = path:gsub("([^/]*)$", ".%1.swp")
  write(tmp, text)
  assert(os.rename(tmp, path))
end

-- Log lines of every app the spec loads (the app files pass SPEC_LOG).
local logs = {}
_G.SPEC_LOG = function(level, msg)
  logs[#logs + 1] = level .. ": " .. msg
  if os.getenv("SLUICE_SPEC_LOG") then io.stderr:write(level, ": ", msg, "\n") end
end
local function logged(text)
  for _, l in ipairs(logs) do if l:find(text, 1, true) then return l end end
end

-- The app file: routes /echo (through module handler.lua), /old or /new
-- (by `route`), GET /v, a timer counting ticks per marker, and `extra`.
local function app_file(o)
  return ([[
local sluice = require "sluice"
local handler = require "handler"
local app = sluice.app { name = "unit-reload", listen = 0, embedded = { port = 0 }, log = SPEC_LOG }
app.state.hits = app.state.hits or 0
app:ws("/echo", {
  open = function(conn) conn.data.opened_by = %q end,
  message = function(conn, data)
    app.state.hits = app.state.hits + 1
    conn:send(handler.tag .. "|" .. %q .. "|" .. data .. "|" .. conn.data.opened_by .. "|" .. app.state.hits)
  end,
})
app:ws(%q, { message = function(conn, data) conn:send("route " .. data) end })
app:http("GET", "/v", function() return 200, { marker = %q, tag = handler.tag } end)
TICKS = TICKS or {}
app:timer(10, function() TICKS[%q] = (TICKS[%q] or 0) + 1 end, 20)
%s
return app
]]):format(o.marker, o.marker, o.route or "/old", o.marker, o.marker, o.marker, o.extra or "")
end

describe("hot reload", function()
  local dir, app

  local function reload_ok(...)
    local gen, err = app:reload(...)
    assert(gen, err)
    return gen
  end

  before_each(function()
    dir = tmpdir()
    write(dir .. "/handler.lua", 'return { tag = "h1" }\n')
    write(dir .. "/app.lua", app_file { marker = "v1" })
    _G.TICKS = {}
    logs = {}
    local err
    app, err = sluice.load(dir .. "/app.lua")
    assert(app, err)
    assert(app:start())
  end)

  after_each(function()
    if app then app:close() end
    os.execute("rm -rf " .. dir)
  end)

  it("swaps handlers for connections that stay open, keeping their tables and the state", function()
    local c = support.open_client(app, "/echo")
    c.conn:send("a")
    assert.equal("h1|v1|a|v1|1", message(app, c, 1))
    write(dir .. "/app.lua", app_file { marker = "v2" })
    write(dir .. "/handler.lua", 'return { tag = "h2" }\n')
    assert.equal(2, reload_ok())
    c.conn:send("b")
    -- new code, same connection (opened by v1), state carried over
    assert.equal("h2|v2|b|v1|2", message(app, c, 2))
    assert.is_nil(c.closed)
    local res = support.http(app, "GET", "/v")
    assert.same({ marker = "v2", tag = "h2" }, cjson.decode(res.body))
    assert.equal(2, app:health().generation)
    assert.equal(2, app:stats().generation)
    assert.truthy(logged("reload: generation 2 serving"))
    assert.is_nil(logged("options apply at the next restart"))
  end)

  it("warns that changed options only apply at the next restart", function()
    local text = app_file { marker = "v2" }:gsub("log = SPEC_LOG }", "log = SPEC_LOG, idle_timeout = 5 }")
    write(dir .. "/app.lua", text)
    reload_ok()
    assert.truthy(logged("warn: reload: option idle_timeout changed; options apply at the next restart"))
  end)

  it("keeps the old code when the new code fails to load, and says where", function()
    local c = support.open_client(app, "/echo")
    local cases = {
      { 'return { tag = "h2"\n', "handler.lua:2:", "handler.lua" },                     -- syntax, in a module
      { app_file { marker = "v2", extra = 'error("boom at load")' }, "app.lua:16: boom at load", "app.lua" },
      { app_file { marker = "v2", extra = 'app:ws("/bad", { message = "not a function" })' },
        "app.lua:16: bad argument #2 to 'ws'", "app.lua" },
      { app_file { marker = "v2", extra = 'local h = { message = function() end }; app:ws("/bad", h); h.close = 42' },
        "app.lua:16: ws route /bad: handler 'close' must be a function, got number", "app.lua" },
      { app_file { marker = "v2", extra = 'do return {} end' }, "must return the app", "app.lua" },
      { app_file { marker = "v2", extra = 'app:on_reload(function() error("migration failed") end)' },
        "on_reload: ", "app.lua" },
    }
    for i, case in ipairs(cases) do
      local text, want, file = case[1], case[2], case[3]
      write(dir .. "/" .. file, text)
      local gen, err, code = app:reload()
      assert.is_nil(gen, "case " .. i .. " was accepted")
      assert.equal("RELOAD", code)
      assert.matches(want, err, 1, true)
      local h = app:health()
      assert.equal(1, h.generation)
      assert.equal("reload_failed", h.status)
      assert.matches(want, h.last_reload_error, 1, true)
      assert.equal(i, h.reload_failures)
      assert.truthy(logged("reload failed, generation 1 keeps serving"))
      -- the old code serves, old module included
      c.conn:send("x" .. i)
      assert.equal(("h1|v1|x%d|v1|%d"):format(i, i), message(app, c, i))
      -- restore the good files
      write(dir .. "/handler.lua", 'return { tag = "h1" }\n')
      write(dir .. "/app.lua", app_file { marker = "v1" })
    end
    local res = support.http(app, "GET", "/_sluice/health")
    assert.equal(200, res.status)
    local h = cjson.decode(res.body)
    assert.equal(1, h.generation)
    assert.matches("on_reload", h.last_reload_error, 1, true)
    -- fixing the files reloads normally and clears the error
    write(dir .. "/app.lua", app_file { marker = "v3" })
    assert.equal(2, reload_ok())
    h = cjson.decode(support.http(app, "GET", "/_sluice/health").body)
    assert.equal(2, h.generation)
    assert.equal("ok", h.status)
    assert.equal(cjson.null, h.last_reload_error)
    assert.equal(1, h.reloads)
    c.conn:send("y")
    assert.equal("h1|v3|y|v1|7", message(app, c, 7))
  end)

  it("closes connections on a removed route with 4001 and serves a new route at once", function()
    local old = support.open_client(app, "/old")
    local echo = support.open_client(app, "/echo")
    write(dir .. "/app.lua", app_file { marker = "v2", route = "/new" })
    reload_ok()
    wait(app, function() return old.closed end, "close of /old")
    assert.equal(4001, old.closed.code)
    assert.equal("route removed", old.closed.reason)
    local new = support.open_client(app, "/new")
    new.conn:send("n")
    assert.equal("route n", message(app, new, 1))
    local gone = support.client(app, "/old")
    wait(app, function() return gone.closed or gone.opened end, "upgrade to /old")
    assert.is_false(gone.opened)
    assert.equal(1006, gone.closed.code)
    assert.is_nil(echo.closed)
  end)

  it("still calls the close handler of a removed route for its connections", function()
    write(dir .. "/app.lua", app_file { marker = "v2",
      extra = 'app:ws("/bye", { close = function(conn, code, reason) _G.BYE = { code, reason } end })' })
    reload_ok()
    local c = support.open_client(app, "/bye")
    write(dir .. "/app.lua", app_file { marker = "v3" })
    reload_ok()
    wait(app, function() return c.closed and _G.BYE end, "close of /bye")
    assert.same({ code = 4001, reason = "route removed" }, c.closed)
    assert.same({ 4001, "route removed" }, _G.BYE)
  end)

  it("closes consumers the new code no longer declares and starts new ones", function()
    write(dir .. "/app.lua", app_file { marker = "v2",
      extra = '_G.CONS_A = app:consume("reload-a", { group = "reload-a-g" }, function() end)' })
    reload_ok()
    assert.equal(1, #app.consumers)
    write(dir .. "/app.lua", app_file { marker = "v3",
      extra = '_G.CONS_B = app:consume("reload-b", { group = "reload-b-g" }, function() end)' })
    reload_ok()
    assert.equal(1, #app.consumers)
    assert.equal(_G.CONS_B, app.consumers[1])
    assert.is_true(_G.CONS_A.closed)
    assert.equal("sluice.consumer", getmetatable(_G.CONS_B.core).__name)
    assert.has_error(function() _G.CONS_A:pause() end, "attempt to use a closed sluice.consumer")
  end)

  it("cancels the old code's timers and starts the new code's", function()
    wait(app, function() return (TICKS.v1 or 0) >= 2 end, "v1 timer ticks")
    write(dir .. "/app.lua", app_file { marker = "v2" })
    reload_ok()
    local v1 = TICKS.v1
    wait(app, function() return (TICKS.v2 or 0) >= 3 end, "v2 timer ticks")
    assert.equal(v1, TICKS.v1)
  end)

  it("migrates state with on_reload(previous_state), which runs before the swap", function()
    local c = support.open_client(app, "/echo")
    c.conn:send("a")
    message(app, c, 1)
    write(dir .. "/app.lua", app_file { marker = "v2", extra = [[
app:on_reload(function(previous, info)
  _G.MIGRATED = { hits = previous.hits, generation = info.generation }
  return { hits = previous.hits * 100 }
end)]] })
    reload_ok()
    assert.same({ hits = 1, generation = 2 }, _G.MIGRATED)
    c.conn:send("b")
    assert.equal("h1|v2|b|v1|101", message(app, c, 2))
  end)

  it("reloads a module required by the app, and a module added later", function()
    write(dir .. "/app.lua", app_file { marker = "v2", extra = [[
local extra = require "lib.extra"
app:http("GET", "/extra", function() return 200, extra.value end)]] })
    os.execute("mkdir -p " .. dir .. "/lib")
    write(dir .. "/lib/extra.lua", 'return { value = "e1" }\n')
    reload_ok()
    assert.equal("e1", support.http(app, "GET", "/extra").body)
    write(dir .. "/lib/extra.lua", 'return { value = "e2" }\n')
    reload_ok()
    assert.equal("e2", support.http(app, "GET", "/extra").body)
    -- globals of one generation do not leak into the next
    assert.is_nil(rawget(_G, "handler"))
  end)

  it("reloads on file changes with app:watch: in place, temp + rename, delete and re-create", function()
    assert(app:watch { debounce = 30 })
    assert.equal(2, app:health().watching)
    local function gen() return app:health().generation end
    -- in-place write of a module
    write(dir .. "/handler.lua", 'return { tag = "h2" }\n')
    wait(app, function() return gen() == 2 end, "reload after in-place write")
    -- editor-style save of the app file
    save_by_rename(dir .. "/app.lua", app_file { marker = "v3" })
    wait(app, function() return gen() == 3 end, "reload after rename")
    assert.equal("v3", cjson.decode(support.http(app, "GET", "/v").body).marker)
    -- a burst of writes is one reload
    for _ = 1, 5 do write(dir .. "/handler.lua", 'return { tag = "h4" }\n') end
    wait(app, function() return gen() == 4 end, "reload after burst")
    support.settle(app, 0.3)
    assert.equal(4, gen())
    -- delete: the reload fails, the old code serves; re-create: it reloads
    os.remove(dir .. "/handler.lua")
    wait(app, function() return app:health().reload_failures == 1 end, "failed reload after delete")
    assert.matches("handler", app:health().last_reload_error, 1, true)
    assert.equal("h4", cjson.decode(support.http(app, "GET", "/v").body).tag)
    write(dir .. "/handler.lua", 'return { tag = "h5" }\n')
    wait(app, function() return gen() == 5 end, "reload after re-create")
    assert.equal("h5", cjson.decode(support.http(app, "GET", "/v").body).tag)
    assert.truthy(logged("handler.lua"))
    -- a require of a module that does not exist yet: creating it reloads
    write(dir .. "/app.lua", app_file { marker = "v6", extra = 'local later = require "later"' })
    wait(app, function() return app:health().reload_failures == 2 end, "failed reload: no module later")
    assert.matches("module 'later' not found", app:health().last_reload_error, 1, true)
    write(dir .. "/later.lua", "return {}\n")
    wait(app, function() return gen() == 6 end, "reload after the module was created")
    assert.equal("v6", cjson.decode(support.http(app, "GET", "/v").body).marker)
  end)

  it("refuses to start I/O from code that is still being loaded", function()
    for _, call in ipairs { 'app:produce("t", "x")', "app:start()", "app:step(10)" } do
      write(dir .. "/app.lua", app_file { marker = "v2", extra = call })
      local gen, err = app:reload()
      assert.is_nil(gen)
      assert.matches("app.lua:16: app:start, run, step, produce and connect are not available while a reload loads", err, 1, true)
    end
    assert.equal(1, app:health().generation)
    assert.equal(1, app.port and 1)   -- still the one server
  end)

  it("says why an app built without a file cannot reload", function()
    local plain = support.app { listen = false }
    local gen, err, code = plain:reload()
    assert.is_nil(gen)
    assert.equal("STATE", code)
    assert.matches("not loaded from a file", err, 1, true)
    plain:close()
  end)
end)

describe("hot reload with a consumer group", function()
  it("keeps the Kafka consumer: no rebalance, no record twice, none skipped", function()
    local dir = tmpdir()
    local function consumer_app(marker)
      return ([[
local sluice = require "sluice"
local app = sluice.app { name = "unit-reload-cg", listen = false, embedded = { port = 0 }, log = SPEC_LOG }
SEEN = SEEN or {}
app:consume("reload-cg", { group = "reload-cg-g", from = "earliest" }, function(rec)
  SEEN[#SEEN + 1] = { marker = %q, value = rec.value, partition = rec.partition, offset = rec.offset }
end)
return app
]]):format(marker)
    end
    write(dir .. "/app.lua", consumer_app "v1")
    _G.SEEN = {}
    local app = assert(sluice.load(dir .. "/app.lua"))
    assert(app:start())
    local n = 0
    local function produce(count)
      for _ = 1, count do
        n = n + 1
        assert(app:produce("reload-cg", { key = "k" .. (n % 7), value = tostring(n) }))
      end
    end
    produce(50)
    wait(app, function() return #SEEN >= 50 end, "first 50 records", 30)
    local before = app:stats()
    assert.same({ 4, 1 }, { before.assigned, before.rebalances })   -- 4 partitions, assigned once
    -- reload while records keep arriving
    produce(50)
    write(dir .. "/app.lua", consumer_app "v2")
    assert(app:reload())
    produce(50)
    wait(app, function() return #SEEN >= 150 end, "all 150 records", 30)
    support.settle(app, 1)
    local after = app:stats()
    assert.equal(before.rebalances, after.rebalances)
    assert.equal(before.assigned, after.assigned)
    -- each value exactly once; after the reload only v2 handles records
    local count, v2_seen = {}, false
    for _, s in ipairs(SEEN) do
      count[s.value] = (count[s.value] or 0) + 1
      if s.marker == "v2" then v2_seen = true
      else assert.is_false(v2_seen, "v1 handled a record after v2 did") end
    end
    for i = 1, 150 do assert.equal(1, count[tostring(i)], "record " .. i) end
    assert.equal(150, #SEEN)
    assert.is_true(v2_seen)
    assert.equal("v2", SEEN[#SEEN].marker)
    app:close()
    os.execute("rm -rf " .. dir)
  end)
end)
