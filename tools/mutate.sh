#!/bin/sh
# The mutation runs of docs/testing.md: the files that keep sluice's
# promise ("acked means stored in Kafka; not stored means the client is
# told"), each against the tests that should notice a change to it.
#
#   tools/mutate.sh            every run below, one after another (slow)
#   tools/mutate.sh movies app every run named
#
# Each run is one tools/mutate.py command (it builds a scratch copy of the
# tree under build-mutate/, never touching the working tree) and prints the
# survivors; results/<file>.txt under build-mutate/ keeps them. Exit status:
# 1 if any run had a survivor. Not part of ./test.sh: it takes hours.
set -u
cd "$(dirname "$0")/.." || exit 2
M=tools/mutate.py

run() {
  name=$1; shift
  [ -n "$wanted" ] && case " $wanted " in *" $name "*) ;; *) return 0 ;; esac
  echo "== $name: $M $*"
  "$M" "$@" || status=1
}

wanted="$*"
status=0

# The movies app: ack only from the delivery report, errors with the reason.
run movies scripts/apps/movies/app.lua \
  --busted spec/unit/movies_spec.lua --ctest 'integration.movies_delivery|integration.gateway$'

# The producer in the core: defaults (acks, idempotence), delivery reports,
# in-flight accounting, flush and close.
run producer-core core/src/kafka_producer.c --sample 30 --seed 1 \
  --target sluice_lua_lua5_4 --target test_kafka \
  --busted spec/unit/app_spec.lua --ctest 'integration.movies_delivery' --ctest 'core.test_kafka$'

# The producer binding: delivery reports to Lua callbacks, once each.
run producer-binding bindings/producer.c --sample 30 --seed 1 \
  --busted spec/unit/app_spec.lua --ctest 'integration.movies_delivery'

# The library's produce, stats and shutdown (flush before close).
run app scripts/sluice/app.lua --functions App:_producer,App:produce,App:stats,App:close \
  --sample 25 --seed 1 --busted spec/unit/app_spec.lua --ctest 'integration.movies_delivery|integration.command'

# The stream commit path: offsets stored and committed only once the
# epoch's outputs are acknowledged.
run stream scripts/sluice/stream/kafka.lua \
  --functions Runner:_new_epoch,Runner:produce,Runner:_record,Runner:seal,Runner:_complete \
  --sample 20 --seed 1 --busted spec/unit/stream_kafka_spec.lua

# Declared routes in the core: rows produced and acked without Lua.
run routes core/src/ingest.c --sample 25 --seed 1 \
  --target test_ingest --target sluice_lua_lua5_4 \
  --busted spec/unit/route_spec.lua --ctest 'core.test_ingest$'

exit $status
