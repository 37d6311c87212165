#!/usr/bin/env bash
# Installs the Debian 12 packages sluice needs to build and test, if missing.
# Quiet when everything is already there. With package names as arguments,
# only those (tools/kafka.sh asks for Java and Maven that way).
set -euo pipefail

if [ $# -gt 0 ]; then pkgs=("$@"); else
pkgs=(build-essential cmake pkg-config libwebsockets-dev librdkafka-dev zlib1g-dev
      liblua5.4-dev libluajit-5.1-dev liblua5.1-0-dev lua5.4 luajit lua5.1
      lua-cjson lua-busted lua-socket luarocks kcat libssl-dev)
pkgs+=(chromium fonts-liberation)   # the browser test (spec/browser)
pkgs+=(openssl libssl-dev libnss3-tools) # TLS: the core links OpenSSL; test CAs, trusted by Chromium
pkgs+=(gnuplot-nox)                 # the benchmarks' chart (bench/run.sh)
pkgs+=(clang libclang-rt-14-dev)    # fuzzing (fuzz/fuzz.sh)
pkgs+=(openjdk-17-jre-headless maven) # Apache Kafka for the tests (tools/kafka.sh)
pkgs+=(python3-venv)                # the Python Kafka client of the interop spec
pkgs+=(socat)                       # an independent client of the console (spec/integration/attach_spec.lua)
command -v node >/dev/null 2>&1 || pkgs+=(nodejs npm)
fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
echo "deps: installing ${missing[*]}" >&2
apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -y -qq -o Dpkg::Use-Pty=0)
"${apt[@]}" update >/dev/null
"${apt[@]}" install --no-install-recommends "${missing[@]}" >/dev/null
