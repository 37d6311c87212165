-- Deterministic synthetic movie rows for load tests and benchmarks: the
-- same seed gives the same rows on every Lua (5.1-5.4, LuaJIT) and every
-- machine. The ids cannot be mistaken for real IMDb ones (people are
-- "syn-nm000001", films "syn-tt000001"), and every row is valid for the
-- movies protocol (rows.check accepts it).
--
--   local synthetic = require "apps.movies.synthetic"   -- or dofile(path)
--   local gen = synthetic.new { seed = 42, actors = 1000, movies = 5000 }
--   local row = gen:row()           -- the next row (a table)
--   local text = gen:json()         -- the next row as JSON text
--   local batch = gen:rows(100)     -- the next 100 rows
--
-- From a shell: `lua synthetic.lua COUNT [SEED]` prints COUNT rows, one
-- JSON object per line.

local synthetic = {}

-- Park–Miller "minimal standard" generator: every intermediate value is
-- an integer below 2^46, exact in a double, so Lua 5.1 and LuaJIT (floats
-- only) and Lua 5.4 (integers) agree.
local MOD, MUL = 2147483647, 16807

local function next_state(s) return (s * MUL) % MOD end

local FIRST = { "Ada", "Basil", "Cora", "Dario", "Edith", "Felix", "Greta", "Hugo", "Iris",
  "Jonas", "Kira", "Leon", "Mara", "Nils", "Olga", "Pavel", "Quinn", "Rosa", "Sami", "Tess",
  "Ugo", "Vera", "Walt", "Xenia", "Yann", "Zora" }
local LAST = { "Archer", "Brook", "Castell", "Dunmore", "Ellery", "Fairbank", "Gale", "Hollis",
  "Ingram", "Jessop", "Kestrel", "Lowell", "Marlow", "Northcott", "Oakley", "Pryce",
  "Quarry", "Redfern", "Sayer", "Thorne", "Upton", "Vance", "Wilder", "Yates" }
local WORDS = { "Midnight", "River", "Glass", "Harbor", "Silent", "Paper", "Iron", "Summer",
  "Echo", "Lantern", "Northern", "Velvet", "Broken", "Golden", "Hidden", "Last", "Winter",
  "Crimson", "Distant", "Electric" }
local NOUNS = { "Road", "Garden", "Signal", "Empire", "Promise", "Station", "Letters",
  "Orchard", "Horizon", "Machine", "Tide", "Witness", "Carnival", "Frontier" }

local Gen = {}
Gen.__index = Gen

-- synthetic.new{ seed = 1, actors = 1000, movies = 5000, prefix = "syn" }
-- → a generator. Row n's id is "<prefix>-<seed>-<n>".
function synthetic.new(opts)
  opts = opts or {}
  local seed = math.floor(tonumber(opts.seed) or 1) % MOD
  if seed <= 0 then seed = seed + MOD - 1 end  -- 0 is a fixed point: avoid it
  local self = setmetatable({
    state = seed, seed = seed, n = 0,
    actors = math.max(1, math.floor(tonumber(opts.actors) or 1000)),
    movies = math.max(1, math.floor(tonumber(opts.movies) or 5000)),
    prefix = opts.prefix or "syn",
  }, Gen)
  for _ = 1, 3 do self.state = next_state(self.state) end  -- mix small seeds
  return self
end

-- A uniform integer in [1, n].
function Gen:int(n)
  self.state = next_state(self.state)
  return (self.state % n) + 1
end

local function pick(list, k) return list[(k - 1) % #list + 1] end

-- Names and runtimes are functions of the ids, so that one actor or film
-- always has the same name wherever it appears.
local function actor_name(k)
  return pick(FIRST, k) .. " " .. pick(LAST, (k * 7 + math.floor(k / #FIRST)) % 9973 + 1)
end

local function movie_name(k)
  return "The " .. pick(WORDS, k) .. " " .. pick(NOUNS, (k * 5 + math.floor(k / #WORDS)) % 9967 + 1)
    .. (k > #WORDS * #NOUNS and (" " .. tostring(math.floor(k / (#WORDS * #NOUNS)) + 1)) or "")
end

function Gen:row()
  self.n = self.n + 1
  local a, m = self:int(self.actors), self:int(self.movies)
  return {
    id = ("%s-%d-%d"):format(self.prefix, self.seed, self.n),
    actorName = actor_name(a),
    actorId = ("syn-nm%06d"):format(a),
    movieId = ("syn-tt%06d"):format(m),
    movieName = movie_name(m),
    movieMinutes = 70 + (m * 53) % 111,      -- 70 … 180
  }
end

function Gen:rows(count)
  local out = {}
  for i = 1, count do out[i] = self:row() end
  return out
end

-- JSON text of a row, fields in the protocol's order (no cjson needed).
local function str(s) return '"' .. s:gsub('[%c"\\]', function(c)
  return string.format("\\u%04x", c:byte()) end) .. '"' end

function synthetic.json(row)
  return ('{"id":%s,"actorName":%s,"actorId":%s,"movieId":%s,"movieName":%s,"movieMinutes":%d}')
    :format(str(row.id), str(row.actorName), str(row.actorId), str(row.movieId),
            str(row.movieName), row.movieMinutes)
end

function Gen:json() return synthetic.json(self:row()) end

-- Run as a script: print rows as JSON lines.
if arg and arg[0] and arg[0]:match("synthetic%.lua$") and not pcall(debug.getlocal, 4, 1) then
  local count = tonumber(arg[1])
  if not count then
    io.stderr:write("usage: lua synthetic.lua COUNT [SEED]\n")
    os.exit(1)
  end
  local gen = synthetic.new { seed = tonumber(arg[2]) or 1 }
  for _ = 1, count do io.write(gen:json(), "\n") end
end

return synthetic
