-- `sluice run app.lua --workers N`: N worker processes, each a whole
-- `sluice run` (its own loop, Lua state, producer and consumers) on one
-- port (SO_REUSEPORT: the kernel spreads new connections among them),
-- under this supervisor (docs/operations.md, "Workers"):
-- - a worker that dies is started again, after 0.5 s, doubling up to 30 s
--   while it keeps dying young (back to 0.5 s once it lived 30 s);
-- - SIGHUP goes to every worker: each reloads its code (a broken script
--   leaves each on its old generation);
-- - SIGTERM/SIGINT go to every worker, which drains as one process does;
--   the supervisor exits once all have, 0 if all of them exited 0 then;
-- - with no Kafka cluster on the command line, the embedded broker runs
--   here, shared by every worker (so broadcasts reach the clients of each).
-- A worker tells the supervisor it is serving by writing "ready" on fd 3;
-- the end of that pipe tells it the worker is gone. If a worker of the
-- first start dies before it was ever ready (a script that does not load,
-- a port in use), the others are stopped and the supervisor exits 1.
local core = require "sluice.core"
local ops = require "sluice.ops"

local M = {}

local BACKOFF_MIN, BACKOFF_MAX, HEALTHY_MS = 500, 30000, 30000

-- opts: n, argv (the worker command, without --workers), embedded_port,
-- embedded (true: run the embedded broker here), log_format, log_level.
function M.run(opts)
  local loop = assert(core.loop {
    log = opts.log_format == "json" and ops.json_logger("sluice-supervisor") or nil,
    log_level = opts.log_level or "info",
  })
  local function log(level, msg) loop:log(level, "supervisor: " .. msg) end
  local env = { "SLUICE_SUPERVISOR=" .. core.getpid() }
  local broker
  if opts.embedded then
    local err, code
    broker, err, code = core.broker(loop, { port = opts.embedded_port or 9092 })
    if not broker then
      loop:close()
      return nil, err .. (code == "ADDRINUSE" and " (choose a free one with --embedded-port PORT)" or "")
    end
    env[#env + 1] = "SLUICE_SHARED_KAFKA=" .. broker:direct_bootstrap()
  end

  local workers, stopping, failed_start, exit_status = {}, false, false, 0
  local alive = 0
  local start

  local function all_stopped()
    if alive == 0 then loop:stop() end
  end

  local function stop_all(sig)
    stopping = true
    for _, w in ipairs(workers) do
      if w.timer then w.timer:close(); w.timer = nil end
      if w.pid then core.kill(w.pid, sig) end
    end
    all_stopped()
  end

  local function exited(w)
    local how, what = core.waitpid(w.pid, true)
    local pid = w.pid
    w.pid = nil
    alive = alive - 1
    if w.pipe then w.pipe:close(); w.pipe = nil end
    local clean = how == "exited" and what == 0
    if stopping and not clean then exit_status = 1 end
    local said = how == "exited" and ("exit status %d"):format(what) or ("signal %s"):format(tostring(what))
    if stopping then
      log(clean and "info" or "warn", ("worker %d (pid %d) stopped: %s"):format(w.n, pid, said))
      return all_stopped()
    end
    if not w.ever_ready and not w.restarted then
      log("error", ("worker %d (pid %d) failed to start (%s): stopping the others"):format(w.n, pid, said))
      failed_start = true
      return stop_all("TERM")
    end
    -- Young deaths double the wait; a worker that lived long starts afresh.
    if w.ready_at and core.time_ms() - w.ready_at >= HEALTHY_MS then w.backoff = BACKOFF_MIN end
    local wait = w.backoff
    w.backoff = math.min(BACKOFF_MAX, w.backoff * 2)
    log("warn", ("worker %d (pid %d) died (%s); starting it again in %.1f s"):format(w.n, pid, said, wait / 1000))
    w.timer = core.timer(loop, function()
      w.timer:close()
      w.timer = nil
      w.restarted = true
      start(w)
    end)
    w.timer:start(wait)
  end

  start = function(w)
    local worker_env = { "SLUICE_WORKER=" .. w.n }
    for _, e in ipairs(env) do worker_env[#worker_env + 1] = e end
    local pid, fd = core.spawn(opts.argv, worker_env)
    if not pid then
      log("error", ("worker %d: %s"):format(w.n, fd))
      exit_status = 1
      return stop_all("TERM")
    end
    w.pid, w.ready_at, w.buf = pid, nil, ""
    alive = alive + 1
    local pipe, err = core.unix_adopt(loop, fd, {
      data = function(_, bytes)
        w.buf = w.buf .. bytes
        if not w.ready_at and w.buf:find("ready\n", 1, true) then
          w.ready_at, w.ever_ready = core.time_ms(), true
          log("info", ("worker %d (pid %d) ready"):format(w.n, pid))
        end
      end,
      eof = function() exited(w) end,
      close = function() if w.pid == pid then exited(w) end end,
    })
    core.close_fd(fd)
    if not pipe then log("error", "cannot watch worker: " .. err) end
    w.pipe = pipe
  end

  loop:on_signals(function(sig)
    if sig == "HUP" then
      log("info", "SIGHUP: every worker reloads")
      for _, w in ipairs(workers) do if w.pid then core.kill(w.pid, "HUP") end end
    elseif not stopping then
      log("info", ("SIG%s: stopping %d workers"):format(sig, alive))
      stop_all("TERM")
    end
  end)
  log("info", ("starting %d workers (supervisor pid %d; sluice attach %d)"):format(opts.n, core.getpid(), core.getpid()))
  for n = 1, opts.n do
    workers[n] = { n = n, backoff = BACKOFF_MIN }
    start(workers[n])
    if stopping then break end
  end
  if alive > 0 then loop:run() end
  loop:on_signals(nil)
  if broker then broker:close() end
  loop:close()
  if failed_start then return nil, "a worker failed to start (its error is above)" end
  return exit_status
end

return M
