#!/usr/bin/env bash
# Runs every test of llmdd: rustfmt, clippy, the Rust unit and integration
# tests (including the header drift check), the C/C++ CTest suite, the Python
# package's pytest suite in a fresh virtual environment, the CTest suite again
# under AddressSanitizer, and a short fuzzing run of the wire frame decoder
# (LLMDD_FUZZ_SECONDS, default 30; docs/testing.md). Installs cmake, a C++
# compiler and pkg-config (the consumer test), and Python's venv module, from
# Debian packages, and cargo-fuzz from crates.io, when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cmake >/dev/null 2>&1 || ! command -v g++ >/dev/null 2>&1 ||
   ! command -v pkg-config >/dev/null 2>&1; then
  echo "== installing cmake, g++ and pkg-config (Debian packages)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq cmake g++ make pkg-config >/dev/null
fi

# The build must not rewrite include/llmdd.h here: tests/header.rs compares it.
export LLMDD_NO_HEADER_UPDATE=1
export LLMDD_LOG="${LLMDD_LOG:-error}"
JOBS="$(nproc 2>/dev/null || echo 2)"

echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy -D warnings"
cargo clippy --all-targets -- -D warnings
echo "== cargo test"
cargo test -- --test-threads="$JOBS"

echo "== CTest (C/C++ tests against include/llmdd.h)"
cmake -S . -B build/test -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build/test -j "$JOBS"
ctest --test-dir build/test --output-on-failure -j "$JOBS"

echo "== Python package (pip install ./python into a fresh venv, then pytest)"
# The package's build runs cargo for libllmdd, reusing the release build above.
VENV=build/python-venv
rm -rf "$VENV"
if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
  rm -rf "$VENV"
  python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install -q --disable-pip-version-check "./python[test]"
(cd python/tests && "../../$VENV/bin/pytest" -q -rxX)

echo "== CTest under AddressSanitizer"
cmake -S . -B build/asan -DCMAKE_BUILD_TYPE=Debug -DLLMDD_ASAN=ON >/dev/null
cmake --build build/asan -j "$JOBS"
ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}" \
  ctest --test-dir build/asan --output-on-failure -j "$JOBS"

FUZZ_SECS="${LLMDD_FUZZ_SECONDS:-30}"
echo "== fuzzing the wire frame decoder for ${FUZZ_SECS} s (a release run is longer: docs/testing.md)"
mkdir -p build
if ! ./scripts/fuzz.sh "$FUZZ_SECS" > build/fuzz.log 2>&1; then
  tail -n 60 build/fuzz.log
  echo "fuzzing failed (full log: build/fuzz.log)"
  exit 1
fi
grep -E "^(Done|stat::number_of_executed_units|stat::new_units_added)" build/fuzz.log || true

echo "== all tests passed"
