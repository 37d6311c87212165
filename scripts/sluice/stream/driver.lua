-- A deterministic test driver for sluice.stream topologies, in the spirit
-- of Kafka Streams' TopologyTestDriver: no broker, no loop, no threads.
-- Feed records with pipe(), move the wall clock with advance(), read what
-- the topology produced with read(). Every record is processed, and its
-- effects committed, before pipe() returns.
--
--   local d = stream.driver(topology)
--   d:pipe("clicks", "page-1", '{"user":"a"}', 1000)
--   d:advance(60000)
--   for _, r in ipairs(d:read("clicks-per-minute")) do print(r.key, r.value) end
local engine = require "sluice.stream.engine"
local serde = require "sluice.stream.serde"

local Driver = {}
Driver.__index = Driver

local M = {}

-- options: time (initial wall clock, ms; default 0), log (function(level,
-- msg); default: warnings and errors kept in driver.logs).
function M.new(topo, options)
  if type(topo) ~= "table" or not topo.sources then
    error("bad argument #1 to 'driver' (a topology from stream.topology expected)", 3)
  end
  if topo.app then
    error("bad argument #1 to 'driver' (this topology is bound to an app; declare it with stream.topology(nil, options))", 3)
  end
  options = options or {}
  local self = setmetatable({
    topo = topo, clock = options.time or 0, outputs = {}, written = {}, offsets = {},
    pending = {}, logs = {}, log_fn = options.log, errors = {},
  }, Driver)
  self.engine = engine.new(topo, self)
  return self
end

-- ---- the runner side (called by the engine) ----------------------------------

function Driver:now() return self.clock end

function Driver:log(level, msg)
  if self.log_fn then return self.log_fn(level, msg) end
  if level ~= "debug" then self.logs[#self.logs + 1] = level .. ": " .. msg end
end

function Driver:fail(msg)
  self.errors[#self.errors + 1] = msg
  self:log("error", msg)
end

function Driver:produce(topic, key, value, partition, timestamp)
  local rec = { topic = topic, key = key, value = value, partition = partition or 0,
                timestamp = timestamp or self.clock }
  local all = self.written[topic]
  if not all then all = {}; self.written[topic] = all end
  all[#all + 1] = rec
  local out = self.outputs[topic]
  if not out then out = {}; self.outputs[topic] = out end
  out[#out + 1] = rec
  -- Internal topics the topology reads (repartitions) are fed back in
  -- after the current record, in order.
  if self.topo.sources[topic] then self.pending[#self.pending + 1] = rec end
  return true
end

-- ---- the test side -------------------------------------------------------------

function Driver:_feed(rec)
  local tp = rec.topic .. "\0" .. rec.partition
  local off = self.offsets[tp] or 0
  self.offsets[tp] = off + 1
  rec.offset = off
  self.engine:process(rec)
end

function Driver:_drain()
  local i = 1
  while self.pending[i] do
    local r = self.pending[i]
    self:_feed({ topic = r.topic, partition = r.partition, key = r.key, value = r.value,
                 timestamp = r.timestamp, headers = {} })
    i = i + 1
  end
  self.pending = {}
  self.engine:flush()
end

-- pipe(topic, key, value [, timestamp [, partition]]) or pipe(topic, {key=,
-- value=, timestamp=, partition=, headers=}). A table value is sent as
-- JSON. timestamp defaults to the driver's clock, partition to 0.
function Driver:pipe(topic, key, value, timestamp, partition)
  if type(topic) ~= "string" then error("bad argument #1 to 'pipe' (topic name expected)", 2) end
  local rec
  if type(key) == "table" and value == nil then
    rec = key
  else
    rec = { key = key, value = value, timestamp = timestamp, partition = partition }
  end
  local v = rec.value
  if type(v) == "table" then v = serde.json.encode(v) end
  if rec.key ~= nil then rec.key = tostring(rec.key) end
  self:produce(topic, rec.key, v, rec.partition, rec.timestamp or self.clock)
  self.outputs[topic][#self.outputs[topic]] = nil   -- an input, not an output
  if self.topo.sources[topic] then self.pending[#self.pending] = nil end
  self:_feed({ topic = topic, partition = rec.partition or 0, key = rec.key, value = v,
               timestamp = rec.timestamp or self.clock, headers = rec.headers or {} })
  self:_drain()
  return self
end

-- Moves the wall clock by ms and runs the window timer: idle partitions'
-- event time follows the wall clock (unless wall_clock = false), so their
-- windows close and emit.
function Driver:advance(ms)
  self.clock = self.clock + (ms or 0)
  self.engine:punctuate()
  self:_drain()
  return self
end

-- The records produced to topic since the last read, oldest first:
-- { key, value, timestamp, partition } (value as produced: bytes).
-- options.json: decode each value from JSON.
function Driver:read(topic, options)
  local out = self.outputs[topic] or {}
  self.outputs[topic] = {}
  if options and options.json then
    for _, r in ipairs(out) do
      if r.value ~= nil then r.value = serde.json.decode(r.value) end
    end
  end
  return out
end

-- read(topic) as a key → last value table (JSON-decoded with options.json).
function Driver:read_map(topic, options)
  local map = {}
  for _, r in ipairs(self:read(topic, options)) do map[r.key] = r.value end
  return map
end

-- A store's current value for key ([window_start] for windowed stores,
-- [partition] default 0).
function Driver:get(store, key, window_start, partition)
  local def = self.topo.stores[store]
  if not def then error(("no store named '%s'"):format(store), 2) end
  for _, task in pairs(self.engine.tasks) do
    if task.partition == (partition or 0) and task.stores[store] then
      local st = task.stores[store]
      if def.kind == "kv" or def.kind == "table" then return st.data[key] end
      local e = st.data[key .. "\0" .. tostring(window_start)]
      return e and e.v
    end
  end
  return nil
end

-- Every record written to a topic so far (changelogs included).
function Driver:written_to(topic) return self.written[topic] or {} end

-- Simulates a restart: a fresh engine whose stores are restored from
-- everything written to the changelogs (and table topics) so far, as
-- on a partition assignment. Outputs not yet read are kept.
function Driver:restart()
  local engine = engine.new(self.topo, self)
  for _, task in pairs(self.engine.tasks) do
    local fresh = engine:task(next(self.topo.sources) and self:_topic_of(task) or "", task.partition, true)
    for _, def in ipairs(engine.sub_stores[fresh.sub] or {}) do
      local recs = {}
      for _, r in ipairs(self.written[def.changelog] or {}) do
        if r.partition == task.partition then recs[#recs + 1] = r end
      end
      engine:restore(fresh, def, recs)
    end
  end
  self.engine = engine
  return self
end

function Driver:_topic_of(task)
  for topic in pairs(self.topo.sources) do
    if self.engine.topic_sub[topic] == task.sub then return topic end
  end
end

return M
