-- The `sluice` command. Every failure a user can cause ends in one line on
-- stderr and a non-zero exit status.
local sluice = require "sluice"
local core = require "sluice.core"

local M = {}

local USAGE = [[
usage: sluice [--lua NAME] run APP.lua [options]
       sluice attach [PID|SOCKET] [--worker N] [--eval CHUNK]
       sluice --help | --version

Runs APP.lua, a Lua script that returns a sluice app (`return app`).

--lua NAME: run on luajit, lua5.4 or lua5.1 (the build tree's sluice runs on
LuaJIT when it was built; an installed sluice runs on the Lua it was
installed for). --version says which.

options for run:
  --listen PORT          listen on PORT (or HOST:PORT) instead of the app's setting
  --kafka BOOTSTRAP      use this Kafka cluster (bootstrap.servers) instead of
                         the embedded in-memory broker
  -X, --kafka-property KEY=VALUE
                         a librdkafka property for every Kafka client of the app
                         (after the app's own `kafka` table; repeatable), e.g.
                         -X message.timeout.ms=5000
  --embedded-port PORT   stable bootstrap port of the embedded broker (default 9092;
                         0 picks a free one)
  --tls-cert FILE        serve https:// and wss:// with this PEM certificate (its
                         chain after it) ...
  --tls-key FILE         ... and its PEM private key (not encrypted); SIGHUP and
                         --watch reload both without dropping connections
  --tls-ca FILE          require client certificates signed by these PEM CAs
  --log-level LEVEL      error, warn, info (default) or debug
  --log-format FORMAT    text (default) or json: one JSON object per line with
                         ts, level, msg, app, pid
  --watch                hot reload: reload the app when one of its Lua files
                         (the app file and what it requires from its directory)
                         changes; a file that fails to load changes nothing
  --watch-debounce MS    quiet time before a burst of changes reloads (default 100)
  --workers N|auto       N worker processes on the port (auto: one per core)
                         under a supervisor that restarts them; signals go to
                         every worker (docs/operations.md)
  --console PATH|off     the console's socket (default: DIR/PID.sock, DIR being
                         $SLUICE_RUN_DIR, $XDG_RUNTIME_DIR/sluice or /tmp/sluice-UID)

sluice attach: a Lua console inside a running app (evaluated between two
events; help() lists stats(), conns(), consumers(), log_level(), tap()).
With no PID, the one gateway running; SOCKET: a path with a '/'.
  --eval CHUNK           evaluate CHUNK, print its results, exit (1 if it failed);
                         input that is not a terminal is evaluated the same way
  --worker N             with --workers: worker N only (default: every worker)

SIGINT/SIGTERM: stop accepting, let Kafka confirm what was accepted, close
WebSockets with 1001, commit consumer offsets, exit 0; a second one while
draining exits at once. SIGHUP: hot reload (and the TLS certificate and key
read again).
GET /_sluice/health: generation, loaded_at, last_reload_error (JSON).
GET /metrics (Prometheus), /healthz/live, /healthz/ready: docs/operations.md.
Reference: docs/api.md]]

local function fail(msg)
  io.stderr:write("sluice: ", msg, "\n")
  return 1
end

local function parse_port(value, option)
  local n = tonumber(value)
  if not n or n ~= math.floor(n) or n < 0 or n > 65535 then
    return nil, ("%s needs a port number, got '%s'"):format(option, tostring(value))
  end
  return n
end

local function file_option(o, key, option, v)
  if not v or v == "" or v:sub(1, 1) == "-" then return nil, option .. " needs a file name" end
  o[key] = v
  return true
end

local OPTIONS = {
  ["--listen"] = function(o, v)
    if v and v:match("^.*:%d+$") then o.listen = v; return true end
    local port, err = parse_port(v, "--listen")
    o.listen = port
    return port ~= nil, err
  end,
  ["--kafka"] = function(o, v)
    if not v or v == "" then return nil, "--kafka needs a bootstrap address (host:port)" end
    o.bootstrap = v
    return true
  end,
  ["--kafka-property"] = function(o, v)
    local key, value = (v or ""):match("^([^=]+)=(.*)$")
    if not key then return nil, "--kafka-property needs KEY=VALUE (a librdkafka property)" end
    o.kafka_props = o.kafka_props or {}
    o.kafka_props[key] = value
    return true
  end,
  ["--embedded-port"] = function(o, v)
    local port, err = parse_port(v, "--embedded-port")
    o.embedded_port = port
    return port ~= nil, err
  end,
  ["--tls-cert"] = function(o, v) return file_option(o, "tls_cert", "--tls-cert", v) end,
  ["--tls-key"] = function(o, v) return file_option(o, "tls_key", "--tls-key", v) end,
  ["--tls-ca"] = function(o, v) return file_option(o, "tls_ca", "--tls-ca", v) end,
  ["--watch-debounce"] = function(o, v)
    local n = tonumber(v)
    if not n or n < 1 or n > 60000 then return nil, "--watch-debounce needs a number of ms (1-60000)" end
    o.watch_debounce = n
    return true
  end,
  ["--log-format"] = function(o, v)
    if v ~= "text" and v ~= "json" then return nil, "--log-format must be text or json" end
    o.log_format = v
    return true
  end,
  ["--workers"] = function(o, v)
    local n = v == "auto" and core.cpu_count() or tonumber(v)
    if not n or n < 1 or n % 1 ~= 0 or n > 1024 then return nil, "--workers needs a number of processes (1-1024) or auto" end
    o.workers = n
    return true
  end,
  ["--console"] = function(o, v)
    if not v or v == "" then return nil, "--console needs a socket path, or off" end
    if v == "off" then o.console = false else o.console = v end
    return true
  end,
  ["--log-level"] = function(o, v)
    if v ~= "error" and v ~= "warn" and v ~= "info" and v ~= "debug" then
      return nil, "--log-level must be error, warn, info or debug"
    end
    o.log_level = v
    return true
  end,
}

-- Load and run the app file; returns the app or nil, one-line error.
-- sluice.load tracks the files it loads, for hot reload.
local function load_app(path)
  local f, open_err = io.open(path, "r")
  if not f then return nil, ("cannot open %s"):format(open_err or path) end
  f:close()
  -- The app's own modules are found beside it.
  local dir = path:match("^(.*)/[^/]*$") or "."
  package.path = dir .. "/?.lua;" .. dir .. "/?/init.lua;" .. package.path
  -- Relative paths in the app (static = "public") are relative to it.
  sluice.overrides.app_dir = dir
  local app, err = sluice.load(path)
  if not app then return nil, (err:gsub("^LOAD: ", "")) end
  return app
end

-- The name --lua gives to the Lua running this.
local function running_lua()
  if jit then return "luajit" end
  return "lua" .. _VERSION:match("%d+%.%d+")
end

-- The LuaRocks tree this command was installed into (LuaRocks runs
-- TREE/lib/luarocks/rocks-VERSION/sluice/VERSION/bin/sluice), or nil.
local function rocks_tree(script)
  return script and script:match("^(.*)/lib/luarocks/rocks%-[%d.]+/sluice/[^/]+/bin/sluice$")
end

-- Installed for several Luas into one LuaRocks tree, the last install owns
-- the tree's bin/sluice; `--lua NAME` runs the command of NAME's install
-- from the same tree instead (LuaJIT uses LuaRocks' 5.1 install).
local function exec_other_lua(name, argv)
  local ver = name == "luajit" and "5.1" or name:match("^lua(5%.[14])$")
  if not ver then return nil, ("--lua must be luajit, lua5.4 or lua5.1, got '%s'"):format(name) end
  local tree = rocks_tree(argv[0])
  local how = "run the build tree's build/bin/sluice --lua " .. name
  if not tree then
    return nil, ("--lua %s: this sluice command runs on %s (%s)"):format(name, running_lua(), how)
  end
  local rock_dir = ("%s/lib/luarocks/rocks-%s/sluice"):format(tree, ver)
  local versions = core.readdir(rock_dir)
  local cmod = io.open(("%s/lib/lua/%s/sluice/core.so"):format(tree, ver), "rb")
  if not (versions and versions[1] and cmod) then
    return nil, ("--lua %s: sluice is not installed for Lua %s in %s (luarocks --lua-version %s make …)")
      :format(name, ver, tree, ver)
  end
  cmod:close()
  local share, lib = ("%s/share/lua/%s"):format(tree, ver), ("%s/lib/lua/%s"):format(tree, ver)
  local path = ("%s/?.lua;%s/?/init.lua;;"):format(share, share)
  local cpath = ("%s/?.so;;"):format(lib)
  local env = { "LUA_PATH=" .. path, "LUA_CPATH=" .. cpath }
  if ver ~= "5.1" then
    local suffix = ver:gsub("%.", "_")
    env[#env + 1] = ("LUA_PATH_%s=%s"):format(suffix, path)
    env[#env + 1] = ("LUA_CPATH_%s=%s"):format(suffix, cpath)
  end
  local cmd = { name, ("%s/%s/bin/sluice"):format(rock_dir, versions[1]) }
  for i = 1, #argv do cmd[#cmd + 1] = argv[i] end
  local _, err = core.exec(cmd, env)
  return nil, err
end

-- --lua NAME: the build tree's wrapper handles it (and never passes it on);
-- an installed command runs on its own Lua, or execs NAME's install.
local function take_lua_option(argv)
  local i = 1
  while argv[i] do
    local a = argv[i]
    local name = a:match("^%-%-lua=(.*)$")
    if a == "--lua" then name = argv[i + 1] or ""; table.remove(argv, i + 1) end
    if name then
      table.remove(argv, i)
      if name ~= running_lua() then return exec_other_lua(name, argv) end
    else
      i = i + 1
    end
  end
  return true
end

-- sluice run APP --workers N: the supervisor, which runs this same command
-- (less --workers) once per worker.
function M.supervise(argv, overrides)
  local cmd = { argv[-1] or "lua", argv[0] }
  local i = 1
  while argv[i] do
    local a = argv[i]
    if a == "--workers" then i = i + 1
    elseif not a:match("^%-%-workers=") then cmd[#cmd + 1] = a end
    i = i + 1
  end
  local status, err = require("sluice.supervisor").run {
    n = overrides.workers, argv = cmd, embedded = overrides.bootstrap == nil,
    embedded_port = overrides.embedded_port, log_format = overrides.log_format,
    log_level = overrides.log_level,
  }
  if not status then return fail(err) end
  return status
end

-- sluice attach [PID|SOCKET] [--worker N] [--eval CHUNK]
function M.attach(argv)
  local attach = require "sluice.attach"
  local target, worker, eval
  local i = 2
  while argv[i] do
    local a = argv[i]
    local name, inline = a:match("^(%-%-[%w-]+)=(.*)$")
    name = name or a
    if name == "--eval" or name == "-e" then
      eval = inline or argv[i + 1]
      if inline == nil then i = i + 1 end
      if not eval then return fail("--eval needs a Lua chunk") end
    elseif name == "--worker" then
      local v = inline or argv[i + 1]
      if inline == nil then i = i + 1 end
      worker = tonumber(v)
      if not worker or worker < 1 or worker % 1 ~= 0 then return fail("--worker needs a worker number (1, 2, ...)") end
    elseif a:sub(1, 1) == "-" then
      return fail(("unknown option '%s' for attach (see sluice --help)"):format(a))
    elseif target then
      return fail(("unexpected argument '%s' (one PID or SOCKET)"):format(a))
    else
      target = a
    end
    i = i + 1
  end
  local targets, err = attach.targets(target, worker)
  if not targets then return fail(err) end
  return attach.run(targets, { eval = eval, interactive = eval == nil and attach.is_tty(0) })
end

function M.main(argv)
  argv = argv or {}
  local lua_ok, lua_err = take_lua_option(argv)
  if not lua_ok then return fail(lua_err) end
  local first = argv[1]
  if first == nil or first == "--help" or first == "-h" or first == "help" then
    io.stdout:write(USAGE, "\n")
    return first == nil and 1 or 0
  end
  if first == "--version" or first == "-V" or first == "version" then
    io.stdout:write("sluice ", sluice.version, " (", _VERSION,
      (jit and (", " .. jit.version) or ""), ")\n")
    return 0
  end
  if first == "attach" then return M.attach(argv) end
  if first ~= "run" then
    -- `sluice app.lua`: say the command they most likely meant.
    local f = first:sub(1, 1) ~= "-" and io.open(first, "r")
    if f then f:close() end
    if f or first:match("%.lua$") then
      return fail(("unknown command '%s': to run an app, sluice run %s"):format(first, first))
    end
    return fail(("unknown command or option '%s' (see sluice --help)"):format(first))
  end
  local overrides, file = {}, nil
  local i = 2
  while argv[i] do
    local a = argv[i]
    local name, inline = a:match("^(%-%-[%w-]+)=(.*)$")
    name = name or a
    if name == "-X" then name = "--kafka-property" end
    if name == "--watch" then
      overrides.watch = true
    elseif OPTIONS[name] then
      local value = inline
      if value == nil then i = i + 1; value = argv[i] end
      local ok, err = OPTIONS[name](overrides, value)
      if not ok then return fail(err) end
    elseif a:sub(1, 1) == "-" then
      return fail(("unknown option '%s' (see sluice --help)"):format(a))
    elseif file then
      return fail(("unexpected argument '%s' (one app file only)"):format(a))
    else
      file = a
    end
    i = i + 1
  end
  if not file then return fail("run needs an app file: sluice run APP.lua") end

  overrides.console_default = true
  if overrides.workers then return M.supervise(argv, overrides) end
  -- A worker of a supervisor (sluice.supervisor sets these).
  local worker = tonumber(os.getenv("SLUICE_WORKER") or "")
  if worker then
    overrides.worker, overrides.supervisor = worker, tonumber(os.getenv("SLUICE_SUPERVISOR"))
    overrides.shared_kafka = os.getenv("SLUICE_SHARED_KAFKA")
  end
  local watch, debounce = overrides.watch, overrides.watch_debounce
  overrides.watch, overrides.watch_debounce = nil, nil
  for k, v in pairs(overrides) do sluice.overrides[k] = v end
  local app, err = load_app(file)
  if not app then return fail(err) end
  local started, start_err = app:start()
  if not started then return fail(start_err) end
  if watch then
    local ok, watch_err = app:watch { debounce = debounce }
    if not ok then return fail(watch_err) end
  end
  if worker then
    -- Tell the supervisor this worker serves (fd 3 is its pipe).
    local f = io.open("/dev/fd/3", "w")
    if f then f:write("ready\n"); f:close() end
  end
  local ok, run_err = app:run()
  if not ok then return fail(run_err) end
  return 0
end

return M
