-- Hot reload: load an app's code again beside the running code, check it,
-- and swap its declarations into the running app in one step. This module
-- owns all of it: loading a generation, the candidate app the new code
-- builds, its validation, the adoption and the facade the new code keeps
-- calling `app`. An app loaded from a file holds a Reloader (its context:
-- the file, the generation's files, the watcher); nothing else reaches
-- into it.
--
-- Each load is a generation: the app file and every module it requires
-- (or dofile/loadfile) from its own directory tree run in a fresh global
-- environment whose `require` keeps the app's own modules in a table of
-- the generation (package.loaded is left to libraries), so edited modules
-- are really re-run and the old code keeps its own. The generation's
-- `require "sluice"` is a view of the module whose sluice.app{} builds a
-- candidate that only collects declarations; if anything fails — syntax,
-- a runtime error while loading, a handler of the wrong shape, on_reload
-- raising — it is dropped and nothing changes. Otherwise adopt() swaps
-- routes, handlers, consumers' handlers and timers. See docs/reload.md.
local core = require "sluice.core"
local App = require "sluice.app"
local Consumer = require "sluice.app.consumer"
local timers = require "sluice.app.timers"
local route = require "sluice.app.route"

local M = {}

local function exists(path)
  local f = io.open(path, "r")
  if f then f:close() return true end
  return false
end

local function dir_of(path)
  return path:match("^(.*)/[^/]*$") or "."
end

local function in_tree(ctx, path)
  if type(path) ~= "string" then return false end
  if ctx.dir == "." then return path:sub(1, 1) ~= "/" and path:sub(1, 3) ~= "../" end
  return path == ctx.path or path:sub(1, #ctx.dir + 1) == ctx.dir .. "/"
end

-- loadfile with an environment, on every Lua sluice supports.
local function loadfile_in(path, env)
  if setfenv then          -- Lua 5.1 / LuaJIT
    local chunk, err = loadfile(path)
    if chunk then setfenv(chunk, env) end
    return chunk, err
  end
  return loadfile(path, "bt", env)
end

local function note_file(ctx, path)
  if not ctx.files[path] then
    ctx.files[path] = true
    ctx.list[#ctx.list + 1] = path
  end
end

-- The file of module `name` in the app's directory, or nil.
local function find_module(ctx, name)
  local rel = name:gsub("%.", "/")
  for _, pattern in ipairs { "%s/%s.lua", "%s/%s/init.lua" } do
    local p = pattern:format(ctx.dir, rel)
    if exists(p) then return p end
  end
end

local LOADING = {}   -- sentinel: a module being loaded (require loops)

-- A fresh global environment for one generation. dofile and loadfile of
-- files in the app's tree load into it and are watched too.
local function make_env(ctx)
  local env = setmetatable({}, { __index = _G })
  -- The app's own modules: loaded once per generation, into its
  -- environment, and watched. Anything else: the ordinary require.
  env.require = function(name)
    if name == "sluice" then return ctx.sluice end
    if type(name) ~= "string" then return require(name) end
    local v = ctx.loaded[name]
    if v == LOADING then error(("loop or previous error loading module '%s'"):format(name), 2) end
    if v ~= nil then return v end
    local path = find_module(ctx, name)
    if not path then
      local ok, res = pcall(require, name)
      if ok then return res end
      res = tostring(res)
      if res:find("^module '[^']*' not found") then
        -- Watch where it would be, so creating it reloads.
        ctx.missing[#ctx.missing + 1] = ("%s/%s.lua"):format(ctx.dir, (name:gsub("%.", "/")))
        -- One line naming the requiring file:line, not Lua's whole path list.
        error(("module '%s' not found (no %s/%s.lua, nor in package.path)")
          :format(name, ctx.dir, (name:gsub("%.", "/"))), 2)
      end
      error(res, 0)
    end
    note_file(ctx, path)
    local chunk, err = loadfile_in(path, env)
    if not chunk then error(err, 0) end          -- "file:line: message"
    ctx.loaded[name] = LOADING
    local ok, res = pcall(chunk, name, path)
    if not ok then ctx.loaded[name] = nil; error(res, 0) end
    if res == nil then res = true end
    ctx.loaded[name] = res
    return res
  end
  env.dofile = function(path)
    if not in_tree(ctx, path) then return dofile(path) end
    note_file(ctx, path)
    local chunk, err = loadfile_in(path, env)
    if not chunk then error(err, 0) end
    return chunk()
  end
  env.loadfile = function(path, mode, e)
    if e ~= nil or not in_tree(ctx, path) then
      if setfenv then
        local chunk, err = loadfile(path)
        if chunk and e then setfenv(chunk, e) end
        return chunk, err
      end
      return loadfile(path, mode, e)
    end
    note_file(ctx, path)
    return loadfile_in(path, env)
  end
  return env
end

-- Error value of a failed load: the message ("file:line: message") and
-- a traceback for the debug log.
local function on_error(e)
  local msg = type(e) == "string" and e or tostring(e)
  return { msg = msg, traceback = debug.traceback(msg, 2) }
end

-- The generation's view of the sluice module: its sluice.app{} builds
-- the app of this load (a candidate beside `running` if there is one)
-- and notes it in apps.
local function sluice_view(sluice, running, apps)
  return setmetatable({
    app = function(options)
      -- Not a tail call: App.new looks two frames up for the app file's path.
      local app = App.new(options, sluice.overrides, 2)
      if running then
        -- Collects declarations only, sharing the running app's state.
        app._candidate, app._timer_decls, app.state = true, {}, running.state
      end
      apps[#apps + 1] = app
      return app
    end,
  }, { __index = sluice })
end

-- Runs the app file as generation `running.generation + 1` (or 1 without
-- `running`). Returns app, ctx — or nil, ctx, {msg=, traceback=}.
local function load_generation(path, sluice, running)
  local ctx = { path = path, dir = dir_of(path), files = {}, list = {}, loaded = {}, missing = {} }
  local apps = {}
  ctx.sluice = sluice_view(sluice, running, apps)
  ctx.env = make_env(ctx)
  note_file(ctx, path)

  local ok, result
  local chunk, err = loadfile_in(path, ctx.env)
  if not chunk then
    ok, result = false, { msg = err }
  else
    ok, result = xpcall(chunk, on_error)
  end

  if ok then
    local found = false
    for _, a in ipairs(apps) do if a == result then found = true end end
    if not found and (running or type(result) ~= "table" or type(result.run) ~= "function") then
      ok, result = false, { msg = ("%s must return the app built with sluice.app (end it with `return app`)"):format(path) }
    end
  end
  if not ok then return nil, ctx, result end
  return result, ctx
end

-- ---- checking and adopting new code ---------------------------------------

local HANDLER_KEYS = { open = true, message = true, close = true }

-- Checks a candidate's declarations; returns nil or "where: problem".
local function validate(cand)
  for path, h in pairs(cand.routes) do
    local at = cand._where["ws " .. path] or "?"
    if type(h) ~= "table" then
      return ("%s: ws route %s: handlers must be a table, got %s"):format(at, path, type(h))
    end
    for k, v in pairs(h) do
      if HANDLER_KEYS[k] and type(v) ~= "function" then
        return ("%s: ws route %s: handler '%s' must be a function, got %s"):format(at, path, tostring(k), type(v))
      end
    end
  end
  for key, h in pairs(cand.http_routes) do
    if type(h) ~= "function" then
      return ("%s: http route %s: handler must be a function, got %s")
        :format(cand._where["http " .. key] or "?", key, type(h))
    end
  end
  for _, d in ipairs(cand.consumer_decls) do
    if type(d.handler) ~= "function" then
      return ("consumer of %s: handler must be a function"):format(table.concat(d.topics, ","))
    end
  end
  return nil
end

-- After adoption the candidate object is what the new code calls `app`:
-- every access goes to the running app, methods get it as self.
local function make_facade(obj, running)
  for k in pairs(obj) do obj[k] = nil end
  local bound = {}
  setmetatable(obj, {
    __index = function(_, k)
      local v = running[k]
      if type(v) == "function" and App[k] == v then
        local f = bound[k]
        if not f then
          f = function(self, ...)
            if self == obj then self = running end
            return v(self, ...)
          end
          bound[k] = f
        end
        return f
      end
      return v
    end,
    __newindex = running,
    __tostring = function() return tostring(running) end,
  })
end

-- Consumers: same topics + group → keep the Kafka consumer (no
-- rebalance, no re-read), re-point it at the new handler; the others
-- close, and new declarations start.
local function adopt_consumers(app, cand)
  local old_by_key = {}
  for _, d in ipairs(app.consumer_decls) do
    local k = Consumer.key(app, d)
    old_by_key[k] = old_by_key[k] or {}
    table.insert(old_by_key[k], d)
  end
  local fresh = {}
  for _, nd in ipairs(cand.consumer_decls) do
    local list = old_by_key[Consumer.key(app, nd)]
    local od = list and table.remove(list, 1)
    if od then
      local oc = nd.consumer:take_over(od.consumer)
      for i, c in ipairs(app.consumers) do if c == oc then app.consumers[i] = nd.consumer end end
    else
      fresh[#fresh + 1] = nd
    end
  end
  for _, list in pairs(old_by_key) do
    for _, od in ipairs(list) do
      local oc = Consumer.current(od.consumer)
      oc:close()
      for i = #app.consumers, 1, -1 do
        if app.consumers[i] == oc then table.remove(app.consumers, i) end
      end
    end
  end
  app.consumer_decls = cand.consumer_decls
  for _, nd in ipairs(fresh) do
    if app.started then
      local ok, err = Consumer.start(app, nd)
      if not ok then app:_log("error", ("consumer of %s: %s"):format(table.concat(nd.topics, ","), err)) end
    end
  end
end

-- The swap: one synchronous step on the loop thread, so no event is
-- handled between the old code's last and the new code's first.
local function adopt(app, cand, new_state)
  local old_routes = app.routes
  app.routes, app.http_routes, app._where = cand.routes, cand.http_routes, cand._where
  -- Declared routes change between two messages too; rows in flight
  -- finish under the declaration that took them.
  app._declared = cand._declared
  if app.started then route.declare_all(app) end
  if new_state ~= nil then app.state = new_state end
  adopt_consumers(app, cand)
  timers.adopt(app, cand._timer_decls)
  -- Routes the new code no longer serves: close their connections.
  app._retired_routes = {}
  for path, handlers in pairs(old_routes) do
    if app.routes[path] == nil then
      app._retired_routes[path] = handlers
      for conn in pairs(app.conns_by_path[path] or {}) do
        conn:close(4001, "route removed")
      end
    end
  end
  app.generation = app.generation + 1
  app.loaded_at = os.time()
  make_facade(cand, app)
end

-- ---- the reloader of an app ------------------------------------------------

local Reloader = {}
Reloader.__index = Reloader

-- Generation 1: `sluice run` and sluice.load(path) (sluice: the module).
function M.load_app(path, sluice)
  if type(path) ~= "string" then error("bad argument #1 to 'load' (string expected)", 3) end
  if not exists(path) then
    return nil, ("LOAD: cannot open %s"):format(path), "LOAD"
  end
  local app, ctx, err = load_generation(path, sluice, nil)
  if not app then return nil, "LOAD: " .. err.msg, "LOAD" end
  app._reloader = setmetatable({ app = app, sluice = sluice, ctx = ctx }, Reloader)
  return app
end

function Reloader:_log(level, msg)
  self.app:_log(level, msg)
end

function Reloader:_watch_files(ctx)
  local w = self.watcher
  if not w then return end
  for _, path in ipairs(ctx.list) do
    local ok, err = w:add(path)
    if not ok then self:_log("warn", "hot reload cannot watch " .. path .. ": " .. tostring(err)) end
  end
  for _, path in ipairs(ctx.missing) do w:add(path) end   -- its directory may not exist
end

local function ms(a, b) return (b - a) * 1000 end

-- Options the new code changed (they only apply at a restart). Functions
-- (a log hook) are new closures every load: not compared.
local function changed_options(old, new)
  local function same(a, b)
    if type(a) == "function" or type(b) == "function" then return true end
    if type(a) ~= "table" or type(b) ~= "table" then return a == b end
    for k, v in pairs(a) do if b[k] ~= v then return false end end
    for k, v in pairs(b) do if a[k] ~= v then return false end end
    return true
  end
  local keys, seen = {}, {}
  for _, t in ipairs { old, new } do
    for k in pairs(t) do
      if not seen[k] and not same(old[k], new[k]) then keys[#keys + 1] = tostring(k) end
      seen[k] = true
    end
  end
  table.sort(keys)
  return keys
end

-- Checks a loaded candidate and runs its on_reload: nil and the state to
-- adopt, or the problem.
local function accept(app, cand, files)
  local problem = validate(cand)
  if problem then return problem end
  local hook = cand._on_reload or (type(rawget(cand, "on_reload")) == "function" and rawget(cand, "on_reload"))
  if not hook then return nil end
  local info = { generation = app.generation + 1, previous_generation = app.generation, files = files }
  local ok, res = xpcall(function() return hook(app.state, info) end, on_error)
  if not ok then return "on_reload: " .. res.msg end
  if res ~= nil and type(res) ~= "table" then
    return ("on_reload must return a table (the new state) or nil, got %s"):format(type(res))
  end
  return nil, res
end

function Reloader:reload(files, reason)
  local app = self.app
  if self.busy then return nil, "STATE: a reload is already running", "STATE" end
  if not app.started or app.closed then return nil, "STATE: the app is not running", "STATE" end
  self.busy = true
  local what = (files and #files > 0) and ("changed: " .. table.concat(files, ", ")) or reason or "reload"
  self:_log("info", ("reload (%s): loading %s"):format(what, self.ctx.path))

  local t0 = core.clock()
  local cand, nctx, err = load_generation(self.ctx.path, self.sluice, app)
  local problem, new_state
  if cand then
    problem, new_state = accept(app, cand, files)
  else
    problem = err.msg
    if err.traceback then self:_log("debug", err.traceback) end
  end
  local t1 = core.clock()
  local rs = app.reload_stats

  if problem then
    rs.failures = rs.failures + 1
    rs.last_error = problem
    rs.last = { ok = false, at = os.time(), files = files, error = problem, load_ms = ms(t0, t1) }
    self:_log("error", ("reload failed, generation %d keeps serving: %s"):format(app.generation, problem))
    self:_watch_files(nctx)     -- e.g. a newly required module that failed
    self.busy = nil
    return nil, "RELOAD: " .. problem, "RELOAD"
  end

  local changed = changed_options(app.options, cand.options)
  if #changed > 0 then
    self:_log("warn", ("reload: option%s %s changed; options apply at the next restart")
      :format(#changed == 1 and "" or "s", table.concat(changed, ", ")))
  end
  local ok, adopt_err = xpcall(function() adopt(app, cand, new_state) end, on_error)
  local t2 = core.clock()
  self.busy = nil
  if not ok then
    -- A bug in the swap itself: say so loudly; the app may be half-swapped.
    self:_log("error", "reload swap failed: " .. adopt_err.traceback)
    rs.failures = rs.failures + 1
    rs.last_error = "swap failed: " .. adopt_err.msg
    return nil, "RELOAD: swap failed: " .. adopt_err.msg, "RELOAD"
  end
  self.ctx = nctx
  self:_watch_files(nctx)
  rs.reloads = rs.reloads + 1
  rs.last_error = nil
  rs.last = { ok = true, at = os.time(), files = files, load_ms = ms(t0, t1), swap_ms = ms(t1, t2) }
  self:_log("info", ("reload: generation %d serving (%s; load %.1f ms, swap %.2f ms)")
    :format(app.generation, what, ms(t0, t1), ms(t1, t2)))
  return app.generation
end

function Reloader:watch(opts)
  local app = self.app
  if self.watcher then return true end
  local ok, err, code = app:_ensure_started()
  if not ok then return nil, err, code end
  local w
  w, err, code = core.fswatch(app.loop, { debounce = opts.debounce }, function(paths)
    app:reload(paths, "files changed")
  end)
  if not w then return nil, err, code end
  self.watcher = w
  self:_watch_files(self.ctx)
  local list = self.ctx.list
  self:_log("info", ("hot reload: watching %d file%s of %s"):format(#list, #list == 1 and "" or "s", self.ctx.dir))
  return true
end

function Reloader:unwatch()
  if self.watcher then self.watcher:close(); self.watcher = nil end
end

function Reloader:watching()
  return self.watcher and self.watcher:count() or 0
end

function Reloader:files()
  return self.ctx.list
end

return M
