-- An idle gateway uses no CPU: no periodic polling anywhere.
local H = require "integration.helper"

describe("an idle gateway", function()
  local gw

  setup(function() gw = H.start {} end)
  teardown(function()
    if gw then gw:stop() end
    H.cleanup()
  end)

  it("with one idle WebSocket uses < 0.05 s CPU over 5 s", function()
    local client = H.client_bg("probe.js", { "--url", gw.url .. "/", "--wait", "15" })
    finally(function() client:kill() end)
    assert.truthy(H.wait_for(5, function()
      local _, h = gw:healthz()
      return type(h) == "table" and h.connections == 1
    end), "the client did not connect")
    H.sleep(1)                                   -- let start-up work settle
    local before = H.cpu_seconds(gw.pid)
    H.sleep(5)
    local used = H.cpu_seconds(gw.pid) - before
    print(("# CPU used while idle: %.2f s"):format(used))
    assert.is_false(client:done() ~= nil, "the client was disconnected")
    assert.is_true(used < 0.05, ("used %.2f s of CPU while idle"):format(used))
  end)
end)
