-- An app's timers. The running code's are core timers, closed when a
-- reload replaces that code; new code being loaded only declares its
-- timers (a proxy is what it gets) and they start once it is adopted.
local core = require "sluice.core"

local M = {}

local Proxy = {}
Proxy.__index = Proxy

local function live_proxy(self)
  if self.decl.closed and not self.core then error("attempt to use a closed sluice.timer", 3) end
end
function Proxy:start(ms, repeat_ms)
  live_proxy(self)
  if self.core then self.core:start(ms, repeat_ms) return self end
  self.decl.ms, self.decl.repeat_ms, self.decl.stopped = ms, repeat_ms or 0, nil
  return self
end
function Proxy:stop()
  live_proxy(self)
  if self.core then self.core:stop() else self.decl.stopped = true end
  return self
end
function Proxy:close()
  if self.core then self.core:close() end
  self.decl.closed = true
end
-- Armed: started and not stopped (a declared one: once it is adopted).
function Proxy:armed()
  live_proxy(self)
  if self.core then return self.core:armed() end
  return false
end
function Proxy:is_closed()
  if self.core then return self.core:is_closed() end
  return self.decl.closed == true
end

-- The timers of this generation's code, weakly held.
function M.set()
  return setmetatable({}, { __mode = "k" })
end

-- A running app's timer: started now.
function M.start(app, ms, fn, repeat_ms)
  local t = core.timer(app.loop, fn)
  app.timers[t] = true
  return t:start(ms, repeat_ms or 0)
end

-- A candidate's timer (decls: its list): a proxy, started at adoption.
function M.declare(decls, ms, fn, repeat_ms)
  local decl = { ms = ms, fn = fn, repeat_ms = repeat_ms or 0 }
  decl.proxy = setmetatable({ decl = decl }, Proxy)
  decls[#decls + 1] = decl
  return decl.proxy
end

-- The swap: the old code's timers stop, the new code's start.
function M.adopt(app, decls)
  for t in pairs(app.timers) do t:close() end
  app.timers = M.set()
  for _, td in ipairs(decls) do
    if not td.closed then
      local t = core.timer(app.loop, td.fn)
      td.proxy.core = t
      app.timers[t] = true
      if not td.stopped then t:start(td.ms, td.repeat_ms) end
    end
  end
end

return M
