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
    assert.truthy(H.wait_quiet(gw.pid, 2, 60), "the gateway's loop never went quiet")
    local wakeups, cpu = H.loop_wakeups(gw.pid), H.cpu_seconds(gw.pid)
    H.sleep(5)
    local woken = H.loop_wakeups(gw.pid) - wakeups
    print(("# idle 5 s: loop woken %d times, %.2f s CPU (all threads)"):format(woken, H.cpu_seconds(gw.pid) - cpu))
    assert.is_nil(client:done(), "the client was disconnected")
    assert.equal(0, woken)
  end)
end)
