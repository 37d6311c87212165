-- sluice.stream's engine: the tasks of a running topology, one per
-- (sub-topology, partition), each with its stores, stream time and
-- offsets. A runner (sluice.stream.kafka on an app, sluice.stream.driver
-- in memory) feeds records in and carries outputs and changelog writes out.
local util = require "sluice.util"
local store = require "sluice.stream.store"

local M = {}

-- Hands rec to the children of node.
local function forward(node, rec, task)
  local ch = node.children
  for i = 1, #ch do ch[i]:process(rec, task) end
end
M.forward = forward

local Engine = {}
Engine.__index = Engine

-- runner: produce(topic, key, value, partition, timestamp, internal) →
-- true | nil, err; log(level, msg); now() → wall-clock ms.
function M.new(topo, runner)
  topo.frozen = true
  local self = setmetatable({ topo = topo, runner = runner, tasks = {}, stats = topo.counters }, Engine)
  -- sub-topology of each topic
  self.topic_sub = {}
  for topic, nodes in pairs(topo.sources) do
    self.topic_sub[topic] = topo:_sub(nodes[1].sub)
  end
  -- stores of each sub-topology
  self.sub_stores = {}
  for _, def in ipairs(topo.store_list) do
    local sub = topo:_sub(def.node.sub)
    def.sub = sub
    local l = self.sub_stores[sub] or {}
    l[#l + 1] = def
    self.sub_stores[sub] = l
  end
  return self
end

function Engine:task_id(topic, partition)
  return self.topic_sub[topic] .. ":" .. partition
end

function Engine:task(topic, partition, create)
  local id = self:task_id(topic, partition)
  local t = self.tasks[id]
  if t or not create then return t end
  t = { id = id, sub = self.topic_sub[topic], partition = partition, engine = self,
        stores = {}, time = -math.huge, wall = self.runner:now(), offsets = {} }
  for _, def in ipairs(self.sub_stores[t.sub] or {}) do t.stores[def.name] = store.new(def) end
  self.tasks[id] = t
  return t
end

function Engine:drop_task(id) self.tasks[id] = nil end

-- Applies changelog records (and table topics) to a new task's stores.
function Engine:restore(task, def, records)
  local st = task.stores[def.name]
  for _, r in ipairs(records) do
    if def.kind == "table" then
      if r.key ~= nil then
        if r.value == nil then st.data[r.key] = nil
        else
          local ok, v = pcall(def.decode, r.value)
          if ok then st.data[r.key] = v end
        end
      end
    else
      local t = st:restore(r.key, r.value)
      if t and t > task.time then task.time = t end
    end
    self.stats.restored = self.stats.restored + 1
  end
end

function Engine:skip(msg)
  self.stats.skipped = self.stats.skipped + 1
  self.runner:log("warn", "stream: " .. msg)
end

function Engine:late(store, rec)
  self.stats.late = self.stats.late + 1
  self.runner:log("debug", ("stream: late record for store %s dropped (timestamp %s)"):format(store, tostring(rec.timestamp)))
end

function Engine:output(task, topic, key, value, partition, timestamp, internal)
  local ok, err = self.runner:produce(topic, key, value, partition, timestamp, internal, task)
  if not ok then self:fail(("output to %s: %s"):format(topic, tostring(err))) end
end

function Engine:fail(msg)
  self.stats.errors = self.stats.errors + 1
  self.runner:fail(msg)
end

-- Moves the task's stream time to t and closes what that closes.
function Engine:advance(task, t)
  if t <= task.time then return end
  task.time = t
  task.wall = self.runner:now()
  for _, def in ipairs(self.sub_stores[task.sub] or {}) do
    if def.kind == "window" or def.kind == "session" then
      local st = task.stores[def.name]
      local gap = def.kind == "session" and def.window.gap or 0
      local node = def.node
      st:close_until(t, gap, function(entry)
        if def.emit == "close" then
          forward(node, { key = entry.k, value = entry.v, timestamp = entry.e - 1,
                          window = { start = entry.s, ["end"] = entry.e } }, task)
        end
      end)
    end
  end
end

-- One input record: raw = {topic, partition, offset, key, value, timestamp, headers}.
function Engine:process(raw, existing_only)
  local task = self:task(raw.topic, raw.partition, not existing_only)
  local nodes = self.topo.sources[raw.topic]
  if not nodes then return end
  if not task then
    -- (Kafka: a record of a partition that is not, or no longer, ours)
    self.runner:log("warn", ("stream: record of unassigned %s[%d] ignored"):format(raw.topic, raw.partition))
    return
  end
  self.stats.processed = self.stats.processed + 1
  local ts = raw.timestamp
  -- Event time moves first: the windows this record's time closes are
  -- closed (and emitted) before it is added to the open ones.
  for i = 1, #nodes do
    local node = nodes[i]
    if node.time then
      -- a user timestamp: decode once here to know the time
      local ok, v = pcall(node.decode, raw.value)
      local tok, t = pcall(node.time, { key = raw.key, value = ok and v or nil, timestamp = ts, topic = raw.topic })
      if tok and type(t) == "number" then ts = t end
    end
  end
  if type(ts) == "number" and ts >= 0 then self:advance(task, ts) end
  for i = 1, #nodes do
    local ok, err = util.xpcall(nodes[i].process, debug.traceback, nodes[i], raw, task)
    if not ok then
      self.stats.errors = self.stats.errors + 1
      self.runner:log("error", ("stream: processing %s[%d]@%s failed: %s"):format(
        raw.topic, raw.partition, tostring(raw.offset), tostring(err)))
    end
  end
  if raw.offset then task.offsets[raw.topic] = raw.offset end
end

-- The timer: idle tasks' event time follows the wall clock so that their
-- windows still close.
function Engine:punctuate()
  if self.topo.options.wall_clock == false then return end
  local now = self.runner:now()
  for _, task in pairs(self.tasks) do
    if task.time > -math.huge and now > task.wall then
      local t = task.time + (now - task.wall)
      self:advance(task, t)
    end
  end
end

-- Writes each task's changed store entries to its changelog partition.
function Engine:flush_task(task)
  for name, st in pairs(task.stores) do
    if st.def.kind ~= "table" and next(st.dirty) then
      local topic = st.def.changelog
      for id in pairs(st.dirty) do
        local ok, bytes = pcall(st.changelog_value, st, id)
        if not ok then
          self:fail(("store %s: value of %q is not JSON-encodable: %s"):format(name, id, tostring(bytes)))
        else
          self:output(task, topic, id, bytes, task.partition, nil, true)
        end
      end
      st.dirty = {}
      if st.def.window and task.time > -math.huge then
        self:output(task, topic, "\0time", string.format("%d", task.time), task.partition, nil, true)
      end
    end
  end
end

function Engine:flush()
  for _, task in pairs(self.tasks) do self:flush_task(task) end
end

return M
