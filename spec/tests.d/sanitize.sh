#!/usr/bin/env bash
# ctest sanitize.core: builds the core's WebSocket/loop/schema C tests and the fuzz
# corpus replays with ASan + UBSan in their own build directory and runs
# them with leak checking. (The whole suite: tools/test-sanitize.sh.)
set -euo pipefail
src="$1"; bin="$2"
cmake -S "$src" -B "$bin" -DSLUICE_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
tests=(test_loop test_ws test_ws_input test_ws_coalesce test_ws_frames test_ws_set test_schema)
targets=("${tests[@]}" fuzz_ws_url_replay fuzz_query_replay fuzz_static_path_replay fuzz_server_replay
         fuzz_jwt_replay fuzz_movies_rows_replay)
cmake --build "$bin" -j2 --target "${targets[@]}" >/dev/null
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:exitcode=23"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
for t in "${tests[@]}"; do "$bin/$t"; done
for t in ws_url query static_path server jwt movies_rows; do
  "$bin/fuzz_${t}_replay" "$src/fuzz/corpus/$t"
done
