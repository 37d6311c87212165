-- The internal topics of a topology (store changelogs and repartition
-- topics), created by sluice through the Admin API before the stream's
-- consumer starts: as many partitions as the tasks that write them,
-- replication factor `replication` (default min(3, brokers)), changelogs
-- with cleanup.policy=compact. A topic that exists with another partition
-- count, or a changelog that is not compacted, stops the stream at start
-- with an error saying so. The embedded broker (the app's own, or under
-- --workers the supervisor's) cannot create topics (nor compact them):
-- there they are created on first use, as before.
local Admin = require "sluice.admin"

local M = {}

-- How long to wait between rounds while source topics are missing, and
-- after creating topics until the cluster's metadata shows them.
local WAIT_MISSING_MS, WAIT_CREATED_MS = 2000, 200
local CREATE_TIMEOUT_MS = 30000

-- sources: the topics the topology reads from outside; internal: { name,
-- sub, compact } for each topic sluice owns. Sorted by name.
function M.plan(topo)
  local sources, internal = {}, {}
  for topic, nodes in pairs(topo.sources) do
    local entry = { name = topic, sub = topo:_sub(nodes[1].sub) }
    if nodes[1].internal then internal[#internal + 1] = entry else sources[#sources + 1] = entry end
  end
  for _, def in ipairs(topo.store_list) do
    -- (a table's store reads the table's own topic: not ours)
    if def.kind ~= "table" then
      internal[#internal + 1] = { name = def.changelog, sub = topo:_sub(def.node.sub), compact = true }
    end
  end
  local by_name = function(a, b) return a.name < b.name end
  table.sort(sources, by_name)
  table.sort(internal, by_name)
  return sources, internal
end

-- Partitions of each internal topic: a repartition topic gets as many as
-- the topology's widest source topic; a changelog as many as the topics
-- its store's tasks read (one task per partition).
function M.partitions(sources, internal, counts)
  local widest = 0
  for _, s in ipairs(sources) do widest = math.max(widest, counts[s.name]) end
  local per_sub = {}
  local function widen(sub, n) per_sub[sub] = math.max(per_sub[sub] or 0, n) end
  for _, s in ipairs(sources) do widen(s.sub, counts[s.name]) end
  for _, t in ipairs(internal) do
    if not t.compact then widen(t.sub, widest) end
  end
  local want = {}
  for _, t in ipairs(internal) do
    want[t.name] = t.compact and (per_sub[t.sub] or widest) or widest
  end
  return want
end

local function compacted(configs)
  local policy = configs["cleanup.policy"]
  return policy and policy.value and policy.value:find("compact", 1, true) ~= nil, policy and policy.value
end

-- Calls start() once every internal topic of the runner's topology exists
-- as it should; logs an error and never calls it when one is wrong.
function M.prepare(runner, start)
  local topo, app = runner.topo, runner.app
  if app.broker or topo.options.create_topics == false then return start() end
  local sources, internal = M.plan(topo)
  if #internal == 0 then return start() end
  local admin, aerr = Admin.new(app)
  if not admin then return runner:log("error", ("stream %s not started: %s"):format(topo.name, aerr)) end
  local names, said = {}, {}
  for _, s in ipairs(sources) do names[#names + 1] = s.name end
  for _, t in ipairs(internal) do names[#names + 1] = t.name end

  local round
  local function stop(err)
    admin:close()
    topo.start_error = err
    runner:log("error", ("stream %s not started: %s"):format(topo.name, err))
  end
  local function later(ms, why)
    if why and not said[why] then
      said[why] = true
      runner:log("warn", ("stream %s: %s"):format(topo.name, why))
    end
    app:timer(ms, round)
  end
  -- Changelogs that existed before: compacted? Checked one after another.
  local function check_policies(list, i)
    local t = list[i]
    if not t then
      admin:close()
      runner:log("info", ("stream %s: internal topics ready (%s)"):format(topo.name, table.concat(names, ", ", #sources + 1)))
      return start()
    end
    admin:describe_configs(t.name, function(configs, err)
      if not configs then return stop(("reading the configs of %s: %s"):format(t.name, err)) end
      local ok, policy = compacted(configs)
      if not ok then
        return stop(("changelog topic %s has cleanup.policy=%s, not compact: its state would be deleted " ..
          "by retention (alter it to compact, or delete it)"):format(t.name, tostring(policy)))
      end
      check_policies(list, i + 1)
    end)
  end
  round = function()
    admin:describe_topics(names, function(info, brokers, cluster_id)
      if not info then return later(WAIT_MISSING_MS, "cannot describe its topics yet: " .. tostring(brokers)) end
      if cluster_id and cluster_id:find("^mockCluster") then   -- another app's embedded broker
        admin:close()
        return start()
      end
      local counts, missing = {}, {}
      for _, s in ipairs(sources) do
        local t = info[s.name]
        if t.error then missing[#missing + 1] = s.name else counts[s.name] = #t.partitions end
      end
      if #missing > 0 then
        return later(WAIT_MISSING_MS, ("waiting for its source topic%s %s to exist")
          :format(#missing > 1 and "s" or "", table.concat(missing, ", ")))
      end
      local want, create, settling, existing = M.partitions(sources, internal, counts), {}, false, {}
      local replication = topo.options.replication or math.min(3, #brokers)
      for _, t in ipairs(internal) do
        local have = info[t.name]
        if have.error then
          create[#create + 1] = { name = t.name, partitions = want[t.name], replication = replication,
            config = t.compact and { ["cleanup.policy"] = "compact" } or nil }
        elseif #have.partitions ~= want[t.name] then
          return stop(("topic %s has %d partitions, expected %d (as many as the tasks that write it): " ..
            "delete it to have it created again"):format(t.name, #have.partitions, want[t.name]))
        else
          for _, p in ipairs(have.partitions) do
            if p.leader < 0 then settling = true end
          end
          if t.compact then existing[#existing + 1] = t end
        end
      end
      if settling then return later(WAIT_CREATED_MS) end
      if #create == 0 then return check_policies(existing, 1) end
      admin:create_topics(create, { timeout = CREATE_TIMEOUT_MS }, function(results, err)
        if not results then return stop("creating its internal topics: " .. err) end
        for _, c in ipairs(create) do
          local r = results[c.name]
          -- (already there: another gateway of the group created it)
          if r ~= true and not tostring(r):find("^TOPIC_ALREADY_EXISTS") then
            return stop(("creating topic %s: %s"):format(c.name, tostring(r)))
          end
          if r == true then
            runner:log("info", ("stream %s: created topic %s (%d partitions, replication factor %d%s)")
              :format(topo.name, c.name, c.partitions, c.replication, c.config and ", compacted" or ""))
          end
        end
        later(WAIT_CREATED_MS)   -- until the metadata shows them
      end)
    end)
  end
  round()
end

return M
