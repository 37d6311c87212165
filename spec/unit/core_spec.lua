-- sluice.core, the bindings themselves: the one rule for closed objects
-- and the one option reader every constructor goes through.
local core = require "sluice.core"

local function raises(pattern, f)
  local ok, err = pcall(f)
  assert.is_false(ok)
  assert.matches(pattern, tostring(err), 1, true)
end

describe("sluice.core", function()
  local loop

  before_each(function() loop = assert(core.loop { log = function() end }) end)
  after_each(function() loop:close() end)

  it("raises 'attempt to use a closed <type>' once an object is closed, and closes it once", function()
    local kafka = { ["bootstrap.servers"] = "127.0.0.1:1" }
    local objects = {
      { "sluice.timer", core.timer(loop, function() end), "start", 10 },
      { "sluice.server", assert(core.server(loop, { host = "127.0.0.1", port = 0 }, {})), "port" },
      { "sluice.producer", assert(core.producer(loop, { props = kafka })), "flush", 0 },
      { "sluice.consumer", assert(core.consumer(loop, {
          props = { ["bootstrap.servers"] = "127.0.0.1:1", ["group.id"] = "g" }, topics = { "t" } },
          { record = function() end })), "pause" },
      { "sluice.broker", assert(core.broker(loop, { port = -1 })), "bootstrap" },
      { "sluice.fswatch", assert(core.fswatch(loop, {}, function() end)), "count" },
      { "sluice.schema", core.schema { { "a", "string" } }, "check", "{}" },
    }
    for _, o in ipairs(objects) do
      local name, obj, method, arg = o[1], o[2], o[3], o[4]
      if name == "sluice.consumer" then obj:close(0) else obj:close() end
      obj:close()   -- idempotent
      raises("attempt to use a closed " .. name, function() return obj[method](obj, arg) end)
    end
    loop:close()
    raises("attempt to use a closed sluice.loop", function() return loop:run_once(0) end)
  end)

  it("checks every constructor's options for type and range, naming the option", function()
    local cases = {
      { "'port' must be an integer from 0 to 65535, got -1",
        function() return core.server(loop, { port = -1 }, {}) end },
      { "'max_message' must be an integer from 0 to", function() return core.server(loop, { max_message = -5 }, {}) end },
      { "'host' must be a string, got 5", function() return core.server(loop, { host = 5 }, {}) end },
      { "'high_water' must be an integer from 0 to", function() return core.producer(loop, { high_water = -1 }) end },
      { "'send_queue' must be an integer from 0 to",
        function() return core.connect(loop, "ws://127.0.0.1:1/", {}, { send_queue = "big" }) end },
      { "'debounce' must be an integer from 0 to 60000, got 1.5",
        function() return core.fswatch(loop, { debounce = 1.5 }, function() end) end },
      { "'port' must be an integer from -1 to 65535, got 70000",
        function() return core.broker(loop, { port = 70000 }) end },
      { "'handler_timeout' must be a number from 0 to", function() return core.loop { handler_timeout = -1 } end },
      { "'start_time' must be an integer from 0 to", function() return core.consumer(loop,
          { topics = { "t" }, assign = true, start_time = -5 }, { record = print }) end },
      { "'refresh' must be an integer from 1 to", function() return core.consumer(loop,
          { topics = { "t" }, assign = true, refresh = 0 }, { record = print }) end },
      { "'offsets': partitions and offsets must be integers >= 0", function() return core.consumer(loop,
          { topics = { "t" }, assign = true, offsets = { t = { [0] = -1 } } }, { record = print }) end },
      { "'offsets' must be a table of topic = { [partition] = offset }", function() return core.consumer(loop,
          { topics = { "t" }, assign = true, offsets = { 3 } }, { record = print }) end },
    }
    for _, c in ipairs(cases) do raises(c[1], c[2]) end
  end)

  it("refuses a start time for a group consumer", function()
    local props = { ["bootstrap.servers"] = "127.0.0.1:1", ["group.id"] = "g" }
    assert.same({ nil, "INVAL: consumer: a start time needs assign mode", "INVAL" },
      { core.consumer(loop, { props = props, topics = { "t" }, start_time = 5 }, { record = print }) })
  end)
end)
