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
p("| clients | records/s | implementation | received / expected | closed | deliveries/s | p50 ms | p99 ms | p99.9 ms | CPU µs per delivery | KB per client | load |")
p("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for _, r in ipairs(rows) do
  local res = r.result ~= json.null and r.result or {}
  local lat = res.fanout_latency ~= json.null and res.fanout_latency or {}
  local expected = (res.expect or r.records) * (r.impl == "floor" and 1 or r.clients)
  local received = res.received or 0
  local cpu = r.cpu_s or res.cpu_s
  local per = cpu and received > 0 and cpu * 1e6 / received
  local kb = r.rss_kb_clients and r.rss_kb_before and r.impl ~= "floor"
    and (r.rss_kb_clients - r.rss_kb_before) / r.clients
  p(("| %s | %s | %s | %s / %s | %s | %s | %s | %s | %s | %s | %s | %s |"):format(
    r.impl == "floor" and "1 consumer" or int(r.clients), r.rate == 0 and "burst " .. int(r.records) or int(r.rate),
    r.impl, int(received), int(expected), res.closed and int(res.closed) or "–", int(res.deliveries_per_s), ms(lat.p50_ms), ms(lat.p99_ms),
    ms(lat.p999_ms), per and ("%.2f"):format(per) or "–", kb and ("%.1f"):format(kb) or "–", r.load1))
end
p("")
p("CPU per delivery: the gateway's CPU time (all threads, /proc, 10 ms ticks) from the first record")
p("produced to the last received, over the deliveries; for the floor, its own CPU per record.")
p("KB per client: the gateway's resident memory with the clients connected minus before, per client.")
p("closed: client connections the gateway closed during the case. A case the machine cannot keep up")
p("with shows it in received < expected (90 s limit, connecting included) and in its latency.")
print(table.concat(out, "\n"))
