#!/usr/bin/env bash
# The one test command: installs dependencies, builds, and runs every test
# through ctest (C unit tests, busted specs, integration specs).
set -euo pipefail
cd "$(dirname "$0")"
build=${SLUICE_BUILD_DIR:-build}

bash tools/deps.sh
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j2

# Node clients for the integration specs, and playwright-core for the
# browser test (reinstalled when a lockfile changes; no browser download:
# the test drives Debian's chromium).
for clients in spec/clients spec/browser; do
  stamp=$clients/node_modules/.sluice-lock
  if [ ! -d "$clients/node_modules" ] || ! cmp -s "$clients/package-lock.json" "$stamp"; then
    (cd "$clients" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    cp "$clients/package-lock.json" "$stamp"
  fi
done

# The Python Kafka client of the interop spec, pinned, in a venv under the
# build tree (reinstalled when the requirements change).
venv=$build/pyenv
if ! cmp -s spec/clients/requirements.txt "$venv/.sluice-req"; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r spec/clients/requirements.txt
  cp spec/clients/requirements.txt "$venv/.sluice-req"
fi

set +e
# Eight jobs on two cores: most tests wait on Kafka, not on a core; the
# load-heavy ones and the compiles run one of a kind at a time
# (spec/tests.cmake).
ctest --test-dir "$build" --output-on-failure -j "${SLUICE_TEST_JOBS:-8}" ${CTEST_ARGS:-}
status=$?
exit $status
