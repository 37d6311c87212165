-- sluice.stream: stream processing in Lua over the app's Kafka consumer
-- and producer, with keyed state kept in Kafka (compacted changelogs).
--
--   local stream = require "sluice.stream"
--   local t = stream.topology(app, { name = "clicks" })
--   t:from("clicks", { value = "json" })
--    :key_by(function(v) return v.page end)
--    :count { store = "per-page", window = stream.tumbling(60000), emit = "close" }
--    :to("clicks-per-minute")
--
-- The same topology runs without a broker under stream.driver(t) (tests).
-- Guide: docs/stream.md.
--
-- Layout: a topology is a graph of nodes; sources are per topic. At run
-- time an engine holds tasks, one per (sub-topology, partition): a task
-- owns its stores, its stream time and the offsets it processed. The
-- runner (sluice.stream.kafka on an app, sluice.stream.driver in memory)
-- feeds records in and carries outputs and changelog writes out.
local util = require "sluice.util"
local window = require "sluice.stream.window"
local serde = require "sluice.stream.serde"
local engine = require "sluice.stream.engine"
local kafka = require "sluice.stream.kafka"
local driver = require "sluice.stream.driver"

local json = serde.json
local decoder, encoder, encode_default = serde.decoder, serde.encoder, serde.encode_default
local forward = engine.forward

local M = {}
M.tumbling, M.hopping, M.session = window.tumbling, window.hopping, window.session
M.json = json

local function argerror(n, fname, msg)
  error(("bad argument #%d to '%s' (%s)"):format(n, fname, msg), 3)
end

local function check_fn(n, fname, f)
  if type(f) ~= "function" then argerror(n, fname, ("function expected, got %s"):format(type(f))) end
end

local function deep_copy(v)
  if type(v) ~= "table" then return v end
  local out = {}
  for k, x in pairs(v) do out[k] = deep_copy(x) end
  return out
end
M.deep_copy = deep_copy

-- ---- topology and streams -----------------------------------------------

local Topology = {}
Topology.__index = Topology
local Stream = {}
Stream.__index = Stream
local Table = {}
Table.__index = Table

-- stream.topology([app,] options) → topology. options: name (application
-- id: prefix of changelog and repartition topics; default the app's name),
-- group (consumer group; default "<name>.stream"), commit_ms (how often
-- outputs are flushed and offsets committed; 100), punctuate_ms (window
-- timer; 1000), wall_clock (false: windows close only on event time),
-- kafka (extra librdkafka properties for the stream's consumer),
-- replication (of the changelog and repartition topics sluice creates;
-- default min(3, brokers)), create_topics (false: the operator creates
-- them; sluice.stream.topics), processing ("at_least_once" or
-- "exactly_once": transactions on Apache Kafka), transactional_id
-- (exactly-once: this instance's stable id).
-- The options each declaration takes; any other is a typo, refused.
local KEYS = {
  topology = { name = true, group = true, commit_ms = true, punctuate_ms = true, wall_clock = true,
    kafka = true, max_in_flight = true, epoch_records = true, replication = true, create_topics = true,
    processing = true, transactional_id = true },
  from = { value = true, timestamp = true },
  to = { value = true, key = true, partition = true },
  table = { value = true, store = true },
  join = { left = true },
  stateful = { store = true, window = true, grace = true, emit = true, merge = true },
}

function M.topology(app, options)
  if options == nil and type(app) == "table" and getmetatable(app) == nil then
    app, options = nil, app
  end
  options = options or {}
  if type(options) ~= "table" then argerror(2, "topology", "table expected") end
  util.check_keys(options, KEYS.topology, "topology", 2)
  local rf = options.replication
  if rf ~= nil and (type(rf) ~= "number" or rf % 1 ~= 0 or rf < 1 or rf > 32767) then
    argerror(2, "topology", "'replication' must be an integer from 1 to 32767")
  end
  local processing = options.processing
  if processing ~= nil and processing ~= "at_least_once" and processing ~= "exactly_once" then
    argerror(2, "topology", ('processing must be "at_least_once" or "exactly_once", got %s')
      :format(type(processing) == "string" and ("%q"):format(processing) or tostring(processing)))
  end
  local tid = options.transactional_id
  if tid ~= nil and (type(tid) ~= "string" or tid == "") then
    argerror(2, "topology", "transactional_id must be a non-empty string")
  end
  if tid ~= nil and processing ~= "exactly_once" then
    argerror(2, "topology", 'transactional_id needs processing = "exactly_once"')
  end
  local name = options.name or (app and app.name) or "sluice"
  local self = setmetatable({
    app = app,
    name = name,
    group = options.group or (name .. ".stream"),
    options = options,
    nodes = {},
    sources = {},       -- topic → list of source nodes
    topics = {},        -- every subscribed topic (shared with the app's consumer)
    stores = {},        -- name → store definition
    store_list = {},
    subs = {},          -- union-find parent of sub-topology ids
    n_subs = 0,
    counters = { processed = 0, late = 0, skipped = 0, errors = 0, restored = 0, commits = 0, aborts = 0 },
  }, Topology)
  if app then
    self.runner = kafka.attach(self, app)
  end
  return self
end

function Topology:_new_sub()
  self.n_subs = self.n_subs + 1
  self.subs[self.n_subs] = self.n_subs
  return self.n_subs
end

function Topology:_sub(id)
  while self.subs[id] ~= id do id = self.subs[id] end
  return id
end

function Topology:_union(a, b)
  a, b = self:_sub(a), self:_sub(b)
  if a ~= b then self.subs[math.max(a, b)] = math.min(a, b) end
end

function Topology:_node(kind, parent, process, extra)
  local node = extra or {}
  node.kind, node.process, node.children = kind, process, {}
  node.id = #self.nodes + 1
  node.sub = parent and parent.sub or self:_new_sub()
  self.nodes[#self.nodes + 1] = node
  if parent then parent.children[#parent.children + 1] = node end
  return node
end

function Topology:_subscribe(topic, node)
  if self.frozen then error("sluice.stream: the topology is running; declare it before the app starts", 3) end
  local list = self.sources[topic]
  if not list then
    list = {}
    self.sources[topic] = list
    self.topics[#self.topics + 1] = topic
    if self.runner then self.runner:subscribe(topic) end
  end
  list[#list + 1] = node
end

local function source_process(self, raw, task)
  local ok, value = pcall(self.decode, raw.value)
  if not ok then
    task.engine:skip(("%s: cannot decode value at %s[%d]@%s: %s"):format(
      self.topic, raw.topic, raw.partition or 0, tostring(raw.offset), tostring(value)))
    return
  end
  local rec = { key = raw.key, value = value, timestamp = raw.timestamp, topic = raw.topic,
                partition = raw.partition, offset = raw.offset, headers = raw.headers }
  if self.time then
    local tok, ts = pcall(self.time, rec)
    if not tok or type(ts) ~= "number" then
      task.engine:skip(("%s: timestamp function failed: %s"):format(self.topic, tostring(ts)))
      return
    end
    rec.timestamp = ts
  end
  forward(self, rec, task)
end

-- topology:from(topics, options) → stream. options: value ("string",
-- "json" or a decoding function), timestamp (function(rec) → ms; default
-- the record's Kafka timestamp).
function Topology:from(topics, options)
  if type(topics) == "string" then topics = { topics } end
  if type(topics) ~= "table" or #topics == 0 then argerror(1, "from", "a topic or a list of topics expected") end
  options = options or {}
  util.check_keys(options, KEYS.from, "from", 2)
  local dec = decoder(options.value, "from")
  if options.timestamp ~= nil then check_fn(2, "from", options.timestamp) end
  local sub = self:_new_sub()
  local first
  for _, topic in ipairs(topics) do
    local node = self:_node("source", nil, source_process,
      { topic = topic, decode = dec, time = options.timestamp })
    node.sub = sub
    self:_subscribe(topic, node)
    first = first or node
  end
  -- Several topics: one shared downstream (a pass-through node).
  if #topics == 1 then return setmetatable({ topo = self, node = first }, Stream) end
  local merge = self:_node("merge", nil, forward)
  merge.sub = sub
  for _, topic in ipairs(topics) do
    local n = self.sources[topic][#self.sources[topic]]
    n.children[#n.children + 1] = merge
  end
  return setmetatable({ topo = self, node = merge }, Stream)
end

function Stream:_then(kind, process, extra, rekeyed)
  local node = self.topo:_node(kind, self.node, process, extra)
  return setmetatable({ topo = self.topo, node = node, rekeyed = rekeyed or self.rekeyed }, Stream)
end

local function derive(rec, value)
  return { key = rec.key, value = value, timestamp = rec.timestamp, window = rec.window,
           headers = rec.headers, topic = rec.topic, partition = rec.partition, offset = rec.offset }
end

-- map(fn(value, key, rec) → new value)
function Stream:map(fn)
  check_fn(1, "map", fn)
  return self:_then("map", function(node, rec, task)
    forward(node, derive(rec, fn(rec.value, rec.key, rec)), task)
  end)
end

-- filter(fn(value, key, rec) → keep?)
function Stream:filter(fn)
  check_fn(1, "filter", fn)
  return self:_then("filter", function(node, rec, task)
    if fn(rec.value, rec.key, rec) then forward(node, rec, task) end
  end)
end

-- flat_map(fn(value, key, rec) → list of values), each with the same key.
function Stream:flat_map(fn)
  check_fn(1, "flat_map", fn)
  return self:_then("flat_map", function(node, rec, task)
    local list = fn(rec.value, rec.key, rec)
    if list == nil then return end
    for i = 1, #list do forward(node, derive(rec, list[i]), task) end
  end)
end

-- key_by(fn(value, key, rec) → new key). Keys are strings (numbers are
-- converted). A stateful operation after key_by repartitions through a
-- topic so that every record of a key reaches the same task.
function Stream:key_by(fn)
  check_fn(1, "key_by", fn)
  return self:_then("key_by", function(node, rec, task)
    local k = fn(rec.value, rec.key, rec)
    if k ~= nil then k = tostring(k) end
    local out = derive(rec, rec.value)
    out.key = k
    forward(node, out, task)
  end, nil, true)
end

-- each(fn(value, key, rec)): a side effect; records pass on unchanged.
function Stream:each(fn)
  check_fn(1, "each", fn)
  return self:_then("each", function(node, rec, task)
    fn(rec.value, rec.key, rec)
    forward(node, rec, task)
  end)
end

-- branch(pred1, pred2, …) → stream1, stream2, …: each record goes to the
-- first branch whose predicate(value, key, rec) is true (`true`: always).
function Stream:branch(...)
  local preds = { ... }
  if #preds == 0 then argerror(1, "branch", "at least one predicate expected") end
  for i, p in ipairs(preds) do
    if p ~= true then check_fn(i, "branch", p) end
  end
  local router = self:_then("branch", function() end)
  local outs = {}
  for i = 1, #preds do
    outs[i] = router:_then("branch-" .. i, forward)
  end
  router.node.process = function(node, rec, task)
    for i = 1, #preds do
      local p = preds[i]
      if p == true or p(rec.value, rec.key, rec) then
        node.children[i]:process(rec, task)
        return
      end
    end
  end
  return (table.unpack or unpack)(outs)
end

-- to(topic, options): produce each record. options: value (encoder:
-- "json", "string" or a function; default: tables as JSON, strings as
-- is), key (function(rec) → key; default the record's key), partition
-- (function(rec) → partition; default the partitioner by key).
function Stream:to(topic, options)
  if type(topic) ~= "string" then argerror(1, "to", "topic name expected") end
  options = options or {}
  util.check_keys(options, KEYS.to, "to", 2)
  local enc = encoder(options.value, "to")
  local keyf, partf = options.key, options.partition
  self:_then("to", function(_, rec, task)
    local key = rec.key
    if keyf then key = keyf(rec) end
    if key ~= nil then key = tostring(key) end
    task.engine:output(task, topic, key, enc(rec.value), partf and partf(rec) or nil, rec.timestamp)
  end)
  return self
end

-- ---- stateful operations -------------------------------------------------

local EMIT = { update = true, close = true }

function Topology:_store(name, kind, opts)
  if self.stores[name] then error(("sluice.stream: store '%s' is declared twice"):format(name), 4) end
  local def = {
    name = name, kind = kind, window = opts.window, grace = opts.grace or 0,
    changelog = opts.changelog or (self.name .. "." .. name .. ".changelog"),
  }
  self.stores[name] = def
  self.store_list[#self.store_list + 1] = def
  return def
end

-- Repartitions a re-keyed stream through `<name>.<store>.repartition`
-- (key = the new key, value = the record as JSON).
function Stream:_repartitioned(store)
  if not self.rekeyed then return self end
  local topic = self.topo.name .. "." .. store .. ".repartition"
  self:_then("repartition-sink", function(_, rec, task)
    if rec.key == nil then task.engine:skip("repartition: record without a key dropped"); return end
    local ok, bytes = pcall(json.encode, { v = rec.value })
    if not ok then task.engine:skip("repartition: value is not JSON-encodable: " .. tostring(bytes)); return end
    task.engine:output(task, topic, rec.key, bytes, nil, rec.timestamp, true)
  end)
  local src = self.topo:_node("source", nil, source_process, {
    topic = topic, decode = function(b) return json.decode(b).v end, internal = true })
  self.topo:_subscribe(topic, src)
  return setmetatable({ topo = self.topo, node = src }, Stream)
end

local function check_stateful(fname, opts, argn)
  if opts == nil then return {} end
  if type(opts) ~= "table" then argerror(argn, fname, "options table expected") end
  util.check_keys(opts, KEYS.stateful, fname, argn)
  if opts.window ~= nil and not window.is(opts.window) then
    argerror(argn, fname, "window must be stream.tumbling(), stream.hopping() or stream.session()")
  end
  if opts.emit ~= nil and not EMIT[opts.emit] then argerror(argn, fname, "emit must be \"update\" or \"close\"") end
  if opts.grace ~= nil and (type(opts.grace) ~= "number" or opts.grace < 0) then
    argerror(argn, fname, "grace must be a number of ms >= 0")
  end
  if opts.store ~= nil and (type(opts.store) ~= "string" or opts.store == "" or opts.store:find("[^%w%-_]")) then
    argerror(argn, fname, "store must be a name of letters, digits, '-' and '_'")
  end
  return opts
end

-- The shared engine of count, reduce and aggregate: `step(agg, value,
-- key, rec)` folds one record in (agg nil for the first); `merge(a, b,
-- key)` joins two sessions.
function Stream:_stateful(kind, opts, step, merge)
  local topo = self.topo
  local name = opts.store or (kind .. "-" .. (#topo.store_list + 1))
  local s = self:_repartitioned(name)
  local w = opts.window
  if w and w.kind == "session" and not merge then
    error(("bad argument to '%s' (session windows need options.merge(a, b, key))"):format(kind), 3)
  end
  local def = topo:_store(name, w and (w.kind == "session" and "session" or "window") or "kv", opts)
  local emit = opts.emit or "update"
  def.emit = emit
  local out = s:_then(kind, nil, { store = def }, false)
  local node = out.node
  def.node = node
  if not w then
    node.process = function(self, rec, task)
      local key = rec.key
      if key == nil then task.engine:skip(kind .. ": record without a key dropped"); return end
      local st = task.stores[name]
      local agg = step(st:get(key), rec.value, key, rec)
      st:put(key, agg)
      forward(self, { key = key, value = agg, timestamp = rec.timestamp, headers = rec.headers }, task)
    end
  elseif w.kind ~= "session" then
    local size = w.size
    node.process = function(self, rec, task)
      local key = rec.key
      if key == nil then task.engine:skip(kind .. ": record without a key dropped"); return end
      local st, ts = task.stores[name], rec.timestamp
      local starts = window.windows_for(w, ts)
      local accepted = false
      for i = #starts, 1, -1 do
        local start = starts[i]
        local e = start + size
        if e + def.grace > task.time then
          accepted = true
          local entry = st:window_update(key, start, e, step, rec)
          if emit == "update" then
            forward(self, { key = key, value = entry.v, timestamp = ts, window = { start = start, ["end"] = e } }, task)
          end
        end
      end
      if not accepted then task.engine:late(name, rec) end
    end
  else
    node.process = function(self, rec, task)
      local key = rec.key
      if key == nil then task.engine:skip(kind .. ": record without a key dropped"); return end
      local st, ts = task.stores[name], rec.timestamp
      if ts + w.gap + def.grace <= task.time then task.engine:late(name, rec); return end
      local entry, removed = st:session_update(key, ts, w.gap, step, merge, rec)
      if emit == "update" then
        for _, old in ipairs(removed) do
          forward(self, { key = key, value = nil, timestamp = ts, window = { start = old.s, ["end"] = old.e } }, task)
        end
        forward(self, { key = key, value = entry.v, timestamp = ts, window = { start = entry.s, ["end"] = entry.e } }, task)
      end
    end
  end
  return out
end

-- count(options) → stream of {key, value = count [, window]}.
-- options: store (name), window, grace (allowed lateness, ms), emit.
function Stream:count(opts)
  opts = check_stateful("count", opts, 1)
  return self:_stateful("count", opts, function(agg) return (agg or 0) + 1 end,
    function(a, b) return a + b end)
end

-- reduce(fn(acc, value, key, rec) → acc, options); the first value is
-- the initial acc. Session windows merge with fn(a, b, key).
function Stream:reduce(fn, opts)
  check_fn(1, "reduce", fn)
  opts = check_stateful("reduce", opts, 2)
  return self:_stateful("reduce", opts, function(agg, v, k, rec)
    if agg == nil then return v end
    return fn(agg, v, k, rec)
  end, opts.merge or fn)
end

-- aggregate(init, fn(acc, value, key, rec) → acc, options): init is a
-- value (copied per key) or function(key) → value. Session windows need
-- options.merge(a, b, key) → acc.
function Stream:aggregate(init, fn, opts)
  check_fn(2, "aggregate", fn)
  opts = check_stateful("aggregate", opts, 3)
  local initf = type(init) == "function" and init or function() return deep_copy(init) end
  return self:_stateful("aggregate", opts, function(agg, v, k, rec)
    if agg == nil then agg = initf(k) end
    return fn(agg, v, k, rec)
  end, opts.merge)
end

-- ---- tables and joins -------------------------------------------------------

-- topology:table(topic, options) → table: the latest value per key of a
-- topic (a tombstone deletes). The topic is its own changelog: on
-- assignment the table is read from the start of its partitions.
-- options: value (decoder), store (name).
function Topology:table(topic, options)
  options = options or {}
  util.check_keys(options, KEYS.table, "table", 2)
  local dec = decoder(options.value, "table")
  local name = options.store or (topic .. "-table")
  local def = self:_store(name, "table", { changelog = topic })
  def.decode = dec
  local node = self:_node("table", nil, function(node, raw, task)
    local ok, value = pcall(dec, raw.value)
    if not ok then task.engine:skip(topic .. ": cannot decode table value: " .. tostring(value)); return end
    if raw.key == nil then return end
    task.stores[name]:put_local(raw.key, value)
    forward(node, raw, task)
  end, { topic = topic, store = def })
  def.node = node
  self:_subscribe(topic, node)
  return setmetatable({ topo = self, node = node, def = def }, Table)
end

function Table:get(task, key)
  return task.stores[self.def.name]:get(key)
end

-- join(table, fn(value, table_value, key, rec) → value [, options]):
-- inner join on the record's key against the table's latest value;
-- records without a match are dropped (options.left: fn gets nil).
-- The stream and the table topic must be partitioned alike (same
-- partition count, same key → partition); a re-keyed stream is
-- repartitioned first.
function Stream:join(tbl, fn, opts)
  if getmetatable(tbl) ~= Table then argerror(1, "join", "a table from topology:table expected") end
  check_fn(2, "join", fn)
  opts = opts or {}
  util.check_keys(opts, KEYS.join, "join", 3)
  local s = self:_repartitioned(tbl.def.name .. "-join")
  self.topo:_union(s.node.sub, tbl.node.sub)
  local left = opts.left
  local name = tbl.def.name
  return s:_then("join", function(node, rec, task)
    local tv = rec.key ~= nil and task.stores[name]:get(rec.key) or nil
    if tv == nil and not left then return end
    forward(node, derive(rec, fn(rec.value, tv, rec.key, rec)), task)
  end)
end

function Stream:left_join(tbl, fn)
  return self:join(tbl, fn, { left = true })
end


-- ---- the test driver ---------------------------------------------------------

function M.driver(topo, options)
  return driver.new(topo, options)
end

function Topology:stats()
  local s = {}
  for k, v in pairs(self.counters) do s[k] = v end
  s.error = self.start_error   -- why it did not start (its topics), or nil
  return s
end

return M
