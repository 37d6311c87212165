-- Build and install with LuaRocks from a checkout:
--   luarocks make rockspec/sluice-scm-1.rockspec                 (with the LuaRocks server)
--   luarocks make --deps-mode=none rockspec/sluice-scm-1.rockspec (offline, Debian's lua-cjson)
-- Add --lua-version 5.4 for Lua 5.4 (LuaRocks on Debian defaults to 5.1/LuaJIT).
-- Installed for two Luas into one tree, bin/sluice is the last install's
-- and `sluice --lua lua5.1|lua5.4|luajit` runs the other install's command.
rockspec_format = "3.0"
package = "sluice"
version = "scm-1"
source = {
  url = "git+file://.",   -- built from the checkout by `luarocks make`
}
description = {
  summary = "WebSocket <-> Kafka gateway with a C core and hot-reloadable Lua scripts",
  detailed = [[
sluice serves WebSocket and HTTP (libwebsockets) and produces to and consumes
from Kafka (librdkafka); routing, transformation and stream processing are Lua.
With no bootstrap.servers it starts librdkafka's in-memory mock cluster.]],
  license = "MIT",
}
dependencies = {
  "lua >= 5.1, < 5.5",
  "lua-cjson >= 2.1",
}
external_dependencies = {
  LIBWEBSOCKETS = { header = "libwebsockets.h", library = "websockets" },
  RDKAFKA = { header = "librdkafka/rdkafka.h", library = "rdkafka" },
}
build = {
  type = "builtin",
  modules = {
    ["sluice.core"] = {
      sources = {
        -- core (C11, no Lua)
        "core/src/error.c", "core/src/loop.c", "core/src/signal.c",
        "core/src/ws_conn.c", "core/src/ws_queue.c", "core/src/ws_payload.c", "core/src/ws_rate.c", "core/src/ws_set.c",
        "core/src/ws_server.c", "core/src/ws_accept.c", "core/src/ws_upgrade.c", "core/src/ws_client.c",
        "core/src/http.c", "core/src/request_head.c",
        "core/src/kafka_queue.c", "core/src/kafka_producer.c",
        "core/src/kafka_consumer.c", "core/src/kafka_assign.c", "core/src/kafka_admin.c", "core/src/kafka_read.c", "core/src/kafka_catchup.c", "core/src/broker.c",
        "core/src/fswatch.c", "core/src/schema.c", "core/src/json.c", "core/src/ingest.c",
        "core/src/http_status.c", "core/src/tls.c", "core/src/jwt.c", "core/src/jwt_keys.c", "core/src/jwt_parse.c",
        "core/src/unix.c",
        "core/src/kafka_txn.c",
        -- bindings
        "bindings/module.c", "bindings/handle.c", "bindings/options.c",
        "bindings/loop.c", "bindings/timer.c",
        "bindings/conn.c", "bindings/conn_set.c", "bindings/http.c", "bindings/server.c",
        "bindings/producer.c", "bindings/consumer.c", "bindings/broker.c", "bindings/admin.c",
        "bindings/fswatch.c", "bindings/schema.c", "bindings/route.c", "bindings/catchup.c", "bindings/jwt.c", "bindings/unix.c",
      },
      defines = { "_GNU_SOURCE" },
      incdirs = { "core/include", "core/src", "bindings",
                  "$(LIBWEBSOCKETS_INCDIR)", "$(RDKAFKA_INCDIR)" },
      libdirs = { "$(LIBWEBSOCKETS_LIBDIR)", "$(RDKAFKA_LIBDIR)" },
      libraries = { "websockets", "rdkafka", "z", "ssl", "crypto", "pthread", "m" },
    },
    ["sluice"] = "scripts/sluice/init.lua",
    ["sluice.app"] = "scripts/sluice/app.lua",
    ["sluice.app.consumer"] = "scripts/sluice/app/consumer.lua",
    ["sluice.app.door"] = "scripts/sluice/app/door.lua",
    ["sluice.app.feed"] = "scripts/sluice/app/feed.lua",
    ["sluice.app.http"] = "scripts/sluice/app/http.lua",
    ["sluice.app.route"] = "scripts/sluice/app/route.lua",
    ["sluice.app.start"] = "scripts/sluice/app/start.lua",
    ["sluice.app.subscriptions"] = "scripts/sluice/app/subscriptions.lua",
    ["sluice.app.options"] = "scripts/sluice/app/options.lua",
    ["sluice.app.timers"] = "scripts/sluice/app/timers.lua",
    ["sluice.cli"] = "scripts/sluice/cli.lua",
    ["sluice.util"] = "scripts/sluice/util.lua",
    ["sluice.stream"] = "scripts/sluice/stream.lua",
    ["sluice.stream.window"] = "scripts/sluice/stream/window.lua",
    ["sluice.stream.kafka"] = "scripts/sluice/stream/kafka.lua",
    ["sluice.stream.driver"] = "scripts/sluice/stream/driver.lua",
    ["sluice.stream.serde"] = "scripts/sluice/stream/serde.lua",
    ["sluice.stream.store"] = "scripts/sluice/stream/store.lua",
    ["sluice.stream.engine"] = "scripts/sluice/stream/engine.lua",
    ["sluice.stream.topics"] = "scripts/sluice/stream/topics.lua",
    ["sluice.admin"] = "scripts/sluice/admin.lua",
    ["sluice.stream.eos"] = "scripts/sluice/stream/eos.lua",
    ["sluice.reload"] = "scripts/sluice/reload.lua",
    ["sluice.metrics"] = "scripts/sluice/metrics.lua",
    ["sluice.ops"] = "scripts/sluice/ops.lua",
    ["sluice.jwt"] = "scripts/sluice/jwt.lua",
    ["sluice.console"] = "scripts/sluice/console.lua",
    ["sluice.attach"] = "scripts/sluice/attach.lua",
    ["sluice.supervisor"] = "scripts/sluice/supervisor.lua",
  },
  install = {
    bin = { sluice = "scripts/bin/sluice" },
  },
}
