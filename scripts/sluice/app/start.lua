-- The app's start: its server (TLS, the door of each route, the handlers
-- that look up the current declarations), the embedded broker or the
-- cluster, the metrics listener and the console. Methods of App
-- (sluice.app mixes them in).
local core = require "sluice.core"
local util = require "sluice.util"
local ops = require "sluice.ops"
local door = require "sluice.app.door"
local http = require "sluice.app.http"
local console = require "sluice.console"

local M = {}


local function parse_listen(listen)
  if listen == false then return nil end
  if type(listen) == "number" then return nil, listen end
  local host, port = tostring(listen):match("^%[(.*)%]:(%d+)$")   -- "[::]:8080"
  if not host then host, port = tostring(listen):match("^(.*):(%d+)$") end
  if host then return host ~= "" and host or nil, tonumber(port) end
  return nil, tonumber(listen)
end

function M:_log(level, msg)
  if self.loop then self.loop:log(level, msg)
  elseif self.options.log then self.options.log(level, msg)
  elseif self.overrides.log_format == "json" then ops.json_logger(self.name)(level, msg)
  else io.stderr:write(("sluice %s: %s\n"):format(level, msg)) end
end

-- The kafka properties every client of this app gets.
function M:_kafka_props(extra)
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

function M:_server_handlers()
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

function M:_start_kafka()
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

function M:_start_server()
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
function M:_tls_files()
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
function M:reload_tls()
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

function M:_start_metrics()
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
function M:_start_console()
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

return M
