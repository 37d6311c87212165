-- The console of a running app (docs/operations.md, "Attach"): a Lua REPL
-- on a Unix socket only its owner can open (0600, in a 0700 directory),
-- which `sluice attach` (or `nc -U`, socat) talks to. Lines are evaluated
-- on the loop between two events, under the handler time limits. A `tap`
-- copies a sample of a route's messages or a topic's records to the
-- console; what the console's reader has not taken yet is bounded
-- (TAP_QUEUE bytes): lines beyond it are dropped and counted, never
-- buffered, so a slow reader cannot slow the gateway or grow its memory.
--
-- The protocol is lines of text. A line `\quiet` (what `sluice attach
-- --eval` sends) turns the prompts off; then, once the client has sent
-- everything (it shuts its side down) and no tap runs, the console writes
-- `\end N` (N: how many evaluations failed) and closes.
local core = require "sluice.core"

local M = {}

local PROMPT = "> "
local MORE = ">> "
local TAP_QUEUE = 256 * 1024      -- bytes a console may hold for its reader, for taps
local RESULT_MAX = 64 * 1024      -- a result longer than this is cut
local TAP_BYTES = 200             -- bytes of a tapped message shown by default
local TAP_RATE = 100              -- tapped lines per second at most, by default

-- Where consoles are: $SLUICE_RUN_DIR, else $XDG_RUNTIME_DIR/sluice, else
-- /tmp/sluice-UID.
function M.dir()
  local d = os.getenv("SLUICE_RUN_DIR")
  if d and d ~= "" then return d end
  local xdg = os.getenv("XDG_RUNTIME_DIR")
  if xdg and xdg ~= "" then return xdg .. "/sluice" end
  return "/tmp/sluice-" .. core.getuid()
end

-- The socket of process `id` (a pid, or "SUPERVISOR-N" for worker N).
function M.path(id)
  return M.dir() .. "/" .. tostring(id) .. ".sock"
end

-- ---- showing values --------------------------------------------------------

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b)
    local ta, tb = type(a), type(b)
    if ta ~= tb then return ta < tb end
    if ta == "number" or ta == "string" then return a < b end
    return tostring(a) < tostring(b)
  end)
  return keys
end

local function repr(v, depth, seen)
  local t = type(v)
  if t == "string" then return ("%q"):format(v):gsub("\\\n", "\\n") end
  if t ~= "table" then return tostring(v) end
  if seen[v] then return "<cycle>" end
  if depth > 4 then return "{…}" end
  seen[v] = true
  local parts, n = {}, #v
  for i = 1, n do parts[#parts + 1] = repr(v[i], depth + 1, seen) end
  for _, k in ipairs(sorted_keys(v)) do
    if not (type(k) == "number" and k >= 1 and k <= n and k % 1 == 0) then
      local ks = type(k) == "string" and k:match("^[%a_][%w_]*$") and k or ("[" .. repr(k, depth + 1, seen) .. "]")
      parts[#parts + 1] = ks .. " = " .. repr(v[k], depth + 1, seen)
    end
  end
  seen[v] = nil
  return "{ " .. table.concat(parts, ", ") .. (#parts > 0 and " }" or "}")
end
M.repr = function(v) return repr(v, 1, {}) end

local function show(...)
  local n = select("#", ...)
  local parts = {}
  for i = 1, n do parts[i] = repr((select(i, ...)), 1, {}) end
  local s = table.concat(parts, "\t")
  if #s > RESULT_MAX then s = s:sub(1, RESULT_MAX) .. ("… (%d bytes cut)"):format(#s - RESULT_MAX) end
  return s
end

-- ---- compiling -------------------------------------------------------------

-- Under LuaJIT the console's own code is never compiled: compiled loops
-- run no hooks, and the handler time limit must be able to stop one.
local function compile(src, env)
  if setfenv then   -- Lua 5.1, LuaJIT
    local fn, err = loadstring(src, "=console")
    if fn then
      setfenv(fn, env)
      if jit then jit.off(fn, true) end
    end
    return fn, err
  end
  return load(src, "=console", "t", env)
end

-- A chunk that only lacks its end (a `function` or `do` not closed yet).
local function incomplete(err)
  return err:match("<eof>'?$") ~= nil
end

-- ---- taps ------------------------------------------------------------------

-- Printable text of at most max bytes of s.
local function excerpt(s, max)
  if s == nil then return "nil" end
  local len = #s
  s = s:sub(1, max):gsub("[%z\1-\8\11-\31\127]", "."):gsub("\n", "\\n")
  if len > max then s = s .. ("… (%d bytes)"):format(len) end
  return s
end

-- A declared route's messages are taken in C and never reach the message
-- handler: its server offers them to the tap itself, sampled before any Lua
-- runs (1 in the smallest `every`, at most the largest `rate` a second).
local function tap_declared(app, routes)
  local server = app.server
  if not server then return end
  for path in pairs(app._tapped_routes or {}) do
    if not routes[path] then server:tap(path) end
  end
  for path, taps in pairs(routes) do
    local every, rate = math.huge, 1
    for _, tap in ipairs(taps) do
      every, rate = math.min(every, tap.every), math.max(rate, tap.rate)
    end
    server:tap(path, function(conn, data, n) M.tap_message(app, conn, data, n) end, every, rate)
  end
  app._tapped_routes = routes
end

local function rebuild_index(app)
  local routes, topics, any = {}, {}, false
  for _, s in pairs(app._console.sessions) do
    for _, tap in ipairs(s.taps) do
      local by = tap.route and routes or topics
      local key = tap.route or tap.topic
      by[key] = by[key] or {}
      table.insert(by[key], tap)
      any = true
    end
  end
  app._taps = any and { routes = routes, topics = topics } or nil
  tap_declared(app, routes)
end

-- One tapped event standing for n (the ones sampled away before it, and
-- itself): counted, sampled (1 in `every`, at most `rate` lines a second),
-- shown if the console's reader keeps up, else dropped.
local function offer(app, tap, make_line, n)
  local before = tap.seen
  n = n or 1
  tap.seen = before + n
  if math.floor((tap.seen - 1) / tap.every) == math.floor((before - 1) / tap.every) then
    tap.skipped = tap.skipped + n
    return
  end
  tap.skipped = tap.skipped + n - 1
  local now = app.loop:now()
  if now - tap.window_start >= 1000 then tap.window_start, tap.window_count = now, 0 end
  if tap.window_count >= tap.rate then tap.skipped = tap.skipped + 1; return end
  tap.window_count = tap.window_count + 1
  local conn = tap.session.conn
  local line = make_line(tap) .. "\n"
  if conn:queued() + #line > TAP_QUEUE or not conn:send(line) then
    tap.dropped = tap.dropped + 1
    return
  end
  tap.shown = tap.shown + 1
  if tap.limit and tap.shown >= tap.limit then M.untap(tap.session, tap) end
end

-- A message received on route `path` (by the message handler, or by the
-- declared route: then n counts it and the ones sampled away before it).
function M.tap_message(app, conn, data, n)
  local taps = app._taps and app._taps.routes[conn.path]
  if not taps then return end
  for i = #taps, 1, -1 do
    offer(app, taps[i], function(tap)
      return ("tap %s conn %d: %s"):format(conn.path, conn.id, excerpt(data, tap.bytes))
    end, n)
  end
end

-- A record the app produces to or consumes from `topic`.
function M.tap_record(app, how, topic, key, value, partition, offset)
  local taps = app._taps.topics[topic]
  if not taps then return end
  for i = #taps, 1, -1 do
    offer(app, taps[i], function(tap)
      local where = partition and ("[%d]@%d"):format(partition, offset or -1) or ""
      return ("tap %s%s %s key=%s: %s"):format(topic, where, how,
        key and excerpt(key, 64) or "nil", excerpt(value, tap.bytes))
    end)
  end
end

local function tap_summary(tap)
  return ("tap %s ended: %d shown, %d skipped by sampling, %d dropped (reader too slow)")
    :format(tap.route or tap.topic, tap.shown, tap.skipped, tap.dropped)
end

function M.untap(session, which)
  local kept, ended = {}, {}
  for _, tap in ipairs(session.taps) do
    if which == nil or which == tap or which == tap.route or which == tap.topic then
      ended[#ended + 1] = tap
    else
      kept[#kept + 1] = tap
    end
  end
  session.taps = kept
  rebuild_index(session.app)
  for _, tap in ipairs(ended) do session:write(tap_summary(tap) .. "\n") end
  session:maybe_end()
  return #ended
end

local function start_tap(session, what, opts)
  if type(what) ~= "string" or what == "" then
    error("tap(ROUTE or TOPIC [, { every =, rate =, limit =, bytes = }]): a route starts with /", 3)
  end
  opts = opts or {}
  if type(opts) ~= "table" then error("tap: options must be a table", 3) end
  local function count(name, dflt)
    local v = opts[name]
    if v == nil then return dflt end
    if type(v) ~= "number" or v < 1 or v % 1 ~= 0 then
      error(("tap: %s must be a whole number >= 1"):format(name), 4)
    end
    return v
  end
  local tap = {
    session = session, every = count("every", 1), rate = count("rate", TAP_RATE),
    limit = count("limit", nil), bytes = count("bytes", TAP_BYTES),
    seen = 0, shown = 0, skipped = 0, dropped = 0, window_start = 0, window_count = 0,
  }
  if what:sub(1, 1) == "/" then tap.route = what else tap.topic = what end
  session.taps[#session.taps + 1] = tap
  rebuild_index(session.app)
  return ("tapping %s: 1 in %d, at most %d lines/s%s; untap() stops"):format(what, tap.every, tap.rate,
    tap.limit and (", " .. tap.limit .. " lines") or "")
end

-- ---- the helpers a console has -------------------------------------------

local HELP = [[
app                 the running app (app:stats(), app:reload(), app.state, ...)
stats()             app:stats(): connections, produced, delivered, in_flight, consumed, ...
conns([route])      the WebSocket connections: id, route, peer, queued bytes
consumers()         the app's consumers: topics, group (nil: broadcast), partitions held
log_level([level])  the log level now; with error|warn|info|debug, change it
tap(what [, opts])  show what passes: a route's messages ("/stream") or a topic's records
                    (produced or consumed by this app); opts: every = N (1 in N),
                    rate = lines/s (100), limit = lines then stop, bytes = shown per message (200)
taps()              every console's taps now: what, shown, skipped, dropped
untap([what])       stop taps (all, or of one route/topic) and print their counts
print(...)          prints here
Lines are Lua; an expression shows its value. Ctrl-D or \q ends the session.]]

local function helpers(session)
  local app = session.app
  local env = {}
  env.app = app
  env.print = function(...)
    local n, parts = select("#", ...), {}
    for i = 1, n do parts[i] = tostring((select(i, ...))) end
    session:write(table.concat(parts, "\t") .. "\n")
  end
  env.help = function() session:write(HELP .. "\n") end
  env.stats = function() return app:stats() end
  env.conns = function(route)
    local list = {}
    for path, set in pairs(app.conns_by_path) do
      if route == nil or route == path then
        for conn in pairs(set) do
          list[#list + 1] = { id = conn.id, route = path, peer = conn.peer, queued = conn:queued() }
        end
      end
    end
    table.sort(list, function(a, b) return a.id < b.id end)
    return list
  end
  env.consumers = function()
    local list = {}
    for _, c in ipairs(app.consumers) do
      list[#list + 1] = { topics = table.concat(c.decl.topics, ","), group = c.group,
        partitions = c.assigned or 0, paused = c.paused or false, closed = c.closed or false }
    end
    return list
  end
  env.log_level = function(level)
    if level ~= nil then
      local ok, err = pcall(app.loop.set_log_level, app.loop, level)
      if not ok then error("log_level: error, warn, info or debug", 0) end
      app.loop:log("info", ("log level set to %s from the console"):format(level))
      return level
    end
    return app.loop:log_level()
  end
  env.tap = function(what, opts) return start_tap(session, what, opts) end
  env.taps = function()
    local list = {}
    for _, other in pairs(app._console.sessions) do
      for _, tap in ipairs(other.taps) do
        list[#list + 1] = { what = tap.route or tap.topic, seen = tap.seen, shown = tap.shown,
          skipped = tap.skipped, dropped = tap.dropped, mine = other == session }
      end
    end
    return list
  end
  env.untap = function(what)
    local n = M.untap(session, what)
    return n
  end
  return setmetatable(env, { __index = _G })
end

-- ---- sessions ------------------------------------------------------------

local Session = {}
Session.__index = Session

function Session:write(s)
  if not self.conn:is_closed() then self.conn:send(s) end
end

function Session:prompt()
  if not self.quiet then self:write(self.pending and MORE or PROMPT) end
end

-- After the client's end: finish once nothing more will be written.
function Session:maybe_end()
  if self.eof and #self.taps == 0 and not self.conn:is_closed() then
    if self.quiet then self:write(("\\end %d\n"):format(self.errors)) end
    self.conn:finish()
  end
end

function Session:eval(line)
  if line == "\\quiet" and not self.pending then self.quiet = true; return end
  if line == "\\q" and not self.pending then self.eof = true; self.taps = {}; rebuild_index(self.app); return self:maybe_end() end
  local src = self.pending and (self.pending .. "\n" .. line) or line
  local fn = compile("return " .. src, self.env)
  local err
  if not fn then fn, err = compile(src, self.env) end
  if not fn then
    if incomplete(err) then self.pending = src; return self:prompt() end
    self.pending = nil
    self.errors = self.errors + 1
    self:write("error: " .. err .. "\n")
    return self:prompt()
  end
  self.pending = nil
  local function results(ok, ...)
    if not ok then
      self.errors = self.errors + 1
      self:write("error: " .. tostring((...)) .. "\n")
    elseif select("#", ...) > 0 then
      self:write(show(...) .. "\n")
    end
  end
  results(pcall(fn))
  self:prompt()
end

-- At the end of input, an unfinished chunk is an error.
function Session:flush_pending()
  if not self.pending then return end
  local _, err = compile(self.pending, self.env)
  self.pending = nil
  self.errors = self.errors + 1
  self:write("error: " .. tostring(err) .. "\n")
end

function Session:data(bytes)
  self.buf = self.buf .. bytes
  while true do
    local line, rest = self.buf:match("^([^\n]*)\n(.*)$")
    if not line then break end
    self.buf = rest
    self:eval((line:gsub("\r$", "")))
    if self.conn:is_closed() or self.eof then return end
  end
end

-- ---- the listener ----------------------------------------------------------

-- Start the console of app at path (nil: M.path(pid)). Returns the path,
-- or nil, err, code.
function M.start(app, path)
  path = path or M.path(core.getpid())
  local dir = path:match("^(.*)/[^/]*$") or "."
  local ok, err, code = core.private_dir(dir)
  if not ok then return nil, err, code end
  local state = { sessions = {}, path = path }
  local listener
  listener, err, code = core.unix_listen(app.loop, path, {
    accept = function(conn)
      local s = setmetatable({ app = app, conn = conn, buf = "", taps = {}, errors = 0 }, Session)
      s.env = helpers(s)
      state.sessions[conn] = s
      s:write(("sluice console: app %s, pid %d, generation %d; help() lists the helpers\n")
        :format(app.name, core.getpid(), app.generation))
      s:prompt()
    end,
    data = function(conn, bytes)
      local s = state.sessions[conn]
      if s then s:data(bytes) end
    end,
    eof = function(conn)
      local s = state.sessions[conn]
      if not s then return end
      if s.buf ~= "" then local last = s.buf; s.buf = ""; s:eval(last) end
      s:flush_pending()
      s.eof = true
      s:maybe_end()
    end,
    close = function(conn)
      local s = state.sessions[conn]
      state.sessions[conn] = nil
      if s and #s.taps > 0 then rebuild_index(app) end
    end,
  })
  if not listener then return nil, err, code end
  state.listener = listener
  app._console = state
  return path
end

-- Close the console: its sessions end, its socket file is removed.
function M.stop(app)
  local state = app._console
  if not state then return end
  tap_declared(app, {})
  app._console, app._taps = nil, nil
  for conn in pairs(state.sessions) do conn:close() end
  state.listener:close()
end

return M
