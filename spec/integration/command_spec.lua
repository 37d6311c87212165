-- The `sluice` command: its options, its errors (one line on stderr, exit
-- 1), and a clean shutdown on SIGTERM.
local H = require "integration.helper"
local socket = require "socket"

-- Runs the command with a time limit; returns exit code, stdout, stderr.
local function sluice(args)
  return H.run("timeout -k 5 30 " .. H.q(H.bin) .. " " .. args)
end

local function one_line(err)
  local lines = H.lines(err)
  assert.are.equal(1, #lines, "expected one line on stderr, got:\n" .. err)
  return lines[1]
end

describe("the sluice command", function()
  teardown(H.cleanup)

  it("--version prints the version", function()
    local code, out = sluice "--version"
    assert.are.equal(0, code)
    assert.matches("%d+%.%d+%.%d+", out)
  end)

  it("runs on LuaJIT by default from the build tree, --lua chooses, --version says which", function()
    local dir = H.bin:match("^(.*)/[^/]*$")
    local function version(cmd)
      local code, out, err = H.run("timeout 30 " .. cmd)
      assert.are.equal(0, code, err)
      return (out:gsub("%s+$", ""))
    end
    local default = H.q(dir .. "/sluice")
    assert.matches("^sluice %d+%.%d+%.%d+ %(Lua 5%.1, LuaJIT 2%.1[^)]*%)$", version(default .. " --version"))
    assert.matches("^sluice %d+%.%d+%.%d+ %(Lua 5%.4%)$", version(default .. " --lua lua5.4 --version"))
    assert.matches("^sluice %d+%.%d+%.%d+ %(Lua 5%.1%)$", version(default .. " --version --lua=lua5.1"))
    assert.matches("LuaJIT", version(H.q(H.bin) .. " --lua luajit --version"))
    local code, _, err = H.run("timeout 30 " .. default .. " --lua lua5.3 --version")
    assert.are.equal(1, code)
    assert.are.equal("sluice: --lua lua5.3: not built here (built: lua5.1 lua5.4 luajit)", one_line(err))
    -- An installed command (the Lua script itself) runs on one Lua and says so.
    code, _, err = H.run(("timeout 30 lua5.4 %s --lua luajit --version"):format(H.q(H.root .. "/scripts/bin/sluice")))
    assert.are.equal(1, code)
    assert.matches("^sluice: %-%-lua luajit: this sluice command runs on lua5%.4", one_line(err))
  end)

  it("--help prints the usage", function()
    local code, out = sluice "--help"
    assert.are.equal(0, code)
    assert.matches("sluice run", out, 1, true)
    assert.matches("--listen", out, 1, true)
    assert.matches("--embedded-port", out, 1, true)
    assert.matches("--kafka", out, 1, true)
    assert.matches("-X, --kafka-property KEY=VALUE", out, 1, true)
  end)

  it("a missing app file: one line naming it, exit 1", function()
    local code, _, err = sluice "run /nonexistent/app.lua"
    assert.are.equal(1, code)
    assert.matches("/nonexistent/app.lua", one_line(err), 1, true)
  end)

  it("a syntax error: one line with file:line, exit 1", function()
    local dir = H.tmpdir()
    H.write(dir .. "/bad.lua", 'local sluice = require "sluice"\n\nlocal x = = 1\nreturn x\n')
    local code, _, err = sluice("run " .. dir .. "/bad.lua --listen " .. H.free_port())
    assert.are.equal(1, code)
    assert.matches("bad.lua:3:", one_line(err), 1, true)
  end)

  it("an unknown option: one line naming it, exit 1", function()
    local code, _, err = sluice("run " .. H.q(H.movies) .. " --frobnicate 3")
    assert.are.equal(1, code)
    assert.matches("--frobnicate", one_line(err), 1, true)
  end)

  it("-X without KEY=VALUE: one line saying so, exit 1", function()
    local code, _, err = sluice("run " .. H.q(H.movies) .. " -X message.timeout.ms")
    assert.are.equal(1, code)
    assert.are.equal("sluice: --kafka-property needs KEY=VALUE (a librdkafka property)", one_line(err))
  end)

  it("a port in use: one line naming the port, exit 1", function()
    local busy = assert(socket.bind("127.0.0.1", 0))
    local _, port = busy:getsockname()
    local code, _, err = sluice(("run %s --listen %s --embedded-port %d")
      :format(H.q(H.movies), port, H.free_port()))
    busy:close()
    assert.are.equal(1, code)
    assert.are.equal(("sluice: ADDRINUSE: the HTTP and WebSocket port %d is in use " ..
      "(choose another with --listen PORT or listen = PORT)"):format(port), one_line(err))
  end)

  it("the embedded broker's port in use: one line saying so, no 'listening', exit 1", function()
    local busy = assert(socket.bind("127.0.0.1", 0))
    local _, port = busy:getsockname()
    local code, _, err = sluice(("run %s --listen %d --embedded-port %s")
      :format(H.q(H.movies), H.free_port(), port))
    busy:close()
    assert.are.equal(1, code)
    assert.are.equal(("sluice: ADDRINUSE: the embedded Kafka broker's port %s is in use " ..
      "(another sluice or a Kafka broker runs there? choose a free port with --embedded-port PORT " ..
      "or embedded = { port = PORT }, or use a cluster with --kafka HOST:PORT)"):format(port), one_line(err))
  end)

  it("an app file given without `run`: the command it meant", function()
    local code, out, err = sluice(H.q(H.movies))
    assert.are.equal(1, code)
    assert.are.equal("", out)
    assert.are.equal(("sluice: unknown command '%s': to run an app, sluice run %s"):format(H.movies, H.movies),
      one_line(err))
  end)

  it("SIGTERM: clients see 1001, exit 0, and every acked row is in Kafka", function()
    -- The broker lives in another gateway, so it outlives the one stopped.
    -- (busted keeps one `finally` per test: it stops both.)
    local broker, gw
    finally(function()
      if gw then gw:stop() end
      if broker then broker:stop() end
    end)
    broker = H.start {}
    gw = H.start { kafka = broker.bootstrap }

    -- 40,000 rows at 1,000 a second: still sending when the signal comes,
    -- however late a busy machine sends it (4,000 ended first at eight jobs).
    local load = H.client_bg("load.js", { "--url", gw.url .. "/", "--connections", "2",
      "--rows", "40000", "--interval", "2", "--prefix", "T", "--list-acks", "--timeout", "90" })
    -- Rows of movie-results only: /healthz's `delivered` also counts what
    -- the movies app's stream processing writes once it has started.
    assert.truthy(H.wait_for(20, function()
      local status, body = H.http(gw.port, "/metrics")
      local n = status == 200 and body and
        tonumber(body:match 'sluice_kafka_delivered_total{topic="movie%-results"} (%d+)')
      return (n or 0) >= 200
    end), "no rows were delivered")
    gw:signal "TERM"
    local code = gw:wait(20)
    assert.are.equal(0, code, "exit status; stderr:\n" .. gw:stderr())

    local r = load:result(20)
    assert.are.equal(2, #r.closes)
    for _, c in ipairs(r.closes) do
      assert.are.equal("server", c.by)
      assert.are.equal(1001, c.code)
    end
    assert.are.equal(0, r.duplicates)
    assert.is_true(#r.acked_ids >= 200)
    assert.is_true(#r.acked_ids < 40000, "the load finished before SIGTERM: nothing was tested")

    local records = H.kcat_consume(broker.bootstrap, "movie-results", #r.acked_ids, 30)
    local stored = {}
    for _, rec in ipairs(records) do
      local ok, row = pcall(H.json.decode, rec.value)
      if ok and type(row) == "table" and row.id then
        local id = tostring(row.id)
        stored[id] = (stored[id] or 0) + 1
      end
    end
    -- Every acked row is in Kafka exactly once.
    local wrong = {}
    for _, id in ipairs(r.acked_ids) do
      if stored[id] ~= 1 then wrong[#wrong + 1] = id .. "x" .. (stored[id] or 0) end
    end
    assert.are.same({}, wrong)
  end)
end)
