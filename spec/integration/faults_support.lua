-- Shared by faults_spec.lua and faults_more_spec.lua (broker faults under
-- load, in two files so that ctest runs them side by side): node stream
-- clients against a gateway, and the accounting of every row with kcat.
--
-- A separate fault broker process (three embedded brokers,
-- bench/soak/broker.lua) is broken from outside while the gateway (a real
-- `sluice run` of bench/soak/rows.lua: the movies row protocol, nothing
-- else; reaching it with --kafka) streams rows from node `ws` clients;
-- kcat reads what Kafka holds afterwards. What must hold
-- (docs/reliability.md): every acked row is in Kafka exactly once, every
-- other row was reported failed to its client, no client is disconnected
-- because of the broker, and a consumer group resumes from its committed
-- offsets without skipping or re-delivering.
local H = require "integration.helper"
local json = H.json
-- busted gives spec files luassert as `assert`; a required module asks for it.
local assert = require "luassert"
local M = {}

M.TOPIC = "movie-results"

-- Every row id in the topic → how many times it is there.
function M.ids_in_kafka(bootstrap, want, timeout)
  local records = H.kcat_consume(bootstrap, M.TOPIC, want, timeout or 60)
  local count = {}
  for _, r in ipairs(records) do
    local ok, row = pcall(json.decode, r.value)
    if ok and type(row) == "table" and row.id then
      count[row.id] = (count[row.id] or 0) + 1
    end
  end
  return count, #records
end

-- Runs stream.js to completion in the background; returns the handle.
-- marker: a message the app answers at once without Kafka, sent once every
-- row is answered (stream.js closes at its answer); bench/soak/rows.lua
-- answers a JSON scalar, the default.
function M.stream(gw, args, marker)
  local out = H.tmpdir() .. "/ids.json"
  local full = { "--url", gw.url .. "/", "--out", out, "--marker", marker or "42" }
  for _, a in ipairs(args) do full[#full + 1] = a end
  local h = H.client_bg("stream.js", full)
  h.out = out
  return h
end

function M.finish(h, timeout)
  local r = h:result(timeout or 120)
  local ids = H.read(h.out)
  assert(ids, "stream.js wrote no id list")
  r.ids = json.decode(ids)
  return r
end

-- The accounting every fault scenario must pass; returns the Kafka counts.
-- dup_reason: where a broker may store an acked row twice without sluice
-- being wrong (said in the output); every acked row must still be there.
function M.check_accounting(broker, r, prefix, dup_reason)
  print(("# %s: sent %d, acked %d, failed %d, latency p50 %s p99 %s max %s ms, %.1f s"):format(
    prefix, r.sent, r.acks, r.failed, tostring(r.latency.p50), tostring(r.latency.p99),
    tostring(r.latency.max), r.elapsed_ms / 1000))
  assert.is_nil(r.timed_out, "the client timed out waiting for answers")
  assert.are.equal(0, r.unanswered, "rows neither acked nor reported failed")
  assert.are.equal(0, r.duplicates)
  assert.are.equal(0, r.unexpected)
  assert.are.equal(r.sent, r.acks + r.failed)
  for _, c in ipairs(r.closes) do
    assert.are.same({ code = 1000, by = "client" }, { code = c.code, by = c.by })
  end
  local count, total = M.ids_in_kafka(broker.bootstrap, r.acks)
  local wrong = {}
  for _, id in ipairs(r.ids.acked) do
    if count[id] ~= 1 then wrong[#wrong + 1] = id .. "x" .. (count[id] or 0) end
  end
  if #wrong > 0 then
    local again = M.ids_in_kafka(broker.bootstrap, total + 1, 5)
    local n2 = 0
    for _, id in ipairs(r.ids.acked) do if again[id] ~= 1 then n2 = n2 + 1 end end
    print(("# %d acked rows not exactly once in %d records (re-read: %d): %s"):format(
      #wrong, total, n2, table.concat(wrong, " ", 1, math.min(#wrong, 20))))
  end
  local missing = 0
  for _, id in ipairs(r.ids.acked) do if not count[id] then missing = missing + 1 end end
  assert.are.equal(0, missing, "acked rows not in Kafka")
  if dup_reason then
    if #wrong > 0 then print(("# %d acked rows stored twice: %s"):format(#wrong, dup_reason)) end
  else
    assert.are.equal(0, #wrong, "acked rows not in Kafka exactly once")
  end
  local mine = 0
  for id, n in pairs(count) do
    if id:sub(1, #prefix) == prefix then
      mine = mine + 1
      assert(n == 1 or dup_reason, ("row %s is in Kafka %d times"):format(id, n))
    end
  end
  return count, mine
end

-- The gateway's counters (GET /healthz), retried: it is busy.
function M.stats(gw)
  local h = H.wait_for(10, function()
    local status, body = gw:healthz()
    return status == 200 and type(body) == "table" and body.delivered and body
  end, 0.2)
  assert(h, "GET /healthz did not answer")
  return h
end

return M
