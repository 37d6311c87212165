-- Hot reload: load an app's code again beside the running code, check it,
-- and swap its declarations into the running app in one step.
--
-- Each load is a generation: the app file and every module it requires
-- (or dofile/loadfile) from its own directory tree run in a fresh global
-- environment whose `require` keeps the app's own modules in a table of
-- the generation (package.loaded is left to libraries), so edited modules
-- are really re-run and the old code keeps its own. `sluice.app{}` called
-- during a reload returns a candidate that only collects declarations
-- (app.lua); if anything fails — syntax, a runtime error while loading, a
-- handler of the wrong shape, on_reload raising — it is dropped and
-- nothing changes.
-- Otherwise App:_adopt swaps routes, handlers, consumers' handlers and
-- timers. See docs/reload.md.
local core = require "sluice.core"

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

-- Runs the app file as generation `running.generation + 1` (or 1 without
-- `running`). Returns app, ctx — or nil, ctx, {msg=, traceback=}.
local function load_generation(path, running)
  local sluice = require "sluice"
  local ctx = { path = path, dir = dir_of(path), files = {}, list = {}, loaded = {}, missing = {} }
  ctx.env = make_env(ctx)
  note_file(ctx, path)

  local loading = { running = running, apps = {} }
  local outer_loading = sluice._loading
  sluice._loading = loading
  local ok, result
  local chunk, err = loadfile_in(path, ctx.env)
  if not chunk then
    ok, result = false, { msg = err }
  else
    ok, result = xpcall(chunk, on_error)
  end
  sluice._loading = outer_loading

  if ok then
    local found = false
    for _, a in ipairs(loading.apps) do if a == result then found = true end end
    if not found and (running or type(result) ~= "table" or type(result.run) ~= "function") then
      ok, result = false, { msg = ("%s must return the app built with sluice.app (end it with `return app`)"):format(path) }
    end
  end
  if not ok then return nil, ctx, result end
  return result, ctx
end

-- Generation 1: `sluice run` and sluice.load(path).
function M.load_app(path)
  if type(path) ~= "string" then error("bad argument #1 to 'load' (string expected)", 3) end
  if not exists(path) then
    return nil, ("LOAD: cannot open %s"):format(path), "LOAD"
  end
  local app, ctx, err = load_generation(path, nil)
  if not app then return nil, "LOAD: " .. err.msg, "LOAD" end
  app._reload_ctx = ctx
  return app
end

local function log(app, level, msg)
  app:_log(level, msg)
end

local function watch_files(app, ctx)
  local w = app._fswatch
  if not w then return end
  for _, path in ipairs(ctx.list) do
    local ok, err = w:add(path)
    if not ok then log(app, "warn", "hot reload cannot watch " .. path .. ": " .. tostring(err)) end
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

function M.reload(app, files, reason)
  local ctx = app._reload_ctx
  if not ctx then
    return nil, "STATE: this app was not loaded from a file (use `sluice run` or sluice.load)", "STATE"
  end
  if app._reloading then return nil, "STATE: a reload is already running", "STATE" end
  if not app.started or app.closed then return nil, "STATE: the app is not running", "STATE" end
  app._reloading = true
  local what = (files and #files > 0) and ("changed: " .. table.concat(files, ", ")) or reason or "reload"
  log(app, "info", ("reload (%s): loading %s"):format(what, ctx.path))

  local t0 = core.clock()
  local cand, nctx, err = load_generation(ctx.path, app)
  local problem, new_state
  if cand then
    problem = app:_validate(cand)
    local hook = cand._on_reload or (type(rawget(cand, "on_reload")) == "function" and rawget(cand, "on_reload"))
    if not problem and hook then
      local info = { generation = app.generation + 1, previous_generation = app.generation, files = files }
      local ok, res = xpcall(function() return hook(app.state, info) end, on_error)
      if not ok then problem = "on_reload: " .. res.msg
      elseif res ~= nil and type(res) ~= "table" then
        problem = ("on_reload must return a table (the new state) or nil, got %s"):format(type(res))
      else new_state = res end
    end
  else
    problem = err.msg
    if err.traceback then log(app, "debug", err.traceback) end
  end
  local t1 = core.clock()
  local rs = app.reload_stats

  if problem then
    rs.failures = rs.failures + 1
    rs.last_error = problem
    rs.last = { ok = false, at = os.time(), files = files, error = problem, load_ms = ms(t0, t1) }
    log(app, "error", ("reload failed, generation %d keeps serving: %s"):format(app.generation, problem))
    watch_files(app, nctx)     -- e.g. a newly required module that failed
    app._reloading = nil
    return nil, "RELOAD: " .. problem, "RELOAD"
  end

  local changed = changed_options(app.options, cand.options)
  if #changed > 0 then
    log(app, "warn", ("reload: option%s %s changed; options apply at the next restart")
      :format(#changed == 1 and "" or "s", table.concat(changed, ", ")))
  end
  local ok, adopt_err = xpcall(function() app:_adopt(cand, new_state) end, on_error)
  local t2 = core.clock()
  app._reloading = nil
  if not ok then
    -- A bug in the swap itself: say so loudly; the app may be half-swapped.
    log(app, "error", "reload swap failed: " .. adopt_err.traceback)
    rs.failures = rs.failures + 1
    rs.last_error = "swap failed: " .. adopt_err.msg
    return nil, "RELOAD: swap failed: " .. adopt_err.msg, "RELOAD"
  end
  app._reload_ctx = nctx
  watch_files(app, nctx)
  rs.reloads = rs.reloads + 1
  rs.last_error = nil
  rs.last = { ok = true, at = os.time(), files = files, load_ms = ms(t0, t1), swap_ms = ms(t1, t2) }
  log(app, "info", ("reload: generation %d serving (%s; load %.1f ms, swap %.2f ms)")
    :format(app.generation, what, ms(t0, t1), ms(t1, t2)))
  return app.generation
end

function M.watch(app, opts)
  local ctx = app._reload_ctx
  if not ctx then
    return nil, "STATE: this app was not loaded from a file (use `sluice run` or sluice.load)", "STATE"
  end
  if app._fswatch then return true end
  local ok, err, code = app:_ensure_started()
  if not ok then return nil, err, code end
  local w
  w, err, code = core.fswatch(app.loop, { debounce = opts.debounce }, function(paths)
    app:reload(paths, "files changed")
  end)
  if not w then return nil, err, code end
  app._fswatch = w
  watch_files(app, ctx)
  log(app, "info", ("hot reload: watching %d file%s of %s"):format(#ctx.list, #ctx.list == 1 and "" or "s", ctx.dir))
  return true
end

return M
