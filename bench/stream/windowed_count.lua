-- Benchmark (not a test): records/s through a keyed, windowed count
-- (sluice.stream) against the embedded broker, in one process.
--
--   bench/stream/run.sh [N]          (both Lua 5.4 and LuaJIT)
--   lua5.4 bench/stream/windowed_count.lua [N] [mode]   (LUA_PATH/LUA_CPATH set)
--
-- mode "kafka" (default): N records are produced to `bench-in` first (1000
-- keys, 100 records per ms of event time: ~100 per key per window), then a topology counts them per key in
-- 1-second tumbling windows (emit on close) and writes the counts to
-- `bench-out`; the clock runs from the first record processed to the last
-- (the consumer group join is excluded), with changelog writes and offset
-- commits included. mode "driver": the same topology in the test driver
-- (no Kafka): the cost of the Lua processing alone.
local sluice = require "sluice"
local stream = require "sluice.stream"
local socket_ok, socket = pcall(require, "socket")

local N = tonumber(arg[1]) or 200000
local MODE = arg[2] or "kafka"
local KEYS = 1000
local now = socket_ok and socket.gettime or os.clock

local function declare(t)
  t:from("bench-in")
    :count { store = "wc", window = stream.tumbling(1000), emit = "close" }
    :to("bench-out")
end

local lua = (jit and jit.version) or _VERSION

if MODE == "driver" then
  local t = stream.topology(nil, { name = "bench", wall_clock = false })
  declare(t)
  local d = stream.driver(t)
  local t0 = now()
  for i = 1, N do d:pipe("bench-in", "k" .. (i % KEYS), "x", math.floor(i / 100)) end
  local dt = now() - t0
  local out = #d:read("bench-out")
  print(("%s driver: %d records in %.2f s = %.0f records/s (%d window results)"):format(lua, N, dt, N / dt, out))
  return
end

local app = sluice.app { name = "bench", listen = false, embedded = { port = 0 }, log_level = "warn" }
assert(app:start())
local acked = 0
local base = 1700000000000
local i = 0
-- Produce in bounded batches (the producer refuses beyond its queue).
while i < N do
  while i < N and i - acked < 50000 do
    i = i + 1
    local ok = app:produce("bench-in", { key = "k" .. (i % KEYS), value = "x", timestamp = base + math.floor(i / 100) },
      function(err) assert(not err, err); acked = acked + 1 end)
    if not ok then i = i - 1; break end
  end
  app:step(10)
end
while acked < N do app:step(10) end

local t = stream.topology(app, { name = "bench", wall_clock = false })
declare(t)
local first, t0
local deadline = os.time() + 300
while t:stats().processed < N do
  app:step(5)
  if not first and t:stats().processed > 0 then first = t:stats().processed; t0 = now() end
  if os.time() > deadline then error("timed out: " .. t:stats().processed .. " processed") end
end
local dt = now() - t0
local n = N - first
-- until every write (outputs, changelog) is acknowledged and committed
local commits = t:stats().commits
local t1 = now()
while app:stats().in_flight > 0 or t:stats().commits == commits do app:step(5) end
local settle = now() - t1
print(("%s kafka: %d records in %.2f s = %.0f records/s (then %.2f s until the last writes were acknowledged and committed)")
  :format(lua, n, dt, n / dt, settle))
app:close()
