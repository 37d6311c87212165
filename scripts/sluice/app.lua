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
local Feed = require "sluice.app.feed"
local http = require "sluice.app.http"
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

local function parse_listen(listen)
  if listen == false then return nil end
  if type(listen) == "number" then return nil, listen end
  local host, port = tostring(listen):match("^%[(.*)%]:(%d+)$")   -- "[::]:8080"
  if not host then host, port = tostring(listen):match("^(.*):(%d+)$") end
  if host then return host ~= "" and host or nil, tonumber(port) end
  return nil, tonumber(listen)
end

function App:_log(level, msg)
  if self.loop then self.loop:log(level, msg)
  elseif self.options.log then self.options.log(level, msg)
  elseif self.overrides.log_format == "json" then ops.json_logger(self.name)(level, msg)
  else io.stderr:write(("sluice %s: %s\n"):format(level, msg)) end
end

-- The kafka properties every client of this app gets.
function App:_kafka_props(extra)
  local props = util.string_props(self.options.kafka, "kafka")
  for k, v in pairs(self.overrides.kafka_props or {}) do props[k] = v end   -- sluice run -X
  for k, v in pairs(util.string_props(extra, "kafka")) do props[k] = v end
  props["bootstrap.servers"] = self.kafka_bootstrap
  if props["client.id"] == nil then props["client.id"] = self.name end
  return props
end

-- req:defer() in a WebSocket route's auth.
local function no_defer()
  error("a WebSocket upgrade cannot wait for a deferred answer: libwebsockets 4.1 writes " ..
    "the 101 in the call that asks the route (docs/security.md)", 2)
end

function App:_server_handlers()
  local routes_owner = self
  local by_path = self.conns_by_path
  return {
    accept = function(path) return routes_owner.routes[path] ~= nil end,
    -- Before the 101: origins, subprotocols, the route's auth.
    upgrade = function(req)
      req.defer = no_defer
      local refused, a, b = door.check(routes_owner.doors["ws " .. req.path], req)
      if refused then return refused, a, b end     -- status, reason, headers
      local claims, protocol = a, b
      if claims ~= nil or protocol then routes_owner._admitted[req.id] = { claims, protocol } end
      return true, protocol
    end,
    open = function(conn)
      local path = conn.path
      conn.query = util.decode_query(conn.query_string)
      local admitted = routes_owner._admitted[conn.id]
      if admitted then
        routes_owner._admitted[conn.id] = nil
        conn.auth, conn.protocol = admitted[1], admitted[2]
      end
      local set = by_path[path]
      if not set then set = {}; by_path[path] = set end
      set[conn] = true
      local r = routes_owner.routes[path]
      if r and r.rate then conn:rate_limit(r.rate) end
      if r and r.open then r.open(conn) end
    end,
    -- Only what a declared route did not take reaches this.
    message = function(conn, data, binary)
      if routes_owner._taps then console.tap_message(routes_owner, conn, data) end
      local path = conn.path
      local r = routes_owner.routes[path]
      if r and r.message then return r.message(conn, data, binary) end
      local d = routes_owner._declared[path]
      if d and d.refuse then d.refuse(conn, data, binary) end
    end,
    close = function(conn, code, reason)
      local path = conn.path
      local set = by_path[path]
      if set then set[conn] = nil end
      routes_owner:unsubscribe(conn)
      -- A route removed by a reload still hears about its connections.
      local r = routes_owner.routes[path] or routes_owner._retired_routes[path]
      if r and r.close then r.close(conn, code, reason) end
    end,
    http_match = function(method, path) return http.matches(routes_owner, method, path) end,
    http = function(req) return http.serve(routes_owner, req) end,
  }
end

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

function App:_start_kafka()
  local props = self.options.kafka or {}
  -- Under --workers, with no cluster named: the supervisor's embedded broker.
  local bootstrap = self.overrides.bootstrap or props["bootstrap.servers"] or self.overrides.shared_kafka
  if bootstrap then
    self.kafka_bootstrap, self.bootstrap = bootstrap, bootstrap
    return true
  end
  local emb = self.options.embedded or {}
  local port = self.overrides.embedded_port or emb.port or 9092
  local broker, err, code = core.broker(self.loop, { port = port, partitions = emb.partitions })
  if not broker then
    if code == "ADDRINUSE" then
      err = err .. " (another sluice or a Kafka broker runs there? choose a free port with" ..
        " --embedded-port PORT or embedded = { port = PORT }, or use a cluster with --kafka HOST:PORT)"
    end
    return nil, err, code
  end
  self.broker = broker
  -- Our own clients talk to the mock directly; others use the stable port.
  self.kafka_bootstrap = broker:direct_bootstrap()
  self.bootstrap = broker:bootstrap()   -- the core logs that it is in-memory
  return true
end

function App:_start_server()
  local o = self.options
  local listen = self.overrides.listen
  if listen == nil then listen = o.listen end
  if listen == nil then listen = 8080 end
  local host, port = parse_listen(listen)
  if not port then return true end
  local static = o.static
  if static and static:sub(1, 1) ~= "/" then static = self.base_dir .. "/" .. static end
  local idle = o.idle_timeout
  if idle == false then idle = -1 end
  local tls = self:_tls_files()
  local server, err, code = core.server(self.loop, {
    host = host, port = port, static = static, max_message = o.max_message,
    max_body = o.max_body, idle_timeout = idle, send_queue = o.send_queue,
    max_connections = o.max_connections, max_per_address = o.max_connections_per_address,
    handshake_timeout = o.handshake_timeout, max_pending = o.max_pending,
    deflate = o.deflate or nil,
    tls_cert = tls.cert, tls_key = tls.key, tls_ca = tls.ca,
    reuseport = self.overrides.worker ~= nil,   -- --workers: every worker on one port
  }, self:_server_handlers())
  if not server then
    if code == "ADDRINUSE" then err = err .. " (choose another with --listen PORT or listen = PORT)" end
    return nil, err, code
  end
  self.server = server
  self.port = server:port()
  host = host or "0.0.0.0"
  if host:find(":", 1, true) then host = "[" .. host .. "]" end   -- an IPv6 address in a URL
  self._listening = ("listening on %s://%s:%d/ (WebSocket and HTTP%s)"):format(
    server:tls() and "https" or "http", host, self.port,
    server:tls() and (" over TLS" .. (tls.ca and ", client certificates required" or "")) or "")
  return true
end

-- The TLS files: the command line's (--tls-cert, --tls-key, --tls-ca),
-- else the app's tls option, whose relative paths are the app's.
function App:_tls_files()
  local ov = self.overrides
  if ov.tls_cert or ov.tls_key or ov.tls_ca then
    return { cert = ov.tls_cert, key = ov.tls_key, ca = ov.tls_ca }
  end
  local out = {}
  for k, v in pairs(self.options.tls or {}) do
    out[k] = v:sub(1, 1) == "/" and v or (self.base_dir .. "/" .. v)
  end
  return out
end

-- Read the certificate and key again (SIGHUP, --watch): new connections
-- get them, open ones keep theirs. Returns true, or nil, err, code (the
-- previous pair still serves).
function App:reload_tls()
  if not (self.server and self.server:tls()) then
    return nil, "STATE: this app does not serve TLS", "STATE"
  end
  local ok, err, code = self.server:reload_tls()
  if ok then self.loop:log("info", "TLS certificate and key reloaded")
  else
    self.loop:log("error", "TLS reload failed, the previous certificate still serves: " .. err:gsub("^%u+: ", ""))
  end
  return ok, err, code
end

function App:_start_metrics()
  local ms, err, code = ops.listen(self, parse_listen)
  if not ms then return nil, "metrics.listen: " .. err, code end
  if ms ~= true then
    self.metrics_server = ms
    self.metrics_port = ms:port()
  end
  return true
end

-- The console (`sluice attach`): the command line's choice, else the
-- app's `console` option, else on for `sluice run`. A console that cannot
-- start is said, and the app serves without it.
function App:_start_console()
  local ov = self.overrides
  local want = ov.console
  if want == nil then want = self.options.console end
  if want == nil then want = ov.console_default end
  if not want then return end
  local path = type(want) == "string" and want or nil
  -- Under --workers, one socket per worker: SUPERVISOR-N.sock, or PATH-N.sock.
  if ov.worker then
    path = path and (path:gsub("%.sock$", "") .. ("-%d.sock"):format(ov.worker))
      or console.path(("%d-%d"):format(ov.supervisor, ov.worker))
  end
  local err
  path, err = console.start(self, path)
  local how = ov.worker and ("%d --worker %d"):format(ov.supervisor, ov.worker) or tostring(core.getpid())
  if path then self.loop:log("info", ("console on %s (sluice attach %s)"):format(path, how))
  else self.loop:log("warn", "no console: " .. err) end
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

function App:consume(topics, options, handler)
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
  local decl = { topics = topics, options = options, handler = handler }
  decl.consumer = Consumer.new(decl)
  self.consumer_decls[#self.consumer_decls + 1] = decl
  if self.started then
    local ok, err, code = Consumer.start(self, decl)
    if not ok then return nil, err, code end
  end
  return decl.consumer
end

-- ---- subscriptions (sluice.app.feed; docs/api.md) ------------------------

-- app:subscribe(conn, topic [, { since =, positions =, format =, recovered = }])
-- → true, or nil, err, code. Every record of topic from now on (or after
-- the position `since`, read back from Kafka first) goes to conn.
function App:subscribe(conn, topic, opts)
  if type(conn) ~= "userdata" and type(conn) ~= "table" then util.check(1, "subscribe", conn, "userdata") end
  util.check(2, "subscribe", topic, "string")
  util.check(3, "subscribe", opts, "table", true)
  opts = opts or {}
  if opts.since ~= nil and type(opts.since) ~= "string" then
    util.argerror(3, "subscribe", "since must be a position string")
  end
  for _, k in ipairs({ "format", "recovered" }) do
    if opts[k] ~= nil and type(opts[k]) ~= "function" then
      util.argerror(3, "subscribe", k .. " must be a function")
    end
  end
  local ok, err, code = self:_ensure_started()
  if not ok then return nil, err, code end
  local feed
  feed, err, code = self:_feed(topic, true)
  if not feed then return nil, err, code end
  return feed:subscribe(conn, opts)
end

-- The running feed of topic, started if need be (now: from the end as of
-- now, else as of the app's start).
function App:_feed(topic, now)
  self.feeds = self.feeds or {}
  local feed = self.feeds[topic]
  if feed then return feed end
  feed = Feed.new(self, topic)
  local ok, err, code = feed:start(now)
  if not ok then return nil, err, code end
  self.feeds[topic] = feed
  self:_guard_collection()
  return feed
end

-- app:feed(topic): subscriptions to topic are served from the app's start
-- (its consumer starts with the app, from the end as of then) rather than
-- from the first app:subscribe.
function App:feed(topic)
  util.check(1, "feed", topic, "string")
  self._feed_decls = self._feed_decls or {}
  self._feed_decls[topic] = true
  if self.started then
    local ok, err, code = self:_feed(topic, true)
    if not ok then return nil, err, code end
  end
  return self
end

-- An app:sse stream: what app:subscribe sends to (conn-like: send, close).
local Stream = {}
Stream.__index = Stream
function Stream:send(data) return self._raw:write(data) end
function Stream:close()
  self.closed = true
  self._app:unsubscribe(self)
  return self._raw:finish()
end

-- app:sse(path, handler [, { retry = ms }]): GET path answers a
-- text/event-stream; handler(stream, req) subscribes the stream
-- (app:subscribe) — each event's id is its position, and a browser that
-- reconnects sends the last one back (Last-Event-ID): stream.last_event_id,
-- to pass as `since`. retry: the reconnect delay the browser is told.
function App:sse(path, handler, opts)
  util.check(1, "sse", path, "string")
  util.check(2, "sse", handler, "function")
  util.check(3, "sse", opts, "table", true)
  local retry = opts and opts.retry
  if retry ~= nil and (type(retry) ~= "number" or retry < 0) then
    util.argerror(3, "sse", "retry must be a number of milliseconds")
  end
  local first = retry and ("retry: %d\n\n"):format(retry) or ": sluice\n\n"
  local app = self
  return self:http("GET", path, function(req)
    local raw = req._raw
    req:defer()
    local last = req.headers["last-event-id"]
    if last == "" then last = nil end
    local stream = setmetatable({ _raw = raw, _app = app, sse = true, path = req.path, query = req.query,
      headers = req.headers, last_event_id = last or req.query.lastEventId }, Stream)
    local ok, err = raw:stream("text/event-stream; charset=utf-8",
      { ["cache-control"] = "no-store", ["x-accel-buffering"] = "no" },
      function()
        stream.closed = true
        app._sse_streams[stream] = nil
        app:unsubscribe(stream)
      end)
    if not ok then return nil, err end
    -- something first: the head and a first byte go out at once
    raw:write(first)
    app:_sse_keepalive(stream)
    handler(stream, req)
  end)
end

-- Every SSE_KEEPALIVE_S a comment goes to each stream: proxies keep it
-- open, and a client that left is noticed (docs/api.md).
local SSE_KEEPALIVE_S = 15
function App:_sse_keepalive(stream)
  self._sse_streams = self._sse_streams or setmetatable({}, { __mode = "k" })
  self._sse_streams[stream] = true
  if self._sse_timer then return end
  local streams = self._sse_streams
  -- the app's own timer, not the code's: a reload keeps it
  self._sse_timer = core.timer(self.loop, function()
    for s in pairs(streams) do
      if not s:send(":\n\n") then streams[s] = nil end
    end
  end)
  self._sse_timer:start(SSE_KEEPALIVE_S * 1000, SSE_KEEPALIVE_S * 1000)
end

-- app:unsubscribe(conn [, topic]): from topic, or from every topic.
-- true if it was subscribed.
function App:unsubscribe(conn, topic)
  local any = false
  for t, feed in pairs(self.feeds or {}) do
    if topic == nil or t == topic then any = feed:unsubscribe(conn) or any end
  end
  return any
end

-- app:position(topic) → the position of the live stream of topic now (the
-- one a record pushed now would carry), or nil if nobody subscribed to it.
function App:position(topic)
  local feed = self.feeds and self.feeds[topic]
  return feed and feed.ready and feed:position() or nil
end

-- ---- WebSocket helpers, timers, clients ----------------------------------

-- path: a route, or a table of connections ({[conn] = true} or {[id] = conn}).
function App:broadcast(path, data, binary)
  local set = path
  if type(path) ~= "table" then
    util.check(1, "broadcast", path, "string")
    set = self.conns_by_path[path]
  end
  util.check(2, "broadcast", data, "string")
  if not set then return 0 end
  -- One copy of data, shared by every connection's send queue.
  return core.broadcast(set, data, binary) or 0
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
