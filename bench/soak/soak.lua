-- The soak: steady mixed load on a gateway for a chosen time while its
-- Kafka (bench/soak/broker.lua: three in-memory brokers in a process of
-- their own) is broken periodically and the app is hot-reloaded; then
-- every row is accounted for against what Kafka holds (kcat).
--
-- Run it through bench/soak/soak.sh (which sets the paths); options:
--   --duration S      seconds of load (default 60)
--   --rate R          rows/s in all (default 1000)
--   --connections N   WebSocket clients sending rows (default 4)
--   --batch B         rows per WebSocket message (default 1)
--   --fault-every S   seconds between faults (default 15); 0: none
--   --app PATH        the gateway app (default bench/soak/rows.lua; the
--                     movies app works too: scripts/apps/movies/app.lua)
--   --report S        seconds per report line (default 10)
-- Prints a line per interval (rows sent/acked/failed, ack latency
-- p50/p99/max, gateway RSS, the fault of that interval), then a summary.
-- Exit status 0 only if nothing was lost: every acked row is in Kafka
-- exactly once, every row was answered, no client was disconnected.
local H = require "integration.helper"
local json = H.json

local opts = { duration = 60, rate = 1000, connections = 4, batch = 1, ["fault-every"] = 15,
               app = H.root .. "/bench/soak/rows.lua", report = 10 }
do
  local i = 1
  while arg[i] do
    local name = arg[i]:match "^%-%-(.+)$"
    if not name or opts[name] == nil or arg[i + 1] == nil then
      io.stderr:write("soak: bad option '", arg[i], "' (see bench/soak/soak.lua)\n")
      os.exit(2)
    end
    opts[name] = tonumber(arg[i + 1]) or arg[i + 1]
    i = i + 2
  end
end

local function log(fmt, ...)
  io.stdout:write(os.date "!%H:%M:%S ", fmt:format(...), "\n")
  io.stdout:flush()
end

local TOPIC = "movie-results"
local broker = H.start_fault_broker { brokers = 3 }
broker:fault("/topic?name=" .. TOPIC .. "&partitions=4")
-- One produce request in flight: the faults include injected produce
-- errors, which the embedded broker cannot answer like a real one when
-- requests overtake each other (docs/reliability.md, "The embedded broker").
local gw = H.start { app = opts.app, kafka = broker.bootstrap, args = { "--watch" },
                     env = "SOAK_MAX_IN_FLIGHT=1" }
local function cleanup()
  if gw then gw:stop(30) end
  if broker then broker:stop() end
  H.cleanup()
end
log("broker %s (control :%d), gateway %s (pid %d), %d s at %d rows/s over %d connections",
    broker.bootstrap, broker.port, gw.url, gw.pid, opts.duration, opts.rate, opts.connections)

local dir = H.tmpdir()
local out = dir .. "/ids.json"
local load = H.client_bg("stream.js", { "--url", gw.url .. "/", "--connections", tostring(opts.connections),
  "--duration", tostring(opts.duration), "--rate", tostring(opts.rate), "--batch", tostring(opts.batch),
  "--prefix", "S" .. os.time() .. "-", "--report", tostring(opts.report),
  "--timeout", tostring(opts.duration + 360), "--out", out, "--marker", "42" })

-- The fault cycle. Each entry: a name and a function run in its own
-- interval (it may sleep; it must leave the cluster healthy).
local leader_of = {}
local FAULTS = {
  { "broker 1 (leader of some partitions) down 5 s", function()
      broker:fault "/down?id=1"; H.sleep(5); broker:fault "/up?id=1"
    end },
  { "transient produce errors", function()
      broker:fault "/errors?api=Produce&codes=NOT_LEADER_FOR_PARTITION,REQUEST_TIMED_OUT,NOT_ENOUGH_REPLICAS,LEADER_NOT_AVAILABLE"
    end },
  { "hot reload (SIGHUP)", function() gw:signal "HUP" end },
  { "+300 ms RTT on every broker for 5 s", function()
      for id = 1, 3 do broker:fault(("/rtt?id=%d&ms=300"):format(id)) end
      H.sleep(5)
      for id = 1, 3 do broker:fault(("/rtt?id=%d&ms=0"):format(id)) end
    end },
  { "partition leaders move", function()
      for p = 0, 3 do
        leader_of[p] = ((leader_of[p] or p) % 3) + 1
        broker:fault(("/leader?topic=%s&partition=%d&id=%d"):format(TOPIC, p, leader_of[p]))
      end
    end },
}

local start = H.now()
local rss = { { t = 0, kb = H.rss_kb(gw.pid) } }
local faults_done, next_fault = {}, opts["fault-every"] > 0 and opts["fault-every"] or math.huge
local fi = 0
while not load:done() do
  local t = H.now() - start
  if t >= next_fault and t < opts.duration - 5 then
    fi = fi % #FAULTS + 1
    local f = FAULTS[fi]
    log("fault: %s", f[1])
    faults_done[#faults_done + 1] = { t = math.floor(t), name = f[1] }
    local ok, err = pcall(f[2])
    if not ok then log("fault failed: %s", tostring(err)) end
    next_fault = next_fault + opts["fault-every"]
  end
  if H.now() - start >= rss[#rss].t + opts.report then
    rss[#rss + 1] = { t = math.floor(H.now() - start), kb = H.rss_kb(gw.pid) or 0 }
  end
  if gw:exit_code() then break end
  H.sleep(0.5)
end

local r = load:result(opts.duration + 400)
rss[#rss + 1] = { t = math.floor(H.now() - start), kb = H.rss_kb(gw.pid) or 0 }

-- Per-interval lines from stream.js (JSON objects with a `t` field).
log("%6s %9s %9s %7s %7s %7s %7s", "t(s)", "sent", "acked", "failed", "p50ms", "p99ms", "maxms")
for line in (H.read(load.dir .. "/out") or ""):gmatch "[^\n]+" do
  local ok, v = pcall(json.decode, line)
  if ok and type(v) == "table" and v.t then
    log("%6d %9d %9d %7d %7s %7s %7s", v.t, v.sent, v.acked, v.failed, tostring(v.p50),
        tostring(v.p99), tostring(v.max))
  end
end
log("gateway RSS (MB) over time: %s", (function()
  local t = {}
  for _, s in ipairs(rss) do t[#t + 1] = ("%ds:%.1f"):format(s.t, (s.kb or 0) / 1024) end
  return table.concat(t, " ")
end)())

-- Accounting against Kafka.
-- The embedded broker keeps at most 5 MB (or 100,000 batches) per
-- partition and drops the oldest beyond that, like retention; the first
-- offset still held per partition tells an expired row from a lost one
-- (the gateway's acks carry each row's partition and offset).
local ids = json.decode(H.read(out) or '{"acked":[],"failed":[],"unanswered":[]}')
local acked_at = ids.acked_at or {}
local function read_all()
  local count, total, first = {}, 0, {}
  local code, text = H.run(string.format("%s -C -b %s -t %s -o beginning -e -q -m 10 -f %s",
    H.q(H.kcat), broker.bootstrap, H.q(TOPIC), H.q("%p\t%o\t%s\n")))
  for p, o, v in (code == 0 and text or ""):gmatch "(%d+)\t(%d+)\t([^\n]*)\n" do
    p, o = tonumber(p), tonumber(o)
    if not first[p] or o < first[p] then first[p] = o end
    local ok, row = pcall(json.decode, v)
    if ok and type(row) == "table" and row.id then
      count[row.id] = (count[row.id] or 0) + 1
      total = total + 1
    end
  end
  return count, total, first
end
local count, total, first
local deadline = H.now() + 120
repeat
  count, total, first = read_all()
  local missing = 0
  for _, id in ipairs(ids.acked) do
    local at = acked_at[id]
    if not count[id] and not (at and first[at[1]] and at[2] < first[at[1]]) then missing = missing + 1 end
  end
  if missing == 0 or H.now() > deadline then break end
  H.sleep(1)
until false
local lost, dup, failed_stored, expired = 0, 0, 0, 0
for _, id in ipairs(ids.acked) do
  local at = acked_at[id]
  if not count[id] then
    if at and first[at[1]] and at[2] < first[at[1]] then expired = expired + 1 else lost = lost + 1 end
  elseif count[id] > 1 then dup = dup + 1 end
end
for _, id in ipairs(ids.failed) do if count[id] then failed_stored = failed_stored + 1 end end
local dropped = 0
for _, c in ipairs(r.closes) do if c.by ~= "client" then dropped = dropped + 1 end end

local rss0, rss1, peak = rss[1].kb or 0, rss[#rss].kb or 0, 0
for _, s in ipairs(rss) do if (s.kb or 0) > peak then peak = s.kb end end
log("faults: %d (%s)", #faults_done, table.concat((function()
  local t = {}
  for _, f in ipairs(faults_done) do t[#t + 1] = f.t .. "s " .. f.name end
  return t
end)(), "; "))
log("rows: sent %d, acked %d, failed %d (of which in Kafka anyway: %d), unanswered %d",
    r.sent, r.acks, r.failed, failed_stored, r.unanswered)
log("LOST (acked, not in Kafka): %d; duplicated in Kafka: %d; clients disconnected by the server: %d",
    lost, dup, dropped)
if expired > 0 then
  log("expired: %d acked rows were older than the embedded broker keeps (5 MB or 100,000 batches per partition; first offsets held: %s): stored, then dropped by retention, not lost",
      expired, json.encode(first))
end
log("ack latency overall: p50 %s, p90 %s, p99 %s, max %s ms", tostring(r.latency.p50),
    tostring(r.latency.p90), tostring(r.latency.p99), tostring(r.latency.max))
log("gateway RSS: %.1f MB at start, %.1f MB at end, %.1f MB peak (growth %.1f MB)",
    rss0 / 1024, rss1 / 1024, peak / 1024, (rss1 - rss0) / 1024)
if r.errors[1] then log("first errors: %s", json.encode(r.errors)) end

cleanup()
local ok = lost == 0 and dup == 0 and r.unanswered == 0 and dropped == 0 and not r.timed_out
log("result: %s", ok and "PASS (nothing lost)" or "FAIL")
os.exit(ok and 0 or 1)
