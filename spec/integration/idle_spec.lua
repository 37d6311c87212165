-- An idle gateway uses no CPU: no periodic polling anywhere. What idle
-- means is asserted as events, which load cannot change: the event loop
-- is not woken at all while nothing happens. (The CPU seconds are printed
-- for the reader; bench/run.sh measures them.)
local H = require "integration.helper"

describe("an idle gateway", function()
  local gw

  setup(function() gw = H.start {} end)
  teardown(function()
    if gw then gw:stop() end
    H.cleanup()
  end)

  it("with one idle WebSocket connected, its event loop is not woken once in 5 s", function()
    local client = H.client_bg("probe.js", { "--url", gw.url .. "/", "--wait", "30" })
    finally(function() client:kill() end)
    assert.truthy(H.wait_for(10, function()
      local _, h = gw:healthz()
      return type(h) == "table" and h.connections == 1
    end), "the client did not connect")
    -- Start-up ends when it ends on a loaded machine: the stream
    -- processing's consumer group joins (~3 s on the embedded broker, with
    -- the loop quiet meanwhile), then its stores are restored (the
    -- broadcast consumer of movie-stats, in no group, has its partitions at
    -- once). Wait for the restore, then for the loop to be quiet 2 s in a
    -- row, before the interval that counts.
    assert.truthy(H.wait_for(60, function()
      return gw:stderr():find(" restored for partitions ", 1, true)
    end), "the stream processing restored no store")
    local last, quiet_from = H.loop_wakeups(gw.pid), H.now()
    assert.truthy(H.wait_for(60, function()
      local now = H.loop_wakeups(gw.pid)
      if now ~= last then last, quiet_from = now, H.now() end
      return H.now() - quiet_from >= 2
    end, 0.25), "the gateway's loop never went quiet")
    local wakeups, cpu = H.loop_wakeups(gw.pid), H.cpu_seconds(gw.pid)
    H.sleep(5)
    local woken = H.loop_wakeups(gw.pid) - wakeups
    print(("# idle 5 s: loop woken %d times, %.2f s CPU (all threads)"):format(woken, H.cpu_seconds(gw.pid) - cpu))
    assert.is_nil(client:done(), "the client was disconnected")
    assert.equal(0, woken)
  end)

  -- Work done, idle again: the stream's commit timer and the producer's
  -- timers stop once every record is processed, stored and committed.
  it("after a stream processed its records, its event loop is not woken once in 5 s", function()
    local dir = H.tmpdir()
    H.write(dir .. "/app.lua", [[
local sluice = require "sluice"
local stream = require "sluice.stream"
local app = sluice.app { name = "idle-stream", listen = 8080 }
local t = stream.topology(app, { name = "idle-words" })
t:from("idle-words"):count { store = "counts" }:to("idle-counts")
app:ws("/", { message = function(conn, data)
  app:produce("idle-words", { key = data, value = "x" }, function(err) conn:send(err or "stored") end)
end })
app:http("GET", "/healthz", function()
  local s = t:stats()
  return 200, { processed = s.processed, commits = s.commits }
end)
return app
]])
    local g = H.start { app = dir .. "/app.lua" }
    finally(function() g:stop() end)
    local args = { "--url", g.url .. "/", "--replies", "6", "--wait", "30" }
    for _, w in ipairs { "a", "b", "c", "a", "b", "a" } do
      args[#args + 1] = "--text"; args[#args + 1] = w
    end
    local r = H.client("probe.js", args)
    assert.are.same({ "stored", "stored", "stored", "stored", "stored", "stored" }, r.replies)
    assert.truthy(H.wait_for(60, function()
      local _, h = g:healthz()
      return type(h) == "table" and h.processed == 6 and h.commits > 0
    end), "the stream did not process and commit the 6 records")
    local last, quiet_from = H.loop_wakeups(g.pid), H.now()
    assert.truthy(H.wait_for(60, function()
      local now = H.loop_wakeups(g.pid)
      if now ~= last then last, quiet_from = now, H.now() end
      return H.now() - quiet_from >= 2
    end, 0.25), "the gateway's loop never went quiet after its work")
    local wakeups = H.loop_wakeups(g.pid)
    H.sleep(5)
    assert.equal(0, H.loop_wakeups(g.pid) - wakeups)
  end)
end)
