-- What an operator reaches in a running app (docs/operations.md): the
-- metrics endpoint, the health probes (/healthz/live, /healthz/ready), the
-- metrics port of its own, and JSON log lines.
local core = require "sluice.core"
local metrics = require "sluice.metrics"
local cjson = require "cjson"

local M = {}

M.LIVE_PATH, M.READY_PATH = "/healthz/live", "/healthz/ready"
local JSON_TYPE = "application/json"

-- Why the app is not ready, as a list of { check, reason } (empty: ready).
-- Ready: not draining; every consumer (and app:subscribe's feed) holds
-- partitions (its group joined);
-- Kafka not known down while records wait for it (an error saying all
-- brokers are down, and no ack since, with records in flight).
function M.not_ready(app)
  local why = {}
  if app.closed or not app.started then why[#why + 1] = { "draining", "the app is shutting down" } end
  for _, c in ipairs(app.consumers) do
    if not c.closed and (c.assigned or 0) == 0 then
      why[#why + 1] = { "consumers", ("consumer of %s holds no partitions yet"):format(table.concat(c.decl.topics, ",")) }
    end
  end
  -- (app:subscribe's feeds: their consumers are not declarations)
  for topic, feed in pairs(app.feeds or {}) do
    if not feed.ready then
      why[#why + 1] = { "consumers", ("subscriptions to %s: no partitions yet"):format(topic) }
    end
  end
  local down, p = app._kafka_down, app.producer
  if down and p then
    local s = p:stats()
    if s.delivered == down.delivered and s.in_flight > 0 then
      why[#why + 1] = { "kafka", ("%d records waiting: %s"):format(s.in_flight, down.error) }
    end
  end
  return why
end

-- Called with each Kafka error of the app's producer.
function M.kafka_error(app, err)
  if err:match("^ALL_BROKERS_DOWN") and app.producer then
    app._kafka_down = { error = err, delivered = app.producer:stats().delivered }
  end
end

-- Under --workers every answer says which worker gave it.
local function answer(app, status, body)
  body.worker = app.overrides.worker
  return status, cjson.encode(body), JSON_TYPE
end

local function ready(app)
  local why = M.not_ready(app)
  if #why == 0 then return answer(app, 200, { status = "ready" }) end
  local checks = {}
  for _, w in ipairs(why) do checks[#checks + 1] = { check = w[1], reason = w[2] } end
  return answer(app, 503, { status = "not_ready", failing = checks })
end

-- The operator endpoint at path: a function returning status, body,
-- content type; nil if there is none. on_own_port: asked by the metrics
-- listener (else by the app's own port, where the app's routes come first).
function M.route(app, path, on_own_port)
  if path == M.LIVE_PATH then
    -- Answered at all: the loop runs.
    return function() return answer(app, 200, { status = "live" }) end
  elseif path == M.READY_PATH then
    return function() return ready(app) end
  end
  local cfg = app._metrics_cfg
  if cfg and path == cfg.path and (on_own_port or not cfg.listen) then
    return function() return 200, metrics.exposition(app), metrics.CONTENT_TYPE end
  end
end

-- Starts the metrics listener of app when metrics.listen is set: an HTTP
-- server of its own (no WebSocket) on the app's loop, serving the metrics
-- and the health probes. Returns the server, true when none is asked for,
-- or nil, err, code.
function M.listen(app, parse_listen)
  local cfg = app._metrics_cfg
  if not (cfg and cfg.listen) then return true end
  local host, port = parse_listen(cfg.listen)
  -- Worker N of --workers: the port after N - 1 others, one per worker.
  if app.overrides.worker and port ~= 0 then port = port + app.overrides.worker - 1 end
  return core.server(app.loop, { host = host, port = port }, {
    accept = function() return false end,
    http_match = function(method, path) return method == "GET" and M.route(app, path, true) ~= nil end,
    http = function(raw)
      local status, body, ctype = M.route(app, raw.path, true)()
      raw:respond(status, ctype, body)
    end,
  })
end

-- A log function writing one JSON object per line to stderr: ts (UTC,
-- RFC 3339, ms), level, msg, app, pid, and worker under --workers.
function M.json_logger(name, worker)
  local pid = core.getpid()
  return function(level, msg)
    local t = core.time()
    local ts = os.date("!%Y-%m-%dT%H:%M:%S", math.floor(t)) .. (".%03dZ"):format(math.floor((t % 1) * 1000))
    io.stderr:write(cjson.encode { ts = ts, level = level, msg = msg, app = name, pid = pid, worker = worker }, "\n")
  end
end

-- The text log of worker N: the usual line, saying which worker wrote it.
function M.worker_logger(worker)
  local tag = ("sluice worker %d "):format(worker)
  return function(level, msg)
    io.stderr:write(os.date("%Y-%m-%d %H:%M:%S "), tag, level, ": ", msg, "\n")
  end
end

return M
