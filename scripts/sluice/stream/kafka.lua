-- Runs a sluice.stream topology on an app: one group consumer in manual
-- offset mode for every source topic, outputs and changelog writes through
-- the app's producer, stores restored on assignment.
--
-- At-least-once: records are processed in epochs. Every produce a record
-- causes (outputs, repartition records, changelog writes) belongs to the
-- current epoch; every commit_ms the changed store entries are written to
-- their changelogs and the epoch is sealed with the offsets it processed.
-- Those offsets are stored and committed only when every produce of that
-- epoch and of all earlier ones was acknowledged. A crash replays at most
-- the records after the last committed epoch.
--
-- With processing = "exactly_once" each epoch is a Kafka transaction
-- instead (sluice.stream.eos).
local core = require "sluice.core"
local engine = require "sluice.stream.engine"
local topics = require "sluice.stream.topics"
local eos = require "sluice.stream.eos"

local DEBUG = os.getenv("SLUICE_STREAM_DEBUG")
local M = {}
local Runner = {}
Runner.__index = Runner

local DEFAULT_KAFKA = {
  -- librdkafka's mock broker rebalances a group whose member died only
  -- after its session times out: keep that short (6 s is Kafka's minimum).
  ["session.timeout.ms"] = "6000",
  ["heartbeat.interval.ms"] = "2000",
  -- co-partitioned topics (a stream and the table it joins) must land on
  -- the same member: range assigns partition p of each topic together.
  ["partition.assignment.strategy"] = "range",
  ["auto.commit.interval.ms"] = "1000",
}

eos.install(Runner)

function M.attach(topo, app)
  local self = setmetatable({
    topo = topo, app = app, queue = {}, outstanding = 0, failed = false,
    max_in_flight = topo.options.max_in_flight or 20000,
    epoch_records = topo.options.epoch_records or 5000,
    parts = {},   -- assigned partitions by "topic:partition"
  }, Runner)
  self.current = self:_new_epoch()
  if topo.options.processing == "exactly_once" then eos.attach(self) end
  return self
end

function Runner:_new_epoch()
  local ep = { outstanding = 0, records = 0, sealed = false, offsets = {}, runner = self }
  ep.cb = function(err)
    -- (ep.runner: after a hot reload, the new code's runner)
    local self = ep.runner
    ep.outstanding = ep.outstanding - 1
    self.outstanding = self.outstanding - 1
    if err then self:fail("a write was not acknowledged: " .. tostring(err)) end
    if ep.sealed and ep.outstanding == 0 then self:_complete() end
    if self.paused and self.outstanding < self.max_in_flight / 2 then
      self.paused = false
      if self.consumer then pcall(self.consumer.resume, self.consumer) end
    end
  end
  self.queue[#self.queue + 1] = ep
  return ep
end

function Runner:subscribe(topic)
  if self.consumer then return end   -- topo.topics is the consumer's list
  local topo, app = self.topo, self.app
  local kafka = {}
  for k, v in pairs(DEFAULT_KAFKA) do kafka[k] = v end
  if self.eos then
    for k, v in pairs(eos.CONSUMER_KAFKA) do kafka[k] = v end
  end
  for k, v in pairs(topo.options.kafka or {}) do kafka[k] = v end
  -- Records come in batches: one call into Lua per consumer wake-up.
  self.consumer = app:consume(topo.topics, {
    group = topo.group, manual = true, from = "earliest", kafka = kafka, batch = true,
    rebalance = function(event, parts) return self:_rebalance(event, parts) end,
  }, function(recs) return self:_records(recs) end,
  -- its changelog and repartition topics first
  function(start) return topics.prepare(self, start) end)
end

function Runner:now() return self.app.loop and self.app.loop:now() or 0 end

function Runner:log(level, msg) self.app:_log(level, msg) end

function Runner:fail(msg)
  if self.eos then return self:_eos_abort(msg) end
  if not self.failed then
    self:log("error", "stream " .. self.topo.name .. ": " .. msg ..
      "; input offsets are no longer committed (a restart reprocesses from the last commit)")
  end
  self.failed = true
end

function Runner:produce(topic, key, value, partition, timestamp)
  local x = self.eos
  if x then
    if x.state ~= "open" then return nil, "STATE: no transaction is open" end
    self.outstanding = self.outstanding + 1
    x.writes = x.writes + 1
    local ok, err = x.txp:send(topic, key, value, nil, partition, timestamp, x.cb)
    if not ok then self.outstanding = self.outstanding - 1 end
    return ok, err
  end
  local ep = self.current
  ep.outstanding = ep.outstanding + 1
  self.outstanding = self.outstanding + 1
  local ok, err = self.app:produce(topic, { key = key, value = value, partition = partition,
                                            timestamp = timestamp }, ep.cb)
  if not ok then
    ep.outstanding = ep.outstanding - 1
    self.outstanding = self.outstanding - 1
    return nil, err
  end
  return true
end

-- Runners by loop and topology name: after a hot reload, the first event
-- the new code's runner sees (the consumer was kept and re-pointed at it)
-- makes it take over the old runner's state.
local live = setmetatable({}, { __mode = "k" })

-- Moves the old runner's tasks (stores by name, event time, offsets),
-- epochs and consumer to this one: a changed operator keeps its store.
function Runner:_take_over(old)
  old.retired = true
  if old.commit_timer then pcall(old.commit_timer.close, old.commit_timer) end
  if old.punctuate_timer then pcall(old.punctuate_timer.close, old.punctuate_timer) end
  self.queue, self.current, self.outstanding = old.queue, old.current, old.outstanding
  self.failed, self.paused, self.core = old.failed, old.paused, old.core
  self.parts = old.parts
  for _, ep in ipairs(self.queue) do ep.runner = self end
  -- The processing mode is the running consumer's and producer's: kept.
  if (old.eos == nil) ~= (self.eos == nil) then
    self:log("error", ("stream %s: a reload cannot change processing (restart the gateway for that); " ..
      "it stays %s"):format(self.topo.name, old.eos and "exactly_once" or "at_least_once"))
  end
  self.eos = old.eos
  if self.eos then self.eos.runner = self end
  local oe, ne = old.engine, self.engine
  if not oe then return end
  local kept = 0
  for _, ot in pairs(oe.tasks) do
    for topic, sub in pairs(oe.topic_sub) do
      if sub == ot.sub and ne.topic_sub[topic] then
        local nt = ne:task(topic, ot.partition, true)
        if nt.time < ot.time then nt.time = ot.time end
        nt.wall = ot.wall
        for t, off in pairs(ot.offsets) do nt.offsets[t] = off end
        for name, st in pairs(nt.stores) do
          local prev = ot.stores[name]
          if prev and prev.def.kind == st.def.kind and prev.data ~= st.data then
            prev.def = st.def
            nt.stores[name] = prev
            kept = kept + 1
          end
        end
      end
    end
  end
  self:log("info", ("stream %s: new code took over %d store partitions"):format(self.topo.name, kept))
end

function Runner:_start()
  if self.engine then return end
  self.engine = engine.new(self.topo, self)
  local opts = self.topo.options
  self.commit_ms, self.punctuate_ms = opts.commit_ms or 100, opts.punctuate_ms or 1000
  self.has_windows = false
  if opts.wall_clock ~= false then
    for _, def in ipairs(self.topo.store_list) do
      if def.window then self.has_windows = true end
    end
  end
  local loop = self.app.loop
  if loop then
    local by_name = live[loop] or {}
    live[loop] = by_name
    local old = by_name[self.topo.name]
    by_name[self.topo.name] = self
    if old and old ~= self and not old.retired then
      self:_take_over(old)
      self:_arm()
    end
  end
end

-- Timers run only while there is something to do, so that an idle
-- gateway stays idle: the commit timer while work is unsealed or
-- unacknowledged, the window timer while windows are open.
function Runner:_busy()
  local x = self.eos
  if x then
    if x.state == "stopped" then return false end
    return x.state ~= "open" or self.current.records > 0 or #x.held > 0 or x.writes > 0
  end
  local ep = self.current
  return ep.records > 0 or ep.outstanding > 0 or #self.queue > 1
end

function Runner:_arm()
  if self.retired then return end
  if not self.commit_timer then
    self.commit_timer = self.app:timer(self.commit_ms, function()
      self.commit_timer = nil
      self:seal()
      if self:_busy() then self:_arm() end
    end)
  end
  if self.has_windows and not self.punctuate_timer then
    self.punctuate_timer = self.app:timer(self.punctuate_ms, function()
      self.punctuate_timer = nil
      local engine = self.engine
      if not engine then return end
      -- (exactly-once: windows close inside a transaction only)
      if self.eos and self.eos.state ~= "open" then return self:_arm() end
      engine:punctuate()
      self:_arm_windows()
      if self:_busy() then self:_arm() end
    end)
  end
end

-- Re-arms the window timer if some task still has an open window.
function Runner:_arm_windows()
  for _, task in pairs(self.engine.tasks) do
    for _, st in pairs(task.stores) do
      if st.ends[1] then return self:_arm() end
    end
  end
end

-- A batch of records. One that raises is reported like a per-record
-- handler error (the first is re-raised once the batch is done, the
-- others logged) and the records after it are still processed.
function Runner:_records(recs)
  if self.eos then return self:_eos_records(recs) end
  local i, n, first_err = 1, #recs, nil
  while i <= n do
    local ok, err = pcall(self._record_run, self, recs, i, n)
    if ok then break end
    if first_err == nil then first_err = err
    else self:log("error", "consume handler failed: " .. tostring(err)) end
    i = self._at + 1
  end
  if first_err ~= nil then error(first_err, 0) end
end

function Runner:_record_run(recs, i, n)
  for k = i, n do
    self._at = k
    self:_record(recs[k])
  end
end

function Runner:_record(rec)
  self:_start()
  local engine = self.engine
  engine:process(rec, true)   -- tasks exist from assignment (restored) only
  if not self.commit_timer or (self.has_windows and not self.punctuate_timer) then self:_arm() end
  local ep = self.current
  ep.records = ep.records + 1
  if ep.records >= self.epoch_records then self:seal() end
  if not self.paused and self.outstanding > self.max_in_flight then
    -- Kafka is behind: stop taking input until the writes drain.
    self.paused = true
    pcall(self.consumer.pause, self.consumer)
  end
end

-- Resumes input paused for unacknowledged writes once they drained,
-- unless held records (exactly-once) keep it paused.
function Runner:_resume_if_drained()
  if self.paused and self.outstanding < self.max_in_flight / 2 then
    self.paused = false
    if not (self.eos and self.eos.paused) then pcall(self.consumer.resume, self.consumer) end
  end
end

-- Flushes changed store entries and closes the current epoch.
function Runner:seal()
  if self.eos then return self:_eos_commit() end
  local engine = self.engine
  if not engine then return end
  local ep = self.current
  engine:flush()
  for _, task in pairs(engine.tasks) do
    for topic, offset in pairs(task.offsets) do
      ep.offsets[#ep.offsets + 1] = { topic, task.partition, offset }
    end
    task.offsets = {}
  end
  if #ep.offsets == 0 and ep.outstanding == 0 and ep.records == 0 then return end
  ep.sealed = true
  self.current = self:_new_epoch()
  self:_complete()
end

-- Stores and commits the offsets of every finished epoch, in order.
function Runner:_complete()
  local q = self.queue
  local stored = false
  while q[1] and q[1].sealed and q[1].outstanding == 0 do
    local ep = table.remove(q, 1)
    if not self.failed and self.core then
      for _, o in ipairs(ep.offsets) do
        -- (STATE: the partition moved away meanwhile; its new owner replays)
        local ok, err, code = self.core:store(o[1], o[2], o[3])
        if DEBUG then self:log("info", ("stream debug: store %s[%d]@%d -> %s"):format(o[1], o[2], o[3], tostring(ok))) end
        if ok then stored = true
        elseif code ~= "STATE" or os.getenv("SLUICE_STREAM_DEBUG") then self:log("warn", ("stream: storing offset %s[%d]@%d: %s"):format(o[1], o[2], o[3], err)) end
      end
    end
  end
  if stored then
    self.topo.counters.commits = self.topo.counters.commits + 1
    local ok, a, b = pcall(self.core.commit, self.core)
    if DEBUG then self:log("info", ("stream debug: commit -> %s %s %s"):format(tostring(ok), tostring(a), tostring(b))) end
  end
end

local function by_task(engine, parts)
  local out, order = {}, {}
  for _, p in ipairs(parts) do
    local id = engine:task_id(p.topic, p.partition)
    if not out[id] then out[id] = { topic = p.topic, partition = p.partition }; order[#order + 1] = id end
  end
  return out, order
end

-- Creates the tasks of parts that have none and restores their stores
-- from the changelogs, before any of their records is processed.
function Runner:_restore(parts)
  local engine = self.engine
  local tasks, order = by_task(engine, parts)
  local want = {}   -- changelog topic → { def, partitions, tasks by partition }
  for _, id in ipairs(order) do
    if not engine.tasks[id] then
      local t = tasks[id]
      local task = engine:task(t.topic, t.partition, true)
      for _, def in ipairs(engine.sub_stores[task.sub] or {}) do
        local w = want[def.changelog]
        if not w then w = { def = def, partitions = {}, tasks = {} }; want[def.changelog] = w end
        w.partitions[#w.partitions + 1] = task.partition
        w.tasks[task.partition] = task
      end
    end
  end
  -- (exactly-once: only what was committed, undecided transactions awaited)
  local props = self.app:_kafka_props(self.eos and eos.CONSUMER_KAFKA or nil)
  for topic, w in pairs(want) do
    local t0 = self:now()
    local records, err = core.read_partitions(props, topic, w.partitions, 60000)
    if not records then
      local msg = ("restoring store %s from %s: %s"):format(w.def.name, topic, err)
      if self.eos then return self:_eos_stop(msg) end
      self:fail(msg)
    else
      local per = {}
      for _, r in ipairs(records) do
        local l = per[r.partition]
        if not l then l = {}; per[r.partition] = l end
        l[#l + 1] = r
      end
      for p, task in pairs(w.tasks) do engine:restore(task, w.def, per[p] or {}) end
      if w.def.window and #records > 0 then self:_arm() end
      self:log("info", ("stream %s: store %s restored for partitions %s from %s (%d records, %d ms)"):format(
        self.topo.name, w.def.name, table.concat(w.partitions, ","), topic, #records, self:now() - t0))
    end
  end
end

function Runner:_rebalance(event, parts)
  self:_start()
  local engine = self.engine
  self.core = self.consumer.core
  if event == "assigned" then
    for _, p in ipairs(parts) do self.parts[p.topic .. ":" .. p.partition] = p end
    if self.eos then self:_eos_ready() end
    self:_restore(parts)
  else
    for _, p in ipairs(parts) do self.parts[p.topic .. ":" .. p.partition] = nil end
    -- Revoked: make everything done so far durable, commit, drop state.
    if self.eos then
      self:_eos_revoke()
    else
      self:seal()
      if self.app.producer then self.app.producer:flush(10000) end
      self:_complete()
      if self.core and not self.failed then pcall(self.core.commit, self.core, true) end
    end
    local _, order = by_task(engine, parts)
    for _, id in ipairs(order) do engine:drop_task(id) end
    self:log("info", ("stream %s: %d partitions revoked, their state flushed and dropped; %d writes unacknowledged")
      :format(self.topo.name, #parts, self.outstanding))
  end
end

return M
