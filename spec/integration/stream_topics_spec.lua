-- sluice.stream's internal topics on Apache Kafka (the suite's shared
-- broker): a gateway creates its changelog (compacted) and repartition
-- topics itself with the source topic's partition count, as kafka-python's
-- admin client and kcat see them, the broker compacts the changelog, and
-- it refuses to start a stream over an existing one with the wrong
-- partition count or cleanup policy.
local H = require "integration.helper"
local sluice = require "sluice"

-- Clicks (page names) counted per page, through a repartition (key_by).
local APP = [[
local N, SRC, OUT = %q, %q, %q
local app = require("sluice").app { name = N, listen = 0 }
local stream = require "sluice.stream"
local t = stream.topology(app, { name = N })
t:from(SRC):key_by(function(page) return page end)
  :count { store = "per-page" }
  :to(OUT)
app:http("GET", "/healthz", function()
  local s = t:stats()
  return 200, { status = "ok", assigned = app:stats().assigned, processed = s.processed, error = s.error }
end)
return app
]]

describe("sluice.stream creates its internal topics on Apache Kafka", function()
  local kafka, gw
  local n = 0
  -- A gateway running the app above under a fresh prefix, its source topic
  -- created beforehand (kafkajs) with 3 partitions; `before(names)` may
  -- create more.
  local function start(before)
    n = n + 1
    local P = H.prefix("streamtopics" .. n)
    local names = { app = P .. "clicks-app", src = P .. "clicks", out = P .. "counts" }
    names.changelog = names.app .. ".per-page.changelog"
    names.repartition = names.app .. ".per-page.repartition"
    H.create_topic(kafka, { names.src, names.out }, 3)
    if before then before(names) end
    local dir = H.tmpdir()
    H.write(dir .. "/app.lua", APP:format(names.app, names.src, names.out))
    gw = H.start { app = dir .. "/app.lua", kafka = kafka }
    return names
  end

  setup(function() kafka = H.kafka() end)
  after_each(function()
    if gw then gw:stop() end
    gw = nil
  end)
  teardown(function() H.cleanup() end)

  it("creates the changelog compacted and the repartition topic, 3 partitions each, and runs", function()
    local t = start()
    local ready = H.wait_for(30, function()
      return gw:stderr():find("internal topics ready", 1, true) and true
    end, 0.2)
    assert(ready, "not ready; gateway log:\n" .. gw:stderr())
    local log = gw:stderr()
    assert.truthy(log:find(("created topic %s (3 partitions, replication factor 1, compacted)"):format(t.changelog), 1, true), log)
    assert.truthy(log:find(("created topic %s (3 partitions, replication factor 1)"):format(t.repartition), 1, true), log)

    local py = H.describe_topics(kafka, { t.changelog, t.repartition })
    assert.equal(3, #py[t.changelog].partitions)
    assert.equal("compact", py[t.changelog].configs["cleanup.policy"].value)
    assert.equal(3, #py[t.repartition].partitions)
    assert.equal("delete", py[t.repartition].configs["cleanup.policy"].value)
    assert.equal(1, #py[t.changelog].partitions[1].replicas)

    -- and the stream runs on them: counts per page come out
    for _, page in ipairs { "home", "cart", "home" } do assert(H.kcat_produce(kafka, t.src, page)) end
    local counts = H.kcat_consume(kafka, t.out, 3, 60)
    local last = {}
    for _, r in ipairs(counts) do last[r.key] = r.value end
    assert.same({ home = "2", cart = "1" }, last, gw:stderr())
    assert.equal(3, #counts)
    -- the changelog holds the counts (read back by kcat)
    local entries = H.kcat_consume(kafka, t.changelog, 2, 30)
    assert.is_true(#entries >= 2)
  end)

  -- The broker's log cleaner looks for work every 15 s (Kafka's
  -- log.cleaner.backoff.ms): this waits for one pass, up to 60 s.
  it("its changelog is compacted by the broker: one record per key is left", function()
    local t = start()
    assert(H.wait_for(30, function() return gw:stderr():find("internal topics ready", 1, true) end, 0.2),
      gw:stderr())
    -- small segments, cleaned at once (cleanup.policy=compact is kept)
    local admin = assert(sluice.admin { kafka = { ["bootstrap.servers"] = kafka } })
    finally(function() admin:close() end)
    assert.is_true(admin:alter_configs(t.changelog, { ["segment.ms"] = 100, ["min.cleanable.dirty.ratio"] = "0.01" }))
    assert.equal("compact", admin:describe_configs(t.changelog)["cleanup.policy"].value)
    -- six counts of "home", each in an epoch (and a changelog record) of its own
    for i = 1, 6 do
      assert(H.kcat_produce(kafka, t.src, "home"))
      assert(H.wait_for(20, function()
        local last
        for _, r in ipairs(H.kcat_consume(kafka, t.out, i, 5)) do if r.key == "home" then last = r.value end end
        return last == tostring(i)
      end, 0.2), "count " .. i .. " not out")
    end
    local function homes()
      local n, last = 0, nil
      for _, r in ipairs(H.kcat_consume(kafka, t.changelog, 1, 5)) do
        if r.key == "home" then n, last = n + 1, r.value end
      end
      return n, last
    end
    -- (six changelog records of home were written: without compaction all
    -- six stay; the cleaner may already be at work, so none is counted here)
    H.sleep(0.2)
    assert(H.kcat_produce(kafka, t.src, "cart"))   -- a record in a new segment: the old ones can be cleaned
    local n, last
    assert(H.wait_for(60, function()
      n, last = homes()
      return n == 1
    end, 2), "the changelog was not compacted: " .. tostring(n) .. " records of home")
    assert.equal('{"v":6}', last)   -- the latest count
  end)

  it("an existing changelog with another partition count: the stream does not start, and says why", function()
    local t = start(function(names) H.create_topic(kafka, names.changelog, 1, { compact = true }) end)
    local want = ("stream %s not started: topic %s has 1 partitions, expected 3 (as many as the tasks " ..
      "that write it): delete it to have it created again"):format(t.app, t.changelog)
    assert(H.wait_for(30, function() return gw:stderr():find(want, 1, true) end, 0.2), gw:stderr())
    local _, h = gw:healthz()
    assert.equal(0, h.assigned)
    assert.equal(("topic %s has 1 partitions, expected 3 (as many as the tasks that write it): " ..
      "delete it to have it created again"):format(t.changelog), h.error)   -- t:stats().error
  end)

  it("an existing changelog that is not compacted: the stream does not start, and says why", function()
    local t = start(function(names) H.create_topic(kafka, names.changelog, 3) end)
    local want = ("stream %s not started: changelog topic %s has cleanup.policy=delete, not compact")
      :format(t.app, t.changelog)
    assert(H.wait_for(30, function() return gw:stderr():find(want, 1, true) end, 0.2), gw:stderr())
    local _, h = gw:healthz()
    assert.equal(0, h.assigned)
  end)
end)
