-- Broadcast consumers (no group): a record produced as soon as a gateway
-- answers reaches its broadcast subscribers — the README's chat example,
-- run as written, on the embedded broker and on Apache Kafka — and the
-- start positions an app can choose hold on Apache Kafka: "end" as of the
-- app's start (nothing produced after it is missed, nothing before it is
-- seen), "beginning", a time, explicit offsets; partitions added later are
-- read; no consumer group is left on the cluster. Records are written by
-- kcat and kafkajs; subscribers are Node `ws` clients.
local H = require "integration.helper"
local json = H.json

-- The README's first app, verbatim (topic renamed on the shared Kafka).
local function readme_chat(topic)
  local readme = assert(H.read(H.root .. "/README.md"))
  local code = assert(readme:match "```lua\n(%-%- chat%.lua:.-\nreturn app\n)```", "no chat example in README.md")
  if topic ~= "chat" then code = code:gsub('"chat"', ('%q'):format(topic)) end
  local path = H.tmpdir() .. "/chat.lua"
  H.write(path, code)
  return path
end

-- Starts the chat app, then at once (as soon as its port answers) a
-- subscriber on /chat; once it is connected, kcat writes one record.
-- Returns what the subscriber received.
local function chat_round(opts, topic, key)
  local gw = H.start { app = readme_chat(topic), kafka = opts.kafka, ready = "http" }
  local ready = H.tmpdir() .. "/ready"
  local sub = H.client_bg("subscribe.js", { "--url", gw.url .. "/chat", "--count", "1",
                                             "--timeout", "30", "--ready-file", ready })
  assert(H.wait_for(20, function() return H.read(ready) end, 0.01), "subscriber did not connect")
  assert(H.kcat_produce(gw.bootstrap, topic, "right after start", key))
  local r = sub:result(40)
  gw:stop()
  return r
end

-- An app whose broadcast consumer keeps what it sees; GET /seen lists it.
local SEEN_APP = [[
local sluice = require "sluice"
local json = require "cjson"
local app = sluice.app { name = "bcast" }
local from = os.getenv "BCAST_FROM"
from = from and json.decode(from)
if type(from) == "table" and from.offsets then   -- JSON keys are strings
  for topic, parts in pairs(from.offsets) do
    local t = {}
    for p, o in pairs(parts) do t[tonumber(p)] = o end
    from.offsets[topic] = t
  end
end
local seen = {}
app:consume(os.getenv "BCAST_TOPIC", {
  broadcast = true, from = from,
  kafka = { ["topic.metadata.refresh.interval.ms"] = "200" },
}, function(rec)
  seen[#seen + 1] = ("%d:%d:%s"):format(rec.partition, rec.offset, rec.value)
end)
app:http("GET", "/seen", function() return 200, seen end)
app:http("GET", "/stats", function() return 200, app:stats() end)
return app
]]

local function seen_app(kafka, topic, from)
  local path = H.tmpdir() .. "/seen.lua"
  H.write(path, SEEN_APP)
  local env = "BCAST_TOPIC=" .. H.q(topic)
  if from then env = env .. " BCAST_FROM=" .. H.q(json.encode(from)) end
  return H.start { app = path, kafka = kafka, env = env, ready = "http" }
end

-- GET /seen until it lists `n` records; returns them.
local function seen(gw, n)
  local list = H.wait_for(30, function()
    local status, body = H.http_json(gw.port, "/seen")
    return status == 200 and #body >= n and body
  end, 0.05)
  assert(list, "the broadcast consumer did not see " .. n .. " records")
  return list
end

-- kcat: one record to partition p.
local function produce_to(bootstrap, topic, p, value)
  local code, _, err = H.run(("printf '%%s\\n' %s | %s -P -b %s -t %s -p %d"):format(
    H.q(value), H.q(H.kcat), bootstrap, H.q(topic), p))
  assert(code == 0, "kcat produce failed: " .. tostring(err))
end

describe("broadcast without a group", function()
  teardown(H.cleanup)

  it("embedded broker: the README chat example pushes a record produced right after the gateway started", function()
    local r = chat_round({}, "chat")
    assert.are.same({ "right after start" }, r.messages)
    assert.is_nil(r.timed_out)
  end)

  -- (the embedded broker cannot list groups: Apache Kafka shows none is left, below)
  it("embedded broker: the broadcast consumer holds every partition, assigned once", function()
    local gw = seen_app(nil, "topic")
    local s = H.wait_for(20, function()
      local _, st = H.http_json(gw.port, "/stats")
      return st and st.assigned == 4 and st
    end)
    assert(s, "the 4 partitions were not assigned")
    assert.are.equal(1, s.rebalances)   -- one assignment, no rebalance
    gw:stop()
  end)

  describe("on Apache Kafka", function()
    local kafka
    local P = H.prefix "bcast"

    setup(function() kafka = H.kafka() end)

    it("the README chat example pushes a record produced right after the gateway started, not one from before", function()
      local topic = P .. "chat"
      H.create_topic(kafka, topic, 3)
      assert(H.kcat_produce(kafka, topic, "before start", "k"))
      local r = chat_round({ kafka = kafka }, topic, "k")
      -- Same key, same partition: had "before start" been pushed, it came first.
      assert.are.same({ "right after start" }, r.messages)
    end)

    -- The push path under fan-out (bench/push/run.sh times it; this
    -- checks what the clients get): 30 clients of the README chat app,
    -- 3 partitions of 100 records each written by kcat.
    it("pushes every record to every client exactly once, each partition in order, all clients in one order", function()
      local topic, clients, per = P .. "fan", 30, 100
      H.create_topic(kafka, topic, 3)
      local gw = H.start { app = readme_chat(topic), kafka = kafka, ready = "http" }
      local ready = H.tmpdir() .. "/ready"
      local fan = H.client_bg("fanout.js", { "--url", gw.url .. "/chat", "--clients", tostring(clients),
                                             "--count", tostring(3 * per), "--timeout", "60",
                                             "--ready-file", ready })
      assert(H.wait_for(20, function() return H.read(ready) end, 0.01), "the clients did not connect")
      for p = 0, 2 do
        local code, _, err = H.run(("seq -f 'p%d-%%g' 1 %d | %s -P -b %s -t %s -p %d"):format(
          p, per, H.q(H.kcat), kafka, H.q(topic), p))
        assert(code == 0, "kcat produce failed: " .. tostring(err))
      end
      local r = fan:result(70)
      gw:stop()
      assert.is_nil(r.timed_out)
      assert.are.same({}, r.errors)
      assert.are.equal(clients, #r.messages)
      local want = {}
      for p = 0, 2 do
        want[p] = {}
        for i = 1, per do want[p][i] = ("p%d-%d"):format(p, i) end
      end
      for c, got in ipairs(r.messages) do
        local by_partition = { [0] = {}, {}, {} }
        for _, v in ipairs(got) do
          local p = assert(tonumber(v:match "^p(%d)%-"), "unexpected message " .. v)
          table.insert(by_partition[p], v)
        end
        for p = 0, 2 do
          assert.are.same(want[p], by_partition[p], ("client %d, partition %d"):format(c, p))
        end
        assert.are.equal(3 * per, #got)
        assert.are.same(r.messages[1], got, ("client %d's order differs from client 1's"):format(c))
      end
    end)

    it("starts at the end as of the app's start: exactly what was produced after it", function()
      local topic = P .. "end"
      H.create_topic(kafka, topic, 1)
      produce_to(kafka, topic, 0, "old")
      local gw = seen_app(kafka, topic)
      produce_to(kafka, topic, 0, "new")   -- as soon as the port answers
      assert.are.same({ "0:1:new" }, seen(gw, 1))
      produce_to(kafka, topic, 0, "later")
      assert.are.same({ "0:1:new", "0:2:later" }, seen(gw, 2))
      gw:stop()
    end)

    it("starts from the beginning, from a time, or from explicit offsets", function()
      local topic = P .. "from"
      H.create_topic(kafka, topic, 2)
      for i = 1, 3 do produce_to(kafka, topic, 0, "a" .. i) end
      produce_to(kafka, topic, 1, "b1")
      -- The time between a2 and a3: read their timestamps back with kcat.
      local code, out = H.run(("%s -C -b %s -t %s -p 0 -o beginning -e -q -f '%%T\\n'"):format(
        H.q(H.kcat), kafka, H.q(topic)))
      assert.are.equal(0, code)
      local ts = {}
      for t in out:gmatch "(%d+)\n" do ts[#ts + 1] = tonumber(t) end
      assert.are.equal(3, #ts)

      local gw = seen_app(kafka, topic, "beginning")
      local got = seen(gw, 4)
      table.sort(got)
      assert.are.same({ "0:0:a1", "0:1:a2", "0:2:a3", "1:0:b1" }, got)
      gw:stop()

      -- (each kcat run takes far more than a millisecond)
      assert.is_true(ts[3] > ts[2], "a2 and a3 have the same timestamp")
      gw = seen_app(kafka, topic, { time = ts[2] + 1 })
      got = seen(gw, 2)
      table.sort(got)
      -- a3 and b1 (written after a3) are at or after the time
      assert.are.same({ "0:2:a3", "1:0:b1" }, got)
      gw:stop()

      gw = seen_app(kafka, topic, { offsets = { [topic] = { [0] = 1 } } })
      produce_to(kafka, topic, 1, "b2")
      got = seen(gw, 3)
      table.sort(got)
      -- partition 0 from offset 1; partition 1 from the end as of the start
      assert.are.same({ "0:1:a2", "0:2:a3", "1:1:b2" }, got)
      gw:stop()
    end)

    it("reads partitions added while it runs, from their beginning, and leaves no group behind", function()
      local topic = P .. "grow"
      H.create_topic(kafka, topic, 1)
      local gw = seen_app(kafka, topic)
      assert(H.wait_for(20, function()
        local _, st = H.http_json(gw.port, "/stats")
        return st and st.assigned == 1
      end), "partition 0 was not assigned")
      assert.are.same({ grown = 3 }, H.client("kafkajs.js", { "--brokers", kafka, "--topic", topic, "--grow", "3" }))
      produce_to(kafka, topic, 2, "in a new partition")
      assert.are.same({ "2:0:in a new partition" }, seen(gw, 1))
      local _, st = H.http_json(gw.port, "/stats")
      assert.are.equal(3, st.assigned)
      gw:stop()
      local groups = H.client("kafkajs.js", { "--brokers", kafka, "--groups" }).groups
      for _, g in ipairs(groups) do
        assert.is_nil(g:find("bcast", 1, true), "group left on the cluster: " .. g)
        assert.is_nil(g:find("sluice.assign", 1, true), "group left on the cluster: " .. g)
      end
    end)
  end)
end)
