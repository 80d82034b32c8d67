#!/bin/sh
# TEST INFRASTRUCTURE: builds the simulated Ascend runtime (see sim_ascend.c).
#   cpp_tests/sim_ascend/build.sh OUT_DIR [extra cc flags for libhccl.so, e.g. -DSIM_OMIT_BATCH_GET]
# Produces OUT_DIR/libascendcl.so and OUT_DIR/libhccl.so. Point llmdd at them with
# LLMDD_ASCEND_LIB_DIR=OUT_DIR or the init option llmdd.AscendLibDir=OUT_DIR.
# CMake builds the same libraries (target sim_ascend, cpp_tests/CMakeLists.txt).
set -eu
HERE="$(cd "$(dirname "$0")" && pwd)"
OUT="${1:?usage: build.sh OUT_DIR [extra cflags]}"
shift
CC="${CC:-cc}"
mkdir -p "$OUT"
"$CC" -shared -fPIC -O2 -Wall -Wextra -o "$OUT/libascendcl.so" "$HERE/sim_ascend.c" -lpthread
"$CC" -shared -fPIC -O2 -Wall -Wextra -DSIM_BUILD_HCCL "$@" -o "$OUT/libhccl.so" "$HERE/sim_ascend.c" -lpthread
