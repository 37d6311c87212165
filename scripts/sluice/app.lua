-- The app: declarations (routes, HTTP handlers, consumers) and the runtime
-- that serves them (loop, server, producer, consumers, embedded broker).
--
-- Declarations and runtime are kept apart on purpose: handlers are looked
-- up in the declaration tables at each event, so replacing those tables
-- (hot reload) changes behaviour between two events while connections,
-- in-flight produces and consumer positions stay with the runtime.
-- sluice.reload loads new code into a candidate app (declarations only)
-- and swaps them in (docs/reload.md); an app loaded from a file holds its
-- reloader (app._reloader), which the methods below go through.
local core = require "sluice.core"
local util = require "sluice.util"
local Consumer = require "sluice.app.consumer"
local timers = require "sluice.app.timers"
local door = require "sluice.app.door"
local route = require "sluice.app.route"
local check_options = require("sluice.app.options").check
local metrics = require "sluice.metrics"
local ops = require "sluice.ops"
local console = require "sluice.console"
local cjson = require "cjson"

local json = cjson.new()
json.encode_sparse_array(true)

local App = {}
App.__index = App
-- Methods kept in files of their own: starting the runtime, subscriptions.
for _, part in ipairs { require "sluice.app.start", (require "sluice.app.subscriptions") } do
  for name, fn in pairs(part) do App[name] = fn end
end

-- New code being loaded by a reload must not start anything (it may
-- still be rejected): raised at the user's line, the first frame outside
-- this file.
local function candidate_io_error()
  local here = debug.getinfo(1, "S").source
  local level = 2
  while true do
    local info = debug.getinfo(level, "S")
    if not info or info.source ~= here then break end
    level = level + 1
  end
  error("app:start, run, step, produce and connect are not available while a " ..
    "reload loads the new code (call them from handlers or timers)", level)
end

-- Records in flight to Kafka above which the gateway stops reading
-- WebSockets (it resumes at half). Ingest measured ~1.3-1.4x faster than
-- with 50,000 (less CPU per row: fewer rows in flight to touch), and it
-- still allows 500,000 rows/s at 20 ms produce latency. docs/reliability.md.
local DEFAULT_MAX_IN_FLIGHT = 10000

-- The directory of the file that called sluice.app, for relative paths.
-- Unknown when that file tail-called it (`return sluice.app{...}`): its
-- frame is gone, and the caller's caller would be a wrong guess.
local function caller_dir(level)
  local here = debug.getinfo(level, "S")
  local ok, t = pcall(debug.getinfo, level, "t")
  if ok and t and t.istailcall then return nil end
  local info = here and debug.getinfo(level + 1, "S")
  return util.source_dir(info and info.source)
end

-- options: see docs/api.md. overrides: the command line's. level: for errors.
-- While a hot reload loads new code, sluice.reload makes the new app a
-- candidate: it only collects declarations until it is adopted.
function App.new(options, overrides, level)
  options = options or {}
  if type(options) ~= "table" then
    error(("bad argument #1 to 'app' (table expected, got %s)"):format(type(options)), level + 1)
  end
  check_options(options, level + 1)
  overrides = overrides or {}
  local self = setmetatable({
    options = util.copy(options),
    overrides = overrides,
    base_dir = caller_dir(level + 1) or overrides.app_dir or ".",
    name = options.name or "sluice",
    -- declarations
    routes = {},        -- path → { open, message, close, route }
    _declared = {},     -- path → its compiled route declaration (sluice.app.route)
    http_routes = {},   -- "METHOD path" → handler
    doors = {},         -- "ws path" / "http METHOD path" → what is checked first (sluice.app.door)
    _admitted = {},     -- conn id → { auth, protocol }, from its upgrade until it opens
    consumer_decls = {},
    -- runtime
    started = false,
    conns_by_path = {}, -- path → { [conn] = true }
    consumers = {},
    counters = { consumed = 0 },
    metrics = metrics.registry(),   -- app:metric (a reload keeps the running app's)
    _metrics_cfg = metrics.config(options.metrics),
    -- hot reload (sluice.reload)
    state = {},         -- survives reloads
    timers = timers.set(),   -- this generation's timers (sluice.app.timers)
    generation = 1,
    loaded_at = os.time(),
    reload_stats = { reloads = 0, failures = 0 },
    _where = {},        -- "ws /path" → "file:line" of the declaration
    _retired_routes = {}, -- routes the last reload removed (their close handlers)
  }, App)
  return self
end

-- Where the caller's caller declared something, for reload error messages.
local function where(level)
  local info = debug.getinfo(level + 1, "Sl")
  if not info or info.currentline < 0 then return "?" end
  return ("%s:%d"):format(info.short_src, info.currentline)
end

-- ---- declarations --------------------------------------------------------

-- The keys of an app:ws handlers table and app:http options; any other
-- is a typo, refused.
local WS_KEYS = { open = true, message = true, close = true, route = true, auth = true,
  origins = true, protocols = true, rate = true }
local HTTP_KEYS = { auth = true, origins = true }
local CONSUME_KEYS = { group = true, from = true, broadcast = true, rebalance = true,
  batch = true, kafka = true, manual = true }
-- A route's rate = { messages =, bytes =, burst =, burst_bytes =, policy = }
-- (docs/api.md); raised at the app:ws call.
local RATE_KEYS = { messages = true, bytes = true, burst = true, burst_bytes = true, policy = true }
local function check_rate(rate)
  -- level 4: bad, check_rate, App:ws, then the caller of app:ws
  local function bad(msg) error(("bad argument #2 to 'ws' (rate: %s)"):format(msg), 4) end
  if type(rate) ~= "table" then bad("a table expected, got " .. type(rate)) end
  for k, v in pairs(rate) do
    if not RATE_KEYS[k] then bad(("unknown field '%s' (messages, bytes, burst, burst_bytes, policy)"):format(tostring(k))) end
    if k ~= "policy" and (type(v) ~= "number" or not (v > 0) or v == math.huge) then
      bad(("'%s' must be a positive number"):format(k))
    end
  end
  if rate.policy ~= nil and rate.policy ~= "pause" and rate.policy ~= "close" then
    bad("policy must be \"pause\" or \"close\"")
  end
  if not rate.messages and not rate.bytes then bad("give messages or bytes (per second)") end
end

function App:ws(path, handlers)
  util.check(1, "ws", path, "string")
  util.check(2, "ws", handlers, "table")
  util.check_keys(handlers, WS_KEYS, "ws", 2, "key")
  for _, k in ipairs({ "open", "message", "close" }) do
    if handlers[k] ~= nil and type(handlers[k]) ~= "function" then
      util.argerror(2, "ws", ("handler '%s' must be a function, got %s"):format(k, type(handlers[k])))
    end
  end
  self.doors["ws " .. path] = door.compile(handlers, "ws", 2)
  if handlers.rate ~= nil then check_rate(handlers.rate) end
  if handlers.route ~= nil then
    self._declared[path] = route.compile(self, handlers.route, handlers.message ~= nil, 2)
  else
    self._declared[path] = nil
  end
  self.routes[path] = handlers
  self._where["ws " .. path] = where(2)
  if self.started and not self._candidate then route.declare_all(self) end
  return self
end

-- app:metric(name, { type = "counter"|"gauge"|"histogram", help =, labels =,
-- buckets = }) → a metric with inc/set/dec/observe, served on /metrics.
function App:metric(name, spec)
  return self.metrics:metric(name, spec)
end

-- options: auth, origins (sluice.app.door).
function App:http(method, path, handler, options)
  util.check(1, "http", method, "string")
  util.check(2, "http", path, "string")
  util.check(3, "http", handler, "function")
  util.check(4, "http", options, "table", true)
  local key = method:upper() .. " " .. path
  if options then
    util.check_keys(options, HTTP_KEYS, "http", 4)
    self.doors["http " .. key] = door.compile(options, "http", 2)
  else
    self.doors["http " .. key] = nil
  end
  self.http_routes[key] = handler
  self._where["http " .. method:upper() .. " " .. path] = where(2)
  return self
end

-- ---- starting ------------------------------------------------------------

-- Start listening and connect to Kafka. Returns self, or nil, err, code
-- (everything started so far is shut down again).
function App:start()
  if self.started then return self end
  if self._candidate then candidate_io_error() end
  if self.closed then return nil, "CLOSED: the app was closed", "CLOSED" end
  local o, ov = self.options, self.overrides
  local handler_timeout = o.handler_timeout
  if handler_timeout == nil then handler_timeout = 10 end   -- docs/limits.md
  local log = o.log
  if not log and ov.log_format == "json" then log = ops.json_logger(self.name, ov.worker)
  elseif not log and ov.worker then log = ops.worker_logger(ov.worker) end
  local loop, err, code = core.loop { log = log, log_level = o.log_level or ov.log_level or "info",
    handler_timeout = handler_timeout, handler_instructions = o.handler_instructions }
  if not loop then return nil, err, code end
  self.loop = loop
  -- "As of the app's start" for broadcast consumers: before the port answers.
  self.started_ms = core.time_ms()

  -- The server first: a port in use is the likeliest failure, and it
  -- should be the only thing the user reads.
  local ok
  ok, err, code = self:_start_server()
  if ok then ok, err, code = self:_start_metrics() end
  if ok then ok, err, code = self:_start_kafka() end
  -- Modules that need the cluster known refuse here (sluice.stream's
  -- exactly-once on the embedded broker): app:start fails with their error.
  for _, check in ipairs(self._start_checks or {}) do
    if ok then ok, err, code = check(self) end
  end
  if not ok then
    self:_teardown()
    return nil, err, code
  end
  -- Said once everything is up, so a failure is never read after it.
  if self._listening then self.loop:log("info", self._listening) end
  self:_start_console()
  self.started = true
  if next(self._declared) then route.declare_all(self) end
  for _, decl in ipairs(self.consumer_decls) do
    if not decl.consumer.closed then
      local started, cerr = Consumer.start(self, decl)
      if not started then self:_log("error", ("consumer of %s: %s"):format(table.concat(decl.topics, ","), cerr)) end
    end
  end
  for topic in pairs(self._feed_decls or {}) do
    local started, ferr = self:_feed(topic)
    if not started then self:_log("error", ("feed of %s: %s"):format(topic, ferr)) end
  end
  self:_guard_collection()
  return self
end

-- Handlers still run while the app shuts down (a signal closed it): for
-- them a closed app is an expected failure, not misuse.
function App:_ensure_started()
  if self.closed then return nil, "CLOSED: the app was closed", "CLOSED" end
  if self.started then return true end
  if self._candidate then candidate_io_error() end
  return self:start()
end

-- ---- Kafka ---------------------------------------------------------------

function App:_producer()
  if self.producer then return self.producer end
  local ok, err, code = self:_ensure_started()
  if not ok then return nil, err, code end
  local max_in_flight = self.options.max_in_flight or DEFAULT_MAX_IN_FLIGHT
  local producer
  local st = self._metrics_cfg and self._metrics_cfg.kafka_statistics
  producer, err, code = core.producer(self.loop, {
    props = self:_kafka_props(st and { ["statistics.interval.ms"] = tostring(math.floor(st * 1000)) }),
    high_water = max_in_flight, low_water = math.max(1, math.floor(max_in_flight / 2)),
  }, {
    -- Backpressure: stop reading WebSockets while Kafka catches up.
    pressure = function(high)
      if self.server then self.server:pause_reading(high) end
      self.loop:log(high and "warn" or "info", high
        and "Kafka is behind: pausing reads from WebSocket clients"
        or "Kafka caught up: resuming reads from WebSocket clients")
    end,
    -- Logged as without a handler; also read by /healthz/ready.
    error = function(err, fatal)
      ops.kafka_error(self, err)
      self.loop:log(fatal and "error" or "warn", "kafka producer: " .. err)
    end,
  })
  if not producer then return nil, err, code end
  self.producer = producer
  self:_guard_collection()
  if next(self._declared) then route.declare_all(self) end
  return producer
end

local function to_bytes(v, what, fname)
  local t = type(v)
  if v == nil or t == "string" then return v end
  if t == "number" then return tostring(v) end
  util.argerror(2, fname, ("record %s must be a string or number, got %s"):format(what, t))
end

-- on_delivery(err, report, context): pass one shared function and the
-- per-record data as `context` rather than a new closure per record
-- (closures cost an allocation and stop LuaJIT's trace compiler).
function App:produce(topic, record, on_delivery, context)
  if type(topic) ~= "string" then util.check(1, "produce", topic, "string") end
  if on_delivery ~= nil and type(on_delivery) ~= "function" then
    util.check(3, "produce", on_delivery, "function", true)
  end
  local key, value, headers, partition, timestamp
  local rt = type(record)
  if rt == "string" then
    value = record
  elseif rt == "table" then
    key = to_bytes(record.key, "key", "produce")
    value = to_bytes(record.value, "value", "produce")
    headers, partition, timestamp = record.headers, record.partition, record.timestamp
    if headers ~= nil and type(headers) ~= "table" then
      util.argerror(2, "produce", "record headers must be a table")
    end
  else
    util.argerror(2, "produce", ("string or table expected, got %s"):format(rt))
  end
  if self._taps then console.tap_record(self, "produce", topic, key, value) end
  local producer = self.producer
  if not producer then
    local err, code
    producer, err, code = self:_producer()
    if not producer then return nil, err, code end
  end
  return producer:send(topic, key, value, headers, partition, timestamp, on_delivery, context)
end

-- prepare (sluice.stream's, not documented): prepare(start) runs before the
-- Kafka consumer starts (when the app starts) and calls start() once it may.
function App:consume(topics, options, handler, prepare)
  if type(options) == "function" and handler == nil then options, handler = {}, options end
  if type(topics) == "string" then topics = { topics } end
  util.check(1, "consume", topics, "table")
  util.check(2, "consume", options, "table", true)
  util.check(3, "consume", handler, "function")
  options = options or {}
  util.check_keys(options, CONSUME_KEYS, "consume", 2)
  for i, t in ipairs(topics) do
    if type(t) ~= "string" then util.argerror(1, "consume", ("topic #%d must be a string"):format(i)) end
  end
  if #topics == 0 then util.argerror(1, "consume", "no topics given") end
  local bad_from = Consumer.from_error(options)
  if bad_from then util.argerror(2, "consume", bad_from) end
  if options.rebalance ~= nil and type(options.rebalance) ~= "function" then
    util.argerror(2, "consume", "rebalance must be a function")
  end
  if options.batch ~= nil and type(options.batch) ~= "boolean" then
    util.argerror(2, "consume", "batch must be a boolean")
  end
  local decl = { topics = topics, options = options, handler = handler, prepare = prepare }
  decl.consumer = Consumer.new(decl)
  self.consumer_decls[#self.consumer_decls + 1] = decl
  if self.started then
    local ok, err, code = Consumer.start(self, decl)
    if not ok then return nil, err, code end
  end
  return decl.consumer
end

-- ---- WebSocket helpers, timers, clients ----------------------------------

-- path: a route, a connection set (core.conn_set()), or a table of
-- connections ({[conn] = true} or {[id] = conn}).
function App:broadcast(path, data, binary)
  if type(path) == "userdata" and (getmetatable(path) or {}).__name == "sluice.ws.conn_set" then
    util.check(2, "broadcast", data, "string")
    return path:broadcast(data, binary) or 0
  end
  if type(path) ~= "table" then
    util.check(1, "broadcast", path, "string")
    util.check(2, "broadcast", data, "string")
    -- The route's connections as the server keeps them: one pass in C.
    return self.server and self.server:broadcast(path, data, binary) or 0
  end
  util.check(2, "broadcast", data, "string")
  -- One copy of data, shared by every connection's send queue.
  return core.broadcast(path, data, binary) or 0
end

function App:timer(ms, fn, repeat_ms)
  util.check(1, "timer", ms, "number")
  util.check(2, "timer", fn, "function")
  util.check(3, "timer", repeat_ms, "number", true)
  -- New code being loaded: declared now, started when it is adopted.
  if self._candidate then return timers.declare(self._timer_decls, ms, fn, repeat_ms) end
  local ok, err, code = self:_ensure_started()
  if not ok then return nil, err, code end
  return timers.start(self, ms, fn, repeat_ms)
end

function App:connect(url, handlers)
  util.check(1, "connect", url, "string")
  util.check(2, "connect", handlers, "table")
  local ok, err, code = self:_ensure_started()
  if not ok then return nil, err, code end
  return core.connect(self.loop, url, handlers)
end

-- ---- running -------------------------------------------------------------

function App:step(ms)
  util.check(1, "step", ms, "number", true)
  local ok, err, code = self:_ensure_started()
  if not ok then return nil, err, code end
  ms = ms or 0
  local loop = self.loop
  local deadline = loop:now() + ms
  repeat
    local left = deadline - loop:now()
    if left < 0 then left = 0 end
    if loop:run_once(math.floor(left)) then return true end
  until loop:now() >= deadline
  return true
end

function App:run()
  local ok, err, code = self:_ensure_started()
  if not ok then return nil, err, code end
  self.loop:on_signals(function(sig)
    if sig == "HUP" then
      if self.server and self.server:tls() then self:reload_tls() end
      if self._reloader then self:reload(nil, "SIGHUP")
      elseif not (self.server and self.server:tls()) then
        self.loop:log("info", "SIGHUP: this app was not loaded from a file; nothing to reload")
      end
    else
      self.loop:log("info", ("SIG%s: shutting down"):format(sig))
      self:stop()
    end
  end)
  self.loop:run()
  self:close()
  return true
end

function App:stop()
  if self.loop and self.started then self.loop:stop() end
end

function App:stats()
  local s = {
    connections = self.server and self.server:conn_count() or 0,
    handler_errors = self.loop and self.started and self.loop:handler_errors() or 0,
    produced = 0, delivered = 0, delivery_failed = 0, in_flight = 0,
    consumed = self.counters.consumed, assigned = 0, rebalances = 0,
    generation = self.generation,
  }
  for _, c in ipairs(self.consumers) do
    s.assigned = s.assigned + (c.assigned or 0)
    s.rebalances = s.rebalances + (c.rebalances or 0)
  end
  for _, feed in pairs(self.feeds or {}) do
    s.assigned = s.assigned + #feed.parts
    s.rebalances = s.rebalances + (feed.rebalances or 0)
  end
  if self.producer then
    for k, v in pairs(self.producer:stats()) do s[k] = v end
  end
  return s
end

-- Graceful shutdown: stop accepting, let Kafka confirm or fail everything
-- accepted (acks reach clients), close WebSockets with 1001, commit and
-- leave consumer groups, then free everything.
-- How long a shutdown waits for the clients' replies to its close frames:
-- less than libwebsockets' own 5 s (PENDING_TIMEOUT_CLOSE_ACK), so that
-- the clients still connected then are the ones that never answered.
local CLOSE_REPLY_MS = 4000

function App:close(timeout_ms)
  if self.closed then return end
  self.closed = true
  if not self.started then self:_teardown(); return end
  timeout_ms = timeout_ms or 10000
  local loop = self.loop
  -- Default dispositions again: a second SIGINT/SIGTERM ends a drain that
  -- takes too long at once (what was not answered then is not reported).
  loop:on_signals(nil)
  if self.server then
    self.server:stop_listening()
    self.server:pause_reading(true)
  end
  local s = self.producer and self.producer:stats() or { in_flight = 0, produced = 0 }
  loop:log("info", ("draining: no new connections or messages; %d of the %d records accepted await Kafka's answer")
    :format(s.in_flight, s.produced))
  if self.producer then
    local left = self.producer:flush(timeout_ms)
    if left > 0 then
      loop:log("warn", ("%d records still unconfirmed after %d ms; reported as failed"):format(left, timeout_ms))
      -- Purge now, while their clients are still connected to hear it.
      self.producer:close()
      self.producer = nil
    end
  end
  if self.server then
    -- Each connection reads again until the client answers our close.
    self.server:close_all(1001, "server shutting down")
    local deadline = loop:now() + CLOSE_REPLY_MS
    while self.server:conn_count() > 0 and loop:now() < deadline do loop:run_once(50) end
    local left = self.server:conn_count()
    if left > 0 then
      loop:log("warn", ("%d WebSocket client%s did not answer the close within %d ms; closed anyway")
        :format(left, left == 1 and "" or "s", CLOSE_REPLY_MS))
    end
  end
  self:_teardown()
end

-- Free runtime objects in dependency order. Safe on a partial start.
local CONSUMER_CLOSE_MS, CONSUMER_CLOSE_MIN_MS = 5000, 500
function App:_teardown()
  if self._reloader then self._reloader:unwatch() end
  if self._tls_watch then self._tls_watch:close(); self._tls_watch = nil end
  console.stop(self)
  for t in pairs(self.timers) do t:close() end
  if self._sse_timer then self._sse_timer:close(); self._sse_timer = nil end
  -- Commit and leave the groups within one budget: with the brokers gone
  -- each close would otherwise wait its own timeout (docs/reliability.md).
  local deadline = self.loop and self.loop:now() + CONSUMER_CLOSE_MS
  for _, c in ipairs(self.consumers) do
    c:close(deadline and math.floor(math.max(CONSUMER_CLOSE_MIN_MS, deadline - self.loop:now())))
  end
  self.consumers = {}
  -- Modules' own Kafka clients (sluice.stream's transactional producers),
  -- after the consumers whose revocation commits through them.
  for _, close in ipairs(self._teardown_hooks or {}) do close() end
  self._teardown_hooks = nil
  for _, feed in pairs(self.feeds or {}) do feed:close() end
  self.feeds = nil
  if self.producer then self.producer:close(); self.producer = nil end
  if self.server then self.server:close(); self.server = nil end
  if self.metrics_server then self.metrics_server:close(); self.metrics_server = nil end
  if self.broker then self.broker:close(); self.broker = nil end
  if self.loop then self.loop:close(); self.loop = nil end
  self.started = false
end

-- ---- hot reload (sluice.reload does it) ---------------------------------

local function iso_time(t)
  return os.date("!%Y-%m-%dT%H:%M:%SZ", t)
end

-- What GET /_sluice/health answers.
function App:health()
  local rs = self.reload_stats
  local last = rs.last
  return {
    status = rs.last_error and "reload_failed" or "ok",
    generation = self.generation,
    loaded_at = iso_time(self.loaded_at),
    reloads = rs.reloads,
    reload_failures = rs.failures,
    last_reload_error = rs.last_error or json.null,
    last_reload = last and {
      ok = last.ok, at = iso_time(last.at), files = last.files,
      load_ms = last.load_ms, swap_ms = last.swap_ms, error = last.error,
    } or json.null,
    watching = self._reloader and self._reloader:watching() or 0,
    files = self._reloader and self._reloader:files() or {},
    connections = self.server and self.server:conn_count() or 0,
  }
end

-- app:on_reload(fn): fn(previous_state, info) runs when this code replaces
-- older code, before the swap; it returns the new state (nil: keep it).
function App:on_reload(fn)
  util.check(1, "on_reload", fn, "function")
  self._on_reload = fn
  return self
end

local NOT_LOADED = "STATE: this app was not loaded from a file (use `sluice run` or sluice.load)"

-- Load the app's files again and, if the new code is sound, swap it in.
-- Returns the new generation, or nil, "RELOAD: file:line: message", "RELOAD".
function App:reload(files, reason)
  util.check(1, "reload", files, "table", true)
  if not self._reloader then return nil, NOT_LOADED, "STATE" end
  return self._reloader:reload(files, reason or "app:reload()")
end

-- Watch every Lua file the app loaded from its directory tree; reload
-- when one changes. opts.debounce: quiet time in ms (default 100).
function App:watch(opts)
  util.check(1, "watch", opts, "table", true)
  if not self._reloader then return nil, NOT_LOADED, "STATE" end
  local ok, err, code = self._reloader:watch(opts or {})
  if ok and self.server and self.server:tls() and not self._tls_watch then
    -- the certificate and key too (renewed in place, or renamed over)
    local files = self:_tls_files()
    local w
    w, err, code = core.fswatch(self.loop, { debounce = (opts or {}).debounce }, function()
      self:reload_tls()
    end)
    if not w then return nil, err, code end
    for _, f in ipairs({ files.cert, files.key }) do
      local added, aerr, acode = w:add(f)
      if not added then w:close(); return nil, aerr, acode end
    end
    self._tls_watch = w
  end
  return ok, err, code
end

-- Close on collection, on every Lua. A started app is kept alive by the
-- callbacks its C objects hold, so in practice this runs when the
-- interpreter exits (lua_close finalizes everything). Finalizers run in
-- the reverse order of their objects' creation, so the guard is made anew
-- after each C object the app creates: it then closes the app in order
-- (flush, close the WebSockets, free) before any of those is finalized.
function App:_guard_collection()
  if self._collector then self._collector.armed = false end
  local guard = { armed = true }
  guard.sentinel = util.on_collect(function()
    if guard.armed and not self.closed then pcall(self.close, self) end
  end)
  self._collector = guard
end

-- `local app <close> = sluice.app {...}` (Lua 5.4).
App.__close = function(self) if not self.closed then self:close() end end

return App
