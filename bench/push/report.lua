-- bench/push/report.lua RAW COMMAND LOAD_START LOAD_END SECONDS
-- The push benchmark's table (markdown) from push.jsonl.
local json = require "cjson"
local raw, command, load0, load1, secs = ...
local rows = {}
for line in io.lines(raw) do rows[#rows + 1] = json.decode(line) end

local function ms(v) return v and ("%.1f"):format(v) or "–" end
local function int(v) return v and tostring(math.floor(v + 0.5)):reverse():gsub("(%d%d%d)", "%1,"):reverse():gsub("^,", "") or "–" end

local out = {}
local function p(...) out[#out + 1] = table.concat({ ... }) end
p("Push latency: Kafka (one Apache Kafka 4.1.2 broker, 4 partitions per topic) -> N WebSocket clients.")
p("Latency = the record's produce time (sluice-kprod, CLOCK_MONOTONIC) -> its receipt by each client;")
p("the floor is one bare librdkafka consumer of the topic, timed the same way.")
p("")
p(("`%s`: %s s, 1-minute load average %s at the start, %s at the end (2 cores, shared; "):format(
  command, secs, load0, load1), "the broker, the load generator and the producer run on the same cores).")
p("")
-- One line per case; with --repeat, the rounds of a case are folded into
-- medians (and every round's p99 is listed).
local cases, order = {}, {}
for _, r in ipairs(rows) do
  local key = table.concat({ r.impl, r.clients, r.rate, r.records }, "/")
  if not cases[key] then cases[key] = {}; order[#order + 1] = key end
  table.insert(cases[key], r)
end
local rounds = 0
for _, key in ipairs(order) do rounds = math.max(rounds, #cases[key]) end

local function median(list)
  if #list == 0 then return nil end
  table.sort(list)
  local n = #list
  return n % 2 == 1 and list[(n + 1) / 2] or (list[n / 2] + list[n / 2 + 1]) / 2
end

p("| clients | records/s | implementation | received / expected | closed | deliveries/s | p50 ms | p99 ms | p99.9 ms | CPU µs per delivery | KB per client | load |",
  rounds > 1 and " p99 ms by round |" or "")
p("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|", rounds > 1 and "---|" or "")
for _, key in ipairs(order) do
  local received, expected, closed = 0, 0, nil
  local col = { dps = {}, p50 = {}, p99 = {}, p999 = {}, per = {}, kb = {}, load = {} }
  local by_round = {}
  local r
  for _, one in ipairs(cases[key]) do
    r = one
    local res = r.result ~= json.null and r.result or {}
    local lat = res.fanout_latency ~= json.null and res.fanout_latency or {}
    local got = res.received or 0
    received = received + got
    expected = expected + (res.expect or r.records) * (r.impl == "floor" and 1 or r.clients)
    if res.closed then closed = (closed or 0) + res.closed end
    local cpu = r.cpu_s or res.cpu_s
    table.insert(col.dps, res.deliveries_per_s)
    table.insert(col.p50, lat.p50_ms)
    table.insert(col.p99, lat.p99_ms)
    table.insert(col.p999, lat.p999_ms)
    if cpu and got > 0 then table.insert(col.per, cpu * 1e6 / got) end
    if r.rss_kb_clients and r.rss_kb_before and r.impl ~= "floor" then
      table.insert(col.kb, (r.rss_kb_clients - r.rss_kb_before) / r.clients)
    end
    table.insert(col.load, r.load1)
    by_round[#by_round + 1] = ms(lat.p99_ms)
  end
  local per, kb = median(col.per), median(col.kb)
  local lo, hi = math.min(table.unpack(col.load)), math.max(table.unpack(col.load))
  p(("| %s | %s | %s | %s / %s | %s | %s | %s | %s | %s | %s | %s | %s |"):format(
    r.impl == "floor" and "1 consumer" or int(r.clients), r.rate == 0 and "burst " .. int(r.records) or int(r.rate),
    r.impl, int(received), int(expected), closed and int(closed) or "–", int(median(col.dps)), ms(median(col.p50)),
    ms(median(col.p99)), ms(median(col.p999)), per and ("%.2f"):format(per) or "–", kb and ("%.1f"):format(kb) or "–",
    lo == hi and lo or lo .. "–" .. hi), rounds > 1 and (" %s |"):format(table.concat(by_round, " · ")) or "")
end
if rounds > 1 then
  p("")
  p(("Medians of %d rounds (each round runs every case once, in the order above); received, expected"):format(rounds))
  p("and closed are summed over the rounds; load is the range over the rounds.")
end
p("")
p("CPU per delivery: the gateway's CPU time (all threads, /proc, 10 ms ticks) from the first record")
p("produced to the last received, over the deliveries; for the floor, its own CPU per record.")
p("KB per client: the gateway's resident memory with the clients connected minus before, per client.")
p("closed: client connections the gateway closed during the case. A case the machine cannot keep up")
p("with shows it in received < expected (90 s limit, connecting included) and in its latency.")
print(table.concat(out, "\n"))
