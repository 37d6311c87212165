-- sluice.admin: topics and their configs on a Kafka cluster.
--
--   local admin = sluice.admin(app)                     -- the app's cluster and loop
--   local admin = sluice.admin { kafka = { ["bootstrap.servers"] = "k1:9092" } }
--   admin:create_topic("orders", { partitions = 6, replication = 3,
--                                  config = { ["cleanup.policy"] = "compact" } })
--
-- Every method takes an optional callback as its last argument. With one,
-- the call returns at once (true, or nil, err, code when the request was
-- not even sent) and the callback gets the answer on the loop. Without
-- one, the call runs the loop until the answer is there and returns it:
-- for the REPL and scripts, not for handlers (the loop is not re-entrant:
-- inside a handler that raises). Expected failures are nil, "CODE:
-- message", "CODE" (TOPIC_ALREADY_EXISTS, UNKNOWN_TOPIC_OR_PART,
-- INVALID_REPLICATION_FACTOR, TIMED_OUT, …); misuse raises.
-- Reference: docs/api.md, "sluice.admin".
local core = require "sluice.core"
local util = require "sluice.util"

local unpack = table.unpack or unpack

local Admin = {}
Admin.__index = Admin

-- After a create, delete or alter: how often the cluster is asked whether
-- the change shows yet, and for how long at most.
local VISIBLE_POLL_MS, VISIBLE_WAIT_MS = 100, 10000

local function bad(n, fname, msg) util.user_argerror(n, fname, msg) end

local function check_name(n, fname, name)
  if type(name) ~= "string" or name == "" then
    bad(n, fname, ("topic name expected, got %s"):format(name == "" and "an empty string" or type(name)))
  end
end

-- The options argument n (a table or nil) with only the given keys.
local function check_opts(n, fname, opts, keys)
  if opts == nil then return {} end
  if type(opts) ~= "table" then bad(n, fname, ("options table expected, got %s"):format(type(opts))) end
  util.check_keys(opts, keys, fname, n)
  local t = opts.timeout
  if t ~= nil and (type(t) ~= "number" or t <= 0 or t > 3600000) then
    bad(n, fname, "'timeout' must be a number of ms from 1 to 3600000")
  end
  return opts
end

local function check_count(n, fname, opts, key, max)
  local v = opts[key]
  if v ~= nil and (type(v) ~= "number" or v % 1 ~= 0 or v < 1 or v > max) then
    bad(n, fname, ("'%s' must be an integer from 1 to %d, got %s"):format(key, max, tostring(v)))
  end
end

-- Config values: strings or numbers (false too where it removes one).
local function check_config(n, fname, config, removable)
  if config == nil then return {} end
  if type(config) ~= "table" then bad(n, fname, ("config must be a table, got %s"):format(type(config))) end
  local out = {}
  for k, v in pairs(config) do
    if type(k) ~= "string" then bad(n, fname, "config names must be strings") end
    local t = type(v)
    if t == "string" then out[k] = v
    elseif t == "number" then out[k] = (v % 1 == 0 and ("%d"):format(v)) or tostring(v)
    elseif removable and v == false then out[k] = false
    else
      bad(n, fname, ("config '%s' must be a string or number%s, got %s")
        :format(k, removable and " (false: back to the default)" or "", t))
    end
  end
  return out
end

local function check_cb(n, fname, cb)
  if cb ~= nil and type(cb) ~= "function" then bad(n, fname, ("function expected, got %s"):format(type(cb))) end
  return cb
end

local TIMEOUT_ONLY = { timeout = true }

-- The (name [, opts] [, cb]) of a method on one topic, checked: opts, cb.
local function topic_args(fname, name, opts, cb, keys)
  if type(opts) == "function" and cb == nil then opts, cb = nil, opts end
  check_name(1, fname, name)
  return check_opts(2, fname, opts, keys or TIMEOUT_ONLY), check_cb(3, fname, cb)
end

local function fail(err, code) return nil, err, code end
local function pass(...) return ... end

-- ---- the client ------------------------------------------------------------

-- sluice.admin(app) or sluice.admin { kafka = { ... } }.
function Admin.new(target)
  local self = setmetatable({}, Admin)
  if type(target) == "table" and type(target._kafka_props) == "function" then
    local ok, err, code = target:_ensure_started()
    if not ok then return nil, err, code end
    self.app, self.loop = target, target.loop
    self.props = target:_kafka_props()
  elseif type(target) == "table" then
    util.check_keys(target, { kafka = true, log = true, log_level = true }, "admin", 1)
    local props = util.string_props(target.kafka, "kafka")
    if not props["bootstrap.servers"] then
      bad(1, "admin", "kafka['bootstrap.servers'] is required (or pass an app)")
    end
    local loop, err, code = core.loop { log = target.log, log_level = target.log_level or "warn" }
    if not loop then return nil, err, code end
    self.loop, self.own_loop, self.props = loop, true, props
  else
    bad(1, "admin", ("app or options table expected, got %s"):format(type(target)))
  end
  local c, err, code = core.admin(self.loop, { props = self.props })
  if not c then
    if self.own_loop then self.loop:close() end
    return nil, err, code
  end
  self.core = c
  return self
end

function Admin:_live(fname)
  if not self.core or self.core:is_closed() then
    util.user_error(("attempt to use a closed sluice.admin (%s)"):format(fname))
  end
  return self.core
end

-- Sends a request: send(done) asks the core, done(...) gets the answer,
-- shape(...) turns it into what the caller returns. With cb: true now,
-- cb(shaped answer) later. Without: waits on the loop.
function Admin:_request(fname, cb, send, shape)
  local c = self:_live(fname)
  if cb then
    return send(c, function(...) return cb(shape(...)) end)
  end
  if c:in_handler() then
    util.user_error(("admin:%s without a callback would wait on the loop from inside a handler: " ..
      "pass a callback"):format(fname))
  end
  local answer
  local ok, err, code = send(c, function(...) answer = { n = select("#", ...), ... } end)
  if not ok then return nil, err, code end
  while not answer do self.loop:run_once(100) end
  return shape(unpack(answer, 1, answer.n))
end

local function timeout(opts) return opts.timeout and math.floor(opts.timeout) or nil end

-- Calls fn after ms on the admin's loop (nothing if it closes meanwhile).
function Admin:_after(ms, fn)
  local t
  t = core.timer(self.loop, function()
    t:close()
    if not self:is_closed() then fn() end
  end)
  t:start(ms)
end

-- Kafka answers a create, a delete or an alter once its controller has
-- the change; brokers apply it a moment later. A describe right after the
-- answer could still see the old state: each of them returns once it
-- shows. ask(c, reply) asks the cluster, reply(true) when the change
-- shows; done() then, or at deadline (loop ms).
function Admin:_until(ask, deadline, done)
  local c = self.core
  if c:is_closed() then return done() end
  local ok = ask(c, function(seen)
    if seen or self.loop:now() >= deadline then return done() end
    self:_after(VISIBLE_POLL_MS, function() self:_until(ask, deadline, done) end)
  end)
  if not ok then done() end
end

-- Every one of names with a leader for each partition in the metadata.
function Admin:_until_visible(names, deadline, done)
  self:_until(function(c, reply)
    return c:describe_topics(names, nil, function(list)
      local all = list ~= nil
      for _, t in ipairs(list or {}) do
        if t.error or #t.partitions == 0 then all = false end
        for _, p in ipairs(t.partitions or {}) do
          if p.leader < 0 then all = false end
        end
      end
      reply(all)
    end)
  end, deadline, done)
end

-- One topic's outcome of create or delete: true, or nil, err, code.
local function one_topic(list, err, code)
  if not list then return fail(err, code) end
  local t = list[1]
  if t.error then return fail(t.error, t.code) end
  return true
end

local CREATE_KEYS = { partitions = true, replication = true, config = true, exist_ok = true, timeout = true }

local function new_topic(n, fname, name, opts)
  check_count(n, fname, opts, "partitions", 1000000)
  check_count(n, fname, opts, "replication", 32767)
  return { name = name, partitions = opts.partitions, replication = opts.replication,
           config = check_config(n, fname, opts.config) }
end

-- An app's embedded broker (librdkafka's mock) answers no admin request
-- but metadata: topics are made with its own API, the rest is refused at
-- once rather than after a timeout. The answer: returned, or (cb) given
-- to cb on the loop, as other answers are.
function Admin:_answer(cb, ...)
  if cb then
    local answer = { n = select("#", ...), ... }
    self:_after(0, function() cb(unpack(answer, 1, answer.n)) end)
    return true
  end
  return ...
end

function Admin:_unsupported(fname, cb)
  self:_live(fname)
  return self:_answer(cb, nil, ("UNSUPPORTED: the embedded broker (librdkafka's mock) has no %s: " ..
    "use a Kafka cluster"):format(fname), "UNSUPPORTED")
end

-- The embedded broker's create: configs and replication it cannot have.
function Admin:_embedded_create(spec, exist_ok, cb)
  self:_live("create_topic")
  if next(spec.config) or (spec.replication or 1) > self.app.broker:count() then
    return self:_unsupported("topic configs or replication beyond its brokers", cb)
  end
  local ok, err = self.app.broker:create_topic(spec.name, spec.partitions or 0)
  local code = not ok and err:match("^KAFKA: ([%u_]+): ")
  if ok then return self:_answer(cb, "created") end
  if code == "TOPIC_ALREADY_EXISTS" and exist_ok then return self:_answer(cb, "exists") end
  if code then err = err:sub(#"KAFKA: " + 1) end
  return self:_answer(cb, nil, err, code or "KAFKA")
end

-- admin:create_topic(name [, { partitions, replication, config, exist_ok,
-- timeout }] [, cb]) → "created" | "exists" (exist_ok) | nil, err, code.
-- Unset partitions/replication: the broker's defaults. "created" once the
-- cluster's metadata shows the topic with its leaders (VISIBLE_WAIT_MS at
-- most), so that what follows (describe, produce) finds it.
function Admin:create_topic(name, opts, cb)
  opts, cb = topic_args("create_topic", name, opts, cb, CREATE_KEYS)
  local spec = new_topic(2, "create_topic", name, opts)
  if self.app and self.app.broker then return self:_embedded_create(spec, opts.exist_ok, cb) end
  return self:_request("create_topic", cb, function(c, done)
    return c:create_topics({ spec }, timeout(opts), function(list, err, code)
      local ok, e, ecode = one_topic(list, err, code)
      if ecode == "TOPIC_ALREADY_EXISTS" and opts.exist_ok then return done("exists") end
      if not ok then return done(nil, e, ecode) end
      self:_until_visible({ name }, self.loop:now() + VISIBLE_WAIT_MS, function() done("created") end)
    end)
  end, pass)
end

-- admin:create_topics({ { name, partitions, replication, config }, ... }
-- [, { timeout }] [, cb]) → { [name] = true | "CODE: message" } | nil, err, code
function Admin:create_topics(list, opts, cb)
  if type(opts) == "function" and cb == nil then opts, cb = nil, opts end
  if type(list) ~= "table" or #list == 0 then bad(1, "create_topics", "a list of topics expected") end
  opts = check_opts(2, "create_topics", opts, TIMEOUT_ONLY)
  check_cb(3, "create_topics", cb)
  local specs = {}
  for i, t in ipairs(list) do
    if type(t) ~= "table" then bad(1, "create_topics", ("topic #%d must be a table"):format(i)) end
    util.check_keys(t, { name = true, partitions = true, replication = true, config = true }, "create_topics", 1, "topic field")
    check_name(1, "create_topics", t.name)
    specs[i] = new_topic(1, "create_topics", t.name, t)
  end
  if self.app and self.app.broker then
    local out = {}
    for _, spec in ipairs(specs) do
      local ok, err = self:_embedded_create(spec, false)
      out[spec.name] = ok and true or err
    end
    return self:_answer(cb, out)
  end
  return self:_request("create_topics", cb, function(c, done)
    return c:create_topics(specs, timeout(opts), function(results, err, code)
      if not results then return done(nil, err, code) end
      local out, created = {}, {}
      for _, t in ipairs(results) do
        out[t.name] = t.error or true
        if not t.error then created[#created + 1] = t.name end
      end
      if #created == 0 then return done(out) end
      self:_until_visible(created, self.loop:now() + VISIBLE_WAIT_MS, function() done(out) end)
    end)
  end, pass)
end

-- admin:delete_topic(name [, { timeout }] [, cb]) → true | nil, err, code
function Admin:delete_topic(name, opts, cb)
  opts, cb = topic_args("delete_topic", name, opts, cb)
  if self.app and self.app.broker then return self:_unsupported("DeleteTopics", cb) end
  return self:_request("delete_topic", cb, function(c, done)
    return c:delete_topics({ name }, timeout(opts), function(list, err, code)
      if not (list and not list[1].error) then return done(list, err, code) end
      -- gone from the metadata too
      self:_until(function(cc, reply)
        return cc:describe_topics({ name }, nil, function(l) reply(l ~= nil and l[1].error ~= nil) end)
      end, self.loop:now() + VISIBLE_WAIT_MS, function() done(list) end)
    end)
  end, one_topic)
end

-- A described topic: { name, partitions = { { partition, leader, replicas,
-- isr } ... }, replication = replicas of partition 0 }.
local function topic_info(t)
  if t.partitions then
    table.sort(t.partitions, function(a, b) return a.partition < b.partition end)
    t.replication = t.partitions[1] and #t.partitions[1].replicas or 0
  end
  return t
end

-- admin:describe_topics([names] [, { timeout }] [, cb]) →
-- { [name] = info | { name, error, code } }, brokers, cluster_id | nil, err, code.
-- names nil: every topic.
function Admin:describe_topics(names, opts, cb)
  if type(opts) == "function" and cb == nil then opts, cb = nil, opts end
  if names ~= nil then
    if type(names) ~= "table" then bad(1, "describe_topics", "a list of topic names expected") end
    for i, n in ipairs(names) do
      if type(n) ~= "string" then bad(1, "describe_topics", ("topic #%d must be a string"):format(i)) end
    end
  end
  opts = check_opts(2, "describe_topics", opts, TIMEOUT_ONLY)
  check_cb(3, "describe_topics", cb)
  return self:_request("describe_topics", cb, function(c, done)
    return c:describe_topics(names, timeout(opts), done)
  end, function(list, err, code)
    if not list then return fail(err, code) end
    local out = {}
    for _, t in ipairs(list) do out[t.name] = topic_info(t) end
    return out, list.brokers, list.cluster_id
  end)
end

-- admin:describe_topic(name [, { timeout }] [, cb]) → info | nil, err, code
function Admin:describe_topic(name, opts, cb)
  opts, cb = topic_args("describe_topic", name, opts, cb)
  return self:_request("describe_topic", cb, function(c, done)
    return c:describe_topics({ name }, timeout(opts), done)
  end, function(list, err, code)
    if not list then return fail(err, code) end
    local t = list[1]
    if t.error then return fail(t.error, t.code) end
    return topic_info(t)
  end)
end

-- admin:brokers([{ timeout }] [, cb]) → { { id, host, port }, ... } | nil, err, code
function Admin:brokers(opts, cb)
  if type(opts) == "function" and cb == nil then opts, cb = nil, opts end
  opts = check_opts(1, "brokers", opts, TIMEOUT_ONLY)
  check_cb(2, "brokers", cb)
  return self:_request("brokers", cb, function(c, done)
    return c:describe_topics({}, timeout(opts), done)
  end, function(list, err, code)
    if not list then return fail(err, code) end
    table.sort(list.brokers, function(a, b) return a.id < b.id end)
    return list.brokers
  end)
end

-- admin:describe_configs(topic [, { timeout }] [, cb]) →
-- { [name] = { value, source, default, read_only, sensitive } } | nil, err, code
function Admin:describe_configs(name, opts, cb)
  opts, cb = topic_args("describe_configs", name, opts, cb)
  if self.app and self.app.broker then return self:_unsupported("topic configs", cb) end
  return self:_request("describe_configs", cb, function(c, done)
    return c:describe_configs(name, timeout(opts), done)
  end, pass)
end

-- admin:alter_configs(topic, { name = value | false } [, { timeout }] [, cb])
-- → true | nil, err, code. Only the named configs change (false: back to
-- the default). librdkafka 2.0.2 has Kafka's AlterConfigs, which sets a
-- topic's whole set of overrides: the current ones are read first and sent
-- again with the changes (two requests; a change made by someone else in
-- between is overwritten).
function Admin:alter_configs(name, changes, opts, cb)
  if type(opts) == "function" and cb == nil then opts, cb = nil, opts end
  check_name(1, "alter_configs", name)
  if type(changes) ~= "table" then bad(2, "alter_configs", ("table of configs expected, got %s"):format(type(changes))) end
  changes = check_config(2, "alter_configs", changes, true)
  opts = check_opts(3, "alter_configs", opts, TIMEOUT_ONLY)
  check_cb(4, "alter_configs", cb)
  if self.app and self.app.broker then return self:_unsupported("topic configs", cb) end
  local ms = timeout(opts)
  return self:_request("alter_configs", cb, function(c, done)
    return c:describe_configs(name, ms, function(configs, err, code)
      if not configs then return done(nil, err, code) end
      local set = {}
      for k, e in pairs(configs) do
        if e.source == "DYNAMIC_TOPIC_CONFIG" then
          if e.value == nil and changes[k] == nil then
            return done(nil, ("UNSUPPORTED: %s's override %s is sensitive: it cannot be kept, give it"):format(name, k),
              "UNSUPPORTED")
          end
          set[k] = e.value
        end
      end
      for k, v in pairs(changes) do set[k] = v or nil end
      -- The changes, as a describe shows them (a removed one: no override).
      local function shown(now)
        for k, v in pairs(changes) do
          local e = now[k]
          if v and not (e and e.value == v) then return false end
          if not v and e and e.source == "DYNAMIC_TOPIC_CONFIG" then return false end
        end
        return true
      end
      local ok, aerr, acode = c:alter_configs(name, set, ms, function(altered, ...)
        if not altered then return done(altered, ...) end
        local answer = { n = select("#", ...) + 1, altered, ... }
        self:_until(function(cc, reply)
          return cc:describe_configs(name, nil, function(now) reply(now ~= nil and shown(now)) end)
        end, self.loop:now() + VISIBLE_WAIT_MS, function() done(unpack(answer, 1, answer.n)) end)
      end)
      if not ok then done(nil, aerr, acode) end
    end)
  end, function(ok, err, code)
    if not ok then return fail(err, code) end
    return true
  end)
end

-- Requests not answered yet.
function Admin:pending()
  return self.core and not self.core:is_closed() and self.core:pending() or 0
end

-- Requests in flight are answered nil, "DESTROY: …". Idempotent.
function Admin:close()
  if self.core then self.core:close() end
  if self.own_loop and self.loop then
    self.loop:close()
    self.loop = nil
  end
end

function Admin:is_closed() return not self.core or self.core:is_closed() end

Admin.__close = Admin.close

return Admin
