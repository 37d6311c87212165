-- The movies processing (scripts/apps/movies/processing.lua) through the
-- test driver: its results are compared with ones computed here.
local stream = require "sluice.stream"

local function load_processing()
  local root = os.getenv("SLUICE_ROOT") or "."
  return dofile(root .. "/scripts/apps/movies/processing.lua")
end

local function row(actor, movie, minutes)
  return { actorId = "a" .. actor, actorName = "Actor " .. actor, movieId = "m" .. movie,
           movieName = "Movie " .. movie, movieMinutes = minutes }
end

describe("movies processing", function()
  it("per actor: distinct movies and total minutes; per movie: cast size", function()
    local d = stream.driver(load_processing()(nil))
    local rows = {}
    -- a small deterministic data set, with repeated rows
    for i = 1, 300 do
      local actor, movie = i % 17, (i * 7) % 23
      rows[#rows + 1] = row(actor, movie, 60 + movie)
    end
    local expect_actor, expect_movie = {}, {}
    for i, r in ipairs(rows) do
      d:pipe("movie-results", r.actorId, r, 1000 * i)
      local a = expect_actor[r.actorId] or { movies = {}, n = 0, minutes = 0 }
      expect_actor[r.actorId] = a
      if not a.movies[r.movieId] then a.movies[r.movieId] = true; a.n = a.n + 1 end
      a.minutes = a.minutes + r.movieMinutes
      local m = expect_movie[r.movieId] or { cast = {}, n = 0 }
      expect_movie[r.movieId] = m
      if not m.cast[r.actorId] then m.cast[r.actorId] = true; m.n = m.n + 1 end
    end
    local actors, movies, tops = {}, {}, {}
    for _, rec in ipairs(d:read("movie-stats", { json = true })) do
      local v = rec.value
      if v.type == "actor" then actors[v.actorId] = v
      elseif v.type == "movie" then movies[v.movieId] = v
      else tops[#tops + 1] = v end
    end
    for id, a in pairs(expect_actor) do
      assert.equal(a.n, actors[id].movies)
      assert.equal(a.minutes, actors[id].minutes)
      assert.equal("Actor " .. id:sub(2), actors[id].actorName)
    end
    for id, m in pairs(expect_movie) do
      assert.equal(m.n, movies[id].cast)
    end
    -- 300 rows one second apart: windows [0,60000) … closed up to the one
    -- that ends 5 s (grace) before the last row's time.
    assert.equal(4, #tops)
    for _, top in ipairs(tops) do
      assert.equal(60000, top["end"] - top.start)
      assert.is_true(#top.actors <= 10)
      for i = 2, #top.actors do
        assert.is_true(top.actors[i - 1].minutes >= top.actors[i].minutes)
      end
    end
  end)

  it("top 10 actors of a window, emitted when it closes (also when idle)", function()
    local d = stream.driver(load_processing()(nil))
    local expected = {}
    for a = 1, 12 do
      for _ = 1, a do d:pipe("movie-results", "a" .. a, row(a, 1, 10), 1000 + a) end
      expected[a] = a * 10
    end
    d:pipe("movie-results", "a1", row(1, 2, 10), 59999)   -- last ms of the window
    d:pipe("movie-results", "a1", row(1, 2, 10), 60000)   -- next window
    d:advance(5000)   -- idle: the window closes by the timer (grace 5 s)
    local tops = {}
    for _, rec in ipairs(d:read("movie-stats", { json = true })) do
      if rec.value.type == "top" then tops[#tops + 1] = rec.value end
    end
    assert.equal(1, #tops)
    local top = tops[1]
    assert.equal(0, top.start)
    assert.equal(10, #top.actors)
    assert.equal("a12", top.actors[1].actorId)
    assert.equal(120, top.actors[1].minutes)
    assert.equal("a3", top.actors[10].actorId)
    -- a1 streamed 10 + 10 in this window: 20, ranked below a3 (30)
  end)

  it("skips rows that are not movie rows", function()
    local d = stream.driver(load_processing()(nil))
    d:pipe("movie-results", "x", '{"actorId":"x"}')
    d:pipe("movie-results", "x", "not json")
    assert.same({}, d:read("movie-stats"))
  end)
end)
