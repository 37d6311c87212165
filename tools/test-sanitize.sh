#!/usr/bin/env bash
# Builds sluice with AddressSanitizer + UndefinedBehaviorSanitizer
# (-DSLUICE_SANITIZE=ON) in build-asan/ and runs the whole test suite there.
#   tools/test-sanitize.sh            # everything
#   tools/test-sanitize.sh -R bad     # only some tests (arguments go to ctest)
# The C tests run with leak checking. The Lua interpreters are not
# instrumented, so the ASan runtime is preloaded (LD_PRELOAD) for the
# rest, without leak checking (Lua, LuaJIT and librdkafka keep memory until
# exit). Any ASan or UBSan report fails the test it happens in.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${SLUICE_ASAN_BUILD_DIR:-$root/build-asan}"
"$root/tools/deps.sh"
cmake -S "$root" -B "$build" -DSLUICE_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build "$build" -j"$(nproc)"
asan="$(${CC:-cc} -print-file-name=libasan.so)"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export SLUICE_SANITIZE=1   # specs that bound memory allow for ASan's quarantine
if [ $# -eq 0 ]; then
  ASAN_OPTIONS="detect_leaks=1:abort_on_error=1" \
    ctest --test-dir "$build" -R '^(core|fuzz)\.' --output-on-failure
  set -- -E '^(core|fuzz|sanitize|package)\.'
fi
ASAN_OPTIONS="detect_leaks=0:abort_on_error=1" LD_PRELOAD="$asan" \
  ctest --test-dir "$build" --output-on-failure "$@"
