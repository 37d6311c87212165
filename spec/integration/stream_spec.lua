-- The movies processing (sluice.stream) in real gateway processes on
-- Apache Kafka (the suite's shared broker; each test has topics and a
-- group of its own, created beforehand with 4 partitions, the changelogs
-- compacted, as an operator would). Rows go in with kcat; results are
-- read back with kcat and checked against aggregates computed here from
-- the input.
local h = require "integration.helper"
local json = require "cjson"

local ROOT = h.root

-- A gateway running the movies processing, with its counters on /healthz.
local GATEWAY_APP = [[
local P = %q
local app = require("sluice").app { name = P .. "movies", listen = 0 }
local t = dofile(%q .. "/scripts/apps/movies/processing.lua")(app, { name = P .. "movies", prefix = P })
app:http("GET", "/healthz", function()
  local s, a = t:stats(), app:stats()
  return 200, { status = "ok", processed = s.processed, commits = s.commits,
                restored = s.restored, errors = s.errors, assigned = a.assigned }
end)
return app
]]

-- The topics of the movies processing under prefix P, created.
local PARTITIONS = 4
local function write_app(bootstrap, P)
  local dir = h.tmpdir()
  h.write(dir .. "/gateway.lua", GATEWAY_APP:format(P, ROOT))
  local name = P .. "movies"
  h.create_topic(bootstrap, { P .. "movie-results", P .. "movie-stats",
    name .. ".movies.repartition", name .. ".top-actors.repartition" }, PARTITIONS)
  h.create_topic(bootstrap, { name .. ".actors.changelog", name .. ".movies.changelog",
    name .. ".top-actors.changelog" }, PARTITIONS, { compact = true })
  return dir
end

-- Rows i = from..to of a deterministic data set: 400 actors, 900 movies.
local function make_rows(from, to)
  local lines, rows = {}, {}
  for i = from, to do
    local a, m = (i * 7919) % 400, (i * 104729) % 900
    local row = { actorId = "nm" .. a, actorName = "Actor " .. a, movieId = "tt" .. m,
                  movieName = "Movie " .. m, movieMinutes = 60 + m % 120 }
    rows[#rows + 1] = row
    lines[#lines + 1] = row.actorId .. "|" .. json.encode(row)
  end
  return rows, table.concat(lines, "\n") .. "\n"
end

local function expected(rows)
  local actors, movies = {}, {}
  for _, r in ipairs(rows) do
    local a = actors[r.actorId] or { movies = {}, distinct = 0, minutes = 0, rows = 0 }
    actors[r.actorId] = a
    if not a.movies[r.movieId] then a.movies[r.movieId] = true; a.distinct = a.distinct + 1 end
    a.minutes = a.minutes + r.movieMinutes
    a.rows = a.rows + 1
    local m = movies[r.movieId] or { cast = {}, size = 0 }
    movies[r.movieId] = m
    if not m.cast[r.actorId] then m.cast[r.actorId] = true; m.size = m.size + 1 end
  end
  return actors, movies
end

local function kcat_produce_file(bootstrap, topic, data)
  local dir = h.tmpdir()
  h.write(dir .. "/rows", data)
  local code, _, err = h.run(string.format("%s -P -b %s -t %s -K '|' -z none <%s",
    h.q(h.kcat), bootstrap, h.q(topic), h.q(dir .. "/rows")))
  assert(code == 0, "kcat produce failed: " .. tostring(err))
end

-- The latest actor and movie results in movie-stats.
local function read_stats(bootstrap, P)
  local code, out = h.run(string.format("%s -C -b %s -t %s -o beginning -e -q -f %s",
    h.q(h.kcat), bootstrap, h.q(P .. "movie-stats"), h.q("%s\\n")))
  local actors, movies, n = {}, {}, 0
  if code ~= 0 then return actors, movies, 0 end
  for line in out:gmatch "[^\n]+" do
    local ok, v = pcall(json.decode, line)
    if ok and type(v) == "table" then
      n = n + 1
      -- per partition the order is kept; across partitions take the max
      if v.type == "actor" then
        local old = actors[v.actorId]
        if not old or v.rows > old.rows then actors[v.actorId] = v end
      elseif v.type == "movie" then
        local old = movies[v.movieId]
        if not old or v.cast > old.cast then movies[v.movieId] = v end
      end
    end
  end
  return actors, movies, n
end

-- Waits until every actor's reported rows and every movie's cast reach
-- the expected ones (movie results come later: through a repartition).
local function wait_complete(bootstrap, P, want_actors, want_movies, timeout)
  local actors, movies
  local done = h.wait_for(timeout, function()
    actors, movies = read_stats(bootstrap, P)
    for id, a in pairs(want_actors) do
      if not actors[id] or actors[id].rows < a.rows then return false end
    end
    for id, m in pairs(want_movies) do
      if not movies[id] or movies[id].cast < m.size then return false end
    end
    return true
  end, 2)
  -- (and a little longer: a wrong extra update would show up now)
  if done then h.sleep(2); actors, movies = read_stats(bootstrap, P) end
  return done, actors, movies
end

-- Compares results with the expected aggregates; returns the number of
-- rows counted twice (at-least-once), asserting everything else.
local function check(actors, movies, want_actors, want_movies)
  local doubled = 0
  for id, a in pairs(want_actors) do
    local got = actors[id]
    assert(got, "no result for actor " .. id)
    assert.equal(a.distinct, got.movies, "distinct movies of " .. id)
    assert.is_true(got.rows >= a.rows, "rows of " .. id .. " missing")
    -- one crash or handover replays a row at most once
    assert.is_true(got.rows <= 2 * a.rows, "rows of " .. id .. " counted more than twice")
    assert.is_true(got.minutes >= a.minutes, ("minutes of %s missing: got %s"):format(id, json.encode(got)) ..
      (" expected rows %d minutes %d movies %d"):format(a.rows, a.minutes, a.distinct))
    doubled = doubled + (got.rows - a.rows)
  end
  for id, m in pairs(want_movies) do
    assert(movies[id], "no result for movie " .. id)
    assert.equal(m.size, movies[id].cast, "cast size of " .. id)
  end
  return doubled
end

describe("sluice.stream in gateway processes", function()
  local dir, kafka, P
  local gateways = {}
  local n = 0
  before_each(function()
    kafka = h.kafka()
    n = n + 1
    P = h.prefix("stream" .. n)
    dir = write_app(kafka, P)
  end)
  after_each(function()
    for _, g in ipairs(gateways) do g:stop(5) end
    gateways = {}
  end)
  teardown(function() h.cleanup() end)

  local function gateway()
    local g = h.start { app = dir .. "/gateway.lua", kafka = kafka }
    gateways[#gateways + 1] = g
    return g
  end

  it("50,000 rows, SIGKILL midway, restart: nothing missed, double counts bounded", function()
    local N = 50000
    local rows1, data1 = make_rows(1, N / 2)
    local rows2, data2 = make_rows(N / 2 + 1, N)
    local all = {}
    for _, r in ipairs(rows1) do all[#all + 1] = r end
    for _, r in ipairs(rows2) do all[#all + 1] = r end
    local want_actors, want_movies = expected(all)

    -- All rows first, so that the gateway is surely busy when it is killed
    -- (each row is 3 records: the row and two repartition records).
    kcat_produce_file(kafka, P .. "movie-results", data1 .. data2)
    local g1 = gateway()
    -- Kill it while it is busy: after some commits, before it is done.
    local mid = h.wait_for(90, function()
      local s = g1:health()
      return (s.processed or 0) >= 20000 and (s.commits or 0) > 0 and s
    end, 0.05)
    assert(mid, "the first gateway did not get going: " .. g1:stderr())
    g1:signal "KILL"
    assert.equal(137, g1:wait(10))
    assert.is_true(mid.processed < 3 * N, "killed after everything was processed: not midway")

    local g2 = gateway()
    local done, actors, movies = wait_complete(kafka, P, want_actors, want_movies, 180)
    assert(done, "results incomplete; gateway log:\n" .. g2:stderr())
    local doubled = check(actors, movies, want_actors, want_movies)
    local s2 = g2:health()
    print(("\n# stream: killed after %d records processed (rows and repartition records); restart " ..
      "restored %d changelog records; %d of %d rows counted twice (at-least-once)")
      :format(mid.processed, s2.restored or -1, doubled, N))
    -- At most what the killed gateway processed after its last commit.
    assert.is_true(doubled <= mid.processed, "doubled " .. doubled)
    assert.is_true(doubled <= 10000, "doubled " .. doubled)
    assert.equal(0, s2.errors)
  end)

  -- Two gateways in one group; `busy`: stop one while rows are still
  -- being processed, else once the first half is done. Returns the number
  -- of rows counted twice.
  local function share_and_stop(busy)
    local rows1, data1 = make_rows(1, 5000)
    local rows2, data2 = make_rows(5001, 10000)
    local all = {}
    for _, r in ipairs(rows1) do all[#all + 1] = r end
    for _, r in ipairs(rows2) do all[#all + 1] = r end
    local want_actors, want_movies = expected(all)
    local half_actors, half_movies = expected(rows1)

    local a, b = gateway(), gateway()
    local shared = h.wait_for(60, function()
      local sa, sb = a:health(), b:health()
      return (sa.assigned or 0) > 0 and (sb.assigned or 0) > 0
        and sa.assigned + sb.assigned == 3 * PARTITIONS and { sa.assigned, sb.assigned }
    end, 0.2)
    assert(shared, "partitions not shared: " .. json.encode(a:health()) .. json.encode(b:health()))
    kcat_produce_file(kafka, P .. "movie-results", data1)
    assert(h.wait_for(60, function()
      return (a:health().processed or 0) > 0 and (b:health().processed or 0) > 0
    end, 0.2), "both gateways should process rows")
    if not busy then
      assert(wait_complete(kafka, P, half_actors, half_movies, 60), "first half incomplete")
      h.sleep(1)   -- a few commit intervals
    end

    assert.equal(0, (b:stop(15)))   -- graceful: flushes, commits, leaves the group
    if os.getenv("STREAM_SPEC_DEBUG") then io.stderr:write("B LOG\n", b:stderr(), "\n") end
    local function taken_over()
      assert(h.wait_for(60, function() return a:health().assigned == 3 * PARTITIONS end, 0.2),
        "the remaining gateway did not take over all partitions")
    end
    -- busy: the second half arrives while the group is still rebalancing
    if not busy then taken_over() end
    kcat_produce_file(kafka, P .. "movie-results", data2)
    taken_over()
    local done, actors, movies = wait_complete(kafka, P, want_actors, want_movies, 120)
    assert(done, "results incomplete; gateway log:\n" .. a:stderr())
    if os.getenv("STREAM_SPEC_DEBUG") then io.stderr:write("A LOG\n", a:stderr(), "\n") end
    local doubled = check(actors, movies, want_actors, want_movies)
    print(("\n# stream: partitions shared %d/%d; stopped one %s; %d of 10000 rows counted twice")
      :format(shared[1], shared[2], busy and "while busy" or "when idle", doubled))
    assert.equal(0, a:health().errors)
    return doubled
  end

  it("two gateways share the partitions; stopping one moves them and their state", function()
    -- Everything before the stop was committed, nothing arrives during the
    -- handover: exact results.
    assert.equal(0, share_and_stop(false))
  end)

  it("stopping a gateway while it is busy: nothing missed, replays bounded", function()
    -- Not 0 in general (at-least-once): what a member processed after its
    -- last commit is replayed by the partition's next owner. Apache Kafka
    -- took the stopped member's final commit in every run so far (0); the
    -- embedded mock refused commits during the rebalance
    -- (REBALANCE_IN_PROGRESS) and replayed 17-50%. Bounded by check():
    -- no row counted more than twice.
    assert.is_true(share_and_stop(true) <= 10000)
  end)
end)
