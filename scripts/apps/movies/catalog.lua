-- The movies catalog: a small set of real IMDb facts (data/movies.json)
-- and the query behind `GET /api/fetch?actor=…&movie=…`, which answers
-- the page's form the way the tutorial's API did: one row per
-- (person, film) pair.
--
-- Pure Lua + lua-cjson (Lua 5.1-5.4, LuaJIT); tested by
-- spec/unit/movies_spec.lua without a gateway.

local cjson = require("cjson.safe").new()

local catalog = {}

-- Limits on what one query may ask: the form is for people, not scripts.
catalog.MAX_NAMES = 20        -- names per list
catalog.MAX_NAME = 100        -- bytes per name
catalog.MAX_QUERY = 1000      -- bytes per parameter

local here = debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./"
catalog.default_path = here .. "data/movies.json"

-- Names compare case-insensitively, with runs of spaces folded.
local function norm(s)
  return (s:gsub("^%s+", ""):gsub("%s+$", ""):gsub("%s+", " "):lower())
end

-- catalog.split("a, b,,c ") → { "a", "b", "c" } (trimmed, empties dropped)
function catalog.split(text)
  local out = {}
  for part in (text or ""):gmatch("[^,]+") do
    local name = part:gsub("^%s+", ""):gsub("%s+$", "")
    if name ~= "" then out[#out + 1] = name end
  end
  return out
end

-- catalog.load([path]) → catalog object, or nil, error
function catalog.load(path)
  path = path or catalog.default_path
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local text = f:read("*a")
  f:close()
  local data, derr = cjson.decode(text)
  if not data then return nil, path .. ": " .. tostring(derr) end

  local self = setmetatable({ people = data.people, movies = data.movies,
    person_by_name = {}, movie_by_name = {}, movie_by_id = {} }, { __index = catalog })
  for id, name in pairs(data.people) do
    self.person_by_name[norm(name)] = id
    self.person_by_name[id:lower()] = id
  end
  for i, m in ipairs(data.movies) do
    m.order = i
    self.movie_by_id[m.id] = m
    self.movie_by_name[norm(m.title)] = m.id
    self.movie_by_name[m.id:lower()] = m.id
  end
  return self
end

-- Checks one parameter; returns its list of names or nil, error text.
local function names(value, what)
  if value == nil then return {} end
  if type(value) ~= "string" then return nil, what .. " must be given once" end
  if #value > catalog.MAX_QUERY then
    return nil, ("%s is too long (at most %d characters)"):format(what, catalog.MAX_QUERY)
  end
  local list = catalog.split(value)
  if #list > catalog.MAX_NAMES then
    return nil, ("too many names in %s (at most %d)"):format(what, catalog.MAX_NAMES)
  end
  for _, n in ipairs(list) do
    if #n > catalog.MAX_NAME then
      return nil, ("a name in %s is too long (at most %d characters)"):format(what, catalog.MAX_NAME)
    end
  end
  return list
end

-- cat:search(actor_text, movie_text) → result, or nil, error text.
-- result = { rows = {…}, unknown = { actors = {…}, movies = {…} } }
-- Each row: actorName, actorId, movieId, movieName, movieMinutes (the
-- fields the gateway stores), plus movieYear and credit for display.
-- Both lists given: the rows of those people in those films.
function catalog:search(actor_text, movie_text)
  local actors, err = names(actor_text, "actor")
  if not actors then return nil, err end
  local movies
  movies, err = names(movie_text, "movie")
  if not movies then return nil, err end
  if #actors == 0 and #movies == 0 then
    return nil, "type an actor and/or a movie name"
  end

  local unknown = { actors = {}, movies = {} }
  local want_people, want_movies
  if #actors > 0 then
    want_people = {}
    for _, n in ipairs(actors) do
      local id = self.person_by_name[norm(n)]
      if id then want_people[id] = true else unknown.actors[#unknown.actors + 1] = n end
    end
  end
  if #movies > 0 then
    want_movies = {}
    for _, n in ipairs(movies) do
      local id = self.movie_by_name[norm(n)]
      if id then want_movies[id] = true else unknown.movies[#unknown.movies + 1] = n end
    end
  end

  -- Films in release order (then catalog order); people in credit order.
  local films = {}
  for _, m in ipairs(self.movies) do
    if not want_movies or want_movies[m.id] then films[#films + 1] = m end
  end
  table.sort(films, function(a, b)
    if a.year ~= b.year then return a.year < b.year end
    return a.order < b.order
  end)

  local rows = {}
  for _, m in ipairs(films) do
    local seen = {}                 -- one row per (person, film): credits joined
    for _, credit in ipairs(m.cast) do
      local pid, role = credit[1], credit[2]
      if not want_people or want_people[pid] then
        if seen[pid] then
          seen[pid].credit = seen[pid].credit .. ", " .. role
        else
          local row = { actorName = self.people[pid], actorId = pid, movieId = m.id,
                        movieName = m.title, movieMinutes = m.minutes,
                        movieYear = m.year, credit = role }
          seen[pid] = row
          rows[#rows + 1] = row
        end
      end
    end
  end
  return { rows = rows, unknown = unknown }
end

-- catalog.encode(result) → JSON text; lists stay lists when empty (cjson
-- alone would write {}), row fields in a fixed order.
local ROW_FIELDS = { "actorName", "actorId", "movieId", "movieName", "movieMinutes",
                     "movieYear", "credit" }

local function value_json(v)
  if type(v) == "number" then return string.format("%d", v) end
  return (cjson.encode(v))
end

local function list_json(items, each)
  local parts = {}
  for i, v in ipairs(items) do parts[i] = each(v) end
  return "[" .. table.concat(parts, ",") .. "]"
end

local function row_json(row)
  local parts = {}
  for i, k in ipairs(ROW_FIELDS) do parts[i] = '"' .. k .. '":' .. value_json(row[k]) end
  return "{" .. table.concat(parts, ",") .. "}"
end

function catalog.encode(result)
  return '{"rows":' .. list_json(result.rows, row_json) ..
    ',"unknown":{"actors":' .. list_json(result.unknown.actors, value_json) ..
    ',"movies":' .. list_json(result.unknown.movies, value_json) .. "}}"
end

return catalog
