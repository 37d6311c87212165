#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) in build-fuzz/ and
# runs each for a while, then merges what it found into fuzz/corpus/<target>
# (only inputs that add coverage are kept, so the corpus stays small).
#   fuzz/fuzz.sh                  # every target, 60 s each
#   fuzz/fuzz.sh 300 server       # 300 s, only fuzz_server
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
secs="${1:-60}"; shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(ws_url query static_path server jwt movies_rows)
out="${SLUICE_FUZZ_BUILD_DIR:-$root/build-fuzz}"
mkdir -p "$out/obj"
cc="${CC_FUZZ:-clang}"
san="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
flags=(-g -O1 -std=c11 -D_GNU_SOURCE -Wall -Wextra -I"$root/core/include" -I"$root/core/src"
       $(pkg-config --cflags libwebsockets rdkafka lua5.4))
libs=($(pkg-config --libs libwebsockets rdkafka lua5.4 libssl libcrypto zlib) -lpthread)

objs=()
for src in "$root"/core/src/*.c; do
  obj="$out/obj/$(basename "$src" .c).o"
  if [ ! -f "$obj" ] || [ "$src" -nt "$obj" ] || [ "$root/core/src/loop_internal.h" -nt "$obj" ]; then
    $cc "${flags[@]}" $san -fsanitize=fuzzer-no-link -c "$src" -o "$obj"
  fi
  objs+=("$obj")
done

export SLUICE_ROOT="$root"
for t in "${targets[@]}"; do
  bin="$out/fuzz_$t"
  $cc "${flags[@]}" $san -fsanitize=fuzzer -DSLUICE_SOURCE_DIR="\"$root\"" \
      "$root/fuzz/fuzz_$t.c" "${objs[@]}" "${libs[@]}" -o "$bin"
  mkdir -p "$out/corpus/$t" "$root/fuzz/corpus/$t"
  echo "== fuzz_$t for ${secs}s"
  dict=(); [ -f "$root/fuzz/$t.dict" ] && dict=(-dict="$root/fuzz/$t.dict")
  "$bin" -max_total_time="$secs" -max_len=4096 -timeout=10 -print_final_stats=1 \
    "${dict[@]}" "$out/corpus/$t" "$root/fuzz/corpus/$t" 2>&1 | grep -E "^(#[0-9]+.*DONE|Done|stat::number_of_executed_units|stat::new_units_added|==[0-9]+==ERROR|SUMMARY)" || true
  "$bin" -merge=1 "$root/fuzz/corpus/$t" "$out/corpus/$t" >/dev/null 2>&1
  echo "   corpus: $(ls "$root/fuzz/corpus/$t" | wc -l) inputs"
done
