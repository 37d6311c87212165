-- The movies app with its "/" route written another way, to price each
-- kind of route side by side (bench/run.sh, ingest):
--   SLUICE_BENCH_ROUTE=lua        a plain Lua message handler: the row
--                                 checked by sluice.schema, app:produce
--                                 with a delivery callback that acks (the
--                                 movies app's fast path before declared
--                                 routes);
--   SLUICE_BENCH_ROUTE=transform  the declared route with a Lua transform
--                                 (the identity) run per row.
-- The movies app itself (bench/apps/movies.lua) is the declared route.
local here = debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./"
package.loaded["processing"] = function() end
local sluice = require "sluice"
local app = dofile(here .. "movies.lua")
local rows = dofile(here .. "../../scripts/apps/movies/rows.lua")
local RESULTS = (os.getenv "SLUICE_MOVIES_PREFIX" or "") .. "movie-results"
local kind = os.getenv "SLUICE_BENCH_ROUTE"

if kind == "transform" then
  app:ws("/", {
    route = { schema = rows.SCHEMA, topic = RESULTS, key = "actorId", ack = "id",
      transform = function(_, value) return value end },
  })
elseif kind == "lua" then
  local ROW = sluice.schema(rows.SCHEMA)
  local function delivered(derr, _, ctx)
    local conn, id = ctx[1], ctx[2]
    if derr then conn:send(rows.object("error", derr, "id", id))
    else conn:send(rows.object("ack", id)) end
  end
  app:ws("/", {
    message = function(conn, data)
      local value, id, key = ROW:check(data, "id", "actorId")
      local seq = conn:next_row()
      if not value then return conn:send(rows.object("error", id)) end
      if id == nil then id = seq end
      local ok, err = app:produce(RESULTS, { key = key, value = value }, delivered, { conn, id })
      if not ok then conn:send(rows.object("error", err, "id", id)) end
    end,
  })
else
  error("SLUICE_BENCH_ROUTE must be lua or transform, got " .. tostring(kind))
end

return app
