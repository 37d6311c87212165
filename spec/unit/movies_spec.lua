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

  -- A reply the app sends at once, without Kafka: whatever it sent before
  -- on the connection has arrived when this has.
  local MARKER, MARKER_REPLY = '{"subscribe":"other"}', '{"error":"unknown subscription: only movie-stats is offered"}'

  local ROW_A1 = '{"id":"A1","actorName":"Tom Hanks","actorId":"nm0000158","movieId":"tt0109830",'
    .. '"movieName":"Forrest Gump","movieMinutes":142}'

  it("acks rows by id or sequence number, and reports bad ones", function()
    local c = support.open_client(app, "/")
    c.conn:send(cjson.encode(row { id = "A1" }))
    c.conn:send(cjson.encode { row(), row { actorId = "" }, row { id = 77 } })
    c.conn:send("{oops")
    c.conn:send("\1\2", true)
    support.wait(app, function() return #c.messages >= 6 end, "six replies", 20)
    c.conn:send(MARKER)
    support.wait(app, function() return #c.messages >= 7 end, "the marker's reply", 20)
    -- Errors come at once, acks once Kafka has the rows: each kind in the
    -- order of its rows (one actor, one partition), and nothing else.
    local errors, acks = {}, {}
    for _, m in ipairs(c.messages) do
      local list = m[1]:match('^{"ack":') and acks or errors
      list[#list + 1] = m[1]
      assert.is_false(m[2])              -- text frames
    end
    assert.same({ '{"error":"invalid row: actorId must be a non-empty string","id":3}',
                  '{"error":"malformed JSON: Expected object key string but found invalid token at character 2"}',
                  '{"error":"binary frames are not accepted"}', MARKER_REPLY }, errors)
    assert.same({ '{"ack":"A1"}', '{"ack":2}', '{"ack":77}' }, acks)
    assert.equal(MARKER_REPLY, c.messages[7][1])
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
    -- One actor, one partition: the rows in the order they were sent.
    local stored = {}
    for i, rec in ipairs(results) do
      assert.equal("nm0000158", rec.key)
      stored[i] = rec.value
    end
    assert.same({ ROW_A1,
      '{"actorName":"Tom Hanks","actorId":"nm0000158","movieId":"tt0109830","movieName":"Forrest Gump","movieMinutes":142}',
      '{"id":77,"actorName":"Tom Hanks","actorId":"nm0000158","movieId":"tt0109830","movieName":"Forrest Gump","movieMinutes":142}',
    }, stored)
    -- Dead letters have no key (any partition): by reason, each once.
    local errors = {}
    for _, rec in ipairs(dlq) do
      assert.is_nil(rec.key)
      assert.is_nil(errors[rec.headers.error], "dead-lettered twice: " .. rec.headers.error)
      errors[rec.headers.error] = rec.value
    end
    local bad = errors["invalid row: actorId must be a non-empty string"]
    assert.same({
      ["malformed JSON: Expected object key string but found invalid token at character 2"] = "{oops",
      ["binary frames are not accepted"] = "\1\2",
      ["invalid row: actorId must be a non-empty string"] = bad,
    }, errors)
    assert.same(row { actorId = "" }, cjson.decode(bad))
    c1:close(); c2:close()
  end)

  it("runs its stream processing on the stored rows (processing.lua)", function()
    local actor
    local c = app:consume("movie-stats", { from = "earliest", group = "unit-movies-s" }, function(rec)
      local ok, v = pcall(cjson.decode, rec.value)
      if ok and type(v) == "table" and v.type == "actor" and v.actorId == "nm0000158" then actor = v end
    end)
    -- Updates follow the rows; the last one counts all three.
    support.wait(app, function() return actor and actor.rows == 3 end, "the actor's totals", 60)
    assert.same({ type = "actor", actorId = "nm0000158", actorName = "Tom Hanks",
                  movies = 1, minutes = 3 * 142, rows = 3 }, actor)
    c:close()
  end)

  it("answers the page's form on /api/fetch from the data set", function()
    local res = support.http(app, "GET", "/api/fetch?actor=brad+pitt,%20Uma%20Thurman&movie=Pulp+Fiction,Fight%20Club,Nope")
    assert.equal(200, res.status)
    assert.equal("application/json", res.headers["content-type"])
    local body = cjson.decode(res.body)
    local got = {}
    for i, r in ipairs(body.rows) do got[i] = r.actorName .. " / " .. r.movieName end
    assert.same({ "Uma Thurman / Pulp Fiction", "Brad Pitt / Fight Club" }, got)
    assert.same({ actors = {}, movies = { "Nope" } }, body.unknown)
    assert.matches('"actors":%[%]', res.body)            -- a list, even when empty
    res = support.http(app, "GET", "/api/fetch?actor=%20,%20&movie=")
    assert.equal(400, res.status)
    assert.same({ error = "type an actor and/or a movie name" }, cjson.decode(res.body))
    res = support.http(app, "GET", "/")
    assert.equal(200, res.status)
    assert.matches("<title>sluice · movies</title>", res.body, 1, true)
  end)

  it("answers /healthz with the gateway's counters", function()
    -- processing.lua keeps producing records of its own: each count lies
    -- between the app's counts before and after the request.
    local before = app:stats()
    local res = support.http(app, "GET", "/healthz")
    local after = app:stats()
    assert.equal(200, res.status)
    local h = cjson.decode(res.body)
    local keys = {}
    for k in pairs(h) do keys[#keys + 1] = k end
    table.sort(keys)
    assert.same({ "assigned", "connections", "delivered", "delivery_failed", "handler_errors", "in_flight",
                  "produced", "status" }, keys)
    assert.equal("ok", h.status)
    for _, k in ipairs { "produced", "delivered" } do
      assert.is_true(before[k] <= h[k] and h[k] <= after[k],
        ("%s: %d, before %d, after %d"):format(k, h[k], before[k], after[k]))
    end
    assert.is_true(h.delivered >= 6)      -- 3 rows + 3 dead letters, at least
    assert.same({ 0, 0, 0 }, { h.delivery_failed, h.handler_errors, h.connections })
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
    -- (processing.lua, when present, adds its own records to the topic)
    local function ours(c, from)
      for i = from, #c.messages do
        if c.messages[i][1]:match('^{"n":%d+}$') then return true end
      end
    end
    support.wait(app, function()
      n = n + 1
      app:produce("movie-stats", '{"n":' .. n .. '}')
      support.settle(app, 0.2)
      return ours(a, 3) and ours(b, 1)
    end, "stats records", 30)
    a.conn:close(); b.conn:close()
  end)
end)

-- The data set behind the page (scripts/apps/movies/catalog.lua and
-- data/movies.json).
describe("movies catalog", function()
  local catalog = require "apps.movies.catalog"
  local cat = assert(catalog.load())

  local function pairs_of(result)
    local out = {}
    for i, r in ipairs(result.rows) do out[i] = r.actorId .. " " .. r.movieId end
    return out
  end

  it("holds about 40 films, every credit naming a known person", function()
    assert.is_true(#cat.movies >= 38)
    local ids = {}
    for _, m in ipairs(cat.movies) do
      assert.matches("^tt%d%d%d%d%d%d%d+$", m.id)
      assert.is_nil(ids[m.id], "duplicate " .. m.id)
      ids[m.id] = true
      assert.is_true(m.year >= 1900 and m.year <= 2030 and m.minutes >= 60 and m.minutes <= 240, m.title)
      for _, c in ipairs(m.cast) do
        assert.is_string(cat.people[c[1]], c[1])
        assert.matches("^nm%d%d%d%d%d%d%d+$", c[1])
        assert.truthy(({ actor = true, actress = true, director = true })[c[2]])
      end
    end
  end)

  it("answers an actor with one row per film, in release order", function()
    local r = assert(cat:search("Brad Pitt"))
    assert.equal(15, #r.rows)
    assert.same({ actorName = "Brad Pitt", actorId = "nm0000093", movieId = "tt0103074",
      movieName = "Thelma & Louise", movieMinutes = 130, movieYear = 1991, credit = "actor" }, r.rows[1])
    for i = 2, #r.rows do assert.is_true(r.rows[i - 1].movieYear <= r.rows[i].movieYear) end
    -- the tutorial's examples
    local fight = assert(cat:search(nil, "fight club")).rows
    assert.same({ "nm0000093 tt0137523", "nm0001570 tt0137523", "nm0000307 tt0137523", "nm0000399 tt0137523" },
      pairs_of({ rows = fight }))
    assert.equal(139, fight[1].movieMinutes)
  end)

  it("joins two credits of one person in one film", function()
    local r = assert(cat:search("Quentin Tarantino", "Reservoir Dogs"))
    assert.equal(1, #r.rows)
    assert.equal("actor, director", r.rows[1].credit)
    assert.equal(99, r.rows[1].movieMinutes)
    assert.equal(9, #assert(cat:search("quentin  TARANTINO")).rows)
  end)

  it("takes comma-separated lists, names or ids, and reports unknown names", function()
    local r = assert(cat:search("Uma Thurman, nm0000168 ,, nobody", "Pulp Fiction, tt0119396, Nope"))
    assert.same({ "nm0000168 tt0110912", "nm0000235 tt0110912", "nm0000168 tt0119396" }, pairs_of(r))
    assert.same({ actors = { "nobody" }, movies = { "Nope" } }, r.unknown)
    r = assert(cat:search("<script>alert(1)</script>"))
    assert.same({}, r.rows)
    assert.same({ "<script>alert(1)</script>" }, r.unknown.actors)
    assert.equal('{"rows":[],"unknown":{"actors":["<script>alert(1)<\\/script>"],"movies":[]}}', catalog.encode(r))
  end)

  it("refuses an empty or oversized query", function()
    assert.same({ nil, "type an actor and/or a movie name" }, { cat:search(nil, nil) })
    assert.same({ nil, "type an actor and/or a movie name" }, { cat:search(" , ", "") })
    assert.same({ nil, "actor is too long (at most 1000 characters)" }, { cat:search(("x"):rep(1001)) })
    assert.same({ nil, "too many names in movie (at most 20)" }, { cat:search(nil, ("a,"):rep(21)) })
    assert.same({ nil, "a name in actor is too long (at most 100 characters)" }, { cat:search(("y"):rep(101)) })
  end)

  it("gives rows that the gateway accepts", function()
    local r = assert(cat:search("Alfred Hitchcock"))
    assert.equal(11, #r.rows)
    for _, row in ipairs(r.rows) do
      local sent = { actorName = row.actorName, actorId = row.actorId, movieId = row.movieId,
                     movieName = row.movieName, movieMinutes = row.movieMinutes }
      assert.is_nil(rows.check(sent))
    end
  end)
end)

-- Synthetic rows for load tests (scripts/apps/movies/synthetic.lua).
describe("movies synthetic rows", function()
  local synthetic = require "apps.movies.synthetic"

  it("are the same for the same seed, on every Lua", function()
    local a, b = synthetic.new { seed = 7 }, synthetic.new { seed = 7 }
    for _ = 1, 500 do assert.same(a:row(), b:row()) end
    -- fixed expectations: the same on Lua 5.4 (integers) and LuaJIT (floats)
    local g = synthetic.new { seed = 7 }
    assert.equal('{"id":"syn-7-1","actorName":"Pavel Hollis","actorId":"syn-nm000666",' ..
      '"movieId":"syn-tt001570","movieName":"The Lantern Promise 6","movieMinutes":141}', g:json())
    for _ = 1, 99998 do g:row() end
    assert.equal("syn-7-100000", g:row().id)
    assert.are_not.same(synthetic.new({ seed = 8 }):row(), synthetic.new({ seed = 7 }):row())
  end)

  it("are valid rows, spread over the configured actors and films", function()
    local g = synthetic.new { seed = 3, actors = 50, movies = 200 }
    local actors, names = {}, {}
    for _, r in ipairs(g:rows(2000)) do
      assert.is_nil(rows.check(r))
      assert.same(r, cjson.decode(synthetic.json(r)))
      actors[r.actorId] = true
      -- one actor, one name
      assert.equal(names[r.actorId] or r.actorName, r.actorName)
      names[r.actorId] = r.actorName
      assert.is_true(r.movieMinutes >= 70 and r.movieMinutes <= 180)
    end
    local n = 0
    for _ in pairs(actors) do n = n + 1 end
    assert.equal(50, n)
  end)
end)
