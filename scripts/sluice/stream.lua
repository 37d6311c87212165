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
local cjson = require "cjson"
local window = require "sluice.stream.window"

local json = cjson.new()
json.encode_sparse_array(true)
json.encode_invalid_numbers(false)

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

-- ---- serdes --------------------------------------------------------------

local DECODERS = {
  string = function(b) return b end,
  json = function(b) if b == nil then return nil end return json.decode(b) end,
}

local function decoder(spec, fname)
  if spec == nil then return DECODERS.string end
  if type(spec) == "function" then return spec end
  local d = DECODERS[spec]
  if not d then argerror(2, fname, "value must be \"string\", \"json\" or a function") end
  return d
end

-- Default encoding of an output value: strings as they are, numbers as
-- text, tables as JSON, nil as a tombstone.
local function number_text(v)
  if v == math.floor(v) and v > -2^53 and v < 2^53 then return string.format("%d", v) end
  return tostring(v)
end

local function encode_default(v)
  local t = type(v)
  if v == nil or t == "string" then return v end
  if t == "table" then return json.encode(v) end
  if t == "number" then return number_text(v) end
  return tostring(v)
end

-- JSON numbers come back as floats under Lua 5.3+: make whole ones
-- integers again so that restored state prints as it did.
local tointeger = math.tointeger
local function integral(v)
  if tointeger and type(v) == "number" then return tointeger(v) or v end
  if type(v) ~= "table" then return v end
  local fix
  for k, x in pairs(v) do
    if type(x) == "table" then integral(x)
    elseif tointeger and type(x) == "number" and tointeger(x) then fix = fix or {}; fix[k] = tointeger(x) end
  end
  if fix then for k, x in pairs(fix) do v[k] = x end end
  return v
end

local function encoder(spec, fname)
  if spec == nil then return encode_default end
  if type(spec) == "function" then return spec end
  if spec == "json" then return function(v) if v == nil then return nil end return json.encode(v) end end
  if spec == "string" then
    return function(v)
      if type(v) == "number" then return number_text(v) end
      if v == nil then return nil end
      return tostring(v)
    end
  end
  argerror(2, fname, "value must be \"string\", \"json\" or a function")
end

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
-- kafka (extra librdkafka properties for the stream's consumer).
function M.topology(app, options)
  if options == nil and type(app) == "table" and getmetatable(app) == nil then
    app, options = nil, app
  end
  options = options or {}
  if type(options) ~= "table" then argerror(2, "topology", "table expected") end
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
    counters = { processed = 0, late = 0, skipped = 0, errors = 0, restored = 0, commits = 0 },
  }, Topology)
  if app then
    self.runner = require("sluice.stream.kafka").attach(self, app)
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

local function forward(node, rec, task)
  local ch = node.children
  for i = 1, #ch do ch[i]:process(rec, task) end
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

-- ---- stores ------------------------------------------------------------------

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

-- ---- the engine ------------------------------------------------------------

local Engine = {}
Engine.__index = Engine

-- runner: produce(topic, key, value, partition, timestamp, internal) →
-- true | nil, err; log(level, msg); now() → wall-clock ms.
function M._engine(topo, runner)
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
  for _, def in ipairs(self.sub_stores[t.sub] or {}) do t.stores[def.name] = new_store(def) end
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

M.Engine = Engine

-- ---- the test driver ---------------------------------------------------------

function M.driver(topo, options)
  return require("sluice.stream.driver").new(topo, options)
end

function Topology:stats()
  local s = {}
  for k, v in pairs(self.counters) do s[k] = v end
  return s
end

return M
