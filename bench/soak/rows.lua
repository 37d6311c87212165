-- The soak tool's default gateway: the movies app's row protocol and
-- nothing else (no per-row state), so that memory growth under a long
-- soak means a leak, not data. Each JSON row (or array of rows) sent on
-- any WebSocket path goes to topic `movie-results` keyed by actorId;
-- {"ack": id} once Kafka has it, {"error": "CODE: …", "id": id} if not.
local sluice = require "sluice"
local cjson = require "cjson.safe"

-- SOAK_MAX_IN_FLIGHT=1: one produce request in flight per broker. Needed
-- where produce errors are injected into the embedded broker, which checks
-- no producer sequence numbers (docs/reliability.md, "The embedded broker").
local app = sluice.app { name = "soak", listen = 8080, kafka = {
  ["max.in.flight.requests.per.connection"] = os.getenv "SOAK_MAX_IN_FLIGHT" } }

local function send(conn, t) conn:send(cjson.encode(t)) end

local function handle(conn, data)
  local v = cjson.decode(data)
  if type(v) ~= "table" then return send(conn, { error = "malformed JSON" }) end
  local list = v[1] and v or { v }
  for _, row in ipairs(list) do
    local id = row.id
    local ok, err = app:produce("movie-results", { key = row.actorId, value = cjson.encode(row) },
      function(derr, report)
        -- Where Kafka put it: the soak tells rows the embedded broker's
        -- retention dropped from rows that were lost.
        if derr then send(conn, { error = derr, id = id })
        else send(conn, { ack = id, partition = report.partition, offset = report.offset }) end
      end)
    if not ok then send(conn, { error = err, id = id }) end
  end
end

app:ws("/", { message = handle })

app:http("GET", "/healthz", function()
  local s = app:stats()
  return 200, { status = "ok", connections = s.connections, produced = s.produced,
                delivered = s.delivered, delivery_failed = s.delivery_failed,
                in_flight = s.in_flight, handler_errors = s.handler_errors }
end)

return app
