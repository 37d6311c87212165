-- The movies app's rows: decoding, validation and encoding
-- (scripts/apps/movies/rows.lua), with the exact texts a client sees.
local rows = require "apps.movies.rows"
local cjson = require "cjson"

local function row(overrides)
  local r = { actorName = "Tom Hanks", actorId = "nm0000158", movieId = "tt0109830",
              movieName = "Forrest Gump", movieMinutes = 142 }
  for k, v in pairs(overrides or {}) do
    if v == false then r[k] = nil else r[k] = v end
  end
  return r
end

describe("movies rows", function()
  describe("decode", function()
    it("tells an array from an object, including empty ones", function()
      assert.same({ "array", {} }, { rows.decode(" [ ] ") })
      assert.same({ "object", {} }, { rows.decode("{}") })
      local kind, v = rows.decode('[{"a":1},{"b":2}]')
      assert.equal("array", kind)
      assert.same({ { a = 1 }, { b = 2 } }, v)
      assert.same({ "scalar", 42 }, { rows.decode("42") })
    end)

    it("reports malformed JSON with the decoder's message", function()
      assert.same({ nil, "malformed JSON: Expected object key string but found invalid token at character 2" },
        { rows.decode("{bad") })
      assert.same({ nil, "malformed JSON: Expected value but found T_END at character 1" },
        { rows.decode("") })
      assert.same({ nil, "malformed JSON: Expected comma or array end but found T_END at character 5" },
        { rows.decode("[1,2") })
    end)

    it("refuses NaN, Infinity and hex numbers", function()
      local kind, err = rows.decode('{"movieMinutes": NaN}')
      assert.is_nil(kind)
      assert.equal("malformed JSON: Expected value but found invalid token at character 18", err)
      assert.is_nil((rows.decode("[0x10]")))
    end)
  end)

  describe("check", function()
    it("accepts a complete row, with or without id", function()
      assert.is_nil(rows.check(row()))
      assert.is_nil(rows.check(row { id = "r-1" }))
      assert.is_nil(rows.check(row { id = 7 }))
      assert.is_nil(rows.check(row { movieMinutes = 0 }))
    end)

    it("names each missing or empty string field", function()
      for _, f in ipairs { "actorName", "actorId", "movieId", "movieName" } do
        local expected = "invalid row: " .. f .. " must be a non-empty string"
        assert.equal(expected, rows.check(row { [f] = false }))
        assert.equal(expected, rows.check(row { [f] = "" }))
        assert.equal(expected, rows.check(row { [f] = 12 }))
        assert.equal(expected, rows.check(row { [f] = cjson.null }))
      end
    end)

    it("checks fields in a fixed order", function()
      assert.equal("invalid row: actorName must be a non-empty string", rows.check({}))
      assert.equal("invalid row: movieId must be a non-empty string",
        rows.check(row { movieId = false, movieName = false }))
    end)

    it("wants movieMinutes a finite, non-negative number", function()
      local expected = "invalid row: movieMinutes must be a non-negative number"
      assert.equal(expected, rows.check(row { movieMinutes = false }))
      assert.equal(expected, rows.check(row { movieMinutes = "142" }))
      assert.equal(expected, rows.check(row { movieMinutes = -1 }))
      assert.equal(expected, rows.check(row { movieMinutes = math.huge }))
      assert.equal(expected, rows.check(row { movieMinutes = cjson.null }))
      -- 1e999 is valid JSON but decodes to infinity
      local _, decoded = rows.decode('{"actorName":"a","actorId":"b","movieId":"c","movieName":"d","movieMinutes":1e999}')
      assert.equal(expected, rows.check(decoded))
    end)

    it("wants id, when present, a string or a number", function()
      local expected = "invalid row: id must be a string or a number"
      assert.equal(expected, rows.check(row { id = true }))
      assert.equal(expected, rows.check(row { id = cjson.null }))
      assert.equal(expected, rows.check(row { id = { 1 } }))
    end)

    it("refuses a row that is not an object", function()
      local expected = "invalid row: row must be a JSON object"
      assert.equal(expected, rows.check(42))
      assert.equal(expected, rows.check("row"))
      assert.equal(expected, rows.check(cjson.null))
      assert.equal(expected, rows.check({ row() }))
    end)

    it("names an unknown field (the first, sorted)", function()
      assert.equal("invalid row: extra is not a known field", rows.check(row { extra = 1 }))
      assert.equal("invalid row: a is not a known field", rows.check(row { z = 1, a = 2 }))
    end)
  end)

  describe("id", function()
    it("is the row's own valid id, else nil", function()
      assert.equal("r-1", rows.id(row { id = "r-1" }))
      assert.equal(7, rows.id(row { id = 7 }))
      assert.is_nil(rows.id(row()))
      assert.is_nil(rows.id(row { id = true }))
      assert.is_nil(rows.id(42))
    end)
  end)

  describe("encode", function()
    it("writes the fields in a fixed order", function()
      assert.equal('{"id":"r-1","actorName":"Tom Hanks","actorId":"nm0000158",'
        .. '"movieId":"tt0109830","movieName":"Forrest Gump","movieMinutes":142}',
        rows.encode(row { id = "r-1" }))
      assert.equal('{"actorName":"Tom Hanks","actorId":"nm0000158",'
        .. '"movieId":"tt0109830","movieName":"Forrest Gump","movieMinutes":142}',
        rows.encode(row()))
    end)

    it("keeps large integers and fractions exact", function()
      local _, r = rows.decode('{"id":9007199254740993,"actorName":"a","actorId":"b",'
        .. '"movieId":"c","movieName":"d","movieMinutes":0.1}')
      assert.is_nil(rows.check(r))
      -- 9007199254740993 is not a double: the decoder gives 9007199254740992
      assert.equal('{"id":9007199254740992,"actorName":"a","actorId":"b",'
        .. '"movieId":"c","movieName":"d","movieMinutes":0.1}', rows.encode(r))
      local _, back = rows.decode(rows.encode(row { id = 123456789012345, movieMinutes = 1 / 3 }))
      assert.equal(123456789012345, back.id)
      assert.equal(1 / 3, back.movieMinutes)
    end)

    it("round-trips non-ASCII and escapes", function()
      local r = row { actorName = "Zoë \"Q\" Saldaña\n", movieName = "AC/DC" }
      local _, back = rows.decode(rows.encode(r))
      assert.same(r, back)
    end)
  end)

  describe("object", function()
    it("writes frames in the given key order and skips nil", function()
      assert.equal('{"ack":3}', rows.object("ack", 3))
      assert.equal('{"ack":"r-1"}', rows.object("ack", "r-1"))
      assert.equal('{"error":"binary frames are not accepted"}',
        rows.object("error", "binary frames are not accepted", "id", nil))
      -- beyond 2^53: the shortest text that reads back as the same double
      assert.equal('{"error":"invalid row: x","id":1.2345678901234567e+19}',
        rows.object("error", "invalid row: x", "id", 12345678901234567890))
      assert.equal('{"ack":-0.5}', rows.object("ack", -0.5))
    end)
  end)
end)

-- The movies app itself, loaded in this process on free ports (through
-- sluice.overrides, as `sluice run --listen 0 --embedded-port 0` would).
describe("movies app", function()
  local sluice = require "sluice"
  local support = require "unit.support"
  local app

  setup(function()
    local saved = sluice.overrides
    sluice.overrides = { listen = 0, embedded_port = 0, log_level = "warn" }
    app = assert(loadfile("scripts/apps/movies/app.lua"))()
    sluice.overrides = saved
    assert(app:start())
  end)
  teardown(function() if app then app:close() end end)

  -- an id as text: numbers decoded by cjson are floats on Lua 5.4
  local function id_text(v)
    return type(v) == "number" and string.format("%.0f", v) or tostring(v)
  end

  local function decoded(c)
    local out = {}
    for i, m in ipairs(c.messages) do out[i] = cjson.decode(m[1]) end
    return out
  end

  it("acks rows by id or sequence number, and reports bad ones", function()
    local c = support.open_client(app, "/")
    c.conn:send(cjson.encode(row { id = "A1" }))
    c.conn:send(cjson.encode { row(), row { actorId = "" }, row { id = 77 } })
    c.conn:send("{oops")
    c.conn:send("\1\2", true)
    support.wait(app, function() return #c.messages >= 6 end, "six replies", 20)
    support.settle(app, 0.2)
    local got = decoded(c)
    assert.equal(6, #got)
    -- errors come at once, acks once Kafka has the rows
    assert.same({ error = "invalid row: actorId must be a non-empty string", id = 3 }, got[1])
    assert.same({ error = "malformed JSON: Expected object key string but found invalid token at character 2" }, got[2])
    assert.same({ error = "binary frames are not accepted" }, got[3])
    local acks = {}
    for i = 4, 6 do acks[#acks + 1] = id_text(got[i].ack) end
    table.sort(acks)
    assert.same({ "2", "77", "A1" }, acks)
    assert.is_true(c.conn:is_open())
    c.conn:close()
  end)

  it("stores rows keyed by actorId and dead-letters the rest with the reason", function()
    local results, dlq = {}, {}
    local c1 = app:consume("movie-results", { from = "earliest", group = "unit-movies-r" },
      function(rec) results[#results + 1] = rec end)
    local c2 = app:consume("movie-results.dlq", { from = "earliest", group = "unit-movies-d" },
      function(rec) dlq[#dlq + 1] = rec end)
    support.wait(app, function() return #results >= 3 and #dlq >= 3 end, "stored records", 30)
    local by_id = {}
    for _, rec in ipairs(results) do
      assert.equal("nm0000158", rec.key)
      by_id[id_text(cjson.decode(rec.value).id)] = rec.value
    end
    assert.equal('{"id":"A1","actorName":"Tom Hanks","actorId":"nm0000158","movieId":"tt0109830",'
      .. '"movieName":"Forrest Gump","movieMinutes":142}', by_id.A1)
    assert.is_string(by_id["77"])
    local errors = {}
    for _, rec in ipairs(dlq) do errors[rec.headers.error] = rec.value end
    assert.equal("{oops", errors["malformed JSON: Expected object key string but found invalid token at character 2"])
    assert.equal("\1\2", errors["binary frames are not accepted"])
    local bad = errors["invalid row: actorId must be a non-empty string"]
    assert.equal("", cjson.decode(bad).actorId)
    c1:close(); c2:close()
  end)

  it("answers /healthz with the gateway's counters", function()
    local res = support.http(app, "GET", "/healthz")
    assert.equal(200, res.status)
    local h = cjson.decode(res.body)
    assert.equal("ok", h.status)
    local keys = {}
    for k in pairs(h) do keys[#keys + 1] = k end
    table.sort(keys)
    assert.same({ "connections", "delivered", "delivery_failed", "handler_errors", "in_flight",
                  "produced", "status" }, keys)
    assert.is_true(h.delivered >= 6)      -- 3 rows + 3 dead letters
    assert.equal(0, h.handler_errors)
  end)

  it("forwards movie-stats records to subscribers on / and /stats", function()
    local a = support.open_client(app, "/stream")
    local b = support.open_client(app, "/stats")
    a.conn:send('{"subscribe":"other"}')
    a.conn:send('{"subscribe":"movie-stats"}')
    assert.same({ error = "unknown subscription: only movie-stats is offered" },
      cjson.decode((support.message(app, a, 1))))
    assert.equal('{"subscribed":"movie-stats"}', (support.message(app, a, 2)))
    -- the stats consumer starts at "latest" once assigned: produce until seen
    local n = 0
    support.wait(app, function()
      n = n + 1
      app:produce("movie-stats", '{"n":' .. n .. '}')
      support.settle(app, 0.2)
      return #a.messages >= 3 and #b.messages >= 1
    end, "stats records", 30)
    assert.matches('^{"n":%d+}$', a.messages[3][1])
    assert.matches('^{"n":%d+}$', b.messages[1][1])
    a.conn:close(); b.conn:close()
  end)
end)
