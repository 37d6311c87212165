-- `sluice run app.lua --workers 2`, as an operator runs it: one port, two
-- worker processes, the supervisor's signals, a crash, broadcasts to the
-- clients of both workers, and a script that does not load. Behaviour
-- only: which worker a connection lands on is the kernel's choice, so the
-- spec looks (with `sluice attach`) at where its connections went.
local H = require "integration.helper"

local APP = [[
local sluice = require "sluice"
local app = sluice.app { name = "workers-app", metrics = { listen = tonumber(os.getenv "MPORT") } }
app:ws("/in", { message = function(conn, data)
  app:produce(os.getenv "TOPIC", data, function(err)
    conn:send(err and ("failed " .. err) or ("ok " .. data))
  end)
end })
app:ws("/out", {})
app:consume(os.getenv "TOPIC", { broadcast = true }, function(rec) app:broadcast("/out", rec.value) end)
return app
]]

describe("sluice run --workers 2", function()
  local gw, run_dir, dir, topic, mport

  local function attach(args)
    return H.run(("SLUICE_RUN_DIR=%s %s attach %s"):format(H.q(run_dir), H.q(H.bin), args))
  end

  -- The sorted lines every worker answers to --eval CHUNK.
  local function each_worker(chunk)
    local code, out = attach(gw.pid .. " --eval " .. H.q(chunk))
    local lines = H.lines(out)
    table.sort(lines)
    return lines, code
  end

  setup(function()
    run_dir = H.tmpdir() .. "/run"
    dir = H.tmpdir()
    topic = "workers-" .. os.time()
    H.write(dir .. "/app.lua", APP)
    mport = H.free_ports(2)   -- worker N serves metrics on mport + N - 1
    gw = H.start { app = dir .. "/app.lua", args = { "--workers", "2" }, ready = "http",
      env = ("SLUICE_RUN_DIR=%s TOPIC=%s MPORT=%d"):format(H.q(run_dir), topic, mport) }
    assert.truthy(H.wait_for(30, function()
      local log = gw:stderr()
      return log:find("worker 1 %(pid %d+%) ready") and log:find("worker 2 %(pid %d+%) ready")
    end, 0.1), gw:stderr())
  end)

  teardown(function()
    if gw then gw:stop() end
    H.cleanup()
  end)

  it("runs two workers on one port, each with its own console, loop and producer", function()
    local lines, code = each_worker("os.getenv('SLUICE_WORKER'), stats().produced")
    assert.equal(0, code)
    assert.same({ '[worker 1] "1"\t0', '[worker 2] "2"\t0' }, lines)
    -- One worker's console alone.
    assert.same({ 0, '"2"\n', "" }, { attach(gw.pid .. " --worker 2 --eval \"os.getenv('SLUICE_WORKER')\"") })
    -- /healthz and /metrics answer for the worker that took the request, and say which.
    local status, body = H.http_json(gw.port, "/healthz/live")
    assert.equal(200, status)
    assert.truthy(body.worker == 1 or body.worker == 2)
    -- Each worker's own metrics port: the metrics port + N - 1.
    for n = 1, 2 do
      assert.same({ 200, { status = "live", worker = n } }, { H.http_json(mport + n - 1, "/healthz/live") })
      local _, text = H.http(mport + n - 1, "/metrics")
      assert.truthy(text:find(('\nsluice_info{version="[^"]+",lua="[^"]+",worker="%d"} 1\n'):format(n)), text)
    end
  end)

  it("broadcasts every record to the clients of every worker", function()
    -- Subscribers until both workers hold some (the kernel spreads them).
    local subs = {}
    for i = 1, 12 do
      subs[i] = H.client_bg("subscribe.js", { "--url", gw.url .. "/out", "--until", "to-all", "--timeout", "40" })
    end
    local lines
    assert.truthy(H.wait_for(30, function()
      lines = each_worker("#conns('/out')")
      local a, b = tonumber((lines[1] or ""):match("%d+$")), tonumber((lines[2] or ""):match("%d+$"))
      return a and b and a + b == 12
    end, 0.2), "subscribers did not connect")
    local n1, n2 = tonumber(lines[1]:match("%d+$")), tonumber(lines[2]:match("%d+$"))
    assert.is_true(n1 > 0 and n2 > 0, ("all 12 subscribers on one worker (%d, %d)"):format(n1, n2))
    local r = H.client("probe.js", { "--url", gw.url .. "/in", "--text", "to-all", "--replies", "1", "--wait", "30" })
    assert.same({ "ok to-all" }, r.replies)
    for i = 1, 12 do
      assert.equal("to-all", subs[i]:result(40).matched)
    end
  end)

  it("starts a worker that died again, with a new pid", function()
    local before = each_worker("require('sluice.core').getpid()")
    local pid1 = tonumber(before[1]:match("(%d+)$"))
    os.execute("kill -KILL " .. pid1)
    assert.truthy(H.wait_for(30, function()
      return gw:stderr():find(("worker 1 (pid %d) died (signal KILL); starting it again in 0.5 s"):format(pid1), 1, true)
    end, 0.1), gw:stderr())
    local after
    assert.truthy(H.wait_for(30, function()
      after = each_worker("require('sluice.core').getpid()")
      return #after == 2 and after[1]:match("^%[worker 1%] %d+$") and after[1] ~= before[1]
    end, 0.2), table.concat(after or {}, "\n"))
    assert.equal(before[2], after[2])
    -- It serves like the others.
    assert.same({ '[worker 1] "workers-app"', '[worker 2] "workers-app"' }, each_worker("app.name"))
  end)

  it("reloads every worker on SIGHUP, and a broken script leaves every worker on its old generation", function()
    local good = H.read(dir .. "/app.lua")
    H.write(dir .. "/app.lua", good .. "\nthis is not Lua\n")
    gw:signal("HUP")
    assert.truthy(H.wait_for(30, function()
      local _, n = gw:stderr():gsub("reload failed, generation 1 keeps serving", "")
      return n == 2
    end, 0.1), gw:stderr())
    assert.same({ "[worker 1] 1", "[worker 2] 1" }, each_worker("app.generation"))
    H.write(dir .. "/app.lua", good)
    gw:signal("HUP")
    assert.truthy(H.wait_for(30, function()
      return table.concat(each_worker("app.generation"), ",") == "[worker 1] 2,[worker 2] 2"
    end, 0.1), gw:stderr())
  end)

  it("drains every worker on SIGTERM and exits 0", function()
    local sub = H.client_bg("subscribe.js", { "--url", gw.url .. "/out", "--count", "1000", "--timeout", "40" })
    assert.truthy(H.wait_for(20, function()
      local n = 0
      for _, l in ipairs(each_worker("#conns('/out')")) do n = n + tonumber(l:match("%d+$")) end
      return n == 1
    end, 0.1))
    local pids = each_worker("require('sluice.core').getpid()")
    assert.equal(0, (gw:stop(30)))
    local log = gw:stderr()
    for _, l in ipairs(pids) do
      local n, pid = l:match("^%[worker (%d)%] (%d+)$")
      assert.truthy(log:find(("worker %s (pid %s) stopped: exit status 0"):format(n, pid), 1, true), log)
      assert.is_false(H.alive(tonumber(pid)))
    end
    -- The subscriber was closed by the gateway with 1001 (going away).
    assert.equal(1001, sub:result(40).close.code)
    assert.same({}, H.lines(select(2, H.run("ls " .. H.q(run_dir)))))
    gw = nil
  end)

  it("exits 1 when the app does not load, saying why, and leaves no worker running", function()
    local bad = H.tmpdir() .. "/bad.lua"
    H.write(bad, "local x = = 1\n")
    local code, _, err = H.run(("SLUICE_RUN_DIR=%s %s run %s --workers 2 --listen %d --embedded-port 0")
      :format(H.q(run_dir), H.q(H.bin), H.q(bad), H.free_port()))
    assert.equal(1, code)
    assert.truthy(err:find("bad.lua:1: unexpected symbol near '='", 1, true), err)
    assert.truthy(err:find("sluice: a worker failed to start (its error is above)", 1, true), err)
    local procs = H.lines(select(2, H.run("for p in /proc/[0-9]*; do tr '\\0' ' ' <$p/cmdline 2>/dev/null; echo; done")))
    for _, cmdline in ipairs(procs) do
      assert.is_nil(cmdline:find(bad, 1, true) and not cmdline:find("for p in", 1, true) and cmdline)
    end
  end)
end)
