-- Hot reload under sustained load: `sluice run app.lua --watch` while an
-- independent client (spec/clients/seqload.js, node `ws`) offers 22,000
-- rows/s with sequence numbers per key and waits for every ack. The
-- handler module is rewritten 20 times (half by temp file + rename, as
-- editors save), 5 of them broken. Afterwards, read back with kcat: every
-- sequence number is in Kafka exactly once and in order per key, each
-- message was handled wholly by one version, versions only move forward,
-- every good version handled messages and no broken one did; no
-- connection was dropped and every ack arrived. On Apache Kafka (the
-- suite's shared broker), into a topic of this run's own with 4
-- partitions: per-key order is per-partition order, checked by the broker's
-- own producer sequence checks and by ours.
--
-- The second spec does the same to a declared route (rows produced and
-- acked in C): each rewrite declares another topic and the other key
-- field, while spec/clients/load.js sends arrays of movie rows and waits
-- for one ack per row.
local H = require "integration.helper"
local json = H.json
local TOPIC = H.prefix "reload_load" .. "seq"

local APP = [[
local sluice = require "sluice"
local handler = require "handler"
local app = sluice.app { name = "reload-load" }
app:ws("/seq", handler.routes(app))
app:http("GET", "/healthz", function()
  return 200, { status = "ok", marker = handler.marker, handled = handler.handled }
end)
return app
]]

-- A good handler: produces each row (key, "marker msgid seq") and acks
-- the message once Kafka has all of its rows.
local function good(marker)
  return ([[
local M = { marker = %q, topic = %q, handled = 0 }
function M.routes(app)
  return {
    message = function(conn, data)
      M.handled = M.handled + 1
      local id, body = data:match("^([^\n]*)\n(.*)$")
      local rows = {}
      for key, seq in body:gmatch("(%%S+) (%%d+)") do rows[#rows + 1] = { key, seq } end
      -- No rows (seqload.js's last message): acked at once.
      if #rows == 0 then return conn:send(('{"ack":%%q,"marker":%%q,"rows":0}'):format(id, M.marker)) end
      local left, failed = #rows, nil
      local function done(err)
        if err and not failed then failed = err end
        left = left - 1
        if left == 0 then
          if failed then conn:send(('{"error":%%q,"id":%%q}'):format(failed, id))
          else conn:send(('{"ack":%%q,"marker":%%q,"rows":%%d}'):format(id, M.marker, #rows)) end
        end
      end
      for _, r in ipairs(rows) do
        local ok, err = app:produce(M.topic, { key = r[1], value = M.marker .. " " .. id .. " " .. r[2] }, done)
        if not ok then done(err) end
      end
    end,
  }
end
return M
]]):format(marker, TOPIC)
end

-- Five ways to break it; each still names its marker, which must never
-- show up in Kafka.
local BROKEN = {
  function(m) return ("local M = { marker = %q }\nfunction M.routes(app)\n  return { message = function(conn, data) end\nend\nreturn M\n"):format(m) end, -- syntax
  function(m) return ("local M = { marker = %q }\nerror(\"broken on purpose at load\")\nreturn M\n"):format(m) end,           -- runtime error
  function(m) return ("local M = { marker = %q }\nfunction M.routes(app) return { message = %q } end\nreturn M\n"):format(m, m) end, -- wrong shape
  function(m) return ("return { marker = %q }\n"):format(m) end,                                                          -- no routes()
  function(m) return ("local M = { marker = %q }\nfunction M.routes(app) return { message = function() end, close = 42 } end\nreturn M\n"):format(m) end,
}

describe("hot reload under sustained load", function()
  local gw, dir

  teardown(function()
    if gw then gw:stop() end
    H.cleanup()
  end)

  it("loses nothing, duplicates nothing and drops no connection across 20 rewrites", function()
    dir = H.tmpdir()
    H.write(dir .. "/app.lua", APP)
    H.write(dir .. "/handler.lua", good "v1")
    local kafka = H.kafka()
    H.create_topic(kafka, TOPIC, 4)
    gw = H.start { app = dir .. "/app.lua", kafka = kafka, args = { "--watch", "--watch-debounce", "50" } }

    -- The load goes on until the rewrites are done (the stop file).
    local stop = dir .. "/stop"
    local client = H.client_bg("seqload.js", { "--url", gw.url .. "/seq", "--connections", "4",
      "--rate", "22000", "--batch", "100", "--duration", "5", "--keys", "8", "--window", "50",
      "--timeout", "180", "--stop-file", stop })
    local function serving(marker)
      return H.wait_for(30, function()
        local status, body = H.http_json(gw.port, "/healthz")
        return status == 200 and body.marker == marker and body.handled > 0
      end, 0.02)
    end
    assert(serving "v1", "v1 handled no message; stderr:\n" .. gw:stderr())

    local broken_at = { [3] = 1, [7] = 2, [11] = 3, [15] = 4, [18] = 5 }
    local good_markers, broken_markers = { "v1" }, {}
    local generation, failures = 1, 0
    for i = 2, 21 do
      local marker = "v" .. i
      local text
      if broken_at[i] then
        text = BROKEN[broken_at[i]](marker)
        broken_markers[marker] = true
      else
        text = good(marker)
        good_markers[#good_markers + 1] = marker
      end
      if i % 2 == 0 then
        H.write(dir .. "/.handler.lua.tmp", text)
        assert(os.rename(dir .. "/.handler.lua.tmp", dir .. "/handler.lua"))
      else
        H.write(dir .. "/handler.lua", text)
      end
      if broken_at[i] then failures = failures + 1 else generation = generation + 1 end
      local h = H.wait_for(10, function()
        local status, body = H.http_json(gw.port, "/_sluice/health")
        if status == 200 and body.generation == generation and body.reload_failures == failures then
          return body
        end
      end, 0.02)
      assert(h, ("rewrite %d (%s): no reload seen; stderr:\n%s"):format(i, marker, gw:stderr()))
      if broken_at[i] then
        assert.are.equal("reload_failed", h.status)
        assert.matches("%.lua:%d+:", h.last_reload_error)
      else
        assert.are.equal("ok", h.status)
        -- Each good version handles messages before the next rewrite.
        assert(serving(marker), marker .. " handled no message; stderr:\n" .. gw:stderr())
      end
    end
    H.write(stop, "")

    local r = client:result(180)
    print(("\n  seqload: %d rows in %d messages, %d rows/s acknowledged over %.1f s of sending"):format(
      r.sent_rows, r.sent_msgs, r.rows_per_s, r.send_ms / 1000))
    assert.is_nil(r.timed_out)
    assert.are.same({}, r.errors)
    assert.are.equal(0, r.error_count)
    assert.are.equal(0, r.missing)
    assert.are.equal(0, r.duplicates)
    assert.are.equal(0, r.unexpected)
    assert.are.equal(r.sent_msgs, r.acks)
    assert.are.equal(r.sent_rows, r.acked_rows)
    assert.are.equal(4, #r.closes)
    for _, c in ipairs(r.closes) do assert.are.equal("client", c.by) end
    assert.is_true(r.sent_rows >= 100000, "too little load to mean anything: " .. r.sent_rows)

    -- Kafka: every seq of every key exactly once, in order; each message
    -- wholly one version; versions only move forward per connection.
    local records = H.kcat_consume(kafka, TOPIC, r.sent_rows, 60)
    assert.are.equal(r.sent_rows, #records)
    local last_seq, msg_marker, conn_version = {}, {}, {}
    local seen_markers = {}
    for _, rec in ipairs(records) do
      local marker, id, seq = rec.value:match("^(v%d+) (%S+) (%d+)$")
      assert(marker, "unexpected record value: " .. rec.value)
      seq = tonumber(seq)
      local want = (last_seq[rec.key] or 0) + 1
      if seq ~= want then
        error(("key %s: seq %d after %d (lost, duplicated or reordered)"):format(rec.key, seq, want - 1))
      end
      last_seq[rec.key] = seq
      if msg_marker[id] and msg_marker[id] ~= marker then
        error(("message %s handled by both %s and %s"):format(id, msg_marker[id], marker))
      end
      msg_marker[id] = marker
      seen_markers[marker] = true
    end
    for key, max in pairs(r.keys) do assert.are.equal(max, last_seq[key], "last seq of " .. key) end
    -- per connection, in message order, the version never goes back
    local by_conn = {}
    for id, marker in pairs(msg_marker) do
      local c, n = id:match("^(%d+)-(%d+)$")
      by_conn[c] = by_conn[c] or {}
      by_conn[c][tonumber(n)] = tonumber(marker:sub(2))
    end
    for c, list in pairs(by_conn) do
      local prev = 1
      for n = 1, #list do
        assert(list[n], ("conn %s: message %d missing from Kafka"):format(c, n))
        assert(list[n] >= prev, ("conn %s: message %d handled by v%d after v%d"):format(c, n, list[n], prev))
        prev = list[n]
      end
    end
    for _, m in ipairs(good_markers) do assert.is_true(seen_markers[m] == true, "no output from " .. m) end
    for m in pairs(broken_markers) do assert.is_nil(seen_markers[m], "output from broken " .. m) end

    local status, h = H.http_json(gw.port, "/_sluice/health")
    assert.are.equal(200, status)
    assert.are.equal(16, h.generation)
    assert.are.equal(15, h.reloads)
    assert.are.equal(5, h.reload_failures)
    local log = gw:stderr()
    assert.matches("reload: generation 16 serving %(changed: [^)]*handler%.lua; load [%d.]+ ms, swap [%d.]+ ms%)", log)
    assert.matches("reload failed, generation %d+ keeps serving: [^\n]*handler%.lua:%d+:", log)
    local code = gw:stop()
    assert.are.equal(0, code)
  end)
  it("swaps a declared route's topic and key mid-stream: every row once, every ack", function()
    local D = H.prefix "reload_decl"
    local rdir = H.tmpdir()
    -- version i stores into topic D..i, keyed by actorId (odd i) or movieId (even i)
    local function route_version(i, bad_key)
      return ([[
local M = { version = %d }
function M.routes(app)
  return {
    route = { schema = require("rows").SCHEMA, topic = %q, key = %q, ack = "id" },
    -- what the route does not take: load.js's closing marker
    message = function(conn, data)
      if data == '{"subscribe":"other"}' then return conn:send('{"error":"unknown subscription"}') end
      conn:send('{"error":"unexpected"}')
    end,
  }
end
return M
]]):format(i, D .. i, bad_key or (i % 2 == 1 and "actorId" or "movieId"))
    end
    H.write(rdir .. "/app.lua", ([[
package.path = %q .. "/?.lua;" .. package.path
local sluice = require "sluice"
local handler = require "handler"
local app = sluice.app { name = "reload-decl" }
app:ws("/rows", handler.routes(app))
app:http("GET", "/healthz", function()
  local produced = {}
  for _, t in ipairs(app.producer and app.producer:topics() or {}) do produced[t.topic] = t.delivered end
  return 200, { status = "ok", version = handler.version, delivered = produced }
end)
return app
]]):format(H.root .. "/scripts/apps/movies"))
    H.write(rdir .. "/handler.lua", route_version(1))
    local kafka = H.kafka()
    local topics = {}
    for i = 1, 6 do topics[i] = D .. i end
    H.create_topic(kafka, topics, 4)
    local rgw = H.start { app = rdir .. "/app.lua", kafka = kafka, args = { "--watch", "--watch-debounce", "50" } }
    local function stored(topic)
      local status, body = H.http_json(rgw.port, "/healthz")
      return status == 200 and (body.delivered[topic] or 0) or 0
    end
    -- 4 connections, arrays of 10 rows, one array per ms each at most
    local ROWS = 200000
    local client = H.client_bg("load.js", { "--url", rgw.url .. "/rows", "--connections", "4",
      "--rows", tostring(ROWS), "--batch", "10", "--interval", "1", "--prefix", "D", "--timeout", "180" })
    local generation = 1
    assert(H.wait_for(30, function() return stored(D .. 1) > 0 end, 0.02), "v1 stored nothing")
    -- v2..v6; v4 declares a key field the schema lacks: refused, v3 serves on
    for i = 2, 6 do
      H.write(rdir .. "/handler.lua", route_version(i, i == 4 and "nope" or nil))
      if i ~= 4 then generation = generation + 1 end
      local h = H.wait_for(10, function()
        local status, body = H.http_json(rgw.port, "/_sluice/health")
        if status == 200 and body.generation == generation and body.reload_failures == (i >= 4 and 1 or 0) then
          return body
        end
      end, 0.02)
      assert(h, ("rewrite %d: no reload seen; stderr:\n%s"):format(i, rgw:stderr()))
      if i == 4 then
        assert.matches("key field 'nope' is not in the schema", h.last_reload_error)
      else
        assert(H.wait_for(30, function() return stored(D .. i) > 0 end, 0.02),
          ("v%d stored nothing (the load ended first?)"):format(i))
      end
    end
    local r = client:result(180)
    local closes = {}
    for k = 1, 4 do closes[k] = { code = 1000, reason = "", by = "client" } end
    r.elapsed_ms = nil
    assert.are.same({ sent = ROWS, acks = ROWS, duplicates = 0, unexpected = 0, missing = 0,
                      error_count = 0, errors = {}, other = {}, closes = closes }, r)

    -- Kafka: each row once, in the topic of one version, keyed as that
    -- version declared; per connection the version never goes back.
    local version_of, total = {}, 0
    for i = 1, 6 do
      local want = i == 4 and 0 or stored(D .. i)
      local records = i == 4 and {} or H.kcat_consume(kafka, D .. i, want, 60)
      assert.are.equal(want, #records, "records in " .. D .. i)
      total = total + #records
      for _, rec in ipairs(records) do
        local row = json.decode(rec.value)
        assert.are.equal(i % 2 == 1 and row.actorId or row.movieId, rec.key)
        assert.is_nil(version_of[row.id], "stored twice: " .. row.id)
        version_of[row.id] = i
      end
    end
    assert.are.equal(ROWS, total)
    for c = 0, 3 do
      local prev = 1
      for seq = c, ROWS - 1, 4 do
        local v = version_of[("D%d-%d"):format(c, seq)]
        assert(v, ("row D%d-%d not in Kafka"):format(c, seq))
        assert(v >= prev, ("conn %d: row %d stored by v%d after v%d"):format(c, seq, v, prev))
        prev = v
      end
    end
    assert.are.equal(0, rgw:stop())
  end)
end)
