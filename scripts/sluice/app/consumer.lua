-- The object app:consume returns, and the Kafka consumer it starts.
--
-- Handlers are reached through the consumer's `route`, which a reload
-- re-points at the new code's declaration: the Kafka consumer itself (its
-- group membership and positions) is kept.
local core = require "sluice.core"
local util = require "sluice.util"
local console = require "sluice.console"

local Consumer = {}
Consumer.__index = Consumer

-- app:consume's `from`: the auto.offset.reset it sets (false: none).
Consumer.FROM = { earliest = "earliest", latest = "latest", committed = false }

-- A broadcast consumer's `from` (docs/api.md): a name (its core start), an
-- offset, or a table with `time` (ms since the epoch) and/or `offsets`.
local BROADCAST_FROM = { ["end"] = true, beginning = -2, earliest = -2, latest = -1 }

-- What is wrong with options.from (a message for app:consume), or nil.
function Consumer.from_error(options)
  local from = options.from
  if options.broadcast then
    local t = type(from) == "table" and from
    if from == nil or BROADCAST_FROM[from] or (type(from) == "number" and from >= 0 and from % 1 == 0)
      or (t and (t.time == nil or (type(t.time) == "number" and t.time >= 0))
            and (t.offsets == nil or type(t.offsets) == "table")) then
      return nil
    end
    return "from must be \"end\", \"beginning\", \"latest\", an offset, " ..
      "{ time = ms } or { offsets = { [topic] = { [partition] = offset } } } for a broadcast consumer"
  elseif from ~= nil and type(from) ~= "number" and Consumer.FROM[from] == nil then
    return "from must be \"earliest\", \"latest\", \"committed\" or an offset"
  end
end

-- Where a broadcast consumer starts, as core.consumer fields. "end" is the
-- end as of the app's start: the first records stamped at or after it
-- (Kafka's offsets for times); in the app's own embedded broker that is
-- everything in it, since it started with the app.
local function broadcast_start(app, from)
  local t = type(from) == "table" and from or {}
  local fields = { assign = true, offsets = t.offsets }
  if t.time then fields.start_time = math.floor(t.time)
  elseif type(from) == "number" then fields.start = from
  elseif type(from) == "string" and from ~= "end" then fields.start = BROADCAST_FROM[from]
  elseif app.broker then fields.start = BROADCAST_FROM.beginning
  else fields.start_time = app.started_ms end
  return fields
end

function Consumer.new(decl)
  return setmetatable({ decl = decl }, Consumer)
end

-- After a reload the new code's consumer object takes over the running
-- Kafka consumer; the old code's object forwards to it.
function Consumer.current(self)
  while self._moved_to do self = self._moved_to end
  return self
end

-- What identifies a Kafka consumer across reloads: topics, group, broadcast.
function Consumer.key(app, decl)
  local topics = {}
  for i, t in ipairs(decl.topics) do topics[i] = t end
  table.sort(topics)
  local o = decl.options
  return ("%s|%s|%s"):format(table.concat(topics, ","), o.group or app.name, o.broadcast and "b" or "")
end

function Consumer:_live()
  if self.closed then error("attempt to use a closed sluice.consumer", 3) end
  return self.core
end
-- pause/resume are remembered while not started (and across reloads).
-- _live raises at the caller's line: each method calls it directly.
function Consumer:pause()
  self = Consumer.current(self)
  self.paused = true
  local c = self:_live()
  if c then return c:pause() end
  return true
end
function Consumer:resume()
  self = Consumer.current(self)
  self.paused = false
  local c = self:_live()
  if c then return c:resume() end
  return true
end
function Consumer:commit()
  self = Consumer.current(self)
  local c = self:_live()
  if not c then return nil, "STATE: consumer not started", "STATE" end
  return c:commit()
end
-- With options.manual: the record at offset (and all before it) is done;
-- committed with the next commit. Used by sluice.stream.
function Consumer:store(topic, partition, offset)
  self = Consumer.current(self)
  local c = self:_live()
  if not c then return nil, "STATE: consumer not started", "STATE" end
  return c:store(topic, partition, offset)
end
function Consumer:close(timeout_ms)
  self = Consumer.current(self)
  if self.closed then return end
  self.closed = true
  if self.core then self.core:close(timeout_ms) end
  self.core = nil
end

-- This (new code's) object takes over the running Kafka consumer of old,
-- which then forwards to it; handlers now come from decl.
function Consumer:take_over(old)
  old = Consumer.current(old)
  self.core, self.assigned, self.rebalances, self._route = old.core, old.assigned, old.rebalances, old._route
  self.group = old.group
  self.paused, self.closed = old.paused, old.closed
  if self._route then self._route.decl = self.decl end
  old._moved_to = self
  return old
end

-- Starts the Kafka consumer of decl on the app's loop. true, or nil, err, code.
function Consumer.start(app, decl)
  if decl.prepare and not decl.prepared then   -- e.g. a stream's topics created first
    decl.prepared = true
    decl.prepare(function()
      if decl.consumer.closed or app.closed then return end
      local ok, err = Consumer.start(app, decl)
      if not ok then app:_log("error", ("consumer of %s: %s"):format(table.concat(decl.topics, ","), err)) end
    end)
    return true
  end
  local options = decl.options
  local from = options.from
  local extra = util.copy(options.kafka)
  -- Broadcast: no group; each instance assigns itself every partition.
  local fields = options.broadcast and broadcast_start(app, from)
    or { start = type(from) == "number" and from or nil }
  if options.broadcast then
    fields.refresh = tonumber(extra["topic.metadata.refresh.interval.ms"])
  else
    extra["group.id"] = options.group or app.name
    if type(from) == "string" and Consumer.FROM[from] then extra["auto.offset.reset"] = Consumer.FROM[from] end
  end
  -- The embedded broker creates topics on first use; let consumers ask.
  if app.broker and extra["allow.auto.create.topics"] == nil then extra["allow.auto.create.topics"] = "true" end
  local counters = app.counters
  local route = { decl = decl }
  fields.props, fields.topics = app:_kafka_props(extra), decl.topics
  fields.manual = options.manual and true or nil   -- offsets via consumer:store (sluice.stream)
  fields.batch = options.batch or nil              -- handler(list of records), once per batch
  local c, err, code = core.consumer(app.loop, fields, {
    -- A reload may switch `batch` while the consumer keeps its mode.
    record = options.batch and function(recs)
      counters.consumed = counters.consumed + #recs
      if app._taps then
        for i = 1, #recs do local r = recs[i]; console.tap_record(app, "consume", r.topic, r.key, r.value, r.partition, r.offset) end
      end
      local d = route.decl
      if d.options.batch then return d.handler(recs) end
      for i = 1, #recs do d.handler(recs[i]) end
    end or function(rec)
      counters.consumed = counters.consumed + 1
      if app._taps then console.tap_record(app, "consume", rec.topic, rec.key, rec.value, rec.partition, rec.offset) end
      local d = route.decl
      if d.options.batch then return d.handler({ rec }) end
      return d.handler(rec)
    end,
    rebalance = function(event, parts)
      local d = route.decl
      d.consumer.assigned = (d.consumer.assigned or 0) + (event == "assigned" and #parts or -#parts)
      d.consumer.rebalances = (d.consumer.rebalances or 0) + 1
      if d.options.rebalance then return d.options.rebalance(event, parts) end
    end,
  })
  if not c then return nil, err, code end
  decl.consumer.core = c
  decl.consumer.group = extra["group.id"]   -- a label of its metrics (none: broadcast)
  decl.consumer._route = route
  if decl.consumer.paused then c:pause() end
  app.consumers[#app.consumers + 1] = decl.consumer
  if app.started then app:_guard_collection() end
  return true
end

-- The broadcast consumer behind app:subscribe's feed of one topic: from
-- the end as of the app's start (declared with app:feed), or as of now
-- (started by a first subscription): nothing written after it is missed.
-- handlers: record, rebalance. The core consumer, or nil, err, code.
function Consumer.start_feed(app, topic, handlers, now)
  local fields = now and { assign = true, start_time = core.time_ms() } or broadcast_start(app, nil)
  local extra = {}
  if app.broker then extra["allow.auto.create.topics"] = "true" end
  fields.props, fields.topics = app:_kafka_props(extra), { topic }
  local counters = app.counters
  local record = handlers.record
  return core.consumer(app.loop, fields, {
    record = function(rec)
      counters.consumed = counters.consumed + 1
      return record(rec)
    end,
    rebalance = handlers.rebalance,
  })
end

return Consumer
