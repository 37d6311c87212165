-- The benchmarks' Kafka: a sluice process that only hosts the embedded
-- broker (librdkafka's in-memory mock cluster) on a stable port, so that
-- every gateway and peer under test talks to the same broker in its own
-- process, and none of them pays for it in its own CPU time.
--
--   sluice run bench/apps/broker.lua --embedded-port PORT
local sluice = require "sluice"

local app = sluice.app { name = "bench-broker", listen = false }

-- Create the topics now (the mock creates them on first produce, with 4
-- partitions), so consumers that start at "latest" find them at once.
for _, topic in ipairs { "movie-results", "movie-stats", "movie-results.dlq" } do
  assert(app:produce(topic, { key = "bench", value = "{\"bench\":\"topic created\"}" }))
end

return app
