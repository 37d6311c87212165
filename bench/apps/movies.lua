-- The movies app, unchanged (scripts/apps/movies/app.lua), plus what the
-- benchmarks need around it:
--   GET /bench/ready   200 {"assigned":N}: Kafka partitions assigned to the
--                      app's consumers (the runner waits for them);
--   with SLUICE_BENCH_ECHO=1, every record of movie-results (after the
--   app's SLUICE_MOVIES_PREFIX, as the app's own topics) is also sent to
--   every WebSocket on /echo: the round trip client -> gateway -> Kafka ->
--   gateway -> client (off for the ingest scenarios: it costs CPU).
-- The app's stream processing (processing.lua: every row consumed again and
-- aggregated into movie-stats) is left out unless SLUICE_BENCH_PROCESSING=1:
-- the scenarios measure the gateway path the Node peers also do, and the
-- processing's own records would mix with the fan-out's.
local here = debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./"
if os.getenv "SLUICE_BENCH_PROCESSING" ~= "1" then
  package.loaded["processing"] = function() end
end
local app = dofile(here .. "../../scripts/apps/movies/app.lua")

app:http("GET", "/bench/ready", function()
  return 200, { assigned = app:stats().assigned }
end)

if os.getenv "SLUICE_BENCH_ECHO" == "1" then
  app:ws("/echo", {})
  -- SLUICE_BENCH_FETCH_WAIT=MS: the echo consumer's fetch.wait.max.ms
  -- (librdkafka's default is 500; bench/run.sh sets 10 on the embedded
  -- broker, which answers an empty fetch only after the whole wait, and
  -- nothing on Apache Kafka, which answers as soon as a record arrives).
  local wait = os.getenv "SLUICE_BENCH_FETCH_WAIT"
  if wait == "" then wait = nil end
  app:consume((os.getenv "SLUICE_MOVIES_PREFIX" or "") .. "movie-results", { broadcast = true,
    kafka = wait and { ["fetch.wait.max.ms"] = wait } or nil }, function(rec)
    if rec.value then app:broadcast("/echo", rec.value) end
  end)
end

return app
