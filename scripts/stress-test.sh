#!/usr/bin/env bash
# Runs the test suites N rounds while other processes keep every core busy,
# to find tests (or library paths) that depend on timing. Prints each failure
# with the tail of its log and ends with a summary that can be quoted: rounds,
# wall time, failures by test, and the load average seen during the run.
#
#   ./scripts/stress-test.sh [--rounds N] [--load N] [--what ctest,rust,asan]
#                            [--filter REGEX] [--jobs N] [--tail N] [--stress-ng]
#
#   --rounds N     rounds of every selected suite (default 5)
#   --load N       CPU hogs started next to the tests (default: 2 per core)
#   --what LIST    comma-separated suites: ctest (the CTest suite, build/test),
#                  rust (cargo's integration tests in tests/), asan (the CTest
#                  suite built with AddressSanitizer, build/asan); default ctest,rust
#   --filter RE    only tests whose name matches RE (ctest -R); for cargo, each
#                  |-separated part is a substring filter (a|b runs both)
#   --jobs N       parallel tests per suite (default: the number of cores)
#   --tail N       log lines shown per failure (default 60)
#   --stress-ng    load with stress-ng (installed from Debian when missing)
#                  instead of shell busy loops
#
# Everything is built once before the load starts. Logs of every round stay in
# build/stress/ (round-R-SUITE.log; a failed test's own log in
# round-R-SUITE-TEST.log). Exit status: 0 when every round passed.
# docs/testing.md says what the script found and what was fixed.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=5
CORES="$(nproc 2>/dev/null || echo 2)"
LOAD=$((2 * CORES))
WHAT="ctest,rust"
FILTER=""
JOBS="$CORES"
TAIL=60
USE_STRESS_NG=0
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS="$2"; shift 2 ;;
    --load) LOAD="$2"; shift 2 ;;
    --what) WHAT="$2"; shift 2 ;;
    --filter) FILTER="$2"; shift 2 ;;
    --jobs) JOBS="$2"; shift 2 ;;
    --tail) TAIL="$2"; shift 2 ;;
    --stress-ng) USE_STRESS_NG=1; shift ;;
    -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
done
for n in "$ROUNDS" "$LOAD" "$JOBS" "$TAIL"; do
  case "$n" in ''|*[!0-9]*) echo "not a number: $n" >&2; exit 2 ;; esac
done
has() { case ",$WHAT," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
for s in ${WHAT//,/ }; do
  case "$s" in ctest|rust|asan) ;; *) echo "unknown suite: $s" >&2; exit 2 ;; esac
done

export LLMDD_NO_HEADER_UPDATE=1
export LLMDD_LOG="${LLMDD_LOG:-error}"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
OUT=build/stress
rm -rf "$OUT"
mkdir -p "$OUT"

# ---- build everything first, unloaded
echo "== building (before the load starts)"
if has rust; then cargo test --tests --no-run -q 2>&1 | tail -n 5; fi
if has ctest; then
  cmake -S . -B build/test -DCMAKE_BUILD_TYPE=Debug >/dev/null
  cmake --build build/test -j "$CORES" >/dev/null
fi
if has asan; then
  cmake -S . -B build/asan -DCMAKE_BUILD_TYPE=Debug -DLLMDD_ASAN=ON >/dev/null
  cmake --build build/asan -j "$CORES" >/dev/null
fi

# ---- the load
HOGS=()
stop_load() {
  local p
  for p in "${HOGS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${HOGS[@]}"; do wait "$p" 2>/dev/null || true; done
  HOGS=()
}
trap stop_load EXIT
trap 'exit 130' INT TERM
if [ "$USE_STRESS_NG" = 1 ]; then
  if ! command -v stress-ng >/dev/null 2>&1; then
    echo "== installing stress-ng (Debian package)"
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq stress-ng >/dev/null
  fi
  if [ "$LOAD" -gt 0 ]; then
    stress-ng --cpu "$LOAD" --quiet >/dev/null 2>&1 &
    HOGS+=("$!")
  fi
else
  for ((i = 0; i < LOAD; i++)); do
    # A busy loop at normal priority: the tests compete with it for every core.
    bash -c 'while :; do :; done' &
    HOGS+=("$!")
  done
fi
LOADTOOL="busy loops"; [ "$USE_STRESS_NG" = 1 ] && LOADTOOL="stress-ng --cpu"
echo "== load: $LOAD CPU hogs ($LOADTOOL) on $CORES cores; $ROUNDS round(s) of: $WHAT${FILTER:+ (filter $FILTER)}"

# Samples the 1-minute load average every 5 s into $OUT/loadavg.
( while :; do cut -d' ' -f1 /proc/loadavg >> "$OUT/loadavg"; sleep 5; done ) &
HOGS+=("$!")

declare -A FAILS=()   # test name -> failures
FAILED_ROUNDS=0
TOTAL_FAILS=0
note_fail() { # suite round test logfile
  local key="$1:$3"
  FAILS[$key]=$(( ${FAILS[$key]:-0} + 1 ))
  TOTAL_FAILS=$((TOTAL_FAILS + 1))
  echo "---- FAILED round $2: $key (log: $4); last $TAIL lines:"
  tail -n "$TAIL" "$4" | sed 's/^/    | /'
}

# One CTest round in build dir $2; failed tests' output from LastTest.log.
ctest_round() { # suite builddir round
  local suite="$1" dir="$2" r="$3" log="$OUT/round-$3-$1.log" t
  local rc=0 failed="$dir/Testing/Temporary/LastTestsFailed.log"
  rm -f "$failed" # a previous round's list must not stand for this one's
  ctest --test-dir "$dir" -j "$JOBS" ${FILTER:+-R "$FILTER"} >"$log" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ] && [ -s "$failed" ]; then
    while IFS=: read -r _ t; do
      local tlog="$OUT/round-$r-$suite-$t.log"
      # LastTest.log holds every test's output between "N/M Test: name" and
      # the next "----------" rule after its "Test Failed"/"Test Passed".
      awk -v t="$t" '
        $0 ~ "^[0-9]+/[0-9]+ Test: " t "$" { on = 1 }
        on { print }
        on && /^"[^"]*" end time:/ { on = 0 }
      ' "$dir/Testing/Temporary/LastTest.log" > "$tlog"
      note_fail "$suite" "$r" "$t" "$tlog"
    done < "$failed"
    return 1
  elif [ "$rc" -ne 0 ]; then
    note_fail "$suite" "$r" "(ctest itself)" "$log"
    return 1
  fi
  return 0
}

# One round of cargo's integration tests; failed tests from libtest's output.
rust_round() { # round
  local r="$1" log="$OUT/round-$1-rust.log" rc=0 t
  # shellcheck disable=SC2086 # one cargo filter per |-separated part
  cargo test -q --tests -- ${FILTER:+${FILTER//|/ }} --test-threads="$JOBS" >"$log" 2>&1 || rc=$?
  [ "$rc" -eq 0 ] && return 0
  local any=0
  # libtest prints "---- name stdout ----" blocks, then "failures:" lists.
  while read -r t; do
    any=1
    local tlog="$OUT/round-$r-rust-${t//::/.}.log"
    awk -v t="$t" '
      $0 == "---- " t " stdout ----" { on = 1; print; next }
      on && (/^---- .* stdout ----$/ || /^failures:$/) { on = 0 }
      on { print }
    ' "$log" > "$tlog"
    note_fail rust "$r" "$t" "$tlog"
  done < <(sed -n 's/^---- \(.*\) stdout ----$/\1/p' "$log" | sort -u)
  if [ "$any" = 0 ]; then note_fail rust "$r" "(cargo itself)" "$log"; fi
  return 1
}

START=$(date +%s)
for ((r = 1; r <= ROUNDS; r++)); do
  rs=$(date +%s)
  ok=1
  if has ctest; then ctest_round ctest build/test "$r" || ok=0; fi
  if has rust; then rust_round "$r" || ok=0; fi
  if has asan; then ctest_round asan build/asan "$r" || ok=0; fi
  [ "$ok" = 1 ] || FAILED_ROUNDS=$((FAILED_ROUNDS + 1))
  printf '== round %d/%d: %s in %d s (load average %s)\n' "$r" "$ROUNDS" \
    "$([ "$ok" = 1 ] && echo passed || echo FAILED)" $(( $(date +%s) - rs )) \
    "$(cut -d' ' -f1 /proc/loadavg)"
done
WALL=$(( $(date +%s) - START ))
stop_load
trap - EXIT

LA="$(sort -n "$OUT/loadavg" 2>/dev/null | awk '{ a[NR] = $1; s += $1 }
  END { if (NR) printf "min %.2f, mean %.2f, max %.2f", a[1], s / NR, a[NR]; else print "n/a" }')"
echo
echo "== stress summary"
echo "suites: $WHAT${FILTER:+ (filter $FILTER)}; jobs $JOBS; load: $LOAD hogs ($LOADTOOL) on $CORES cores"
echo "rounds: $ROUNDS, failed rounds: $FAILED_ROUNDS, test failures: $TOTAL_FAILS"
printf 'wall time: %dm%02ds\n' $((WALL / 60)) $((WALL % 60))
echo "load average (1 min, sampled every 5 s): $LA"
if [ "$TOTAL_FAILS" -gt 0 ]; then
  echo "failures by test:"
  for k in "${!FAILS[@]}"; do printf '  %3d  %s\n' "${FAILS[$k]}" "$k"; done | sort -rn
  exit 1
fi
