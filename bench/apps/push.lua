-- The push benchmark's gateway (bench/push/run.sh): every record of topic
-- $SLUICE_PUSH_TOPIC (default "push") is sent, as it is, to every WebSocket
-- on /push, by a broadcast consumer with sluice's defaults. Records
-- produced after the app started reach every client.
--   GET /bench/ready   200 {"assigned":N}: partitions assigned (the runner
--                      waits for them before producing).
-- With SLUICE_PUSH_TRACE=1 the handler also notes, per record, the time
-- from the record's "t" (CLOCK_MONOTONIC ns at produce) to its entry into
-- the handler, in ms (the loop clock's resolution): GET /bench/trace gives
-- its percentiles — the part of the latency spent before Lua.
-- With SLUICE_PUSH_SUBSCRIBE=1 the clients on /push are subscribers of the
-- topic (app:subscribe) instead of a route broadcast's.
local sluice = require "sluice"

local app = sluice.app { name = "push-bench" }
local topic = os.getenv "SLUICE_PUSH_TOPIC" or "push"
local trace = os.getenv "SLUICE_PUSH_TRACE" == "1" and {}

if os.getenv "SLUICE_PUSH_SUBSCRIBE" == "1" then
  -- The clients as subscribers of the topic instead (app:subscribe, as the
  -- movies app's /stats: the feed's consumer, its connection set).
  app:feed(topic)
  app:ws("/push", { open = function(conn) assert(app:subscribe(conn, topic)) end })
else
  app:ws("/push", {})

  app:consume(topic, { broadcast = true }, function(rec)
    local v = rec.value
    if not v then return end
    if trace then
      local t = tonumber(v:match '"t":(%d+)')
      if t then trace[#trace + 1] = app.loop:now() - t / 1e6 end
    end
    app:broadcast("/push", v)
  end)
end

app:http("GET", "/bench/ready", function()
  return 200, { assigned = app:stats().assigned }
end)

app:http("GET", "/bench/trace", function()
  if not trace or #trace == 0 then return 200, { n = 0 } end
  local s = {}
  for i = 1, #trace do s[i] = trace[i] end
  table.sort(s)
  local function q(p) return s[math.floor((#s - 1) * p) + 1] end
  return 200, { n = #s, p50_ms = q(0.5), p99_ms = q(0.99), p999_ms = q(0.999), max_ms = s[#s] }
end)

return app
