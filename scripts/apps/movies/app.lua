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

-- SLUICE_MOVIES_SECRET (32 bytes or more), when set, makes the WebSockets
-- demand a token: the page fetches a short-lived one from GET /api/token
-- (same origin only: the answer has no CORS header, so another site's
-- script cannot read it and open the socket in the user's name) and
-- passes it as ?token=. The token is checked in C (sluice.jwt); a socket
-- without a valid one is closed with 4401 and the reason (EXPIRED: …).
local SECRET = os.getenv "SLUICE_MOVIES_SECRET"
if SECRET == "" then SECRET = nil end
local TOKEN_TTL = 300                      -- seconds
local TOKEN_OPTS = { iss = "sluice-movies", aud = "movies", algorithms = { "HS256" }, leeway = 5 }
if SECRET and #SECRET < 32 then
  error("SLUICE_MOVIES_SECRET must be at least 32 bytes (it signs the page's tokens)", 0)
end

-- The default logger's format, plus one line a new user needs: the URL
-- to open, once the port is known.
local function log(level, msg)
  io.stderr:write(os.date("%Y-%m-%d %H:%M:%S"), " sluice ", level, ": ", msg, "\n")
  local scheme, host, port = msg:match("^listening on (https?)://([^/]*):(%d+)/")
  if port then
    if host == "0.0.0.0" or host == "[::]" then host = "localhost" end
    io.stderr:write(os.date("%Y-%m-%d %H:%M:%S"), " sluice ", level,
      ": movies: open ", scheme, "://", host, ":", port, "/ in a browser\n")
  end
end

local app = sluice.app {
  name   = PREFIX .. "movies", -- consumer group and client.id
  listen = 8080,
  static = "public",           -- the browser page
  log    = log,
  deflate = true,              -- permessage-deflate for clients that offer it
}

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

-- A movie-stats record with its position (docs/api.md, appendix): the
-- stats value as it is when it is JSON, else as a JSON string.
local function with_position(rec, position)
  local v = rec.value
  if not v:find("^%s*[{%[]") then v = rows.object("v", v):sub(6, -2) end
  return ('{"stats":%s,"position":"%s","partition":%d,"offset":%d}'):format(v, position, rec.partition, rec.offset)
end

-- Subscribes conn to movie-stats: from now on, or (since) after the
-- position a client saw last. The reply comes once it is known whether the
-- position could be resumed from, before any record.
local function subscribe(conn, since, positions)
  if since == nil and not positions then return app:subscribe(conn, STATS) end
  local ok, err = app:subscribe(conn, STATS, {
    since = since, format = with_position,
    recovered = since and function(recovered, why)
      conn:send(rows.object("subscribed", STATS_NAME, "recovered", recovered, "reason", why))
    end,
  })
  if not ok then return nil, err end
  return ok, since ~= nil
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
    local since, positions = value.since, value.positions == true
    if since ~= nil and type(since) ~= "string" then
      return send_error(conn, "invalid position: since must be a string")
    end
    local ok, replied = subscribe(conn, since, positions)
    if not ok then return send_error(conn, "invalid position: " .. replied:gsub("^INVALID: ", "")) end
    if replied then return end   -- {"subscribed":…,"recovered":…} comes once known
    return conn:send(rows.object("subscribed", STATS_NAME))
  end

  if kind == "array" then
    for _, row in ipairs(value) do handle_row(conn, row, rows.json(row)) end
  else
    handle_row(conn, value, data)
  end
end

-- With a secret, a connection without a valid token is closed before it
-- is read from: nothing it sent reaches the route or the handlers.
local function on_open(conn)
  if SECRET then
    local claims, err = sluice.jwt.verify(sluice.jwt.token(conn), SECRET, TOKEN_OPTS)
    if not claims then return conn:close(4401, err), false end
  end
  return true
end

-- Every gateway instance pushes every stats record written after it
-- started (a consumer in no group: app:feed, app:subscribe); the app drops
-- a closed connection's subscriptions by itself.
app:feed(STATS)

local stream = { route = ROUTE, open = on_open, message = on_message }
app:ws("/", stream)
app:ws("/stream", stream)
app:ws("/stats", {                        -- the same, subscribed from the start
  route = ROUTE, message = on_message,
  open = function(conn) if on_open(conn) then subscribe(conn) end end,   -- values unchanged, from now on
})

-- The page's form: rows of the data set for the given actor and/or movie
-- names (comma-separated lists). 400 with {"error": …} for a bad query.
app:http("GET", "/api/fetch", function(req)
  local result, err = catalog:search(req.query.actor, req.query.movie)
  local headers = { ["content-type"] = "application/json", ["cache-control"] = "no-store" }
  if not result then return 400, rows.object("error", err), headers end
  return 200, catalog.encode(result), headers
end)

-- The same subscription over Server-Sent Events, for clients that cannot
-- hold a WebSocket: each event's id is its position; a reconnecting
-- EventSource sends it back (Last-Event-ID) and misses nothing.
app:sse("/events", function(stream)
  local ok, err = app:subscribe(stream, STATS, { since = stream.last_event_id })
  if not ok then
    stream:send("event: error\ndata: " .. rows.object("error", "invalid position: " .. err:gsub("^INVALID: ", "")) .. "\n\n")
    stream:close()
  end
end, { retry = 1000 })

-- A token for the page's WebSockets (404 when no secret is set: the page
-- then connects without one).
app:http("GET", "/api/token", function()
  local headers = { ["content-type"] = "application/json", ["cache-control"] = "no-store" }
  if not SECRET then return 404, rows.object("error", "no token needed"), headers end
  local token = sluice.jwt.sign({ iss = TOKEN_OPTS.iss, aud = TOKEN_OPTS.aud, sub = "page" }, SECRET,
    { expires_in = TOKEN_TTL })
  return 200, rows.object("token", token, "expires_in", TOKEN_TTL), headers
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
