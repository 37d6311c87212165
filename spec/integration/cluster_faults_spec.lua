-- Broker faults on a three-broker Apache Kafka cluster (tools/kafka.sh
-- --brokers 3: every node broker and KRaft controller; topic replication
-- factor 3, min.insync.replicas 2), under load from node `ws` clients
-- through a gateway (bench/soak/rows.lua, default producer settings: idempotent,
-- acks=all, five requests in flight). What must hold: every acked row is
-- in Kafka exactly once, read back by kcat and by kafkajs; every other row
-- was reported to its client with a reason; no row is in Kafka twice; no
-- client is disconnected because of the brokers. Last, on the same
-- cluster, three movies gateways in one consumer group, one SIGKILLed.
local H = require "integration.helper"
local json = H.json
local F = require "integration.faults_support"
local TOPIC, stream, finish, check_accounting, stats = F.TOPIC, F.stream, F.finish, F.check_accounting, F.stats

-- The leader of a partition, from the cluster's metadata (kcat).
local function leader(bootstrap, partition)
  local _, out = H.run(("%s -b %s -L -t %s"):format(H.q(H.kcat), bootstrap, TOPIC))
  return tonumber((out or ""):match("partition " .. partition .. ", leader (%d+)"))
end

describe("faults on a three-broker Apache Kafka cluster", function()
  local kafka, gw
  local acked = {}           -- every acked row id of every test

  setup(function()
    kafka = H.start_kafka { brokers = 3 }
    H.create_topic(kafka.bootstrap, TOPIC, 3, { replicas = 3 })
    gw = H.start { app = H.root .. "/bench/soak/rows.lua", kafka = kafka.bootstrap }
  end)

  teardown(function()
    if gw then gw:stop() end
    if kafka then kafka:stop() end
    H.cleanup()
  end)

  -- All n rows of the run acked, each in Kafka once (kcat); the ids kept
  -- for the kafkajs read at the end.
  local function all_acked_once(r, prefix, n)
    local _, mine = check_accounting(kafka, r, prefix)
    assert.are.equal(n, r.acks)
    assert.are.equal(n, mine)
    for _, id in ipairs(r.ids.acked) do acked[#acked + 1] = id end
  end

  it("SIGKILL of a partition leader at 20,000 rows/s, then its restart: every row acked exactly once", function()
    local h = stream(gw, { "--connections", "4", "--rows", "80000", "--rate", "20000",
                           "--batch", "20", "--prefix", "K", "--timeout", "150" })
    H.sleep(2)
    local victim = assert(leader(kafka.bootstrap, 0), "no leader for partition 0")
    local before = stats(gw).delivered
    local t0 = H.now()
    kafka:signal(victim, "KILL")
    -- The controllers fence it once its session lapses
    -- (broker.session.timeout.ms, 9 s) and elect another leader.
    local moved = H.wait_for(30, function()
      local l = leader(kafka.bootstrap, 0)
      return l and l ~= victim and l
    end, 0.5)
    local took = H.now() - t0
    kafka:restart(victim)
    local r = finish(h, 150)
    print(("# leader %d SIGKILLed with %d rows delivered; partition 0 led by %s %.1f s later; %d restarted; %d rows acked in %.1f s"):format(
      victim, before, tostring(moved), took, victim, r.acks, r.elapsed_ms / 1000))
    assert(moved, "no new leader for partition 0")
    all_acked_once(r, "K", 80000)
  end)

  it("a broker frozen (SIGSTOP) for 10 s under load: every row acked exactly once", function()
    local h = stream(gw, { "--connections", "4", "--rows", "80000", "--rate", "20000",
                           "--batch", "20", "--prefix", "S", "--timeout", "150" })
    H.sleep(2)
    local victim = assert(leader(kafka.bootstrap, 1), "no leader for partition 1")
    kafka:signal(victim, "STOP")
    H.sleep(10)
    kafka:signal(victim, "CONT")
    local r = finish(h, 150)
    print(("# broker %d (leader of partition 1) frozen 10 s"):format(victim))
    all_acked_once(r, "S", 80000)
  end)

  -- Two of three brokers frozen for 12 s (no ISR of two, no controller
  -- quorum) while rows keep coming; `args`: extra gateway arguments.
  local function two_down(prefix, args)
    local g = H.start { app = H.root .. "/bench/soak/rows.lua", kafka = kafka.bootstrap, args = args }
    local h = stream(g, { "--connections", "2", "--rows", "24000", "--rate", "2000",
                          "--batch", "5", "--prefix", prefix, "--timeout", "150" })
    H.sleep(2)
    local before = stats(g)
    kafka:signal(2, "STOP")
    kafka:signal(3, "STOP")
    H.sleep(2)
    local t1 = stats(g)
    H.sleep(10)
    local t2 = stats(g)
    kafka:signal(2, "CONT")
    kafka:signal(3, "CONT")
    local r = finish(h, 150)
    g:stop()
    print(("# %s: two brokers frozen 12 s: delivered %d before, %d -> %d while down (%d in flight); %d acked, %d failed %s"):format(
      prefix, before.delivered, t1.delivered, t2.delivered, t2.in_flight, r.acks, r.failed,
      r.errors[1] and ("(" .. r.errors[1] .. ")") or ""))
    return r, t1, t2
  end

  it("two of three brokers down for 12 s: rows are held, then each acked exactly once", function()
    local r, t1, t2 = two_down("T")
    -- Held: nothing acked while down (min.insync.replicas 2), all later.
    assert.are.equal(t1.delivered, t2.delivered)
    assert.is_true(t2.in_flight > 0)
    all_acked_once(r, "T", 24000)
  end)

  it("two of three down with message.timeout.ms 8 s: rows reported failed with the reason, no acked row lost", function()
    local r = two_down("U", { "-X", "message.timeout.ms=8000" })
    assert.is_true(r.failed > 0, "no row was reported failed")
    assert.are.equal(0, r.unanswered)
    assert.are.equal(r.sent, r.acks + r.failed)
    for _, text in ipairs(r.errors) do assert.are.equal("MSG_TIMED_OUT: Local: Message timed out", text) end
    local count = F.ids_in_kafka(kafka.bootstrap, r.acks, 60)
    local more, failed_stored = 0, 0
    for _, id in ipairs(r.ids.acked) do
      assert((count[id] or 0) >= 1, "acked row " .. id .. " is not in Kafka")
      if count[id] > 1 then more = more + 1 end
    end
    for _, id in ipairs(r.ids.failed) do
      if count[id] then failed_stored = failed_stored + 1 end
    end
    -- Known problem (docs/reliability.md): when in-flight rows time out,
    -- librdkafka's idempotent producer takes a new epoch and sends the rows
    -- queued behind them again; copies the leader had already appended are
    -- kept, so acked rows can be stored more than once.
    print(("# U: %d acked rows stored more than once, %d rows reported failed stored anyway"):format(
      more, failed_stored))
  end)

  it("kafkajs reads every row acked above exactly once, and as many records as kcat", function()
    local _, n = F.ids_in_kafka(kafka.bootstrap, 0, 5)   -- records, as kcat reads them
    local js = H.client("kafkajs.js", { "--brokers", kafka.bootstrap, "--topic", TOPIC,
                                        "--consume", tostring(n), "--timeout", "90" })
    assert.is_nil(js.error)
    local count = {}
    for _, rec in ipairs(js.records) do
      local id = json.decode(rec.value).id
      count[id] = (count[id] or 0) + 1
    end
    for _, id in ipairs(acked) do
      assert(count[id] == 1, ("acked row %s read %d times by kafkajs"):format(id, count[id] or 0))
    end
    assert.are.equal(n, #js.records)
  end)

  -- Scale-out: three movies gateways on the cluster, their stream
  -- processing in one consumer group (plus what they are assigned on
  -- /assigned); one is SIGKILLed under load.
  local SCALE_APP = [[
local app = dofile(%q)
app:http("GET", "/assigned", function() return 200, { assigned = app:stats().assigned } end)
return app
]]
  local PARTITIONS = 6

  -- Stream partitions a gateway is assigned (its own stats consumer,
  -- one partition of movie-stats, left out).
  local function assigned(g)
    local status, body = H.http_json(g.port, "/assigned")
    return status == 200 and body.assigned - 1 or -1
  end

  it("three movies gateways in one group: a SIGKILLed one's partitions move; no acked row is lost; the survivors' clients keep receiving", function()
    local gws = {}
    finally(function() for _, g in ipairs(gws) do g:stop() end end)
    local P = H.prefix "scale"
    local RESULTS, name = P .. "movie-results", P .. "movies"
    local three = { replicas = 3 }
    H.create_topic(kafka.bootstrap, { RESULTS, name .. ".movies.repartition",
      name .. ".top-actors.repartition" }, PARTITIONS, three)
    H.create_topic(kafka.bootstrap, P .. "movie-stats", 1, three)
    H.create_topic(kafka.bootstrap, { name .. ".actors.changelog", name .. ".movies.changelog",
      name .. ".top-actors.changelog" }, PARTITIONS, { replicas = 3, compact = true })
    local dir = H.tmpdir()
    H.write(dir .. "/app.lua", SCALE_APP:format(H.movies))
    for i = 1, 3 do
      gws[i] = H.start { app = dir .. "/app.lua", kafka = kafka.bootstrap, env = "SLUICE_MOVIES_PREFIX=" .. P }
    end
    local shared = H.wait_for(60, function()
      local a, b, c = assigned(gws[1]), assigned(gws[2]), assigned(gws[3])
      return a > 0 and b > 0 and c > 0 and a + b + c == 3 * PARTITIONS and { a, b, c }
    end, 0.5)
    assert(shared, "the group did not share the partitions among the three")
    -- The subscribers wait through the killed member's session timeout
    -- (sluice.stream's 6 s), the rebalance, the stores' restore and the
    -- backlog: bounds for a machine loaded many times over, not expectations.
    local subs = {}
    for i = 1, 2 do
      subs[i] = H.client_bg("subscribe.js", { "--url", gws[i].url .. "/stats", "--until", '"nm9999999"',
        "--no-messages", "--timeout", "300", "--ready-file", dir .. "/ready" .. i })
    end
    assert(H.wait_for(10, function() return H.read(dir .. "/ready1") and H.read(dir .. "/ready2") end))
    local loads = {}
    for i, prefix in ipairs { "A", "B", "C" } do
      -- (the drain marker: a subscription the movies app refuses at once)
      loads[i] = stream(gws[i], { "--connections", "2", "--rows", "15000", "--rate", "1500",
                                  "--batch", "5", "--prefix", prefix, "--timeout", "300" },
                        '{"subscribe":"other"}')
    end
    H.sleep(4)
    gws[3]:signal "KILL"
    local moved = H.wait_for(180, function()
      local a, b = assigned(gws[1]), assigned(gws[2])
      return a + b == 3 * PARTITIONS and { a, b }
    end, 0.5)
    assert(moved, "the killed gateway's partitions did not move to the survivors")
    -- A row sent after the move: its actor's stats must reach the
    -- survivors' subscribers, whichever partition it falls on.
    local probe = H.client("probe.js", { "--url", gws[1].url .. "/", "--replies", "1", "--wait", "30",
      "--text", json.encode { id = "after", actorName = "After", actorId = "nm9999999",
                              movieId = "tt9999999", movieName = "After", movieMinutes = 90 } })
    assert.are.same({ '{"ack":"after"}' }, probe.replies)
    local results = {}
    for i = 1, 3 do results[i] = finish(loads[i], 330) end
    for i = 1, 2 do
      local s = subs[i]:result(300)
      assert(s.matched, ("subscriber of gateway %d got %d messages, none about the row sent after the kill " ..
        "(close %s, timed out %s, error %s; gateway exit %s, its stderr's end:\n%s)"):format(i, s.received,
        json.encode(s.close), tostring(s.timed_out), tostring(s.error), tostring(gws[i]:exit_code()),
        gws[i]:stderr():sub(-2000)))
      -- (a subscriber that ended itself at the row has no close recorded)
      local close = type(s.close) == "table" and s.close or nil
      assert.are.equal(nil, close and close.by == "server" and close or nil)
    end
    -- Every acked row (of all three, the killed one's included) in Kafka
    -- exactly once; rows the killed gateway never answered at most once.
    local count = {}
    local records = H.kcat_consume(kafka.bootstrap, RESULTS, 1, 30)
    for _, r in ipairs(records) do
      local id = json.decode(r.value).id
      count[id] = (count[id] or 0) + 1
    end
    local acked = 0
    for i, r in ipairs(results) do
      for _, id in ipairs(r.ids.acked) do
        assert(count[id] == 1, ("gateway %d: acked row %s in Kafka %d times"):format(i, id, count[id] or 0))
      end
      acked = acked + r.acks
      if i < 3 then
        assert.are.equal(15000, r.acks)
        -- every row answered, then the marker: closed by the client
        assert.is_nil(r.timed_out, "the client timed out waiting for answers")
        assert.are.equal(2, #r.closes)
        for _, c in ipairs(r.closes) do
          assert.are.same({ code = 1000, by = "client" }, { code = c.code, by = c.by })
        end
      else
        for _, id in ipairs(r.ids.unanswered) do assert((count[id] or 0) <= 1) end
      end
    end
    print(("# scale-out: partitions %d/%d/%d, after the kill %d/%d; %d rows acked (killed gateway: %d acked, %d unanswered)")
      :format(shared[1], shared[2], shared[3], moved[1], moved[2], acked, results[3].acks, results[3].unanswered))
  end)
end)
