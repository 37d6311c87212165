-- Subscriptions to a topic (app:subscribe): one broadcast consumer per
-- topic (a "feed", no group, from the end as of the app's start) pushes
-- every record to its live subscribers, one shared copy per format; a
-- subscriber that comes back with a position first catches up from Kafka
-- (core.catchup: its own reader, a bounded number at once) and joins the
-- live stream at the seam, partition by partition, with no gap and no
-- duplicate.
--
-- A position names, for every partition of the topic, the next offset the
-- subscriber has not seen and the timestamp of the record before it (the
-- epoch: if the topic was re-created, another record, or none, stands at
-- that offset). Text form: "p:next:timestamp" per partition, sorted by
-- partition, joined by "," (timestamp -1: not known, not checked), e.g.
-- "0:1500:1764745200123,1:0:-1". It is the same for every live subscriber
-- after a given record, so one copy serves them all.
local core = require "sluice.core"
local cjson = require "cjson"

local json = cjson.new()

local Feed = {}
Feed.__index = Feed

-- Catch-ups reading at once per app (app option `catchups`); more wait.
Feed.DEFAULT_CATCHUPS = 4

-- The key of subscribers that get the record value unchanged.
local RAW = "raw"

-- The default format with positions: a JSON object per record.
function Feed.envelope(rec, position)
  return json.encode({ topic = rec.topic, partition = rec.partition, offset = rec.offset,
                       position = position, value = rec.value })
end

-- The default format for Server-Sent Events (app:sse): the position as
-- the event's id, so that the browser's reconnect sends it back as
-- Last-Event-ID; the value's lines as data lines.
function Feed.sse_event(rec, position)
  local data = rec.value:gsub("\r\n?", "\n"):gsub("\n", "\ndata: ")
  return "id: " .. position .. "\ndata: " .. data .. "\n\n"
end

-- ---- positions -------------------------------------------------------------

local function encode(parts, nexts, stamps)
  local out = {}
  for i, p in ipairs(parts) do
    out[i] = ("%d:%d:%d"):format(p, nexts[p], stamps[p] or -1)
  end
  return table.concat(out, ",")
end

-- The position text as { [partition] = { next, timestamp } }, or nil, why.
function Feed.decode(text)
  if type(text) ~= "string" or #text > 65536 then return nil, "a position is a string" end
  local at = {}
  if text == "" then return at end
  for item in (text .. ","):gmatch("([^,]*),") do
    local p, n, t = item:match("^(%d+):(%d+):(%-?%d+)$")
    p, n, t = tonumber(p), tonumber(n), tonumber(t)
    if not p or p > 2147483647 or n > 2 ^ 53 or t < -1 or at[p] then
      return nil, ("not a position: %q"):format(#item > 40 and item:sub(1, 40) .. "…" or item)
    end
    at[p] = { n, t }
  end
  return at
end

-- ---- the feed --------------------------------------------------------------

function Feed.new(app, topic)
  local self = setmetatable({
    app = app, topic = topic,
    parts = {},          -- partitions assigned, sorted
    nexts = {},          -- partition → the next offset the live stream delivers
    stamps = {},         -- partition → timestamp of the record before it (-1: none seen)
    groups = {},         -- format (function or RAW) → core.conn_set(): live WebSocket
                         -- subscribers (one broadcast pass in C; closed ones leave it)
    sse_groups = {},     -- format → { [stream] = true }: app:sse streams and other
                         -- conn-like tables (sent one by one)
    subs = {},           -- conn → its subscription
    catching = {},       -- subscriptions catching up (or waiting to)
    waiting = {},        -- queue of subscriptions waiting for a catch-up slot
    running = 0,
  }, Feed)
  return self
end

function Feed:position()
  return encode(self.parts, self.nexts, self.stamps)
end

-- A subscription's format applied to a record, with its position.
local function render(key, rec, position_fn)
  if key == RAW then return rec.value end
  return key(rec, position_fn())
end

local function send(sub, rec)
  local data = render(sub.key, rec, function() return encode(sub.feed.parts, sub.nexts, sub.stamps) end)
  if data then sub.conn:send(data) end
end

-- The live consumer: one record, to every live subscriber and to those
-- catching up that are live on its partition already.
function Feed:_record(rec)
  local p, o = rec.partition, rec.offset
  self.nexts[p], self.stamps[p] = o + 1, rec.timestamp
  if rec.value ~= nil then
    local position
    local function pos() position = position or self:position(); return position end
    for key, set in pairs(self.groups) do
      if set:count() > 0 then
        local data = render(key, rec, pos)
        if data then set:broadcast(data) end
      end
    end
    for key, set in pairs(self.sse_groups) do
      local data = next(set) and render(key, rec, pos)
      if data then
        for stream in pairs(set) do stream:send(data) end
      end
    end
  end
  for sub in pairs(self.catching) do
    if sub.live[p] and o >= sub.nexts[p] then
      sub.nexts[p], sub.stamps[p] = o + 1, rec.timestamp
      if rec.value ~= nil then send(sub, rec) end
    end
  end
end

function Feed:_assigned(list)
  for _, part in ipairs(list) do
    local p = part.partition
    if self.nexts[p] == nil then
      self.parts[#self.parts + 1] = p
      self.nexts[p], self.stamps[p] = part.offset, -1
      -- A new partition: whoever catches up starts it at the live stream.
      for sub in pairs(self.catching) do
        if sub.nexts[p] == nil then sub.nexts[p], sub.stamps[p], sub.live[p] = part.offset, -1, true end
      end
    end
  end
  table.sort(self.parts)
  self.rebalances = (self.rebalances or 0) + 1
  self.ready = true
  self:_pump()
end

-- Starts the feed's consumer: from the end as of the app's start, or
-- (now) as of now.
function Feed:start(now)
  local Consumer = require "sluice.app.consumer"
  local c, err, code = Consumer.start_feed(self.app, self.topic, {
    record = function(rec) return self:_record(rec) end,
    rebalance = function(event, list) if event == "assigned" then self:_assigned(list) end end,
  }, now)
  if not c then return nil, err, code end
  self.core = c
  return true
end

-- ---- subscribers ---------------------------------------------------------

local function join_live(self, sub)
  local conn, key = sub.conn, sub.key
  if type(conn) == "userdata" then
    local set = self.groups[key]
    if not set then set = core.conn_set(); self.groups[key] = set end
    -- (a connection closed meanwhile joins nothing; its close unsubscribes it)
    set:add(conn)
  else
    local set = self.sse_groups[key]
    if not set then set = {}; self.sse_groups[key] = set end
    set[conn] = true
  end
  sub.state = "live"
end

-- Out of its live group; a group left empty goes (formats may be made
-- per subscriber), its set collected (not closed: a format function that
-- unsubscribes may run while _record holds it).
local function leave_live(self, sub)
  local conn, key = sub.conn, sub.key
  if type(conn) == "userdata" then
    local set = self.groups[key]
    if set then
      set:remove(conn)
      if set:count() == 0 then self.groups[key] = nil end
    end
  else
    local set = self.sse_groups[key]
    if set then
      set[conn] = nil
      if next(set) == nil then self.sse_groups[key] = nil end
    end
  end
end

local function finish_catchup(self, sub)
  if sub.reader then sub.reader:close(); sub.reader = nil end
  if self.catching[sub] then
    self.catching[sub] = nil
    if sub.started then self.running = self.running - 1 end
  end
end

-- Live on every partition, and not ahead of the live stream: one of the many.
local function check_done(self, sub)
  for _, p in ipairs(self.parts) do
    local n = sub.nexts[p]
    if n == nil or n >= self.nexts[p] then sub.live[p] = true end
    if not sub.live[p] or (n or 0) > self.nexts[p] then return end
  end
  finish_catchup(self, sub)
  join_live(self, sub)
  self:_pump()
end

local function tell(sub, recovered, why)
  if sub.on_recovered then sub.on_recovered(recovered, why) end
end

function Feed:_start_catchup(sub)
  sub.started = true
  self.running = self.running + 1
  local from = {}
  for _, p in ipairs(self.parts) do
    local at = sub.since[p]
    if at then
      sub.nexts[p], sub.stamps[p] = at[1], at[2]
      from[#from + 1] = { partition = p, offset = at[1], timestamp = at[2] >= 0 and at[2] or nil }
    else
      -- Not in the position: a partition added since; read from its start.
      sub.nexts[p], sub.stamps[p] = -1, -1
      from[#from + 1] = { partition = p, offset = -2 }
    end
  end
  local reader, err = core.catchup(self.app.loop, {
    props = self.app:_kafka_props(), topic = self.topic, from = from,
  }, {
    start = function(recovered, why)
      if not self.catching[sub] then return end
      if not recovered then
        finish_catchup(self, sub)
        join_live(self, sub)
        tell(sub, false, why)
        return self:_pump()
      end
      tell(sub, true)
      check_done(self, sub)
    end,
    records = function(list)
      if not self.catching[sub] then return end
      for i = 1, #list do
        local rec = list[i]
        local p, o = rec.partition, rec.offset
        if not sub.live[p] and self.nexts[p] then
          if o >= self.nexts[p] then
            sub.live[p] = true            -- the live stream has it from here
          elseif o >= sub.nexts[p] then
            sub.nexts[p], sub.stamps[p] = o + 1, rec.timestamp
            if rec.value ~= nil then send(sub, rec) end
          end
        end
      end
      check_done(self, sub)
    end,
    end_of = function(p, end_offset)
      if not self.catching[sub] or not self.nexts[p] then return end
      if end_offset >= self.nexts[p] then
        sub.live[p] = true
        if sub.nexts[p] < self.nexts[p] then sub.nexts[p], sub.stamps[p] = self.nexts[p], self.stamps[p] end
      end
      check_done(self, sub)
    end,
    error = function(text)
      -- Part of the catch-up is lost (e.g. deleted while it was read).
      if not self.catching[sub] then return end
      finish_catchup(self, sub)
      join_live(self, sub)
      tell(sub, false, text)
      self:_pump()
    end,
  })
  if not reader then
    finish_catchup(self, sub)
    join_live(self, sub)
    tell(sub, false, err)
    return
  end
  sub.reader = reader
end

function Feed:_pump()
  local max = self.app.options.catchups or Feed.DEFAULT_CATCHUPS
  while self.ready and self.running < max and #self.waiting > 0 do
    local sub = table.remove(self.waiting, 1)
    if self.catching[sub] then self:_start_catchup(sub) end
  end
end

-- Subscribe conn. opts.since: a position (catch up from it first), or
-- nil (from now on). opts.format(rec, position) → the message (nil: none
-- sent); default: the value, or Feed.envelope when since/positions is set.
-- opts.recovered(ok, why): whether the position could be resumed from.
function Feed:subscribe(conn, opts)
  local since
  if opts.since ~= nil then
    local why
    since, why = Feed.decode(opts.since)
    if not since then return nil, "INVALID: " .. why, "INVALID" end
  end
  self:unsubscribe(conn)
  local key = opts.format or (conn.sse and Feed.sse_event) or ((opts.positions or since) and Feed.envelope) or RAW
  local on_recovered = opts.recovered
  if conn.sse and not on_recovered then
    -- an event of its own, which EventSource's onmessage does not see
    on_recovered = function(ok, why)
      conn:send(("event: recovered\ndata: %s\n\n"):format(json.encode({ recovered = ok, reason = why })))
    end
  end
  local sub = { conn = conn, feed = self, key = key, since = since, on_recovered = on_recovered,
                nexts = {}, stamps = {}, live = {} }
  self.subs[conn] = sub
  if not since then
    join_live(self, sub)
    return true
  end
  sub.state = "catching"
  self.catching[sub] = true
  self.waiting[#self.waiting + 1] = sub
  self:_pump()
  return true
end

function Feed:unsubscribe(conn)
  local sub = self.subs[conn]
  if not sub then return false end
  self.subs[conn] = nil
  leave_live(self, sub)
  finish_catchup(self, sub)
  for i, w in ipairs(self.waiting) do
    if w == sub then table.remove(self.waiting, i); break end
  end
  self:_pump()
  return true
end

-- What a subscription is doing: "live" or "catching", or nil.
function Feed:state(conn)
  local sub = self.subs[conn]
  return sub and sub.state
end

function Feed:close()
  for _, sub in pairs(self.subs) do finish_catchup(self, sub) end
  for _, set in pairs(self.groups) do set:close() end
  self.subs, self.groups, self.sse_groups, self.waiting = {}, {}, {}, {}
  if self.core then self.core:close(); self.core = nil end
end

return Feed
