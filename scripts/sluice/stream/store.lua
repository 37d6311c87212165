-- sluice.stream's stores: a task's keyed state (plain, windowed or
-- session windows), what it writes to its changelog and how it is
-- restored from it.
local serde = require "sluice.stream.serde"

local json, integral = serde.json, serde.integral

local M = {}

local Store = {}
Store.__index = Store

local function new_store(def)
  return setmetatable({ def = def, data = {}, dirty = {}, ends = {}, by_end = {}, by_key = {} }, Store)
end

function Store:get(key) return self.data[key] end

function Store:put(key, value)
  self.data[key] = value
  self.dirty[key] = true
end

-- Tables: their topic is their changelog; nothing to write.
function Store:put_local(key, value) self.data[key] = value end

-- Windowed entries: data[id] = { k, s, e, v }; closed when their deadline
-- (fixed: end; session: end + gap) plus grace is behind stream time.
local function wid(key, start) return key .. "\0" .. start end

local function insert_sorted(list, x)
  local lo, hi = 1, #list
  while lo <= hi do
    local mid = math.floor((lo + hi) / 2)
    if list[mid] == x then return end
    if list[mid] < x then lo = mid + 1 else hi = mid - 1 end
  end
  table.insert(list, lo, x)
end

function Store:_index(id, deadline)
  local set = self.by_end[deadline]
  if not set then
    set = {}
    self.by_end[deadline] = set
    insert_sorted(self.ends, deadline)
  end
  set[id] = true
end

function Store:window_update(key, start, e, step, rec)
  local id = wid(key, start)
  local entry = self.data[id]
  if not entry then
    entry = { k = key, s = start, e = e }
    self.data[id] = entry
    self:_index(id, e)
  end
  entry.v = step(entry.v, rec.value, key, rec)
  self.dirty[id] = true
  return entry
end

function Store:_delete(id)
  local entry = self.data[id]
  self.data[id] = nil
  self.dirty[id] = true
  if entry and self.by_key[entry.k] then self.by_key[entry.k][id] = nil end
  return entry
end

function Store:session_update(key, ts, gap, step, merge, rec)
  local sessions = self.by_key[key]
  if not sessions then sessions = {}; self.by_key[key] = sessions end
  local found = {}
  for id in pairs(sessions) do
    local en = self.data[id]
    if en and en.s - gap <= ts and ts <= en.e + gap then found[#found + 1] = en end
  end
  table.sort(found, function(a, b) return a.s < b.s end)
  local removed = {}
  local entry
  if #found == 0 then
    entry = { k = key, s = ts, e = ts }
  else
    entry = { k = key, s = math.min(found[1].s, ts), e = ts, v = found[1].v }
    for i, en in ipairs(found) do
      if en.e > entry.e then entry.e = en.e end
      if i > 1 then entry.v = merge(entry.v, en.v, key) end
    end
    for _, en in ipairs(found) do
      self:_delete(wid(key, en.s))
      removed[#removed + 1] = en
    end
  end
  entry.v = step(entry.v, rec.value, key, rec)
  local id = wid(key, entry.s)
  -- The merged session may keep the id of one it replaced.
  for i = #removed, 1, -1 do if wid(key, removed[i].s) == id then table.remove(removed, i) end end
  self.data[id] = entry
  self.dirty[id] = true
  sessions[id] = true
  self:_index(id, entry.e + gap)
  return entry, removed
end

-- Closes the windows whose deadline + grace <= time; calls on_close(entry)
-- for each (in deadline order).
function Store:close_until(time, gap, on_close)
  local ends, grace = self.ends, self.def.grace
  local n = 0
  while ends[n + 1] and ends[n + 1] + grace <= time do
    n = n + 1
    local deadline = ends[n]
    local ids = {}
    for id in pairs(self.by_end[deadline]) do ids[#ids + 1] = id end
    table.sort(ids)
    self.by_end[deadline] = nil
    for _, id in ipairs(ids) do
      local entry = self.data[id]
      -- (a session may have grown past this deadline since)
      if entry and entry.e + gap == deadline then
        self:_delete(id)
        on_close(entry)
      end
    end
  end
  if n > 0 then
    local len = #ends
    for i = 1, len do ends[i] = ends[i + n] end   -- (table.move is not in LuaJIT)
  end
end

-- Changelog encoding: key = entry id, value = JSON (nil: deleted).
function Store:changelog_value(id)
  local v = self.data[id]
  if v == nil then return nil end
  if self.def.kind == "kv" then return json.encode({ v = v }) end
  return json.encode(v)
end

function Store:restore(key, bytes)
  if key == "\0time" then return tonumber(bytes) end
  local kind = self.def.kind
  if bytes == nil then
    if kind == "kv" then self.data[key] = nil else self:_delete(key) end
    self.dirty[key] = nil
    return
  end
  local v = integral(json.decode(bytes))
  if kind == "kv" then
    self.data[key] = v.v
  else
    self.data[key] = v
    local gap = kind == "session" and self.def.window.gap or 0
    if kind == "session" then
      local s = self.by_key[v.k]
      if not s then s = {}; self.by_key[v.k] = s end
      s[key] = true
    end
    self:_index(key, v.e + gap)
  end
end

M.new = new_store

return M
