-- A fault-injection Kafka broker: sluice's embedded (in-memory, mock)
-- cluster with several brokers, in a process of its own, and an HTTP port
-- to break it from outside. Gateways under test reach it with --kafka; it
-- keeps its data when they are stopped, so what they stored can be
-- checked afterwards (kcat).
--
--   sluice run bench/soak/broker.lua --listen CONTROL_PORT
--   env: SLUICE_FAULT_BROKERS (default 3), SLUICE_FAULT_PORT (stable
--        bootstrap port to broker 1; default 0: any free port)
--
-- HTTP (GET; answers 200 {"ok":true} or 400 {"error":"CODE: …"}):
--   /healthz                                 {"status":"ok","brokers":N,"bootstrap":"h:p,…","stable":"h:p"}
--   /down?id=N   /up?id=N                    broker N refuses / accepts connections
--   /rtt?id=N&ms=M                           add M ms to each response of broker N (0: none)
--   /errors?api=Produce&codes=A,B,…          the next requests of that API fail with
--                                            these Kafka errors, in order (names or numbers)
--   /leader?topic=T&partition=P&id=N         move a partition's leader
--   /topic?name=T&partitions=N               create a topic (replicated on up to 3 brokers)
local sluice = require "sluice"
local core = require "sluice.core"

local app = sluice.app {
  name = "fault-broker",
  listen = 0,
  -- This process hosts a broker; it is no Kafka client itself.
  kafka = { ["bootstrap.servers"] = "127.0.0.1:9" },
  idle_timeout = false,
}

local broker

local function bad(err) return 400, { error = err } end
local function done(ok, err)
  if ok then return 200, { ok = true } end
  return bad(err)
end
local function int(req, name)
  local v = tonumber(req.query[name])
  if not v or v ~= math.floor(v) then return nil end
  return math.floor(v)
end

app:http("GET", "/healthz", function()
  return 200, { status = "ok", brokers = broker:count(), bootstrap = broker:direct_bootstrap(),
                stable = broker:bootstrap() }
end)

app:http("GET", "/down", function(req)
  local id = int(req, "id")
  if not id then return bad("INVAL: id= required") end
  return done(broker:set_down(id))
end)

app:http("GET", "/up", function(req)
  local id = int(req, "id")
  if not id then return bad("INVAL: id= required") end
  return done(broker:set_up(id))
end)

app:http("GET", "/rtt", function(req)
  local id, ms = int(req, "id"), int(req, "ms")
  if not id or not ms then return bad("INVAL: id= and ms= required") end
  return done(broker:set_rtt(id, ms))
end)

app:http("GET", "/errors", function(req)
  local api = req.query.api
  if not api then return bad("INVAL: api= required") end
  api = tonumber(api) or api
  local codes = {}
  for c in (req.query.codes or ""):gmatch "[^,]+" do codes[#codes + 1] = tonumber(c) or c end
  local ok, ok2, err = pcall(broker.push_errors, broker, api, codes)
  if not ok then return bad("INVAL: " .. tostring(ok2)) end
  return done(ok2, err)
end)

app:http("GET", "/leader", function(req)
  local p, id = int(req, "partition"), int(req, "id")
  if not req.query.topic or not p or not id then return bad("INVAL: topic=, partition= and id= required") end
  return done(broker:set_leader(req.query.topic, p, id))
end)

app:http("GET", "/topic", function(req)
  if not req.query.name then return bad("INVAL: name= required") end
  return done(broker:create_topic(req.query.name, int(req, "partitions") or 0))
end)

-- Start now (the server and the loop), then put the broker on that loop.
assert(app:start())
local err
broker, err = core.broker(app.loop, {
  brokers = tonumber(os.getenv "SLUICE_FAULT_BROKERS") or 3,
  port = tonumber(os.getenv "SLUICE_FAULT_PORT") or 0,
})
if not broker then error("fault broker: " .. err, 0) end
app.loop:log("info", "fault broker: " .. broker:count() .. " brokers at " .. broker:direct_bootstrap())

return app
