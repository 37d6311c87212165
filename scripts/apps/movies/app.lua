-- The movies app: a browser streams movie query results (one JSON row per
-- actor/movie pair) over a WebSocket; each valid row is stored in Kafka
-- topic `movie-results`, keyed by actorId, and acknowledged to the browser
-- only once Kafka has it. Anything that cannot be stored goes, untouched,
-- to the dead-letter topic `movie-results.dlq`. Records of topic
-- `movie-stats` are pushed to every subscribed WebSocket.
--
--   sluice run scripts/apps/movies/app.lua [--listen PORT] [--kafka HOST:PORT]
--
-- The protocol is specified in docs/api.md (appendix).

local sluice = require "sluice"

-- rows.lua (validation and JSON encoding) and catalog.lua (the data set
-- behind the page's form) live next to this file.
local here = debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./"
local rows = dofile(here .. "rows.lua")
local catalog = assert(dofile(here .. "catalog.lua").load())

-- SLUICE_MOVIES_PREFIX (e.g. "team1."), when set, goes before every topic
-- and consumer group name, so that several movies gateways share one
-- Kafka cluster without seeing each other's records (the test suite runs
-- its specs that way). The protocol's names stay as they are.
local PREFIX = os.getenv "SLUICE_MOVIES_PREFIX" or ""
local RESULTS, DLQ, STATS = PREFIX .. "movie-results", PREFIX .. "movie-results.dlq", PREFIX .. "movie-stats"
local STATS_NAME = "movie-stats"           -- what clients subscribe to

-- A valid row, alone or in an array of valid rows, never enters Lua: the
-- route below declares it (checked, re-encoded, produced keyed by actorId
-- and acked in C). The Lua handlers see the rest.
local ROUTE = { schema = rows.SCHEMA, topic = RESULTS, key = "actorId", ack = "id" }

-- The default logger's format, plus one line a new user needs: the URL
-- to open, once the port is known.
local function log(level, msg)
  io.stderr:write(os.date("%Y-%m-%d %H:%M:%S"), " sluice ", level, ": ", msg, "\n")
  local host, port = msg:match("^listening on http://([^/]*):(%d+)/")
  if port then
    if host == "0.0.0.0" or host == "[::]" then host = "localhost" end
    io.stderr:write(os.date("%Y-%m-%d %H:%M:%S"), " sluice ", level,
      ": movies: open http://", host, ":", port, "/ in a browser\n")
  end
end

local app = sluice.app {
  name   = PREFIX .. "movies", -- consumer group and client.id
  listen = 8080,
  static = "public",           -- the browser page
  log    = log,
}

-- Connections subscribed to movie-stats, by conn.id.
local subscribers = {}

local function send_error(conn, text, id)
  conn:send(rows.object("error", text, "id", id))
end

-- Something we cannot store: tell the client and keep the raw message in
-- the dead-letter topic, with the reason in header `error`.
local function reject(conn, raw, text, id)
  send_error(conn, text, id)
  local ok, err = app:produce(DLQ, { value = raw, headers = { error = text } })
  if not ok then io.stderr:write("movies: dead-letter produce refused: ", err, "\n") end
end

-- Kafka stored a row, or finally gave up: ack or error to its client (a
-- client that has gone meanwhile: send returns nil, "CLOSED: …"). One
-- function for every row, its connection and id passed as the context.
local function delivered(derr, _, row)
  local conn, id = row[1], row[2]
  if derr then send_error(conn, derr, id)
  else conn:send(rows.object("ack", id)) end
end

-- A valid row of an array that also has invalid ones, keyed by actor as
-- the declared route keys: all rows of one actor land on one partition.
local function store(conn, id, key, value)
  local ok, err = app:produce(RESULTS, { key = key, value = value }, delivered, { conn, id })
  if not ok then send_error(conn, err, id) end  -- refused now, e.g. "FULL: …"
end

-- One decoded row, handled as if it had arrived alone; `raw` is its text.
-- Its number on the connection is counted with the declared route's rows.
local function handle_row(conn, row, raw)
  local seq = conn:next_row()
  local id = rows.id(row) or seq          -- what the ack or error refers to
  local problem = rows.check(row)
  if problem then return reject(conn, raw, problem, id) end
  store(conn, id, row.actorId, rows.encode(row))
end

local function subscribe(conn)
  subscribers[conn.id] = conn
end

-- What the declared route did not take: subscriptions, invalid rows,
-- arrays with an invalid row, JSON the strict parser refuses, binary
-- frames. This path has the error messages.
local function on_message(conn, data, is_binary)
  if is_binary then
    return reject(conn, data, "binary frames are not accepted")
  end
  local kind, value = rows.decode(data)
  if not kind then return reject(conn, data, value) end  -- malformed JSON

  if kind == "object" and value.subscribe ~= nil then
    if value.subscribe ~= STATS_NAME then
      return send_error(conn, "unknown subscription: only " .. STATS_NAME .. " is offered")
    end
    subscribe(conn)
    return conn:send(rows.object("subscribed", STATS_NAME))
  end

  if kind == "array" then
    for _, row in ipairs(value) do handle_row(conn, row, rows.json(row)) end
  else
    handle_row(conn, value, data)
  end
end

local function on_close(conn)
  subscribers[conn.id] = nil
end

local stream = { route = ROUTE, message = on_message, close = on_close }
app:ws("/", stream)
app:ws("/stream", stream)
app:ws("/stats", {                        -- the same, subscribed from the start
  route = ROUTE, open = subscribe, message = on_message, close = on_close,
})

-- Every gateway instance sees every stats record (broadcast = true).
app:consume(STATS, { broadcast = true }, function(rec)
  if rec.value == nil then return end
  app:broadcast(subscribers, rec.value)    -- one copy shared by all queues
end)

-- The page's form: rows of the data set for the given actor and/or movie
-- names (comma-separated lists). 400 with {"error": …} for a bad query.
app:http("GET", "/api/fetch", function(req)
  local result, err = catalog:search(req.query.actor, req.query.movie)
  local headers = { ["content-type"] = "application/json", ["cache-control"] = "no-store" }
  if not result then return 400, rows.object("error", err), headers end
  return 200, catalog.encode(result), headers
end)

app:http("GET", "/healthz", function()
  local s = app:stats()
  return 200, {
    status = "ok", connections = s.connections, produced = s.produced,
    delivered = s.delivered, delivery_failed = s.delivery_failed,
    in_flight = s.in_flight, handler_errors = s.handler_errors, assigned = s.assigned,
  }
end)

-- The stream processing that produces movie-stats (processing.lua, its
-- own module) when it is there; without it the page's live panel shows
-- whatever arrives on the topic. SLUICE_MOVIES_PROCESSING=0 leaves it out
-- (a gateway that only stores rows, e.g. for tests that count records).
do
  local f = os.getenv("SLUICE_MOVIES_PROCESSING") ~= "0" and io.open(here .. "processing.lua", "r")
  if f then
    f:close()
    if not package.path:find(here .. "?.lua", 1, true) then
      package.path = here .. "?.lua;" .. package.path
    end
    require("processing")(app, { name = PREFIX .. "movies", prefix = PREFIX })
  end
end

return app
