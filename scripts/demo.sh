#!/usr/bin/env bash
# The main job: builds libllmdd and the examples, then runs a prompt and a
# decoder process on 127.0.0.1 moving a paged KV cache (same-host and TCP),
# printing what moved and how fast; also builds the benchmark tool
# (build/release/benches/llmdd_bench, docs/performance.md). Installs cmake/g++ if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cmake >/dev/null 2>&1 || ! command -v g++ >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq cmake g++ make >/dev/null
fi
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build/release -j "$(nproc)" --target kv_transfer llmdd_bench >/dev/null
exec ./build/release/examples/kv_transfer "$@"
