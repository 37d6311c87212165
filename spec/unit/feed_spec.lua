-- app:subscribe (sluice.app.feed) against the real C core and the embedded
-- broker, in one process: positions, resuming with no gap and no
-- duplicate, a re-created topic's position (the epoch) and one past the end
-- refused, a position that is not one, and the concurrency bound.
local cjson = require "cjson"
local Feed = require "sluice.app.feed"
local support = require "unit.support"

local wait = support.wait

describe("sluice.app.feed positions", function()
  it("decodes the text form and refuses what is not one", function()
    assert.are.same({ [0] = { 15, 1700000000000 }, [3] = { 0, -1 } }, Feed.decode("0:15:1700000000000,3:0:-1"))
    assert.are.same({}, Feed.decode(""))
    assert.are.same({ nil, 'not a position: "0:x"' }, { Feed.decode("0:x") })
    assert.are.same({ nil, 'not a position: "1:2:3"' }, { Feed.decode("1:2:3,1:2:3") })
    assert.are.same({ nil, 'not a position: "1:2:-2"' }, { Feed.decode("1:2:-2") })
    assert.are.same({ nil, "a position is a string" }, { Feed.decode(5) })
  end)
end)

describe("app:subscribe", function()
  local app
  local TOPIC = "feed-unit"
  local replies = {}   -- conn id → { ok, why }

  setup(function()
    app = support.app { name = "unit-feed", catchups = 1 }
    app:ws("/sub", {
      open = function(conn)
        local ok, err = app:subscribe(conn, TOPIC, {
          since = conn.query.since, positions = true,
          recovered = function(rec_ok, why)
            replies[conn.id] = { rec_ok, why }
            conn:send(cjson.encode({ recovered = rec_ok, why = why }))
          end,
        })
        if not ok then conn:send(cjson.encode({ error = err })) end
      end,
    })
    assert(app:start())
  end)
  teardown(function() app:close() end)

  local function url_encode(s)
    return (s:gsub("[^%w%-_%.]", function(c) return ("%%%02X"):format(c:byte()) end))
  end

  -- A client on /sub (resuming from since); its messages decoded.
  local function subscriber(since)
    local c = support.open_client(app, "/sub" .. (since and "?since=" .. url_encode(since) or ""))
    function c.decoded()
      local out = {}
      for i, m in ipairs(c.messages) do out[i] = cjson.decode(m[1]) end
      return out
    end
    return c
  end

  local function produce(first, last, prefix)
    for i = first, last do
      assert(app:produce(TOPIC, { key = "k" .. (i % 7), value = prefix .. i }))
    end
  end

  local kept   -- the first subscriber's last position

  it("resumes from a position: every record missed, once, in offset order, then live ones", function()
    local c1 = subscriber()
    wait(app, function() return app:position(TOPIC) end, "the feed's partitions")
    produce(1, 30, "a")
    wait(app, function() return #c1.messages >= 30 end, "30 live records")
    local got = c1.decoded()
    kept = got[30].position
    assert.are.equal(app:position(TOPIC), kept)
    c1.conn:close()
    wait(app, function() return c1.closed end, "close")

    produce(1, 500, "b")
    wait(app, function() return app:position(TOPIC) ~= kept and app.counters.consumed >= 530 end, "b consumed")
    local c2 = subscriber(kept)
    wait(app, function() return #c2.messages >= 501 end, "the catch-up")
    produce(1, 20, "c")
    wait(app, function() return #c2.messages >= 521 end, "live after the catch-up")
    support.settle(app, 0.2)
    local msgs = c2.decoded()
    assert.are.same({ recovered = true }, msgs[1])
    assert.are.equal(521, #msgs)
    local next_at = {}
    for p, n in kept:gmatch "(%d+):(%d+):" do next_at[tonumber(p)] = tonumber(n) end
    local values = {}
    for i = 2, #msgs do
      local m = msgs[i]
      assert.are.equal(next_at[m.partition], m.offset)
      next_at[m.partition] = m.offset + 1
      assert.is_nil(values[m.value], "twice: " .. m.value)
      values[m.value] = true
      assert.are.equal(TOPIC, m.topic)
    end
    for i = 1, 500 do assert(values["b" .. i], "missing b" .. i) end
    for i = 1, 20 do assert(values["c" .. i], "missing c" .. i) end
    assert.are.equal(app:position(TOPIC), msgs[#msgs].position)
    c2.conn:close()
  end)

  it("refuses a position whose record is not the one it saw (the topic was re-created)", function()
    local p, n, ts = kept:match "(%d+):(%d+):(%d+)"
    assert(p, "the kept position has a partition with a record seen")
    local forged = kept:gsub(p .. ":" .. n .. ":" .. ts, p .. ":" .. n .. ":" .. (tonumber(ts) - 1))
    local c = subscriber(forged)
    local first = cjson.decode((support.message(app, c, 1)))
    assert.is_false(first.recovered)
    assert.matches("^EPOCH: feed%-unit %[" .. p .. "%]: the record at offset " .. (n - 1) ..
      " is not the position's %(timestamp " .. ts .. ", not " .. (ts - 1) .. "%)", first.why)
    -- then the live stream
    produce(1, 1, "d")
    local live = cjson.decode((support.message(app, c, 2)))
    assert.are.equal("d1", live.value)
    c.conn:close()
  end)

  it("refuses a position past a partition's end", function()
    local c = subscriber("0:100000:-1")
    local first = cjson.decode((support.message(app, c, 1)))
    assert.is_false(first.recovered)
    assert.matches("^EPOCH: feed%-unit %[0%] ends at offset %d+, before the position's 100000", first.why)
    c.conn:close()
  end)

  it("answers a position that is not one with INVALID", function()
    local c = subscriber("zero")
    assert.are.same({ error = 'INVALID: not a position: "zero"' }, cjson.decode((support.message(app, c, 1))))
    c.conn:close()
  end)

  it("runs at most `catchups` catch-ups at once; the others wait and still get everything", function()
    local a = subscriber(kept)
    local b = subscriber(kept)
    local feed = app.feeds[TOPIC]
    assert.are.equal(1, feed.running)
    assert.are.equal(1, #feed.waiting)
    wait(app, function() return feed:state(a.conn) == nil or (feed:state(a.conn) == "live" and feed:state(b.conn) == "live") end,
      "both caught up")
    -- 500 b, 20 c, 1 d after the kept position, and the reply
    wait(app, function() return #a.messages >= 522 and #b.messages >= 522 end, "both complete")
    support.settle(app, 0.2)
    assert.are.equal(522, #a.messages)
    assert.are.equal(522, #b.messages)
    assert.are.equal(0, feed.running)
  end)
end)

describe("app:sse", function()
  local app
  local socket = require "socket"
  local TOPIC = "sse-unit"

  setup(function()
    app = support.app { name = "unit-sse" }
    app:sse("/events", function(stream)
      assert(app:subscribe(stream, TOPIC, { since = stream.last_event_id }))
    end, { retry = 250 })
    assert(app:start())
  end)
  teardown(function() app:close() end)

  -- GET /events (with Last-Event-ID); reads until `until_text` is in what
  -- came. Returns the response text so far, and the socket.
  local function events(last_id, until_text)
    local tcp = assert(socket.tcp())
    assert(tcp:connect("127.0.0.1", app.port))
    tcp:settimeout(0)
    tcp:send("GET /events HTTP/1.1\r\nHost: x\r\n" ..
      (last_id and ("Last-Event-ID: " .. last_id .. "\r\n") or "") .. "\r\n")
    local buf = ""
    wait(app, function()
      local data, _, partial = tcp:receive(8192)
      buf = buf .. (data or partial or "")
      return buf:find(until_text, 1, true)
    end, "SSE text " .. until_text)
    return buf, tcp
  end

  it("streams records as events whose id is the position, and resumes from Last-Event-ID", function()
    local text, tcp = events(nil, "retry: 250\n\n")
    assert.matches("^HTTP/1.1 200 OK\r\n", text)
    assert.matches("\r\ncontent%-type: text/event%-stream; charset=utf%-8\r\n", text:lower())
    assert.is_nil(text:lower():find("content-length", 1, true))
    wait(app, function() return app:position(TOPIC) end, "the feed")
    for i = 1, 3 do assert(app:produce(TOPIC, { key = "k", value = "line " .. i .. "\nsecond" })) end
    local more = ""
    wait(app, function()
      local data, _, partial = tcp:receive(8192)
      more = more .. (data or partial or "")
      return select(2, more:gsub("\n\n", "")) >= 3
    end, "3 events")
    local ids = {}
    for id, n in more:gmatch("id: ([^\n]+)\ndata: line (%d)\ndata: second\n\n") do ids[tonumber(n)] = id end
    assert.are.equal(3, #ids)
    assert.are.equal(app:position(TOPIC), ids[3])
    tcp:close()
    assert(app:produce(TOPIC, { key = "k", value = "probe" }))
    wait(app, function() return next(app.feeds[TOPIC].subs) == nil end,
      "the stream's subscription to go with it", 3)

    -- back with the first event's id: events 2 and 3 and the probe, told it recovered
    local again, tcp2 = events(ids[1], "data: probe\n\n")
    local want = 'retry: 250\n\nevent: recovered\ndata: {"recovered":true}\n\n' ..
      "id: " .. ids[2] .. "\ndata: line 2\ndata: second\n\n" ..
      "id: " .. ids[3] .. "\ndata: line 3\ndata: second\n\n" ..
      "id: " .. app:position(TOPIC) .. "\ndata: probe\n\n"
    assert.are.equal(want, again:sub(-#want))
    assert.are.equal("\r\n\r\n", again:sub(-#want - 4, -#want - 1))
    tcp2:close()
  end)
end)

describe("app:feed", function()
  it("starts a topic's feed with the app, and readiness waits for its partitions", function()
    local ops = require "sluice.ops"
    local app = support.app { name = "unit-feed-decl" }
    app:feed("feed-decl")
    assert(app:start())
    local feed = app.feeds["feed-decl"]
    assert.is_table(feed)
    -- (partitions reach the app on the loop thread: not before it runs)
    assert.are.same({ { "consumers", "subscriptions to feed-decl: no partitions yet" } }, ops.not_ready(app))
    wait(app, function() return feed.ready end, "the feed's partitions")
    assert.are.same({}, ops.not_ready(app))
    assert.are.equal(4, app:stats().assigned)
    app:close()
  end)
end)

describe("a feed's live subscribers", function()
  local app
  local TOPIC = "feed-groups"
  local function upper(rec) return rec.value:upper() end

  setup(function()
    app = support.app { name = "unit-feed-groups" }
    app:ws("/raw", { open = function(conn) assert(app:subscribe(conn, TOPIC)) end })
    app:ws("/upper", { open = function(conn) assert(app:subscribe(conn, TOPIC, { format = upper })) end })
    assert(app:start())
  end)
  teardown(function() app:close() end)

  it("are one connection set per format, which a closed connection leaves", function()
    local r1, r2 = support.open_client(app, "/raw"), support.open_client(app, "/raw")
    local u = support.open_client(app, "/upper")
    local feed = app.feeds[TOPIC]
    wait(app, function() return feed.ready and feed.groups[upper] end, "the feed and its subscribers")
    assert.are.equal("sluice.ws.conn_set (2)", tostring(feed.groups.raw))
    assert.are.equal(1, #feed.groups[upper])
    for i = 1, 3 do assert(app:produce(TOPIC, { key = "k", value = "v" .. i })) end
    wait(app, function() return #r1.messages >= 3 and #r2.messages >= 3 and #u.messages >= 3 end, "3 records each")
    for _, c in ipairs({ r1, r2 }) do
      assert.are.same({ "v1", "v2", "v3" }, { c.messages[1][1], c.messages[2][1], c.messages[3][1] })
    end
    assert.are.same({ "V1", "V2", "V3" }, { u.messages[1][1], u.messages[2][1], u.messages[3][1] })
    r1.conn:close()
    u.conn:close()
    wait(app, function() return feed.groups[upper] == nil end, "the emptied group gone")
    assert.are.equal(1, #feed.groups.raw)
    assert(app:produce(TOPIC, { key = "k", value = "v4" }))
    assert.are.equal("v4", (support.message(app, r2, 4)))
    r2.conn:close()
    wait(app, function() return next(feed.groups) == nil end, "no group left")
  end)

  it("take a WebSocket connection or a conn-like table, no other userdata", function()
    local ok, err = pcall(app.subscribe, app, require("sluice.core").conn_set(), TOPIC)
    assert.is_false(ok)
    assert.matches("bad argument #1 to 'subscribe' (a WebSocket connection expected, got sluice.ws.conn_set (0))",
      err, 1, true)
  end)
end)
