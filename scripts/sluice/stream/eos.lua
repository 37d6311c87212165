-- Exactly-once for sluice.stream's Kafka runner (processing =
-- "exactly_once"), after Kafka Streams' EOS v2: one transactional
-- producer per gateway and topology; each epoch is one transaction
-- holding its outputs, repartition records and changelog writes and the
-- input offsets, sent with the consumer group's metadata so that a member
-- the group has moved on from (a zombie) cannot commit. Everything the
-- stream reads (inputs, repartition topics, changelogs when restoring) is
-- read read_committed.
--
-- librdkafka's transactional calls block on the network; the core runs
-- them on a thread of the producer's own and reports on the loop
-- (core/src/kafka_txn.c). While a commit or an abort runs no transaction
-- is open: records that arrive are held (the consumer is paused once
-- epoch_records of them wait) and processed when the next one opens.
--
-- States: new → init → open ⇄ committing; open or committing → aborting →
-- open; any → stopped (a fatal error, e.g. fenced: no further writes).
-- An abort rewinds the input to the last commit (consumer seek) and
-- restores the stores from the changelogs.
local core = require "sluice.core"

local M = {}

-- Bound on one transactional operation (retriable failures are retried
-- within it, then it is started again).
local OP_TIMEOUT_MS = 30000
-- A dead gateway's open transaction blocks read_committed readers of its
-- partitions until the broker aborts it: keep that short (Kafka Streams
-- uses 10 s too). A restart with the same transactional.id aborts it at once.
local TRANSACTION_TIMEOUT_MS = "10000"
local PURGED = { PURGE_QUEUE = true, PURGE_INFLIGHT = true }
local FENCED = { FENCED = true, PRODUCER_FENCED = true, INVALID_PRODUCER_EPOCH = true, FENCED_INSTANCE_ID = true }
-- Transactions aborted in a row (none committed between) before the
-- instance stops: a failure that repeats on the same input (a store value
-- that cannot be encoded) would otherwise loop.
local MAX_ABORTS_IN_ROW = 5

local function hostname()
  local f = io.open("/proc/sys/kernel/hostname")
  local name = f and f:read("*l")
  if f then f:close() end
  return name and name ~= "" and name or "localhost"
end

-- The consumer properties of an exactly-once stream: offsets are only
-- committed inside transactions, and aborted records are never seen.
M.CONSUMER_KAFKA = { ["isolation.level"] = "read_committed", ["enable.auto.commit"] = "false" }

-- The Runner methods below; `runner.eos` holds the state, shared with the
-- runner of the new code after a hot reload.
local R = {}

function M.install(Runner)
  for k, f in pairs(R) do Runner[k] = f end
end

function M.attach(runner)
  local topo, app = runner.topo, runner.app
  local worker = app.overrides and app.overrides.worker
  local eos = {
    state = "new", runner = runner, held = {}, first = {}, writes = 0,
    -- Stable across restarts (a restart fences its previous instance and
    -- aborts what it left open), distinct per running instance.
    id = topo.options.transactional_id or
      (topo.group .. "-" .. hostname() .. (worker and ("-" .. worker) or "")),
  }
  eos.cb = function(err, report)
    local r = eos.runner
    r.outstanding = r.outstanding - 1
    if err and not PURGED[report.code] and eos.state == "open" then
      r:_eos_abort("a write was not acknowledged: " .. tostring(err))
    end
    r:_resume_if_drained()
  end
  runner.eos = eos
  app._start_checks = app._start_checks or {}
  table.insert(app._start_checks, function() return eos.runner:_eos_init() end)
end

-- Creates the transactional producer and starts init_transactions.
-- Refused on the embedded broker.
function R:_eos_init()
  local eos, app, name = self.eos, self.app, self.topo.name
  if eos.txp or eos.state == "stopped" then return true end
  local kafka = app.options.kafka or {}
  if not (app.overrides.bootstrap or kafka["bootstrap.servers"]) then
    return nil, ('CONFIG: stream %s: processing = "exactly_once" needs Apache Kafka (set ' ..
      'kafka["bootstrap.servers"] or run with --kafka): the embedded broker (librdkafka\'s mock ' ..
      'cluster) does not commit the offsets sent in a transaction and shows aborted records to ' ..
      'read_committed readers'):format(name), "CONFIG"
  end
  local extra = { ["transactional.id"] = eos.id }
  if not app:_kafka_props()["transaction.timeout.ms"] then
    extra["transaction.timeout.ms"] = TRANSACTION_TIMEOUT_MS
  end
  local txp, err, code = core.producer(app.loop, { props = app:_kafka_props(extra) }, {
    error = function(e, fatal)
      eos.runner:log(fatal and "error" or "warn", ("stream %s: transactional producer: %s"):format(name, e))
    end,
  })
  if not txp then return nil, err, code end
  eos.txp = txp
  app._teardown_hooks = app._teardown_hooks or {}
  table.insert(app._teardown_hooks, function()
    if eos.txp then eos.txp:close(); eos.txp = nil end
  end)
  self:log("info", ("stream %s: exactly-once, transactional.id %s"):format(name, eos.id))
  eos.state = "init"
  self:_eos_op("init")
  return true
end

function R:_eos_op(op, offsets)
  local eos = self.eos
  local ok, err = eos.txp:transaction(op, {
    consumer = offsets and self.core or nil, offsets = offsets, timeout = OP_TIMEOUT_MS,
  }, function(e, code, kind) eos.runner:_eos_done(op, e, code, kind) end)
  if not ok then self:_eos_stop(("%s: %s"):format(op, tostring(err))) end
end

function R:_eos_done(op, err, code, kind)
  local eos = self.eos
  if eos.state == "stopped" then return end
  if not err then
    if op == "commit" then
      self.topo.counters.commits = self.topo.counters.commits + 1
      eos.committing_first, eos.aborts_in_row = nil, 0
    end
    eos.state = "open"
    if op == "abort" and not eos.revoking then self:_eos_restore() end
    if not eos.revoking then self:_eos_drain() end
    return
  end
  if kind == "fatal" then
    local why = ("%s failed: %s"):format(op, err)
    if FENCED[code] then
      why = why .. (" (another instance runs with transactional.id %q: this one's restart, or a " ..
        "second gateway given the same id; give each its own transactional_id)"):format(eos.id)
    end
    return self:_eos_stop(why)
  end
  if kind == "retriable" then
    self:log("warn", ("stream %s: transaction %s did not finish (%s); trying again"):format(self.topo.name, op, err))
    return self:_eos_op(op, op == "commit" and eos.offsets or nil)
  end
  -- abortable: a write failed, or the group moved on (a rebalance this
  -- member missed): nothing of it becomes visible, and it is redone.
  eos.state = "failed"
  self:_eos_abort(("%s failed: %s"):format(op, err))
end

-- Commits the open transaction with the offsets it processed.
function R:_eos_commit()
  local eos, engine = self.eos, self.engine
  if eos.state ~= "open" or not engine then return end
  engine:flush()                       -- changed store entries → changelogs
  if eos.state ~= "open" then return end
  local offsets, any = {}, false
  for _, task in pairs(engine.tasks) do
    for topic, off in pairs(task.offsets) do
      local t = offsets[topic] or {}
      offsets[topic] = t
      t[task.partition] = off + 1      -- Kafka commits the next offset to read
      any = true
    end
    task.offsets = {}
  end
  self.current.records = 0
  if not any and eos.writes == 0 then return end
  eos.state, eos.writes = "committing", 0
  eos.offsets = any and offsets or nil
  eos.committing_first, eos.first = eos.first, {}
  self:_eos_op("commit", eos.offsets)
end

-- Aborts the open (or failed) transaction: its input is read again from
-- the last commit and the stores restored once the abort is done.
function R:_eos_abort(reason)
  local eos = self.eos
  if eos.state ~= "open" and eos.state ~= "failed" then return end
  self.topo.counters.aborts = self.topo.counters.aborts + 1
  eos.aborts_in_row = (eos.aborts_in_row or 0) + 1
  if eos.aborts_in_row >= MAX_ABORTS_IN_ROW then
    return self:_eos_stop(("%d transactions in a row aborted, the last: %s"):format(MAX_ABORTS_IN_ROW, reason))
  end
  self:log("warn", ("stream %s: transaction aborted (%s); its input is read again from the last " ..
    "commit and the stores restored from their changelogs"):format(self.topo.name, reason))
  eos.state = "aborting"
  eos.held, eos.discard = {}, true
  -- Back to the first record not committed, per partition.
  local first = eos.first
  for topic, parts in pairs(eos.committing_first or {}) do
    local f = first[topic] or {}
    first[topic] = f
    for p, off in pairs(parts) do
      if f[p] == nil or off < f[p] then f[p] = off end
    end
  end
  eos.first, eos.committing_first = {}, nil
  for topic, parts in pairs(first) do
    for p, off in pairs(parts) do
      local ok, err, code = self.core:seek(topic, p, off)
      if not ok and code ~= "STATE" then
        self:log("warn", ("stream %s: rewinding %s[%d] to %d: %s"):format(self.topo.name, topic, p, off, err))
      end
    end
  end
  self:_eos_op("abort")
end

-- After an abort: every task again as its changelogs say.
function R:_eos_restore()
  local engine = self.engine
  if not engine then return end
  for id in pairs(engine.tasks) do engine:drop_task(id) end
  local parts = {}
  for _, p in pairs(self.parts) do parts[#parts + 1] = p end
  self:_restore(parts)
end

-- Stops this instance for good: no further writes; its consumer leaves
-- the group so that its partitions move to the others.
function R:_eos_stop(reason)
  local eos = self.eos
  if eos.state == "stopped" then return end
  eos.state, eos.held = "stopped", {}
  self:log("error", ("stream %s: stopped: %s. This instance writes nothing more and leaves the " ..
    "group: its partitions move to the other instances"):format(self.topo.name, reason))
  if self.consumer then pcall(self.consumer.close, self.consumer) end
end

-- A batch in exactly-once mode: processed while a transaction is open,
-- else held; after an abort began, the rest of the batch (fetched before
-- the rewind) is dropped.
function R:_eos_records(recs)
  local eos = self.eos
  eos.discard = false
  local first_err
  for i = 1, #recs do
    if eos.discard or eos.state == "stopped" then break end
    local rec = recs[i]
    local f = eos.first[rec.topic]
    if not f then f = {}; eos.first[rec.topic] = f end
    if f[rec.partition] == nil then f[rec.partition] = rec.offset end
    if eos.state == "open" then
      local ok, err = pcall(self._record, self, rec)
      if not ok then
        if first_err == nil then first_err = err
        else self:log("error", "consume handler failed: " .. tostring(err)) end
      end
    else
      self:_eos_hold(rec)
    end
  end
  if first_err ~= nil then error(first_err, 0) end
end

function R:_eos_hold(rec)
  local eos = self.eos
  eos.held[#eos.held + 1] = rec
  if not eos.paused and #eos.held >= self.epoch_records then
    eos.paused = true
    pcall(self.consumer.pause, self.consumer)
  end
end

-- Input paused for held records runs again.
function R:_eos_unhold()
  local eos = self.eos
  if not eos.paused then return end
  eos.paused = false
  if not self.paused then pcall(self.consumer.resume, self.consumer) end
end

-- Processes the held records in the transaction just opened.
function R:_eos_drain()
  local eos = self.eos
  local held = eos.held
  eos.held = {}
  for i = 1, #held do
    if eos.state == "aborting" or eos.state == "stopped" then return end
    if eos.state ~= "open" then          -- a commit began (epoch full): wait again
      for j = i, #held do eos.held[#eos.held + 1] = held[j] end
      return
    end
    local ok, err = pcall(self._record, self, held[i])
    if not ok then self:log("error", "consume handler failed: " .. tostring(err)) end
  end
  self:_eos_unhold()
end

-- Revocation: the open transaction is committed (or aborted) before the
-- partitions go; held records are dropped (their next owner reads them).
function R:_eos_revoke()
  local eos = self.eos
  local txp = eos.txp
  if not txp or eos.state == "stopped" then return end
  eos.revoking = true
  for _ = 1, 3 do
    if eos.state == "open" then self:_eos_commit() end
    if eos.state == "open" or eos.state == "stopped" then break end
    if not txp:transaction_wait(OP_TIMEOUT_MS) then break end
  end
  eos.revoking = false
  eos.held, eos.first, eos.committing_first = {}, {}, nil
  if eos.state ~= "open" and eos.state ~= "stopped" then
    self:log("warn", ("stream %s: the transaction was still %s when the partitions were revoked"):format(
      self.topo.name, eos.state))
  end
  self:_eos_unhold()
end

-- Before the first assignment is restored: the producer is initialised
-- (which also aborts what a previous instance of the id left open).
function R:_eos_ready()
  local eos = self.eos
  if eos.state == "new" then
    local ok, err = self:_eos_init()
    if not ok then self:_eos_stop(tostring(err)) end
  end
  for _ = 1, 3 do
    if eos.state ~= "init" then break end
    eos.txp:transaction_wait(OP_TIMEOUT_MS)
  end
  return eos.state == "open"
end

return M
