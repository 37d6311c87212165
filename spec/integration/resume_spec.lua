-- Subscriptions that resume (app:subscribe with `since`), through the movies
-- protocol on Apache Kafka: a client that was away while 10,000 records
-- were written comes back with its last position and gets exactly those,
-- in order, and the live ones written while it caught up, none twice; a
-- position whose records were deleted (DeleteRecords, the Admin API) is
-- reported not recovered, and the live stream follows. Clients are Node
-- `ws` (spec/clients/resume.js); records are written by kcat, deleted by
-- kafkajs.
local H = require "integration.helper"

-- kcat: the values given by fmt(i) for i = first..last, keyed k(i % 10)
-- (spread over the partitions).
local function produce(bootstrap, topic, first, last, prefix)
  local code, _, err = H.run(("seq %d %d | awk '{ print \"k\" ($1 %% 10) \"\\t{\\\"v\\\":\\\"%s\" $1 \"\\\"}\" }' | %s -P -b %s -t %s -K '\t'")
    :format(first, last, prefix, H.q(H.kcat), bootstrap, H.q(topic)))
  assert(code == 0, "kcat produce failed: " .. tostring(err))
end

-- The position text as { [partition] = next offset }.
local function nexts(position)
  local t = {}
  for p, n in position:gmatch "(%d+):(%d+):%-?%d+" do t[tonumber(p)] = tonumber(n) end
  return t
end

describe("subscriptions that resume (movies protocol, Apache Kafka)", function()
  local kafka, gw, P, topic
  teardown(function()
    if gw then gw:stop() end
    H.cleanup()
  end)

  setup(function()
    kafka = H.kafka()
    P = H.prefix "resume"
    topic = P .. "movie-stats"
    H.create_topic(kafka, topic, 3)
    gw = H.start { kafka = kafka, env = ("SLUICE_MOVIES_PREFIX=%s SLUICE_MOVIES_PROCESSING=0"):format(H.q(P)) }
  end)

  local first   -- what the first client saw

  it("a client away while 10,000 records were written gets exactly those, in order, then live ones, none twice", function()
    local ready = H.tmpdir() .. "/ready"
    local c1 = H.client_bg("resume.js", { "--url", gw.url .. "/stream", "--count", "5", "--ready-file", ready })
    assert(H.wait_for(20, function() return H.read(ready) end, 0.05), "first client not subscribed")
    produce(kafka, topic, 1, 5, "a")
    first = c1:result(60)
    assert.are.same({ subscribed = "movie-stats" }, first.reply)
    assert.are.equal(5, #first.records)
    local seen = {}
    for _, r in ipairs(first.records) do seen[#seen + 1] = r[3].v end
    table.sort(seen)
    assert.are.same({ "a1", "a2", "a3", "a4", "a5" }, seen)

    produce(kafka, topic, 1, 10000, "b")   -- while nobody listens

    -- Live records, written from before the client is back until after it
    -- caught up (40 runs of kcat, 25 records each): the seam is crossed
    -- while the live stream moves.
    local live_done = H.tmpdir() .. "/live-done"
    os.execute(("sh -c %s >/dev/null 2>&1 &"):format(H.q(("for i in $(seq 0 39); do " ..
      "seq $((i * 25 + 1)) $((i * 25 + 25)) | awk '{ print \"k\" ($1 %% 10) \"\\t{\\\"v\\\":\\\"c\" $1 \"\\\"}\" }' | " ..
      "%s -P -b %s -t %s -K '\t'; done; touch %s"):format(H.q(H.kcat), kafka, H.q(topic), H.q(live_done)))))
    local c2 = H.client_bg("resume.js", { "--url", gw.url .. "/stream", "--since", first.position,
      "--count", "11000", "--timeout", "150" })
    local r = c2:result(180)
    assert(H.wait_for(60, function() return H.read(live_done) end), "the live writer did not finish")
    assert.is_nil(r.timed_out, "timed out with " .. #r.records .. " records")
    assert.are.same({ subscribed = "movie-stats", recovered = true }, r.reply)
    assert.are.same({}, r.errors)
    assert.are.equal(11000, #r.records)

    -- Each partition: offsets one after the other from the position on
    -- (no gap, none twice, in order); every b and c value exactly once.
    local at = nexts(first.position)
    local values, b_done = {}, {}
    for i, rec in ipairs(r.records) do
      local p, o, v = rec[1], rec[2], rec[3].v
      assert(at[p], "a record of a partition not in the position: " .. p)
      assert.are.equal(at[p], o, ("record %d: partition %d"):format(i, p))
      at[p] = o + 1
      assert.is_nil(values[v], "received twice: " .. v)
      values[v] = true
      -- per partition, every b (written earlier) comes before any c
      if v:sub(1, 1) == "c" then b_done[p] = true
      else assert.is_nil(b_done[p], "a b record after a c record in partition " .. p) end
    end
    for i = 1, 10000 do assert(values["b" .. i], "missing b" .. i) end
    for i = 1, 1000 do assert(values["c" .. i], "missing c" .. i) end
    assert.are.same(at, nexts(r.position))
  end)

  it("a position whose records were deleted is reported not recovered, and the live stream follows", function()
    assert(first, "needs the first test's position")
    local deleted = H.client("kafkajs.js", { "--brokers", kafka, "--topic", topic, "--delete-records", "-1" })
    assert(deleted.deleted, "DeleteRecords failed: " .. tostring(deleted.error))
    local ready = H.tmpdir() .. "/ready"
    local c = H.client_bg("resume.js", { "--url", gw.url .. "/stream", "--since", first.position,
      "--count", "1", "--ready-file", ready })
    assert(H.wait_for(30, function() return H.read(ready) end, 0.05), "client not answered")
    produce(kafka, topic, 1, 1, "d")
    local r = c:result(60)
    assert.are.equal("movie-stats", r.reply.subscribed)
    assert.is_false(r.reply.recovered)
    assert.matches("^EXPIRED: " .. P:gsub("%p", "%%%0") .. "movie%-stats %[%d%] starts at offset %d+ now", r.reply.reason)
    assert.are.equal(1, #r.records)
    assert.are.equal("d1", r.records[1][3].v)
  end)

  it("a position that is not one is refused", function()
    local r = H.client("resume.js", { "--url", gw.url .. "/stream", "--since", "0:x", "--count", "1",
      "--timeout", "3" })
    assert.are.same({ { error = 'invalid position: not a position: "0:x"' } }, r.errors)
  end)
end)
