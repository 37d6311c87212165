-- Interop: the movies rows a browser streams (the shipped data set, as the
-- page's form returns it, sent as the page sends them: JSON arrays of rows
-- with ids) go through the gateway into Apache Kafka and are read back by
-- three clients that share no code with sluice's core or with each other's
-- protocol implementation: kcat, kafkajs 2.2.4 (the tutorial's client)
-- and kafka-python (pure Python). Each sees every acked row exactly once,
-- keyed by actorId, with the same bytes.
local H = require "integration.helper"
local json = H.json

local PYTHON = os.getenv "SLUICE_PYTHON" or "python3"

local function by_id(records, what)
  local t, n = {}, 0
  for _, r in ipairs(records) do
    local row = json.decode(r.value)
    assert(t[row.id] == nil, what .. ": row " .. tostring(row.id) .. " read twice")
    t[row.id] = r
    n = n + 1
  end
  return t, n
end

describe("movies rows read back from Apache Kafka by independent clients", function()
  local gw, kafka
  local P = H.prefix "interop"
  local TOPIC = P .. "movie-results"

  setup(function()
    kafka = H.kafka()
    H.create_topic(kafka, TOPIC, 3)
    gw = H.start { kafka = kafka, env = "SLUICE_MOVIES_PROCESSING=0 SLUICE_MOVIES_PREFIX=" .. P }
  end)

  teardown(function()
    if gw then gw:stop() end
    H.cleanup()
  end)

  it("kcat, kafkajs and kafka-python each read every acked row once, keyed by actorId", function()
    local status, found = H.http_json(gw.port, "/api/fetch?actor=Brad%20Pitt,Uma%20Thurman,Samuel%20L.%20Jackson")
    assert.are.equal(200, status)
    local sent = {}
    for i, r in ipairs(found.rows) do
      sent[i] = { id = "I" .. i, actorName = r.actorName, actorId = r.actorId, movieId = r.movieId,
                  movieName = r.movieName, movieMinutes = r.movieMinutes }
    end
    assert.is_true(#sent >= 10, "the data set query found only " .. #sent .. " rows")
    -- In batches of 5, as the page sends them.
    local args = { "--url", gw.url .. "/stream", "--replies", tostring(#sent), "--wait", "30" }
    for i = 1, #sent, 5 do
      local chunk = {}
      for j = i, math.min(i + 4, #sent) do chunk[#chunk + 1] = sent[j] end
      args[#args + 1] = "--text"
      args[#args + 1] = json.encode(chunk)
    end
    local r = H.client("probe.js", args)
    local acked = {}
    for _, s in ipairs(r.replies) do acked[#acked + 1] = json.decode(s).ack end
    table.sort(acked, function(a, b) return tonumber(a:sub(2)) < tonumber(b:sub(2)) end)
    local want = {}
    for i, row in ipairs(sent) do want[i] = row.id end
    assert.are.same(want, acked)

    -- The three readers, two of them consumer group members at once.
    local js = H.client_bg("kafkajs.js", { "--brokers", kafka, "--topic", TOPIC,
                                           "--consume", tostring(#sent), "--timeout", "120" })
    local code, out, err = H.run(("%s %s --brokers %s --topic %s --consume %d --timeout 120"):format(
      H.q(PYTHON), H.q(H.clients .. "/kafka_python.py"), H.q(kafka), H.q(TOPIC), #sent))
    assert(code == 0, "kafka-python failed: " .. tostring(err))
    local py = json.decode(H.lines(out)[#H.lines(out)]).records
    local jsr = js:result(150)
    assert.is_nil(jsr.error)
    assert.is_true(jsr.joined)
    local kc = H.kcat_consume(kafka, TOPIC, #sent, 30)

    local from_js, n_js = by_id(jsr.records, "kafkajs")
    local from_py, n_py = by_id(py, "kafka-python")
    local from_kc, n_kc = by_id(kc, "kcat")
    assert.are.equal(#sent, n_js)
    assert.are.equal(#sent, n_py)
    assert.are.equal(#sent, n_kc)
    local partition_of = {}
    for _, row in ipairs(sent) do
      local a, b, c = from_js[row.id], from_py[row.id], from_kc[row.id]
      assert(a and b and c, "row " .. row.id .. " missing from a reader")
      assert.are.same(row, json.decode(a.value))
      assert.are.equal(a.value, b.value)            -- the same bytes for all
      assert.are.equal(a.value, c.value)
      assert.are.equal(row.actorId, a.key)
      assert.are.equal(row.actorId, b.key)
      assert.are.equal(row.actorId, c.key)
      assert.are.equal(a.partition, b.partition)
      assert.are.equal(a.offset, b.offset)
      -- one actor, one partition
      local p = partition_of[row.actorId]
      assert(p == nil or p == a.partition, "actor " .. row.actorId .. " on two partitions")
      partition_of[row.actorId] = a.partition
    end
  end)
end)
