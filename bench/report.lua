-- Turns bench/run.sh's raw measurements (OUT/raw.jsonl, one JSON object
-- per measurement) into OUT/latest.md, OUT/latest.json and OUT/chart.png:
-- medians over repetitions, ratios against the targets of issue 7, the
-- machine and the exact commands.
--
--   lua5.4 bench/report.lua OUT SMOKE
-- Exits 1 when a measurement is missing or not sane (zero throughput,
-- failed connections, rows lost): the smoke test relies on that.
local cjson = require "cjson"
local out, smoke = arg[1], arg[2] == "1"

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read "a"
  f:close()
  return s
end
local function write(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

local rows = {}
for line in read(out .. "/raw.jsonl"):gmatch "[^\n]+" do rows[#rows + 1] = cjson.decode(line) end
local machine = cjson.decode(read(out .. "/machine.json"))
-- Which broker the run used (runs before it was recorded: the embedded one).
local kafka = type(machine.kafka) == "table" and machine.kafka or { broker = "embedded" }
local apache = kafka.broker == "apache"

local problems = {}
local function problem(fmt, ...) problems[#problems + 1] = fmt:format(...) end

-- by[scenario][impl] = list of records
local by, order = {}, {}
for _, r in ipairs(rows) do
  by[r.scenario] = by[r.scenario] or {}
  if not by[r.scenario][r.impl] then order[#order + 1] = { r.scenario, r.impl } end
  local l = by[r.scenario][r.impl] or {}
  by[r.scenario][r.impl] = l
  l[#l + 1] = r
end

local function median(t)
  local v = {}
  for _, x in ipairs(t) do if type(x) == "number" then v[#v + 1] = x end end
  if #v == 0 then return nil end
  table.sort(v)
  if #v % 2 == 1 then return v[(#v + 1) // 2] end
  return (v[#v // 2] + v[#v // 2 + 1]) / 2
end

-- median over the repetitions of scenario/impl of get(record)
local function med(scen, impl, get)
  local l = by[scen] and by[scen][impl]
  if not l then return nil end
  local v = {}
  for _, r in ipairs(l) do
    local ok, x = pcall(get, r)
    if ok and type(x) == "number" then v[#v + 1] = x end
  end
  return median(v)
end

local function fmt_int(n)
  if n == nil then return "–" end
  local s = string.format("%.0f", n)
  return (s:reverse():gsub("(%d%d%d)", "%1,"):reverse():gsub("^,", ""))
end
local function int(n) return n and string.format("%d", n) or "?" end
local function fmt_ms(n) return n and string.format("%.2f", n) or "–" end
local function fmt_mb(kb) return kb and string.format("%.0f", kb / 1024) or "–" end
local function fmt_x(n) return n and string.format("%.2f×", n) or "–" end

local function rate(r) return r.result.rows_per_s end

-- ---- sanity (what the smoke test checks) ---------------------------------
for _, r in ipairs(rows) do
  local res, where = r.result, r.scenario .. "/" .. r.impl .. " rep " .. int(r.rep)
  if (res.connect_failures or 0) > 0 then problem("%s: %d connections failed", where, res.connect_failures) end
  if r.scenario:match "^ingest" or r.scenario:match "^roundtrip" or r.scenario == "limits" then
    if not (res.rows_per_s and res.rows_per_s > 0) then problem("%s: no throughput", where) end
    if res.mode == "ack" and res.acked ~= res.rows then problem("%s: %s of %s rows acknowledged", where, tostring(res.acked), tostring(res.rows)) end
    if res.mode == "send" and res.landed and res.landed < res.rows then problem("%s: %s of %s rows landed in Kafka", where, tostring(res.landed), tostring(res.rows)) end
    if (res.errors or 0) > 0 then problem("%s: %d errors", where, res.errors) end
  elseif r.scenario == "fanout" or r.scenario == "fanout-catchup" then
    if res.received ~= res.expect * res.open then problem("%s: %s of %s deliveries", where, tostring(res.received), tostring(res.expect * res.open)) end
    if r.catchup ~= nil and not (r.catchup and r.catchup.records > 0) then problem("%s: no catch-up ran", where) end
  elseif r.scenario == "connections" then
    if res.open ~= res.conns then problem("%s: %s of %s connections open", where, tostring(res.open), tostring(res.conns)) end
  elseif r.scenario == "overload" then
    -- (the Node peers may well store nothing in a short smoke run)
    if r.impl:match "^sluice" and not (res.done and res.done > 0) then problem("%s: nothing done", where) end
  end
end

-- ---- summary --------------------------------------------------------------
local SLUICE = { "sluice-luajit", "sluice-lua5.4" }
local ALL_INGEST = { "sluice-luajit", "sluice-lua5.4", "sluice-luajit-transform", "sluice-lua5.4-transform",
  "sluice-luajit-lua", "sluice-lua5.4-lua", "c-ingest", "node-careful", "node-naive", "sluice-luajit-processing" }
-- What each ingest implementation's route is (the per-row CPU table).
local ROUTE_KIND = {
  ["sluice-luajit"] = "declared route (C)", ["sluice-lua5.4"] = "declared route (C)",
  ["sluice-luajit-transform"] = "declared route + Lua transform", ["sluice-lua5.4-transform"] = "declared route + Lua transform",
  ["sluice-luajit-lua"] = "Lua message handler", ["sluice-lua5.4-lua"] = "Lua message handler",
  ["c-ingest"] = "C-only path (no Lua at all)", ["node-careful"] = "Node (ws + kafkajs)", ["node-naive"] = "Node, as the tutorial",
  ["sluice-luajit-processing"] = "declared route + stream processing",
}
local summary = { machine = machine, targets = {}, scenarios = {} }
local md = {}
local function p(...) md[#md + 1] = table.concat({ ... }) end

local ingest_scens = {}
for s in pairs(by) do if s:match "^ingest%-" then ingest_scens[#ingest_scens + 1] = s end end
table.sort(ingest_scens, function(a, b) return tonumber(a:match "%d+") < tonumber(b:match "%d+") end)
local rt_scens = {}
for s in pairs(by) do if s:match "^roundtrip%-" then rt_scens[#rt_scens + 1] = s end end
table.sort(rt_scens, function(a, b) return tonumber(a:match "%d+") < tonumber(b:match "%d+") end)

p("# sluice benchmarks — ", smoke and "SMOKE RUN (tiny loads: the numbers mean nothing)" or "latest run",
  apache and (" on Apache Kafka " .. tostring(kafka.version)) or "")
p("")
p("Generated by `", machine.command, "` on ", machine.date, " in ", int(machine.duration_s), " s; ",
  "median of ", int(machine["repeat"]), " repetition(s) for throughput and latency.")
p("")
p("**Machine:** ", machine.cpu, ", ", int(machine.cores), " cores, ", fmt_int(machine.mem_mb), " MB RAM, ",
  machine.os, ", Linux ", machine.kernel, "; libwebsockets ", machine.libwebsockets, ", librdkafka ",
  machine.librdkafka, ", ", machine.luajit, ", ", machine.lua, ", Node ", machine.node, " (kafkajs ",
  machine.kafkajs, ", ws ", machine.ws, ").")
p("")
p("**Load average** (1/5/15 min) at start: ", machine.load_start, "; at end: ", machine.load_end,
  ". This machine's 2 cores are shared with other work; figures measured under load are noisy and low.")
p("")
if apache then
  p("Kafka is **Apache Kafka ", tostring(kafka.version), "**: one broker (KRaft, broker and controller in one JVM process, ",
    kafka.jvm or "?", ") on loopback, started for the run by `tools/kafka.sh start --brokers 1` with its data on the ",
    "same disk; ", kafka.java or "Java ?", ". Every measurement has topics of its own (",
    kafka.topics or "fresh", "), created before its gateway or peer starts; every gateway, peer and tool uses the broker ",
    "through `--kafka` and librdkafka's (kafkajs') defaults otherwise. The broker shares the machine's cores with ",
    "the system under test and the load generator. Its configuration (`server.properties`; all else Kafka's defaults):")
  p("")
  p("```")
  for _, l in ipairs(kafka.config or {}) do p(l) end
  p("```")
else
  p("Kafka is one embedded broker (librdkafka's in-memory mock cluster) hosted by its own `sluice` process ",
    "(`bench/apps/broker.lua`); every gateway and peer uses it through `--kafka`.")
end
p("")

-- ingest
p("## Ingest: WebSocket → Kafka")
p("")
p("Rows per second stored in Kafka. sluice and the C-only path: counted by acknowledgements received (`{\"ack\":ID}` after Kafka stored the row); ",
  "the Node peers acknowledge nothing: counted by what landed in Kafka (sum of high watermarks). Peak RSS of the server process.")
p("")
local head = { "| implementation |" }
local sep = { "|---|" }
for _, s in ipairs(ingest_scens) do
  local n = s:match "%d+"
  head[#head + 1] = (" %s conns rows/s | peak RSS MB | ack p50 ms |"):format(n)
  sep[#sep + 1] = "---:|---:|---:|"
end
p(table.concat(head)); p(table.concat(sep))
local limits_kafka = med("limits", "kafka-alone", rate)
local limits_lws = med("limits", "lws-alone", rate)
local limits_lws_big = med("limits", "lws-alone-1000", rate)
summary.scenarios.ingest = {}
for _, impl in ipairs(ALL_INGEST) do
  local line = { "| ", impl, " |" }
  local any = false
  for _, s in ipairs(ingest_scens) do
    local r = med(s, impl, rate)
    any = any or r ~= nil
    local rss = med(s, impl, function(x) return x.peak_rss_kb end)
    local p50 = med(s, impl, function(x) return x.result.ack_latency.p50_ms end)
    line[#line + 1] = (" %s | %s | %s |"):format(fmt_int(r), fmt_mb(rss), fmt_ms(p50))
    summary.scenarios.ingest[s] = summary.scenarios.ingest[s] or {}
    summary.scenarios.ingest[s][impl] = { rows_per_s = r, peak_rss_kb = rss, ack_p50_ms = p50 }
  end
  if any then p(table.concat(line)) end
end
p("")
p("sluice-luajit and sluice-lua5.4 are the movies app, whose routes are declared (valid rows never enter Lua); ",
  "`-transform`: the same route with a Lua transform run per row; `-lua`: the route as a plain Lua `message` handler ",
  "(`sluice.schema` check, `app:produce`, an ack from the delivery callback). `bench/apps/routes.lua`.")
p("")
p("### CPU per row, by kind of route")
p("")
-- (runs before 2026-12-03 did not record the broker's CPU)
local has_broker_cpu = false
for _, r in ipairs(rows) do has_broker_cpu = has_broker_cpu or r.broker_cpu_s ~= nil end
p("CPU time of the server process during the measured rows divided by the rows: its main thread (the loop: ",
  "WebSockets, the route, Lua) and all its threads (with librdkafka's)",
  has_broker_cpu and "; and the broker's process (all its threads) meanwhile" or "", ". µs per row, median.")
p("")
do
  local h, sp = { "| implementation | route |" }, { "|---|---|" }
  for _, s in ipairs(ingest_scens) do
    h[#h + 1] = (" %s conns main µs/row | all threads µs/row |"):format(s:match "%d+")
    sp[#sp + 1] = "---:|---:|"
    if has_broker_cpu then h[#h + 1] = " broker µs/row |"; sp[#sp + 1] = "---:|" end
  end
  p(table.concat(h)); p(table.concat(sp))
  local function per_row(field)
    return function(x)
      local rows_n = x.result.rows or x.result.acked
      if not (x[field] and rows_n and rows_n > 0) then return nil end
      return x[field] * 1e6 / rows_n
    end
  end
  for _, impl in ipairs(ALL_INGEST) do
    local line, any = { "| ", impl, " | ", ROUTE_KIND[impl] or "", " |" }, false
    for _, s in ipairs(ingest_scens) do
      local m, a = med(s, impl, per_row("main_cpu_s")), med(s, impl, per_row("cpu_s"))
      any = any or m ~= nil or a ~= nil
      line[#line + 1] = (" %s | %s |"):format(m and string.format("%.2f", m) or "–", a and string.format("%.2f", a) or "–")
      local b = has_broker_cpu and med(s, impl, per_row("broker_cpu_s"))
      if has_broker_cpu then line[#line + 1] = (" %s |"):format(b and string.format("%.2f", b) or "–") end
      if summary.scenarios.ingest[s] and summary.scenarios.ingest[s][impl] then
        summary.scenarios.ingest[s][impl].main_us_per_row = m
        summary.scenarios.ingest[s][impl].cpu_us_per_row = a
        summary.scenarios.ingest[s][impl].broker_us_per_row = b or nil
      end
    end
    if any then p(table.concat(line)) end
  end
end
p("")
p("Limits on the same machine: librdkafka alone (`sluice-kprod`, same producer settings as sluice) ",
  fmt_int(limits_kafka), " rows/s; libwebsockets alone receiving the same frames (`sluice-lwsrecv`, nothing sent back) ",
  fmt_int(limits_lws), " frames/s from 10 connections",
  limits_lws_big and (", " .. fmt_int(limits_lws_big) .. " frames/s from 1,000") or "", ".")
p("")
summary.scenarios.limits = { kafka_alone = limits_kafka, lws_alone = limits_lws, lws_alone_1000 = limits_lws_big }

-- fan-out
p("## Fan-out: Kafka → 1 consumer → every subscribed WebSocket")
p("")
p("Records produced to `movie-stats` (by `sluice-kprod --stamp`), pushed by the movies app to every client on `/stats`. ",
  "Deliveries/s = frames received by all clients / (last − first receipt); latency = produce time → receipt.")
p("")
p("CPU: the gateway's (all its threads), from the first record produced to the last delivery, per delivery; ",
  "load: the 1-minute load average when the measurement ended. (Runs before 2026-12-03 did not record them.)")
p("")
p("| implementation | clients × records | deliveries/s | latency p50 ms | p99 ms | CPU µs/delivery | load |")
p("|---|---|---:|---:|---:|---:|---:|")
summary.scenarios.fanout = {}
-- (base-*: the --base build, measured in the same run)
for _, impl in ipairs({ SLUICE[1], "base-luajit", SLUICE[2], "base-lua5.4" }) do
  local l = by.fanout and by.fanout[impl]
  if l then
    local d = med("fanout", impl, function(x) return x.result.deliveries_per_s end)
    local p50 = med("fanout", impl, function(x) return x.result.fanout_latency.p50_ms end)
    local p99 = med("fanout", impl, function(x) return x.result.fanout_latency.p99_ms end)
    local cpu = med("fanout", impl, function(x) return x.cpu_s and x.cpu_s * 1e6 / x.result.received end)
    local load = med("fanout", impl, function(x) return x.load1 end)
    p(("| %s | %d × %d | %s | %s | %s | %s | %s |"):format(impl, l[1].result.conns, l[1].result.expect, fmt_int(d),
      fmt_ms(p50), fmt_ms(p99), fmt_ms(cpu), load and string.format("%.1f", load) or "–"))
    summary.scenarios.fanout[impl] = { deliveries_per_s = d, p50_ms = p50, p99_ms = p99, cpu_us_per_delivery = cpu }
  end
end
p("")
p("With catch-ups running: the same, while subscribers resuming from the start of `movie-stats` ",
  "(records written before the gateway started) catch up again and again on `/stream` ",
  "(bench/peers/catchup.js; the app reads at most 4 at once). Catch-ups: completed during the whole run.")
p("")
p("| implementation | clients × records | deliveries/s | latency p50 ms | p99 ms | catch-up clients | catch-ups completed | records caught up |")
p("|---|---|---:|---:|---:|---:|---:|---:|")
summary.scenarios["fanout-catchup"] = {}
for _, impl in ipairs(SLUICE) do
  local l = by["fanout-catchup"] and by["fanout-catchup"][impl]
  if l then
    local d = med("fanout-catchup", impl, function(x) return x.result.deliveries_per_s end)
    local p50 = med("fanout-catchup", impl, function(x) return x.result.fanout_latency.p50_ms end)
    local p99 = med("fanout-catchup", impl, function(x) return x.result.fanout_latency.p99_ms end)
    local cu = med("fanout-catchup", impl, function(x) return x.catchup and x.catchup.catchups end)
    local cr = med("fanout-catchup", impl, function(x) return x.catchup and x.catchup.records end)
    p(("| %s | %d × %d | %s | %s | %s | %d | %s | %s |"):format(impl, l[1].result.conns, l[1].result.expect,
      fmt_int(d), fmt_ms(p50), fmt_ms(p99), l[1].catchup and l[1].catchup.clients or 0, fmt_int(cu), fmt_int(cr)))
    summary.scenarios["fanout-catchup"][impl] = { deliveries_per_s = d, p50_ms = p50, p99_ms = p99, catchups = cu, caught_up = cr }
  end
end
p("")

-- round trip
p("## Round trip at fixed rates")
p("")
p("10 connections sending at a fixed total rate. **ack**: send → `{\"ack\":ID}` (client → gateway → Kafka stores it → ",
  "delivery report → gateway → client). Each sluice implementation runs twice. `-ackonly`: the gateway alone, no ",
  "subscriber, ack only; the 2 ms target is judged on this pass. Without the suffix: the gateway also runs an echo ",
  "consumer of `movie-results` forwarding every row to a client on `/echo`; **receipt**: send → that client receives ",
  "the row (client → gateway → Kafka → the gateway's consumer → client). ",
  apache and ("The echo consumer keeps librdkafka's fetch defaults (`fetch.wait.max.ms` 500, `fetch.min.bytes` 1): " ..
    "Apache Kafka answers a waiting fetch as soon as a record arrives, so the 10 ms wait the embedded runs set " ..
    "(for the mock's fetch behaviour) does not apply here. ")
  or ("These figures, ack and receipt, include the " ..
    "embedded broker's fetch behaviour: one record batch per partition per fetch, and a fetch that finds nothing new " ..
    "answered only after the whole `fetch.wait.max.ms` (10 ms here), so the echo consumer fetches almost continuously; " ..
    "a real broker answers at once. "),
  "The C-only path has no consumer: ack only. `-fifo` (with `--fifo`): ack only again, with the broker, the gateway ",
  "and the load generator under SCHED_FIFO, so that no process on the path waits for a core another one holds.")
p("")
p("| rate rows/s | implementation | achieved rows/s | ack p50 | ack p99 | ack p99.9 | receipt p50 | receipt p99 | receipt p99.9 |")
p("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
summary.scenarios.roundtrip = {}
for _, s in ipairs(rt_scens) do
  for _, impl in ipairs({ "sluice-luajit", "sluice-luajit-ackonly", "sluice-luajit-fifo", "sluice-lua5.4",
                          "sluice-lua5.4-ackonly", "sluice-lua5.4-fifo", "c-ingest", "c-ingest-fifo" }) do
    if by[s][impl] then
      local function m(f) return med(s, impl, f) end
      local e = {
        achieved = m(rate),
        ack_p50 = m(function(x) return x.result.ack_latency.p50_ms end),
        ack_p99 = m(function(x) return x.result.ack_latency.p99_ms end),
        ack_p999 = m(function(x) return x.result.ack_latency.p999_ms end),
        rcv_p50 = m(function(x) return x.result.receipt_latency.p50_ms end),
        rcv_p99 = m(function(x) return x.result.receipt_latency.p99_ms end),
        rcv_p999 = m(function(x) return x.result.receipt_latency.p999_ms end),
      }
      summary.scenarios.roundtrip[s] = summary.scenarios.roundtrip[s] or {}
      summary.scenarios.roundtrip[s][impl] = e
      p(("| %s | %s | %s | %s | %s | %s | %s | %s | %s |"):format(fmt_int(tonumber(s:match "%d+")), impl,
        fmt_int(e.achieved), fmt_ms(e.ack_p50), fmt_ms(e.ack_p99), fmt_ms(e.ack_p999),
        fmt_ms(e.rcv_p50), fmt_ms(e.rcv_p99), fmt_ms(e.rcv_p999)))
    end
  end
end
p("")
p("Latencies in milliseconds.")
p("")

-- connections
p("## Memory per idle WebSocket")
p("")
p("| implementation | connections open | RSS before MB | RSS with them MB | bytes per connection |")
p("|---|---:|---:|---:|---:|")
summary.scenarios.connections = {}
for _, impl in ipairs({ "sluice-luajit", "sluice-lua5.4", "c-ingest", "node-careful" }) do
  local l = by.connections and by.connections[impl]
  if l then
    local r = l[1]
    local per = r.result.open > 0 and (r.rss_after_kb - r.rss_before_kb) * 1024 / r.result.open or nil
    summary.scenarios.connections[impl] = { open = r.result.open, bytes_per_conn = per }
    p(("| %s | %s | %s | %s | %s |"):format(impl, fmt_int(r.result.open), fmt_mb(r.rss_before_kb),
      fmt_mb(r.rss_after_kb), fmt_int(per)))
  end
end
p("")

-- overload
local function last_window_rate(tl, secs)
  if not tl or #tl < 2 then return nil end
  local last = tl[#tl]
  local first = tl[1]
  for i = #tl, 1, -1 do
    if last[1] - tl[i][1] >= secs then first = tl[i]; break end
  end
  if last[1] <= first[1] then return nil end
  return (last[3] - first[3]) / (last[1] - first[1])
end
local overload_s
for _, r in ipairs(rows) do if r.scenario == "overload" then overload_s = overload_s or r.result.duration_s end end
p("## Overload: full speed for ", overload_s and string.format("%.0f", overload_s) or "?", " s")
p("")
p("10 connections sending as fast as the server reads. sluice and the C-only path: rows acknowledged; Node: rows landed in Kafka by the end. ",
  "\"last 10 s\" is the rate over the final 10 seconds (the plateau); \"of peak\" compares it with the same ",
  "implementation's ingest-10 median.")
p("")
p("| implementation | rows/s overall | last 10 s rows/s | of peak | stored in Kafka, last 10 s rows/s (server side) | peak RSS MB | RSS at end MB |")
p("|---|---:|---:|---:|---:|---:|---:|")
summary.scenarios.overload = {}
for _, impl in ipairs({ "sluice-luajit", "sluice-lua5.4", "c-ingest", "node-careful", "node-naive" }) do
  local l = by.overload and by.overload[impl]
  if l then
    local r = l[1]
    local plateau = last_window_rate(r.result.timeline, 10)
    local peak = med("ingest-10", impl, rate)
    local series = r.rss_series or {}
    local rss_end = series[#series] and series[#series][2]
    -- sluice's own count of rows Kafka stored (healthz "delivered"), per second
    local stored
    if impl:match "^sluice" and #series >= 2 then
      local tl = {}
      -- (a sample whose /healthz did not answer reads 0: skip it)
      for _, pt in ipairs(series) do
        if (pt[3] or 0) > 0 then tl[#tl + 1] = { pt[1], 0, pt[3] } end
      end
      stored = last_window_rate(tl, 10)
    end
    local e = { rows_per_s = r.result.done_per_s, plateau = plateau, of_peak = plateau and peak and plateau / peak,
                stored_plateau = stored, peak_rss_kb = r.peak_rss_kb, rss_end_kb = rss_end }
    summary.scenarios.overload[impl] = e
    p(("| %s | %s | %s | %s | %s | %s | %s |"):format(impl, fmt_int(e.rows_per_s), fmt_int(plateau),
      e.of_peak and string.format("%.0f%%", e.of_peak * 100) or "–", fmt_int(stored), fmt_mb(e.peak_rss_kb), fmt_mb(rss_end)))
  end
end
p("")

-- idle
p("## Idle gateway")
p("")
p("| implementation | seconds | CPU seconds used | RSS MB |")
p("|---|---:|---:|---:|")
summary.scenarios.idle = {}
for _, impl in ipairs(SLUICE) do
  local l = by.idle and by.idle[impl]
  if l then
    local r = l[1].result
    summary.scenarios.idle[impl] = r
    p(("| %s | %g | %.2f | %s |"):format(impl, r.seconds, r.cpu_s, fmt_mb(r.rss_kb)))
  end
end
p("")

-- targets
p("## Against the targets (issue 7)")
p("")
p("| target | measured | met? |")
p("|---|---|---|")
local function target(name, value, ok, text)
  summary.targets[#summary.targets + 1] = { target = name, value = value, met = ok }
  p(("| %s | %s | %s |"):format(name, text, ok == nil and "n/a" or ok and "yes" or "**no**"))
end
for _, impl in ipairs(SLUICE) do
  for _, s in ipairs(ingest_scens) do
    local a, n, c = med(s, impl, rate), med(s, "node-careful", rate), med(s, "c-ingest", rate)
    local r1 = a and n and a / n
    target(("%s %s ≥ 10× careful Node"):format(impl, s), r1, r1 and r1 >= 10, fmt_x(r1))
    local r2 = a and c and a / c
    target(("%s %s ≥ 50%% of C-only path"):format(impl, s), r2, r2 and r2 >= 0.5,
      r2 and string.format("%.0f%%", r2 * 100) or "–")
  end
end
for _, impl in ipairs(SLUICE) do
  local f = summary.scenarios.fanout[impl]
  local d = f and f.deliveries_per_s
  target(impl .. " fan-out ≥ 1,000,000 deliveries/s", d, d and d >= 1e6, fmt_int(d) .. "/s")
  f = summary.scenarios["fanout-catchup"][impl]
  d = f and f.deliveries_per_s
  if f then target(impl .. " fan-out with catch-ups ≥ 1,000,000 deliveries/s", d, d and d >= 1e6, fmt_int(d) .. "/s") end
end
-- judged on the ack-only pass (the gateway alone); the echo consumer's pass
-- measures the embedded broker's fetch behaviour as well (see its table)
for _, impl in ipairs(SLUICE) do
  local e = summary.scenarios.roundtrip["roundtrip-10000"] and summary.scenarios.roundtrip["roundtrip-10000"][impl .. "-ackonly"]
  if e then
    target(impl .. " round-trip p99 < 2 ms at 10k rows/s (ack, no echo consumer)", e.ack_p99, e.ack_p99 and e.ack_p99 < 2,
      fmt_ms(e.ack_p99) .. " ms")
  end
end
for _, impl in ipairs(SLUICE) do
  local c = summary.scenarios.connections[impl]
  if c then target(impl .. " ≤ 10 KiB per idle connection", c.bytes_per_conn, c.bytes_per_conn and c.bytes_per_conn <= 10240,
    fmt_int(c.bytes_per_conn) .. " B") end
end
for _, impl in ipairs(SLUICE) do
  local o = summary.scenarios.overload[impl]
  if o then target(impl .. " overload ≥ 80% of peak, memory bounded", o.of_peak, o.of_peak and o.of_peak >= 0.8,
    (o.of_peak and string.format("%.0f%%", o.of_peak * 100) or "–") .. ", peak RSS " .. fmt_mb(o.peak_rss_kb) .. " MB") end
end
p("")

-- chart
p("## Chart")
p("")
p("![ingest and overload](chart.png)")
p("")

-- commands
p("## Exact commands")
p("")
if apache then
  p("Broker: `tools/kafka.sh start --brokers 1 --dir BUILD/bench-kafka` (bootstrap ", tostring(kafka.bootstrap),
    " in this run); topics: `node spec/clients/kafkajs.js --brokers BOOTSTRAP --topic bench<N>-movie-results,… --create 4` ",
    "before each measurement, whose gateways get `SLUICE_MOVIES_PREFIX=bench<N>-` and whose tools `--topic bench<N>-…`.")
else
  p("Broker: `build/bin/sluice-lua5.4 run bench/apps/broker.lua --embedded-port PORT` (ports are picked free at run time).")
end
p("")
for _, k in ipairs(order) do
  local r = by[k[1]][k[2]][1]
  p("- **", k[1], " / ", k[2], "**: server `", (r.server ~= "" and r.server or "–"), "`; load `", r.cmd, "`")
end
p("")
if #problems > 0 then
  p("## Problems")
  p("")
  for _, x in ipairs(problems) do p("- ", x) end
  p("")
end

write(out .. "/latest.md", table.concat(md, "\n"))
summary.problems = problems
write(out .. "/latest.json", cjson.encode(summary))

-- ---- chart (gnuplot) ------------------------------------------------------
local dat = {}
for _, impl in ipairs(ALL_INGEST) do
  local v = {}
  for _, s in ipairs(ingest_scens) do v[#v + 1] = string.format("%.0f", med(s, impl, rate) or 0) end
  dat[#dat + 1] = ('"%s" %s'):format(impl, table.concat(v, " "))
end
dat[#dat + 1] = ('"limit: librdkafka alone" %s'):format(string.rep(string.format("%.0f ", limits_kafka or 0), #ingest_scens))
write(out .. "/ingest.dat", table.concat(dat, "\n") .. "\n")
local rss_files = {}
for _, impl in ipairs({ "sluice-luajit", "sluice-lua5.4", "c-ingest", "node-careful", "node-naive" }) do
  local l = by.overload and by.overload[impl]
  if l and l[1].rss_series then
    local t = {}
    for _, pt in ipairs(l[1].rss_series) do t[#t + 1] = string.format("%.1f %.1f", pt[1], pt[2] / 1024) end
    local f = out .. "/rss-" .. impl .. ".dat"
    write(f, table.concat(t, "\n") .. "\n")
    rss_files[#rss_files + 1] = ('"%s" using 1:2 with lines lw 2 title "%s"'):format(f, impl)
  end
end
local gp = {
  'set terminal pngcairo size 1200,500 font "sans,10"',
  ('set output "%s/chart.png"'):format(out),
  "set multiplot layout 1,2",
  'set title "Ingest: rows/s stored in Kafka (median)"',
  "set style data histogram", "set style histogram clustered gap 1", "set style fill solid 0.8 border -1",
  "set logscale y", "set yrange [1000:*]", "set grid ytics", "set key top right",
  "set xtics rotate by -25",
}
local cols = {}
for i, s in ipairs(ingest_scens) do
  cols[#cols + 1] = ('"%s/ingest.dat" using %d:xtic(1) title "%s"'):format(out, i + 1, s:gsub("ingest%-", "") .. " connections")
end
-- Without ingest figures (--only without ingest) there is nothing for a
-- log scale: gnuplot would refuse the placeholder plot.
if #cols > 0 then gp[#gp + 1] = "plot " .. table.concat(cols, ", ")
else gp[#gp + 1] = 'unset logscale y; set yrange [0:1]; plot 0 title "no ingest run"' end
gp[#gp + 1] = "unset logscale y"
gp[#gp + 1] = "set yrange [0:*]"
gp[#gp + 1] = "set xtics norotate"
gp[#gp + 1] = 'set title "Overload: resident memory (MB) over time (s)"'
gp[#gp + 1] = "set style data lines"
gp[#gp + 1] = "set key top left"
if #rss_files > 0 then gp[#gp + 1] = "plot " .. table.concat(rss_files, ", ")
else gp[#gp + 1] = 'plot 0 title "no overload run"' end
gp[#gp + 1] = "unset multiplot"
write(out .. "/chart.gp", table.concat(gp, "\n") .. "\n")
local has_gnuplot = os.execute "command -v gnuplot >/dev/null 2>&1"
if has_gnuplot then
  if not os.execute(("gnuplot %q 2>%q"):format(out .. "/chart.gp", out .. "/logs/gnuplot.err")) then
    problem("gnuplot failed (see %s/logs/gnuplot.err)", out)
  end
else
  io.stderr:write("report: gnuplot not installed, no chart (apt-get install gnuplot-nox)\n")
end

io.stderr:write(("report: %s/latest.md (%d measurements)\n"):format(out, #rows))
if #problems > 0 then
  for _, x in ipairs(problems) do io.stderr:write("report: PROBLEM: ", x, "\n") end
  os.exit(1)
end
