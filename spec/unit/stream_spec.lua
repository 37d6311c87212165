-- sluice.stream operators through the test driver (no broker).
local stream = require "sluice.stream"

local function values(records)
  local out = {}
  for i, r in ipairs(records) do out[i] = r.value end
  return out
end

local function topo(name) return stream.topology(nil, { name = name or "t" }) end

describe("sluice.stream stateless operators", function()
  it("map, filter, flat_map and each", function()
    local t = topo()
    local seen = {}
    t:from("in")
      :filter(function(v) return v ~= "skip" end)
      :map(function(v, k) return v:upper() .. "@" .. k end)
      :each(function(v) seen[#seen + 1] = v end)
      :flat_map(function(v) return { v, v .. "!" } end)
      :to("out")
    local d = stream.driver(t)
    d:pipe("in", "k1", "a"):pipe("in", "k2", "skip"):pipe("in", "k3", "b")
    assert.same({ "A@k1", "A@k1!", "B@k3", "B@k3!" }, values(d:read("out")))
    assert.same({ "A@k1", "B@k3" }, seen)
    assert.same({}, d:read("out"))   -- read consumes
  end)

  it("decodes JSON at the source and encodes tables as JSON at the sink", function()
    local t = topo()
    t:from("in", { value = "json" }):map(function(v) return { n = v.n * 2 } end):to("out")
    local d = stream.driver(t)
    d:pipe("in", "k", { n = 21 })
    d:pipe("in", "k", "not json")
    local out = d:read("out", { json = true })
    assert.equal(1, #out)
    assert.equal(42, out[1].value.n)
    assert.equal(1, t:stats().skipped)   -- the undecodable record, logged
    assert.equal(1, #d.logs)
    assert.matches("^warn: stream: in: cannot decode value at in%[0%]@1: .-"
      .. "Expected value but found invalid token at character 1$", d.logs[1])
  end)

  it("branch sends each record to the first matching branch", function()
    local t = topo()
    local small, big, rest = t:from("in", { value = function(b) return tonumber(b) end })
      :branch(function(v) return v < 10 end, function(v) return v < 100 end, true)
    small:to("small"); big:to("big"); rest:to("rest")
    local d = stream.driver(t)
    for _, n in ipairs({ 5, 50, 500, 7 }) do d:pipe("in", "k", tostring(n)) end
    assert.same({ "5", "7" }, values(d:read("small")))
    assert.same({ "50" }, values(d:read("big")))
    assert.same({ "500" }, values(d:read("rest")))
  end)

  it("to() takes a key function and keeps record timestamps", function()
    local t = topo()
    t:from("in"):to("out", { key = function(r) return r.value .. "-key" end })
    local d = stream.driver(t)
    d:pipe("in", "k", "v", 1234)
    local r = d:read("out")[1]
    assert.equal("v-key", r.key)
    assert.equal(1234, r.timestamp)
  end)

  it("rejects misuse", function()
    local t = topo()
    assert.has_error(function() t:from("in"):map("nope") end,
      "bad argument #1 to 'map' (function expected, got string)")
    assert.has_error(function() t:from("in"):count { emit = "sometimes" } end)
    assert.has_error(function() t:from("in"):aggregate(0, function() end, { window = stream.session(10) }) end)
    assert.has_error(function() stream.tumbling(0) end)
  end)

  it("processing is at_least_once or exactly_once; a transactional_id needs exactly_once", function()
    assert.has_error(function() stream.topology { name = "x", processing = "exactly-once" } end,
      'bad argument #2 to \'topology\' (processing must be "at_least_once" or "exactly_once", got "exactly-once")')
    assert.has_error(function() stream.topology { name = "x", processing = true } end,
      'bad argument #2 to \'topology\' (processing must be "at_least_once" or "exactly_once", got true)')
    assert.has_error(function() stream.topology { name = "x", transactional_id = "a" } end,
      'bad argument #2 to \'topology\' (transactional_id needs processing = "exactly_once")')
    assert.has_error(function() stream.topology { name = "x", processing = "exactly_once", transactional_id = "" } end,
      "bad argument #2 to 'topology' (transactional_id must be a non-empty string)")
    -- The driver runs either the same way: the mode is the Kafka runner's.
    local t = stream.topology { name = "x", processing = "exactly_once", transactional_id = "x-1" }
    t:from("in"):count { store = "n" }:to("out")
    local d = stream.driver(t)
    d:pipe("in", "k", "v")
    assert.same({ k = "1" }, d:read_map("out"))
  end)
end)

describe("sluice.stream keyed state", function()
  it("count per key, with every update emitted", function()
    local t = topo()
    t:from("in"):count { store = "c" }:to("out")
    local d = stream.driver(t)
    for _, k in ipairs({ "a", "b", "a", "a" }) do d:pipe("in", k, "x") end
    local out = d:read("out")
    assert.same({ "1", "1", "2", "3" }, values(out))
    assert.equal(3, d:get("c", "a"))
    assert.equal(1, d:get("c", "b"))
  end)

  it("reduce and aggregate", function()
    local t = topo()
    local s = t:from("in", { value = function(b) return tonumber(b) end })
    s:reduce(function(acc, v) return math.max(acc, v) end, { store = "max" }):to("max")
    s:aggregate({ n = 0, sum = 0 }, function(a, v) a.n = a.n + 1; a.sum = a.sum + v; return a end,
      { store = "avg" }):map(function(a) return a.sum / a.n end):to("avg")
    local d = stream.driver(t)
    for _, n in ipairs({ 3, 9, 4 }) do d:pipe("in", "k", tostring(n)) end
    assert.same({ "3", "9", "9" }, values(d:read("max")))
    local avg = values(d:read("avg"))
    assert.is_true(math.abs(16 / 3 - tonumber(avg[3])) < 1e-9)
    -- the initial value is copied per key, not shared
    d:pipe("in", "other", "1")
    assert.same({ n = 1, sum = 1 }, d:get("avg", "other"))
    assert.same({ n = 3, sum = 16 }, d:get("avg", "k"))
  end)

  it("key_by repartitions through <name>.<store>.repartition before counting", function()
    local t = topo("app1")
    t:from("in", { value = "json" }):key_by(function(v) return v.color end):count { store = "colors" }:to("out")
    local d = stream.driver(t)
    d:pipe("in", "1", { color = "red" }):pipe("in", "2", { color = "blue" }):pipe("in", "3", { color = "red" })
    assert.same({ red = "2", blue = "1" }, d:read_map("out"))
    local rep = d:written_to("app1.colors.repartition")
    assert.equal(3, #rep)
    assert.equal("red", rep[1].key)
  end)

  it("writes changes to <name>.<store>.changelog and restores from it", function()
    local t = topo("app2")
    t:from("in"):count { store = "c" }:to("out")
    local d = stream.driver(t)
    d:pipe("in", "a", "x"):pipe("in", "a", "x"):pipe("in", "b", "x")
    local log = d:written_to("app2.c.changelog")
    local changes = {}
    for i, rec in ipairs(log) do changes[i] = rec.key .. "=" .. tostring(rec.value) end
    assert.same({ 'a={"v":1}', 'a={"v":2}', 'b={"v":1}' }, changes)
    d:restart()                 -- a fresh engine, state from the changelog
    assert.equal(2, d:get("c", "a"))
    d:pipe("in", "a", "x")
    assert.same({ "1", "2", "1", "3" }, values(d:read("out")))
  end)
end)

describe("sluice.stream windows", function()
  local function windowed(opts)
    local t = topo()
    t:from("in"):count(opts)
      :map(function(n, k, r) return ("%s[%d,%d)=%d"):format(k, r.window.start, r.window["end"], n) end)
      :to("out")
    return t, stream.driver(t)
  end

  it("tumbling: a record at a window's end belongs to the next window", function()
    local _, d = windowed { store = "w", window = stream.tumbling(1000) }
    d:pipe("in", "k", "x", 0):pipe("in", "k", "x", 999):pipe("in", "k", "x", 1000)
    assert.same({ "k[0,1000)=1", "k[0,1000)=2", "k[1000,2000)=1" }, values(d:read("out")))
  end)

  it("emit = close: one final result per window, when event time passes its end", function()
    local _, d = windowed { store = "w", window = stream.tumbling(1000), emit = "close" }
    d:pipe("in", "k", "x", 100):pipe("in", "j", "x", 200):pipe("in", "k", "x", 900)
    assert.same({}, d:read("out"))
    d:pipe("in", "k", "x", 1000)   -- closes [0,1000) for every key of the partition
    assert.same({ "j[0,1000)=1", "k[0,1000)=2" }, values(d:read("out")))
  end)

  it("drops late records and accepts out-of-order ones within grace", function()
    local t, d = windowed { store = "w", window = stream.tumbling(1000), grace = 500, emit = "close" }
    d:pipe("in", "k", "x", 100)
    d:pipe("in", "k", "x", 1200)    -- time 1200: [0,1000) still open (grace)
    d:pipe("in", "k", "x", 900)     -- out of order, within grace: counted
    assert.same({}, d:read("out"))
    d:pipe("in", "k", "x", 1500)    -- 1000 + 500 <= 1500: closes [0,1000)
    assert.same({ "k[0,1000)=2" }, values(d:read("out")))
    d:pipe("in", "k", "x", 950)     -- its window is closed: late, dropped
    assert.equal(1, t:stats().late)
    d:pipe("in", "k", "x", 2600)
    assert.same({ "k[1000,2000)=2" }, values(d:read("out")))
  end)

  it("empty windows emit nothing", function()
    local _, d = windowed { store = "w", window = stream.tumbling(1000), emit = "close" }
    d:pipe("in", "k", "x", 500)
    d:pipe("in", "k", "x", 5500)    -- four empty windows in between
    assert.same({ "k[0,1000)=1" }, values(d:read("out")))
  end)

  it("hopping: a record counts in every window that covers it", function()
    local _, d = windowed { store = "w", window = stream.hopping(1000, 500) }
    d:pipe("in", "k", "x", 700)
    assert.same({ "k[0,1000)=1", "k[500,1500)=1" }, values(d:read("out")))
    d:pipe("in", "k", "x", 1100)
    assert.same({ "k[500,1500)=2", "k[1000,2000)=1" }, values(d:read("out")))
  end)

  it("windows close on the timer when the stream is idle", function()
    local _, d = windowed { store = "w", window = stream.tumbling(1000), emit = "close" }
    d:pipe("in", "k", "x", 100)
    d:advance(500)
    assert.same({}, d:read("out"))
    d:advance(500)                  -- event time 100 + 1000 of wall clock
    assert.same({ "k[0,1000)=1" }, values(d:read("out")))
  end)

  it("wall_clock = false: only event time closes windows", function()
    local t = stream.topology(nil, { name = "t", wall_clock = false })
    t:from("in"):count { window = stream.tumbling(1000), emit = "close" }:to("out")
    local d = stream.driver(t)
    d:pipe("in", "k", "x", 100)
    d:advance(10000)
    assert.same({}, d:read("out"))
  end)

  it("session windows merge when a record bridges two sessions", function()
    local t = topo()
    t:from("in"):count { store = "s", window = stream.session(100), grace = 200 }
      :map(function(n, k, r)
        return ("%s[%d,%d]=%s"):format(k, r.window.start, r.window["end"], tostring(n))
      end):to("out")
    local d = stream.driver(t)
    d:pipe("in", "k", "x", 0):pipe("in", "k", "x", 50)    -- one session [0,50]
    d:pipe("in", "k", "x", 200)                            -- a new one (gap > 100)
    assert.same({ "k[0,0]=1", "k[0,50]=2", "k[200,200]=1" }, values(d:read("out")))
    d:pipe("in", "k", "x", 130)                            -- within 100 of both: merged
    assert.same({ "k[200,200]=nil", "k[0,200]=4" }, values(d:read("out")))
    assert.equal(4, d:get("s", "k", 0))
  end)

  it("session windows with emit = close emit once, after gap and grace", function()
    local t = topo()
    t:from("in"):count { store = "s", window = stream.session(100), emit = "close" }
      :map(function(n, k, r) return ("%s[%d,%d]=%d"):format(k, r.window.start, r.window["end"], n) end)
      :to("out")
    local d = stream.driver(t)
    d:pipe("in", "a", "x", 0):pipe("in", "a", "x", 80):pipe("in", "b", "x", 150)
    assert.same({}, d:read("out"))
    d:pipe("in", "b", "x", 181)                            -- 80 + 100 < 181: a closes
    assert.same({ "a[0,80]=2" }, values(d:read("out")))
  end)

  it("windowed state survives a restart, closed windows do not come back", function()
    local _, d = windowed { store = "w", window = stream.tumbling(1000), emit = "close" }
    d:pipe("in", "k", "x", 100):pipe("in", "k", "x", 1100):pipe("in", "k", "x", 1200)
    assert.same({ "k[0,1000)=1" }, values(d:read("out")))
    d:restart()
    d:pipe("in", "k", "x", 500)     -- late after the restart too (stream time restored)
    d:pipe("in", "k", "x", 2000)
    assert.same({ "k[1000,2000)=2" }, values(d:read("out")))
  end)
end)

describe("sluice.stream tables and joins", function()
  it("joins a stream with the latest value per key of a table", function()
    local t = topo()
    local names = t:table("names")
    local s = t:from("clicks")
    s:join(names, function(v, name) return name .. ":" .. v end):to("joined")
    s:left_join(names, function(v, name) return (name or "?") .. ":" .. v end):to("left")
    local d = stream.driver(t)
    d:pipe("clicks", "u1", "c1")
    d:pipe("names", "u1", "Ada")
    d:pipe("clicks", "u1", "c2")
    d:pipe("names", "u1", "Ada L.")
    d:pipe("clicks", "u1", "c3")
    d:pipe("names", "u1", nil)      -- tombstone: deleted
    d:pipe("clicks", "u1", "c4")
    assert.same({ "Ada:c2", "Ada L.:c3" }, values(d:read("joined")))
    assert.same({ "?:c1", "Ada:c2", "Ada L.:c3", "?:c4" }, values(d:read("left")))
  end)

  it("a table is restored from its own topic", function()
    local t = topo()
    local names = t:table("names")
    t:from("clicks"):join(names, function(v, name) return name .. ":" .. v end):to("joined")
    local d = stream.driver(t)
    d:pipe("names", "u1", "Ada")
    d:restart()
    d:pipe("clicks", "u1", "c1")
    assert.same({ "Ada:c1" }, values(d:read("joined")))
  end)
end)
