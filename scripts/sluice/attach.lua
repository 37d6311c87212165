-- `sluice attach [PID|SOCKET] [--worker N] [--eval CHUNK]`: the client of
-- a running app's console (sluice.console). Interactive, it relays the
-- terminal's lines and prints what the console writes (taps included) as
-- it arrives; with --eval (or input that is not a terminal) it sends the
-- chunk(s), prints the results and exits 1 if any failed.
-- A gateway run with --workers has one console per worker
-- (SUPERVISOR-N.sock): attaching to the supervisor's pid talks to all of
-- them (each line of output says `[worker N]`), --worker N to one.
local core = require "sluice.core"
local console = require "sluice.console"

local M = {}

-- Consoles of live processes, as { id = "1234" or "1234-2", path = ... }, sorted.
local function live_consoles(dir)
  local names = core.readdir(dir) or {}
  local found = {}
  for _, name in ipairs(names) do
    local id = name:match("^([%d%-]+)%.sock$")
    -- A process killed outright leaves its socket file: skip the dead.
    if id and core.readdir("/proc/" .. id:match("^%d+")) then
      found[#found + 1] = { id = id, path = dir .. "/" .. name }
    end
  end
  table.sort(found, function(a, b) return a.id < b.id end)
  return found
end

-- The consoles to talk to, each { label =, path = }, or nil, err.
function M.targets(target, worker)
  local dir = console.dir()
  if target and target:find("/", 1, true) then return { { path = target } } end
  local all = live_consoles(dir)
  if target == nil then
    -- The one gateway running (a supervisor's workers count as one).
    local roots = {}
    for _, c in ipairs(all) do roots[c.id:match("^%d+")] = true end
    local list = {}
    for r in pairs(roots) do list[#list + 1] = r end
    table.sort(list)
    if #list == 0 then return nil, ("no running sluice has a console in %s"):format(dir) end
    if #list > 1 then
      return nil, ("several gateways run (%s): sluice attach PID"):format(table.concat(list, ", "))
    end
    target = list[1]
  end
  if not target:match("^%d+$") then return nil, ("attach needs a pid or a socket path, got '%s'"):format(target) end
  local own = dir .. "/" .. target .. ".sock"
  local workers = {}
  for _, c in ipairs(all) do
    local n = c.id:match("^" .. target .. "%-(%d+)$")
    if n and (worker == nil or tonumber(n) == worker) then
      workers[#workers + 1] = { label = "[worker " .. n .. "] ", path = c.path, n = tonumber(n) }
    end
  end
  table.sort(workers, function(a, b) return a.n < b.n end)
  if #workers > 0 then return workers end
  if worker then return nil, ("process %s has no worker %d with a console"):format(target, worker) end
  for _, c in ipairs(all) do if c.path == own then return { { path = own } } end end
  return nil, ("process %s has no console (%s): is it a sluice run started with its console on?"):format(target, own)
end

M.is_tty = core.isatty

-- Run the session. opts: eval (a chunk), interactive (boolean).
function M.run(targets, opts)
  local loop = assert(core.loop { log_level = "error" })
  -- Several consoles at once: no prompts, whole lines, each labelled.
  local quiet = not opts.interactive or #targets > 1
  local open, failed, status = 0, 0, 0
  local sessions = {}
  local label_of = #targets > 1
  for _, t in ipairs(targets) do
    local s = { label = label_of and t.label or nil, pending = "", skip = quiet }
    local conn, err = core.unix_connect(loop, t.path, {
      data = function(_, bytes)
        if s.skip then
          -- Up to the first prompt: the banner, not asked for in a script.
          local rest = (s.pending .. bytes):match("^.-\n> (.*)$")
          if not rest then s.pending = s.pending .. bytes; return end
          s.skip, s.pending, bytes = false, "", rest
        end
        if not quiet then io.stdout:write(bytes); io.stdout:flush(); return end
        -- Whole lines, labelled; the console's last line `\end N` counts
        -- the evaluations that failed.
        local text, last = s.pending .. bytes, 1
        for line, stop in text:gmatch("([^\n]*)\n()") do
          local n = line:match("^\\end (%d+)$")
          if n then failed, s.ended = failed + tonumber(n), true
          else io.stdout:write(s.label or "", line, "\n") end
          last = stop
        end
        s.pending = text:sub(last)
        io.stdout:flush()
      end,
      close = function()
        if s.pending ~= "" then io.stdout:write(s.label or "", s.pending, "\n") end
        if quiet and not s.ended and not s.interrupted then
          io.stderr:write("sluice: attach: ", s.label or "", "the console closed before it finished\n")
          status = 1
        end
        open = open - 1
        if open == 0 then loop:stop() end
      end,
    })
    if not conn then
      io.stderr:write("sluice: attach: ", err, "\n")
      status = 1
    else
      open = open + 1
      s.conn = conn
      sessions[#sessions + 1] = s
    end
  end
  if open == 0 then loop:close(); return 1 end
  local function to_all(bytes)
    for _, s in ipairs(sessions) do if not s.conn:is_closed() then s.conn:send(bytes) end end
  end
  local function end_all()
    for _, s in ipairs(sessions) do if not s.conn:is_closed() then s.conn:shutdown() end end
  end
  if quiet then to_all("\\quiet\n") end
  local stdin
  if opts.eval then
    to_all(opts.eval .. "\n")
    end_all()
  else
    stdin = core.unix_adopt(loop, 0, {
      data = function(_, bytes) to_all(bytes) end,
      -- A pipe's end may come as its close (a hang-up with nothing to read).
      eof = function() end_all() end,
      close = function() end_all() end,
    })
  end
  -- Ctrl-C ends the session (the gateway goes on).
  loop:on_signals(function()
    for _, s in ipairs(sessions) do s.interrupted = true end
    loop:stop()
  end)
  loop:run()
  loop:on_signals(nil)
  if stdin then stdin:close() end
  for _, s in ipairs(sessions) do if not s.conn:is_closed() then s.conn:close() end end
  loop:close()
  if failed > 0 then status = 1 end
  return status
end

return M
