-- The movies processing (sluice.stream) in real gateway processes, with
-- the embedded broker in a process of its own so that a gateway can be
-- killed without losing Kafka. Rows go in with kcat; results are read
-- back with kcat and checked against aggregates computed here from the
-- input.
local h = require "integration.helper"
local json = require "cjson"

local ROOT = h.root

-- A process that only hosts the embedded broker (and /healthz).
local BROKER_APP = [[
local app = require("sluice").app { name = "broker", listen = 0 }
app:http("GET", "/healthz", function() return 200, { status = "ok", bootstrap = app.bootstrap } end)
return app
]]

-- A gateway running the movies processing, with its counters on /healthz.
local GATEWAY_APP = [[
local app = require("sluice").app { name = "movies", listen = 0 }
local t = dofile(%q .. "/scripts/apps/movies/processing.lua")(app)
app:http("GET", "/healthz", function()
  local s, a = t:stats(), app:stats()
  return 200, { status = "ok", processed = s.processed, commits = s.commits,
                restored = s.restored, errors = s.errors, assigned = a.assigned }
end)
return app
]]

local function write_apps()
  local dir = h.tmpdir()
  h.write(dir .. "/broker.lua", BROKER_APP)
  h.write(dir .. "/gateway.lua", GATEWAY_APP:format(ROOT))
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
local function read_stats(bootstrap)
  local code, out = h.run(string.format("%s -C -b %s -t movie-stats -o beginning -e -q -f %s",
    h.q(h.kcat), bootstrap, h.q("%s\\n")))
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
local function wait_complete(bootstrap, want_actors, want_movies, timeout)
  local actors, movies
  local done = h.wait_for(timeout, function()
    actors, movies = read_stats(bootstrap)
    for id, a in pairs(want_actors) do
      if not actors[id] or actors[id].rows < a.rows then return false end
    end
    for id, m in pairs(want_movies) do
      if not movies[id] or movies[id].cast < m.size then return false end
    end
    return true
  end, 2)
  -- (and a little longer: a wrong extra update would show up now)
  if done then h.sleep(2); actors, movies = read_stats(bootstrap) end
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

local function healthz(g)
  local status, body = g:healthz()
  if status == 200 and type(body) == "table" then return body end
  return {}
end

describe("sluice.stream in gateway processes", function()
  local dir, broker
  local gateways = {}
  before_each(function()
    dir = write_apps()
    broker = h.start { app = dir .. "/broker.lua" }
  end)
  after_each(function()
    for _, g in ipairs(gateways) do g:stop(5) end
    gateways = {}
    broker:stop()
  end)

  local function gateway()
    local g = h.start { app = dir .. "/gateway.lua", kafka = broker.bootstrap }
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
    kcat_produce_file(broker.bootstrap, "movie-results", data1 .. data2)
    local g1 = gateway()
    -- Kill it while it is busy: after some commits, before it is done.
    local mid = h.wait_for(90, function()
      local s = healthz(g1)
      return (s.processed or 0) >= 20000 and (s.commits or 0) > 0 and s
    end, 0.05)
    assert(mid, "the first gateway did not get going: " .. g1:stderr())
    g1:signal "KILL"
    assert.equal(137, g1:wait(10))
    assert.is_true(mid.processed < 3 * N, "killed after everything was processed: not midway")

    local g2 = gateway()
    local done, actors, movies = wait_complete(broker.bootstrap, want_actors, want_movies, 180)
    assert(done, "results incomplete; gateway log:\n" .. g2:stderr())
    local doubled = check(actors, movies, want_actors, want_movies)
    local s2 = healthz(g2)
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
      local sa, sb = healthz(a), healthz(b)
      return (sa.assigned or 0) > 0 and (sb.assigned or 0) > 0
        and sa.assigned + sb.assigned == 12 and { sa.assigned, sb.assigned }
    end, 0.2)
    assert(shared, "partitions not shared: " .. json.encode(healthz(a)) .. json.encode(healthz(b)))
    kcat_produce_file(broker.bootstrap, "movie-results", data1)
    assert(h.wait_for(60, function()
      return (healthz(a).processed or 0) > 0 and (healthz(b).processed or 0) > 0
    end, 0.2), "both gateways should process rows")
    if not busy then
      assert(wait_complete(broker.bootstrap, half_actors, half_movies, 60), "first half incomplete")
      h.sleep(1)   -- a few commit intervals
    end

    assert.equal(0, (b:stop(15)))   -- graceful: flushes, commits, leaves the group
    if os.getenv("STREAM_SPEC_DEBUG") then io.stderr:write("B LOG\n", b:stderr(), "\n") end
    local function taken_over()
      assert(h.wait_for(60, function() return healthz(a).assigned == 12 end, 0.2),
        "the remaining gateway did not take over all partitions")
    end
    -- busy: the second half arrives while the group is still rebalancing
    if not busy then taken_over() end
    kcat_produce_file(broker.bootstrap, "movie-results", data2)
    taken_over()
    local done, actors, movies = wait_complete(broker.bootstrap, want_actors, want_movies, 120)
    assert(done, "results incomplete; gateway log:\n" .. a:stderr())
    if os.getenv("STREAM_SPEC_DEBUG") then io.stderr:write("A LOG\n", a:stderr(), "\n") end
    local doubled = check(actors, movies, want_actors, want_movies)
    print(("\n# stream: partitions shared %d/%d; stopped one %s; %d of 10000 rows counted twice")
      :format(shared[1], shared[2], busy and "while busy" or "when idle", doubled))
    assert.equal(0, healthz(a).errors)
    return doubled
  end

  it("two gateways share the partitions; stopping one moves them and their state", function()
    -- Everything before the stop was committed, nothing arrives during the
    -- handover: exact results.
    assert.equal(0, share_and_stop(false))
  end)

  it("stopping a gateway while it is busy: nothing missed, replays bounded", function()
    -- Not 0 in general: librdkafka's mock refuses offset commits while the
    -- group rebalances (REBALANCE_IN_PROGRESS), so what the remaining
    -- gateway processes in that window is replayed after the handover.
    -- Bounded by check(): no row counted more than twice.
    assert.is_true(share_and_stop(true) <= 10000)
  end)
end)
