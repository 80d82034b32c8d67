#!/bin/sh
# TEST INFRASTRUCTURE: builds one layout of the simulated Ascend runtime (see
# sim_acl.c, sim_hcomm.c, sim_hccl_wrapper.c).
#   cpp_tests/sim_ascend/build.sh OUT_DIR [LAYOUT]
# Layouts (the files a CANN install of that kind has):
#   full    libascendcl.so, libhcomm.so, libhccl.so (CANN 9.0: one-sided API in
#           libhcomm.so, libhccl.so forwarding to it)        (default)
#   hcomm   libascendcl.so, libhcomm.so (a toolkit-only 8.5+ install: no ops package)
#   noget   libascendcl.so, libhcomm.so without HcclBatchGet
#   legacy  libascendcl.so, libhccl.so holding the one-sided API (before 8.5)
#   stubs   libascendcl.so, libhccl.so whose wrappers find no libhcomm.so
#   split   libascendcl.so without the aclrt* calls, libacl_rt.so, libhcomm.so
# Point llmdd at OUT_DIR with LLMDD_ASCEND_LIB_DIR=OUT_DIR or the init option
# llmdd.AscendLibDir=OUT_DIR. CMake builds the same layouts (cpp_tests/CMakeLists.txt),
# tests/common/sim.rs too.
set -eu
HERE="$(cd "$(dirname "$0")" && pwd)"
OUT="${1:?usage: build.sh OUT_DIR [full|hcomm|noget|legacy|stubs|split]}"
LAYOUT="${2:-full}"
CC="${CC:-cc}"
mkdir -p "$OUT"
lib() { # lib NAME SOURCE [flags...]
  name="$1"; src="$2"; shift 2
  "$CC" -shared -fPIC -O2 -Wall -Wextra "$@" -o "$OUT/$name" "$HERE/$src" -lpthread -ldl
}
case "$LAYOUT" in
  full)   lib libascendcl.so sim_acl.c; lib libhcomm.so sim_hcomm.c; lib libhccl.so sim_hccl_wrapper.c ;;
  hcomm)  lib libascendcl.so sim_acl.c; lib libhcomm.so sim_hcomm.c ;;
  noget)  lib libascendcl.so sim_acl.c; lib libhcomm.so sim_hcomm.c -DSIM_OMIT_BATCH_GET ;;
  legacy) lib libascendcl.so sim_acl.c; lib libhccl.so sim_hcomm.c ;;
  stubs)  lib libascendcl.so sim_acl.c; lib libhccl.so sim_hccl_wrapper.c ;;
  split)  lib libascendcl.so sim_acl.c -DSIM_ACL_BASE_ONLY; lib libacl_rt.so sim_acl.c; lib libhcomm.so sim_hcomm.c ;;
  *) echo "unknown layout $LAYOUT" >&2; exit 2 ;;
esac
