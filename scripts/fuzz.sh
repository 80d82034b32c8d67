#!/usr/bin/env bash
# Fuzzes the wire frame decoder (fuzz/fuzz_targets/frame_decoder.rs) with
# libFuzzer for the given number of seconds: ./scripts/fuzz.sh 30.
# Installs cargo-fuzz from crates.io when it is missing. On a stable toolchain
# RUSTC_BOOTSTRAP=1 lets rustc accept the nightly flags cargo-fuzz passes
# (AddressSanitizer, coverage instrumentation). It starts from the seeds in
# fuzz/seeds/frame_decoder (one valid frame of each message type) and the
# corpus kept in fuzz/corpus/frame_decoder (not in git), which grows; a crash
# leaves its input in fuzz/artifacts/ and makes this script fail.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-}"
if ! [[ "$SECS" =~ ^[0-9]+$ ]] || [ "$SECS" -eq 0 ]; then
  echo "usage: $0 <seconds>" >&2
  exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz (crates.io)"
  cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
# The fuzz build must not rewrite include/llmdd.h (tests/header.rs compares it).
export LLMDD_NO_HEADER_UPDATE=1
mkdir -p fuzz/corpus/frame_decoder
echo "== fuzzing the frame decoder for ${SECS} s"
cargo fuzz run frame_decoder fuzz/corpus/frame_decoder fuzz/seeds/frame_decoder -- \
  -max_total_time="$SECS" -max_len=65536 -print_final_stats=1
