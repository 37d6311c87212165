#!/usr/bin/env bash
# Builds sluice and runs the movies demo (prints the URL to open).
set -euo pipefail
cd "$(dirname "$0")"
bash tools/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j2 >/dev/null
exec build/bin/sluice run scripts/apps/movies/app.lua "$@"
