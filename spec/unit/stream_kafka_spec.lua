-- sluice.stream on a real app and the embedded broker, in-process: outputs
-- arrive, offsets are committed only for acknowledged work, and a new
-- instance restores the store from its changelog and carries on.
local sluice = require "sluice"
local stream = require "sluice.stream"
local support = require "unit.support"

local function quiet() end

describe("sluice.stream on Kafka", function()
  local host, bootstrap
  setup(function()
    host = support.app { listen = false }   -- only hosts the broker
    assert(host:start())
    bootstrap = host.kafka_bootstrap
  end)
  teardown(function() host:close() end)

  local function gateway()
    local app = sluice.app { listen = false, name = "wc", log = quiet,
                             kafka = { ["bootstrap.servers"] = bootstrap } }
    local t = stream.topology(app, { name = "wc" })
    t:from("words"):count { store = "counts" }:to("word-counts")
    return app, t
  end

  it("refuses exactly-once on the embedded broker: the app does not start", function()
    local app = support.app { listen = false, name = "eos" }
    local t = stream.topology(app, { processing = "exactly_once" })
    t:from("words"):count { store = "counts" }:to("word-counts")
    local ok, err, code = app:start()
    assert.is_nil(ok)
    assert.equal("CONFIG", code)
    assert.equal('CONFIG: stream eos: processing = "exactly_once" needs Apache Kafka (set ' ..
      'kafka["bootstrap.servers"] or run with --kafka): the embedded broker (librdkafka\'s mock ' ..
      'cluster) does not commit the offsets sent in a transaction and shows aborted records to ' ..
      'read_committed readers', err)
    assert.is_falsy(app.started)
    app:close()
  end)

  it("counts, commits, and a restarted instance resumes from the changelog", function()
    local feeder = sluice.app { listen = false, log = quiet, kafka = { ["bootstrap.servers"] = bootstrap } }
    local acked = 0
    local words = { "apple", "banana", "cherry", "date", "elder" }
    local function feed(n)
      for i = 1, n do
        assert(feeder:produce("words", { key = words[i % 5 + 1], value = "x" }, function(err)
          assert.is_nil(err); acked = acked + 1 end))
      end
    end
    feed(200)
    support.wait(feeder, function() return acked == 200 end, "200 words stored", 20)

    local app, t = gateway()
    support.wait(app, function() return t:stats().processed >= 200 end, "200 records processed", 40)
    support.wait(app, function() return t:stats().commits > 0 end, "a commit", 10)
    app:close()            -- graceful: flush, commit, leave the group

    feed(50)
    support.wait(feeder, function() return acked == 250 end, "50 more words stored", 20)
    local app2, t2 = gateway()
    support.wait(app2, function() return t2:stats().processed >= 50 end, "50 records processed", 40)
    support.settle(app2, 1)
    -- only the new records were processed: the old ones were committed
    assert.equal(50, t2:stats().processed)
    assert.is_true(t2:stats().restored >= 5)
    app2:close()

    -- Read every output independently: counts go 1..50 per word, in order.
    local got, seen = {}, 0
    local reader = sluice.app { listen = false, log = quiet, kafka = { ["bootstrap.servers"] = bootstrap } }
    reader:consume("word-counts", { from = "earliest", group = "reader" }, function(rec)
      seen = seen + 1
      local prev = got[rec.key] or 0
      assert.equal(prev + 1, tonumber(rec.value), "count of " .. rec.key .. " after " .. prev)
      got[rec.key] = tonumber(rec.value)
    end)
    support.wait(reader, function() return seen >= 250 end, "250 outputs read", 40)
    support.settle(reader, 0.5)
    assert.equal(250, seen)
    for _, w in ipairs(words) do assert.equal(50, got[w]) end
    reader:close()
    feeder:close()
  end)

  -- An output Kafka refuses for good: the input must not be committed, so
  -- that a restart processes it again (docs/stream.md, at-least-once).
  it("commits no input offset once an output write failed; a restart processes it all again", function()
    local function counter()
      local app = sluice.app { listen = false, name = "wf", log = quiet,
                               kafka = { ["bootstrap.servers"] = bootstrap } }
      local t = stream.topology(app, { name = "wf" })
      t:from("wf-words"):count { store = "counts" }:to("wf-counts")
      return app, t
    end
    local feeder = sluice.app { listen = false, log = quiet, kafka = { ["bootstrap.servers"] = bootstrap } }
    local acked = 0
    for i = 1, 40 do
      assert(feeder:produce("wf-words", { key = "w" .. (i % 4), value = "x" }, function(err)
        assert.is_nil(err); acked = acked + 1 end))
    end
    support.wait(feeder, function() return acked == 40 end, "40 words stored", 20)
    feeder:close()
    -- The next produce request anywhere (the stream's first writes) fails.
    assert(host.broker:push_errors("Produce", { "INVALID_RECORD" }))
    local app, t = counter()
    support.wait(app, function() return t:stats().processed >= 40 end, "40 records processed", 40)
    support.wait(app, function() return app:stats().delivery_failed > 0 end, "the failed write", 20)
    support.settle(app, 0.5)
    assert.equal(0, t:stats().commits)
    app:close()
    local app2, t2 = counter()
    support.wait(app2, function() return t2:stats().processed >= 40 end, "40 records processed again", 40)
    support.settle(app2, 1)
    assert.equal(40, t2:stats().processed)
    app2:close()
  end)

  -- The offsets the group has committed, read by kafkajs (the broker's
  -- answer, not the stream's own account): partition -> next offset.
  local function committed(group, topic)
    local p = assert(io.popen(("node spec/clients/kafkajs.js --brokers %s --topic %s --committed %s 2>&1")
      :format(bootstrap, topic, group)))
    local out = p:read("*a")
    p:close()
    local total, parts = 0, 0
    for part, off in out:gmatch('"(%d+)":(%-?%d+)') do
      parts = parts + 1
      if tonumber(off) > 0 then total = total + tonumber(off) end
    end
    assert(parts > 0, "kafkajs --committed: " .. out)
    return total
  end

  -- Epochs while the gateway runs (no graceful close to hide a missing
  -- commit): nothing is committed while an output is unacknowledged, and
  -- the stream stops taking input above max_in_flight; once Kafka takes
  -- the writes, it resumes and the group's offsets reach the end of the
  -- input, also for an epoch whose writes were all acknowledged before
  -- the timer sealed it.
  it("commits each epoch only once its writes are stored, and pauses input above max_in_flight", function()
    local feeder = sluice.app { listen = false, log = quiet, kafka = { ["bootstrap.servers"] = bootstrap } }
    local acked = 0
    local function feed(n)
      local want = acked + n
      for i = 1, n do
        assert(feeder:produce("ep-words", { key = "w" .. (i % 10), value = "x" }, function(err)
          assert.is_nil(err); acked = acked + 1 end))
      end
      support.wait(feeder, function() return acked == want end, want .. " words stored", 20)
    end
    -- Every produce request fails with a retriable error until cleared:
    -- the stream's writes stay unacknowledged, in librdkafka's retries.
    local function block()
      local errs = {}
      for i = 1, 100000 do errs[i] = "NOT_ENOUGH_REPLICAS" end
      assert(host.broker:push_errors("Produce", errs))
    end
    local function unblock() assert(host.broker:push_errors("Produce", {})) end

    feed(1500)
    block()
    local app = sluice.app { listen = false, name = "ep", log = quiet,
                             kafka = { ["bootstrap.servers"] = bootstrap } }
    local t = stream.topology(app, { name = "ep", max_in_flight = 100 })
    t:from("ep-words"):count { store = "counts" }:to("ep-counts")
    support.wait(app, function() return t:stats().processed > 100 end, "input processed", 40)
    support.settle(app, 1)
    local held = t:stats().processed
    assert.is_true(held < 1500, "input taken while 100 writes were unacknowledged: " .. held)
    assert.equal(0, t:stats().commits)
    assert.equal(0, committed("ep.stream", "ep-words"))

    unblock()
    support.wait(app, function() return t:stats().processed == 1500 end, "the rest processed after the pause", 40)
    support.wait(app, function() return committed("ep.stream", "ep-words") == 1500 end,
                 "the group's offsets at the end of the input", 40)

    feed(20)   -- acknowledged at once: the timer's seal commits them
    support.wait(app, function() return t:stats().processed == 1520 end, "20 more processed", 40)
    support.wait(app, function() return committed("ep.stream", "ep-words") == 1520 end,
                 "the 20 committed while running", 40)

    -- A second time: the stream pauses again after it resumed. Now the
    -- output topic has no leader (its writes wait; the input's do not).
    for p = 0, 3 do assert(host.broker:set_leader("ep-counts", p, -1)) end
    feed(1500)
    support.settle(app, 1)
    assert.is_true(t:stats().processed < 3020, "input taken while blocked again: " .. t:stats().processed)
    for p = 0, 3 do assert(host.broker:set_leader("ep-counts", p, 1)) end
    support.wait(app, function() return t:stats().processed == 3020 end, "all processed", 40)
    app:close()
    feeder:close()
  end)

  -- An epoch that caused no write at all (every record filtered out) has
  -- nothing to wait for: its seal commits it.
  it("commits an epoch whose records caused no write", function()
    local feeder = sluice.app { listen = false, log = quiet, kafka = { ["bootstrap.servers"] = bootstrap } }
    local acked = 0
    for i = 1, 30 do
      assert(feeder:produce("nw-words", { key = "w" .. (i % 3), value = "x" }, function(err)
        assert.is_nil(err); acked = acked + 1 end))
    end
    support.wait(feeder, function() return acked == 30 end, "30 words stored", 20)
    feeder:close()
    local app = sluice.app { listen = false, name = "nw", log = quiet,
                             kafka = { ["bootstrap.servers"] = bootstrap } }
    local t = stream.topology(app, { name = "nw" })
    t:from("nw-words"):filter(function() return false end):to("nw-out")
    support.wait(app, function() return t:stats().processed == 30 end, "30 processed", 40)
    support.wait(app, function() return committed("nw.stream", "nw-words") == 30 end,
                 "the group's offsets at the end of the input", 40)
    assert.equal(0, app:stats().produced)
    app:close()
  end)

  it("a hot reload keeps the stores: a changed operator continues the counts", function()
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir))
    local function write(marker)
      local f = assert(io.open(dir .. "/app.lua", "w"))
      f:write(([[
local sluice = require "sluice"
local stream = require "sluice.stream"
local app = sluice.app { name = "rl", listen = false, log = function() end,
                         kafka = { ["bootstrap.servers"] = %q } }
local t = stream.topology(app, { name = "rl" })
package.loaded["spec.rl_topology"] = t      -- (the app runs in its own environment)
t:from("rl-words"):count { store = "counts" }
  :map(function(n) return %q .. ":" .. n end):to("rl-counts")
return app
]]):format(bootstrap, marker))
      f:close()
    end
    write("v1")
    local app = assert(sluice.load(dir .. "/app.lua"))
    assert(app:start())
    local function feed(n)
      for _ = 1, n do assert(app:produce("rl-words", { key = "w", value = "x" })) end
    end
    feed(30)
    local t1 = package.loaded["spec.rl_topology"]
    support.wait(app, function() return t1:stats().processed >= 30 end, "30 processed", 40)
    local rebalances = app:stats().rebalances
    write("v2")
    assert(app:reload())
    local t2 = package.loaded["spec.rl_topology"]
    assert.are_not.equal(t1, t2)
    feed(20)
    support.wait(app, function() return t2:stats().processed >= 20 end, "20 processed by v2", 30)
    support.settle(app, 0.5)
    assert.equal(rebalances, app:stats().rebalances)
    app:close()

    local outs = {}
    local reader = sluice.app { listen = false, log = quiet, kafka = { ["bootstrap.servers"] = bootstrap } }
    reader:consume("rl-counts", { from = "earliest", group = "rl-reader" }, function(rec)
      outs[#outs + 1] = rec.value
    end)
    support.wait(reader, function() return #outs >= 50 end, "50 outputs", 40)
    reader:close()
    assert.equal("v1:30", outs[30])
    assert.equal("v2:31", outs[31])    -- the store was kept, not restarted
    assert.equal("v2:50", outs[50])
    os.execute("rm -rf " .. dir)
  end)

  it("an idle stream's windows close on the timer", function()
    local app = sluice.app { listen = false, name = "tw", log = quiet,
                             kafka = { ["bootstrap.servers"] = bootstrap } }
    local t = stream.topology(app, { name = "tw", punctuate_ms = 200 })
    t:from("tw-in"):count { store = "w", window = stream.tumbling(1000), emit = "close" }
      :map(function(n, k, r) return k .. "=" .. n .. "@" .. r.window.start end):to("tw-out")
    local got = {}
    app:consume("tw-out", { from = "earliest", group = "tw-reader" }, function(rec) got[#got + 1] = rec.value end)
    local base = 1700000000000   -- event time far from the wall clock: only the timer can close it
    for i = 1, 3 do assert(app:produce("tw-in", { key = "k", value = "x", timestamp = base + i })) end
    support.wait(app, function() return t:stats().processed >= 3 end, "3 processed", 40)
    assert.same({}, got)
    support.wait(app, function() return got[1] end, "the window result", 10)
    assert.same({ "k=3@" .. base }, got)
    app:close()
  end)
end)
