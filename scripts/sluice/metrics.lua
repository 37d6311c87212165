-- Prometheus metrics: the app's own (app:metric) and the gateway's,
-- collected when scraped, written in the text exposition format 0.0.4.
-- docs/operations.md lists every metric.
local core = require "sluice.core"
local util = require "sluice.util"

local M = {}

M.CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

local NAME = "^[a-zA-Z_:][a-zA-Z0-9_:]*$"
local LABEL = "^[a-zA-Z_][a-zA-Z0-9_]*$"
local TYPES = { counter = true, gauge = true, histogram = true }
local DEFAULT_BUCKETS = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 }

local function num(v)
  if v ~= v then return "NaN" end
  if v == math.huge then return "+Inf" end
  if v == -math.huge then return "-Inf" end
  if v == math.floor(v) and v > -2^53 and v < 2^53 then return ("%d"):format(v) end
  local short = ("%.15g"):format(v)
  if tonumber(short) == v then return short end
  return ("%.17g"):format(v)
end

local function escape_value(v)
  return (tostring(v):gsub("[\\\n\"]", { ["\\"] = "\\\\", ["\n"] = "\\n", ['"'] = '\\"' }))
end

local function escape_help(v)
  return (tostring(v):gsub("[\\\n]", { ["\\"] = "\\\\", ["\n"] = "\\n" }))
end

-- `name="value",...` in the family's label order ("" for none).
-- Raised at the caller of inc/set/observe/value (our caller's caller).
local function label_text(names, values, fname)
  if #names == 0 then return "" end
  if type(values) ~= "table" then
    error(("bad argument #2 to '%s' (labels table expected, got %s)"):format(fname, type(values)), 3)
  end
  local parts = {}
  for i, n in ipairs(names) do
    local v = values[n]
    if v == nil then error(("bad argument #2 to '%s' (label '%s' missing)"):format(fname, n), 3) end
    parts[i] = ('%s="%s"'):format(n, escape_value(v))
  end
  return table.concat(parts, ",")
end

-- ---- writing families ----------------------------------------------------

-- A family being written: out is a list of lines.
local function family(out, name, mtype, help)
  out[#out + 1] = ("# HELP %s %s"):format(name, escape_help(help))
  out[#out + 1] = ("# TYPE %s %s"):format(name, mtype)
end

local function sample(out, name, labels, value)
  if labels and labels ~= "" then
    out[#out + 1] = ("%s{%s} %s"):format(name, labels, num(value))
  else
    out[#out + 1] = ("%s %s"):format(name, num(value))
  end
end

local function join(a, b)
  if a == "" then return b end
  return a .. "," .. b
end

-- counts[i]: observations in bucket i (not cumulative), the last above
-- every bound.
local function histogram(out, name, labels, bounds, counts, sum, count)
  local acc = 0
  for i, le in ipairs(bounds) do
    acc = acc + counts[i]
    sample(out, name .. "_bucket", join(labels, ('le="%s"'):format(num(le))), acc)
  end
  sample(out, name .. "_bucket", join(labels, 'le="+Inf"'), count)
  sample(out, name .. "_sum", labels, sum)
  sample(out, name .. "_count", labels, count)
end

-- ---- the app's own metrics ----------------------------------------------

local Metric = {}
Metric.__index = Metric

function Metric:inc(n, labels)
  if type(n) == "table" then n, labels = 1, n end
  n = n or 1
  if type(n) ~= "number" then util.check(1, "inc", n, "number") end
  if self.type == "counter" and n < 0 then util.argerror(1, "inc", "a counter only goes up") end
  if self.type == "histogram" then error("bad self to 'inc' (a histogram takes observe)", 2) end
  local key = #self.labels == 0 and "" or label_text(self.labels, labels, "inc")
  self.values[key] = (self.values[key] or 0) + n
end

function Metric:set(v, labels)
  if self.type ~= "gauge" then error(("bad self to 'set' (a %s cannot be set)"):format(self.type), 2) end
  util.check(1, "set", v, "number")
  local key = #self.labels == 0 and "" or label_text(self.labels, labels, "set")
  self.values[key] = v
end

function Metric:dec(n, labels)
  if self.type ~= "gauge" then error(("bad self to 'dec' (a %s only goes up)"):format(self.type), 2) end
  if type(n) == "table" then n, labels = 1, n end
  return self:inc(-(n or 1), labels)
end

function Metric:observe(v, labels)
  if self.type ~= "histogram" then error(("bad self to 'observe' (not a histogram: %s)"):format(self.type), 2) end
  util.check(1, "observe", v, "number")
  local key = #self.labels == 0 and "" or label_text(self.labels, labels, "observe")
  local h = self.values[key]
  if not h then
    h = { counts = {}, sum = 0, count = 0 }
    for i = 1, #self.buckets do h.counts[i] = 0 end
    self.values[key] = h
  end
  for i, le in ipairs(self.buckets) do
    if v <= le then h.counts[i] = h.counts[i] + 1; break end
  end
  h.sum = h.sum + v
  h.count = h.count + 1
end

-- The value of a counter or gauge with these labels (nil: never set).
function Metric:value(labels)
  local key = #self.labels == 0 and "" or label_text(self.labels, labels, "value")
  return self.values[key]
end

function Metric:_write(out)
  family(out, self.name, self.type, self.help)
  local keys = {}
  for k in pairs(self.values) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do
    local v = self.values[k]
    if self.type == "histogram" then
      histogram(out, self.name, k, self.buckets, v.counts, v.sum, v.count)
    else
      sample(out, self.name, k, v)
    end
  end
end

local Registry = {}
Registry.__index = Registry

function M.registry()
  return setmetatable({ byname = {}, order = {} }, Registry)
end

-- registry:metric(name, { type =, help =, labels = {...}, buckets = {...} })
-- The same name again (new code after a reload) returns the same metric,
-- values kept, if it is declared the same way.
function Registry:metric(name, spec)
  util.check(1, "metric", name, "string")
  util.check(2, "metric", spec, "table", true)
  spec = spec or {}
  if not name:match(NAME) then
    util.argerror(1, "metric", ("'%s' is not a Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)"):format(name))
  end
  if name:match("^sluice_") or name:match("^process_") then
    util.argerror(1, "metric", ("'%s': the sluice_ and process_ prefixes are the gateway's"):format(name))
  end
  local mtype = spec.type or "counter"
  if not TYPES[mtype] then util.argerror(2, "metric", "type must be \"counter\", \"gauge\" or \"histogram\"") end
  local labels = spec.labels or {}
  util.check(2, "metric", labels, "table")
  for _, l in ipairs(labels) do
    if type(l) ~= "string" or not l:match(LABEL) or l:match("^__") or (mtype == "histogram" and l == "le") then
      util.argerror(2, "metric", ("bad label name '%s'"):format(tostring(l)))
    end
  end
  local buckets = spec.buckets or DEFAULT_BUCKETS
  if mtype == "histogram" then
    for i, b in ipairs(buckets) do
      if type(b) ~= "number" or (i > 1 and b <= buckets[i - 1]) then
        util.argerror(2, "metric", "buckets must be increasing numbers")
      end
    end
  end
  local shape = ("%s|%s|%s"):format(mtype, table.concat(labels, ","),
    mtype == "histogram" and table.concat(buckets, ",") or "")
  local old = self.byname[name]
  if old then
    if old.shape ~= shape then
      util.argerror(1, "metric", ("'%s' is already declared as another %s"):format(name,
        old.type == mtype and "label set or buckets" or "type (" .. old.type .. ")"))
    end
    old.help = spec.help or old.help
    return old
  end
  local m = setmetatable({
    name = name, type = mtype, help = spec.help or name, labels = util.copy(labels),
    buckets = util.copy(buckets), values = {}, shape = shape,
  }, Metric)
  self.byname[name] = m
  self.order[#self.order + 1] = m
  return m
end

function Registry:write(out)
  for _, m in ipairs(self.order) do m:_write(out) end
end

-- ---- the gateway's metrics ----------------------------------------------

-- "message handler" → "message", "file watch callback" → "file_watch"
local function handler_label(what)
  return (what:gsub(" handler$", ""):gsub(" callback$", ""):gsub(" ", "_"))
end

local function write_routes(out, app)
  local routes = app.server and app.server:routes() or {}
  local defs = {
    { "sluice_ws_connections", "gauge", "WebSocket connections open now", "connections" },
    { "sluice_ws_connections_opened_total", "counter", "WebSocket connections accepted", "opened" },
    { "sluice_ws_messages_received_total", "counter", "WebSocket messages received from clients", "messages_in" },
    { "sluice_ws_received_bytes_total", "counter", "Payload bytes of the messages received", "bytes_in" },
    { "sluice_ws_messages_sent_total", "counter", "WebSocket messages queued to clients", "messages_out" },
    { "sluice_ws_sent_bytes_total", "counter", "Payload bytes of the messages queued to clients", "bytes_out" },
    { "sluice_ws_send_queue_bytes", "gauge", "Bytes waiting in the send queues of the route's connections", "queued_bytes" },
    { "sluice_ws_rate_paused_total", "counter", "Times a connection's reading was paused by its rate limit", "rate_paused" },
    { "sluice_ws_rate_closed_total", "counter", "Connections closed with 1008 by their rate limit", "rate_closed" },
  }
  for _, d in ipairs(defs) do
    family(out, d[1], d[2], d[3] .. ", by route.")
    for _, r in ipairs(routes) do
      sample(out, d[1], ('route="%s"'):format(escape_value(r.path)), r[d[4]])
    end
  end
end

local function write_producer(out, app)
  local p = app.producer
  local topics = p and p:topics() or {}
  local defs = {
    { "sluice_kafka_produced_total", "Records accepted for Kafka", "produced" },
    { "sluice_kafka_delivered_total", "Records Kafka acknowledged", "delivered" },
    { "sluice_kafka_delivery_failed_total", "Records reported failed", "delivery_failed" },
  }
  for _, d in ipairs(defs) do
    family(out, d[1], "counter", d[2] .. ", by topic.")
    for _, t in ipairs(topics) do sample(out, d[1], ('topic="%s"'):format(escape_value(t.topic)), t[d[3]]) end
  end
  for _, refused in ipairs({ false, true }) do
    local name = refused and "sluice_kafka_produce_refused_total" or "sluice_kafka_delivery_errors_total"
    family(out, name, "counter", refused
      and "Records refused when produced (not accepted), by topic and error code."
      or "Records whose delivery failed, by topic and error code.")
    for _, t in ipairs(topics) do
      for _, e in ipairs(t.errors) do
        if e.refused == refused then
          sample(out, name, ('topic="%s",code="%s"'):format(escape_value(t.topic), e.code), e.count)
        end
      end
    end
  end
  family(out, "sluice_kafka_in_flight_records", "gauge", "Records accepted and not yet acknowledged or failed.")
  sample(out, "sluice_kafka_in_flight_records", nil, p and p:in_flight() or 0)
  -- librdkafka's statistics, when statistics.interval.ms is set.
  local stats = p and p:statistics()
  local ok, decoded = false, nil
  if stats then ok, decoded = pcall(require("cjson").decode, stats) end
  family(out, "sluice_kafka_broker_rtt_seconds", "gauge",
    "Producer round-trip time to each broker over the last statistics window (librdkafka statistics; needs statistics.interval.ms).")
  if ok and type(decoded) == "table" and type(decoded.brokers) == "table" then
    local names = {}
    for name, b in pairs(decoded.brokers) do
      if type(b) == "table" and b.nodeid and b.nodeid >= 0 and type(b.rtt) == "table" then names[#names + 1] = name end
    end
    table.sort(names)
    for _, name in ipairs(names) do
      local rtt = decoded.brokers[name].rtt
      for _, q in ipairs({ { "0.5", "p50" }, { "0.99", "p99" } }) do
        sample(out, "sluice_kafka_broker_rtt_seconds",
          ('broker="%s",quantile="%s"'):format(escape_value(name), q[1]), (rtt[q[2]] or 0) / 1e6)
      end
    end
  end
end

local function write_consumers(out, app)
  family(out, "sluice_kafka_consumed_total", "counter", "Records handed to consume handlers.")
  sample(out, "sluice_kafka_consumed_total", nil, app.counters.consumed)
  local rows = {}
  for _, c in ipairs(app.consumers) do
    local core_c = c.core
    if core_c and not c.closed then
      local group = c.group or ""
      for _, l in ipairs(core_c:lag()) do
        rows[#rows + 1] = { ('group="%s",topic="%s",partition="%d"'):format(
          escape_value(group), escape_value(l.topic), l.partition), l }
      end
    end
  end
  family(out, "sluice_kafka_consumer_position", "gauge",
    "Next offset handed to the app, per assigned partition (absent until known).")
  for _, r in ipairs(rows) do if r[2].position >= 0 then sample(out, "sluice_kafka_consumer_position", r[1], r[2].position) end end
  family(out, "sluice_kafka_partition_high_watermark", "gauge",
    "End of each assigned partition as of the consumer's last fetch.")
  for _, r in ipairs(rows) do if r[2].high >= 0 then sample(out, "sluice_kafka_partition_high_watermark", r[1], r[2].high) end end
  family(out, "sluice_kafka_consumer_lag_records", "gauge",
    "Records in each assigned partition not yet handed to the app (high watermark - position).")
  for _, r in ipairs(rows) do
    if r[2].high >= 0 and r[2].position >= 0 then
      sample(out, "sluice_kafka_consumer_lag_records", r[1], math.max(0, r[2].high - r[2].position))
    end
  end
  family(out, "sluice_kafka_consumer_assigned_partitions", "gauge", "Partitions assigned to the app's consumers.")
  local assigned = 0
  for _, c in ipairs(app.consumers) do assigned = assigned + (c.assigned or 0) end
  sample(out, "sluice_kafka_consumer_assigned_partitions", nil, assigned)
end

local function write_handlers(out, app)
  local times, bounds = {}, {}
  if app.loop then times, bounds = app.loop:handler_times() end
  local kinds = {}
  for what in pairs(times) do kinds[#kinds + 1] = what end
  table.sort(kinds)
  family(out, "sluice_handler_seconds", "histogram", "Time spent in Lua handlers, by kind of handler.")
  for _, what in ipairs(kinds) do
    local t = times[what]
    histogram(out, "sluice_handler_seconds", ('handler="%s"'):format(handler_label(what)),
      bounds, t.buckets, t.sum, t.count)
  end
  family(out, "sluice_handler_errors_total", "counter", "Lua handlers that raised an error (logged), by kind of handler.")
  for _, what in ipairs(kinds) do
    sample(out, "sluice_handler_errors_total", ('handler="%s"'):format(handler_label(what)), times[what].errors)
  end
end

local function write_reload(out, app)
  local rs = app.reload_stats
  family(out, "sluice_reload_generation", "gauge", "Generation of the code serving (1 at start, +1 per successful reload).")
  sample(out, "sluice_reload_generation", nil, app.generation)
  family(out, "sluice_reloads_total", "counter", "Successful hot reloads.")
  sample(out, "sluice_reloads_total", nil, rs.reloads)
  family(out, "sluice_reload_failures_total", "counter", "Hot reloads refused (the old code kept serving).")
  sample(out, "sluice_reload_failures_total", nil, rs.failures)
end

local function write_process(out)
  local p = core.process()
  local defs = {
    { "process_cpu_seconds_total", "counter", "User and system CPU time spent, in seconds.", "cpu_seconds" },
    { "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", "resident_bytes" },
    { "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", "virtual_bytes" },
    { "process_open_fds", "gauge", "Open file descriptors.", "open_fds" },
    { "process_max_fds", "gauge", "Maximum number of open file descriptors.", "max_fds" },
  }
  for _, d in ipairs(defs) do
    if p[d[4]] then
      family(out, d[1], d[2], d[3])
      sample(out, d[1], nil, p[d[4]])
    end
  end
end

-- ---- configuration and serving -------------------------------------------

-- options.metrics: nil or true (GET /metrics on the app's port), false
-- (none), or { path =, listen = port | "host:port" (a port of its own;
-- then not on the app's), kafka_statistics = seconds }. Returns the
-- settings (nil: off), or nil, message for a bad value.
function M.config(opt)
  if opt == false then return nil end
  if opt == nil or opt == true then opt = {} end
  if type(opt) ~= "table" then return nil, "option 'metrics' must be a boolean or a table" end
  for k in pairs(opt) do
    if k ~= "path" and k ~= "listen" and k ~= "kafka_statistics" then
      return nil, ("unknown metrics option '%s'"):format(tostring(k))
    end
  end
  local path = opt.path or "/metrics"
  if type(path) ~= "string" or path:sub(1, 1) ~= "/" then
    return nil, "metrics.path must be a path starting with /"
  end
  local l = opt.listen
  if l ~= nil and type(l) ~= "number" and not (type(l) == "string" and l:match("^.*:%d+$") or tonumber(l)) then
    return nil, "metrics.listen must be a port or \"host:port\""
  end
  local st = opt.kafka_statistics
  if st ~= nil and (type(st) ~= "number" or st <= 0) then
    return nil, "metrics.kafka_statistics must be a number of seconds above 0"
  end
  return { path = path, listen = l, kafka_statistics = st }
end

-- The whole exposition for app.
function M.exposition(app)
  local out = {}
  family(out, "sluice_info", "gauge", "The sluice version and the Lua it runs on (always 1); worker: its number under --workers.")
  sample(out, "sluice_info", ('version="%s",lua="%s"%s'):format(escape_value(core.version),
    escape_value(jit and jit.version or _VERSION),
    app.overrides.worker and (',worker="%d"'):format(app.overrides.worker) or ""), 1)
  write_routes(out, app)
  write_producer(out, app)
  write_consumers(out, app)
  write_handlers(out, app)
  write_reload(out, app)
  write_process(out)
  app.metrics:write(out)
  out[#out + 1] = ""
  return table.concat(out, "\n")
end

return M
