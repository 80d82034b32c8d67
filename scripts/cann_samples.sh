#!/usr/bin/env bash
# Builds CANN's official LLM-DataDist C++ samples, unmodified, against an
# installed llmdd and runs the three prompt/decoder pairs on 127.0.0.1, the
# prompt on device 0 and the decoder on device 2 (as their README runs two):
#   scripts/cann_samples.sh <checkout of github.com/hicann/hixl> [acl]
# The samples' only device calls (aclrtMalloc/aclrtFree/aclrtMemcpy and
# aclGetRecentErrMsg) come from cpp_tests/cann/acl/acl.h, a stand-in: that is
# the one swap. Host memory on the host backend; with `acl` the pairs run again
# on the acl backend against the simulated Ascend runtime (llmdd.Backend=auto
# picks it through LLMDD_ASCEND_LIB_DIR), where the stand-in's aclrtMalloc is
# the simulator's own. The samples use fixed ports 26000-26003 and
# sleep between steps (about 45 s in all). Not part of scripts/test.sh: the
# sample sources are not in this repository (cpp_tests/test_cann_*.cpp are
# adapted copies that are).
set -euo pipefail
hixl=${1:?usage: scripts/cann_samples.sh <hixl checkout> [acl]}
mode=${2:-host}
src="$hixl/examples/cpp"
cd "$(dirname "$0")/.."
root=$PWD
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cmake -S . -B build/cann-samples -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build/cann-samples -j "$(nproc)" --target llmdd_cargo >/dev/null
if [ "$mode" = acl ]; then
  cmake --build build/cann-samples -j "$(nproc)" --target sim_ascend >/dev/null
fi
cmake --install build/cann-samples --prefix "$work/prefix" >/dev/null
lib="$work/prefix/lib"

# The samples' own compile flags (examples/cpp/CMakeLists.txt).
flags=(-std=c++11 -O2 -D_GLIBCXX_USE_CXX11_ABI=0 -ftrapv -fno-common -Wfloat-equal -Wall -Werror -Wextra)
for side in prompt decoder; do
  for s in pull_cache_and_blocks push_cache_and_blocks switch_roles; do
    c++ "${flags[@]}" -I"$work/prefix/include" -I"$root/cpp_tests/cann" "$src/${side}_$s.cpp" \
      -L"$lib" -lllmdd -Wl,-rpath,"$lib" -o "$work/${side}_$s"
  done
done
echo "built the 6 samples against $lib/$(readlink "$lib/libllmdd.so.0")"

# Runs one pair: the first command starts first; both must exit 0.
pair() {
  local name=$1 first=$2 second=$3
  local t0=$SECONDS
  (cd "$work" && timeout 180 $first >"$work/$name.first.log" 2>&1) &
  local a=$!
  sleep 1
  (cd "$work" && timeout 180 $second >"$work/$name.second.log" 2>&1) &
  local b=$!
  local ra=0 rb=0
  wait $a || ra=$?
  wait $b || rb=$?
  if [ $ra -ne 0 ] || [ $rb -ne 0 ]; then
    echo "== $name FAILED (exit $ra / $rb)"
    cat "$work/$name.first.log" "$work/$name.second.log"
    return 1
  fi
  if [ -n "${LLMDD_ASCEND_LIB_DIR:-}" ] &&
     [ "$(cat "$work/$name.first.log" "$work/$name.second.log" | grep -c "using the acl backend")" -ne 2 ]; then
    echo "== $name: a side did not run on the acl backend"
    cat "$work/$name.first.log" "$work/$name.second.log"
    return 1
  fi
  echo "== $name: both sides exited 0 in $((SECONDS - t0)) s"
  grep -h -E "CheckBuffers success|Sample end" "$work/$name.first.log" "$work/$name.second.log" | sort | uniq -c
}

ip=127.0.0.1
pairs() {
  pair pull "./prompt_pull_cache_and_blocks 0 $ip" "./decoder_pull_cache_and_blocks 2 $ip $ip"
  pair push "./decoder_push_cache_and_blocks 2 $ip" "./prompt_push_cache_and_blocks 0 $ip $ip"
  pair switch_roles "./prompt_switch_roles 0 $ip $ip" "./decoder_switch_roles 2 $ip $ip"
}
echo "-- host backend"
pairs
if [ "$mode" = acl ]; then
  echo "-- acl backend, simulated Ascend runtime"
  LLMDD_ASCEND_LIB_DIR="$root/build/cann-samples/cpp_tests/sim_ascend" \
    LLMDD_HCCN_CONF="$root/cpp_tests/sim_ascend/hccn.conf" SIM_ASCEND_DEVICE_COUNT=16 LLMDD_LOG=info pairs
fi
echo "all three official sample pairs passed ($mode)"
