-- The movies processing: what becomes of the rows browsers stream to
-- topic `movie-results` (JSON rows keyed by actorId: actorName, actorId,
-- movieId, movieName, movieMinutes). Results go, as JSON, to `movie-stats`:
--
--   {"type":"actor","actorId":…,"actorName":…,"movies":N,"minutes":M,"rows":R}
--       per actor, on every row: distinct movies, total minutes streamed,
--       rows streamed
--   {"type":"movie","movieId":…,"movieName":…,"cast":N}
--       per movie, on every row: how many distinct actors were seen in it
--   {"type":"top","start":MS,"end":MS,"actors":[{"actorId":…,"actorName":…,"minutes":M},…]}
--       once per one-minute window (event time) when it closes: the 10
--       actors with the most minutes streamed in it
--
-- Usage, from the movies app:   require("processing")(app)
-- From a test, without a broker: stream.driver(require("processing")(nil))
-- (returns the topology). options: name (default "movies"), grace (allowed
-- lateness of the top-10 windows in ms, default 5000), window (ms, 60000),
-- prefix (before both topics' names, default none).
local stream = require "sluice.stream"

local RESULTS, STATS = "movie-results", "movie-stats"

local function valid(r)
  return type(r) == "table" and type(r.actorId) == "string" and type(r.movieId) == "string"
     and type(r.movieMinutes) == "number"
end

local function top10(per_actor)
  local list = {}
  for id, e in pairs(per_actor) do
    list[#list + 1] = { actorId = id, actorName = e.name, minutes = e.minutes }
  end
  table.sort(list, function(a, b)
    if a.minutes ~= b.minutes then return a.minutes > b.minutes end
    return a.actorId < b.actorId
  end)
  for i = #list, 11, -1 do list[i] = nil end
  return list
end

return function(app, options)
  options = options or {}
  local prefix = options.prefix or ""
  local results, stats = prefix .. RESULTS, prefix .. STATS
  local t = stream.topology(app, { name = options.name or "movies" })
  local rows = t:from(results, { value = "json" }):filter(valid)

  -- Per actor. The app keys rows by actorId, so no repartition is needed.
  rows:aggregate(function() return { movies = {}, distinct = 0, minutes = 0, rows = 0 } end,
    function(a, r)
      if not a.movies[r.movieId] then
        a.movies[r.movieId] = true
        a.distinct = a.distinct + 1
      end
      a.minutes = a.minutes + r.movieMinutes
      a.rows = a.rows + 1
      a.name = r.actorName
      return a
    end, { store = "actors" })
    :map(function(a, actor_id)
      return { type = "actor", actorId = actor_id, actorName = a.name,
               movies = a.distinct, minutes = a.minutes, rows = a.rows }
    end)
    :to(stats)

  -- Per movie: re-keyed by movieId (repartitioned through Kafka).
  rows:key_by(function(r) return r.movieId end)
    :aggregate(function() return { cast = {}, size = 0 } end,
      function(m, r)
        if not m.cast[r.actorId] then
          m.cast[r.actorId] = true
          m.size = m.size + 1
        end
        m.name = r.movieName
        return m
      end, { store = "movies" })
    :map(function(m, movie_id)
      return { type = "movie", movieId = movie_id, movieName = m.name, cast = m.size }
    end)
    :to(stats)

  -- Top 10 actors per one-minute window: one key, so one task sees all.
  rows:key_by(function() return "top" end)
    :aggregate(function() return {} end,
      function(per_actor, r)
        local e = per_actor[r.actorId]
        if not e then e = { minutes = 0 }; per_actor[r.actorId] = e end
        e.name = r.actorName
        e.minutes = e.minutes + r.movieMinutes
        return per_actor
      end, { store = "top-actors", window = stream.tumbling(options.window or 60000),
             grace = options.grace or 5000, emit = "close" })
    :map(function(per_actor, _, rec)
      return { type = "top", start = rec.window.start, ["end"] = rec.window["end"],
               actors = top10(per_actor) }
    end)
    :to(stats)

  return t
end
