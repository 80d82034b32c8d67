#!/usr/bin/env bash
# Regenerates src/sys/ascend_bindings.rs from the ACL/HCCL declarations.
#
#   tools/gen_bindings.sh            # from src/sys/ascend_decls.h (no CANN needed)
#   ASCEND_HOME_PATH=/usr/local/Ascend/cann tools/gen_bindings.sh
#                                    # from the installed CANN headers instead
#                                    # (ASCEND_TOOLKIT_HOME is read too, for older kits)
#
# Needs the `bindgen` CLI (cargo install bindgen-cli) and libclang (apt-get install
# libclang-dev). A normal `cargo build` needs neither: the output is checked in.
#
# Functions are emitted as *function pointer type aliases* (`pub type aclInit_fn =
# unsafe extern "C" fn(..)`), never as `extern "C"` items, so nothing is linked at
# build time; src/sys/loader.rs resolves them with dlsym.
#
# From real headers: ACL comes from <root>/include (acl/acl.h), the one-sided HCCL
# API from the package-internal pkg_inc tree (<root>/<arch>-linux/pkg_inc or
# <root>/pkg_inc; hccl/ in 8.5 / 9.0, legacy/hccl/ later), which is C++ and needs
# hccl/base.h plus hcomm_res_defs.h (later kits) or hccl_mem_defs.h (8.5, not
# installed: a shim with the HcclMem declarations of ascend_decls.h stands in).
# HcclCommInitClusterInfoMemConfig is in no installed header, so its declaration
# is taken from ascend_decls.h. The script fails when any function of the list
# below is missing from the output, so a regeneration cannot drop the one-sided
# API silently.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$ROOT/src/sys/ascend_bindings.rs"
BINDGEN="${BINDGEN:-bindgen}"
DECLS="$ROOT/src/sys/ascend_decls.h"

FUNCS=(
  aclInit aclFinalize aclGetRecentErrMsg aclsysGetVersionStr
  aclrtSetDevice aclrtResetDevice aclrtGetDeviceCount aclrtGetPhyDevIdByLogicDevId
  aclrtGetDeviceInfo aclrtGetSocName
  aclrtMalloc aclrtMallocHost aclrtFree aclrtFreeHost aclrtMemcpy aclrtMemcpyAsync
  aclrtCreateStream aclrtDestroyStream aclrtDestroyStreamForce aclrtStreamAbort
  aclrtSynchronizeStream aclrtSynchronizeStreamWithTimeout
  HcclCommInitClusterInfoMemConfig HcclCommDestroy HcclGetErrorString
  HcclRegisterGlobalMem HcclDeregisterGlobalMem HcclCommBindMem HcclCommUnbindMem
  HcclCommPrepare HcclBatchPut HcclBatchGet
)
TYPES='aclError|aclrtStream|aclrtMemcpyKind|aclrtMemMallocPolicy|aclrtDevAttr|HcclResult|HcclComm|HcclDataType|HcclCommConfig|HcclCommConfigDef|HcclMemType|HcclMem|CommMem|CommMemType|HcclOneSideOpDesc|HcclTopoType|HcclPrepareConfig'
VARS='ACL_SUCCESS|ACL_ERROR_.*|ACL_MEMCPY_.*|ACL_MEM_MALLOC_.*|ACL_PKG_VERSION_MAX_SIZE|HCCL_SUCCESS|HCCL_E_.*|HCCL_COMM_.*|HCCL_MEM_.*|HCCL_DATA_TYPE_.*|HCCL_TOPO_.*|HCCL_ONE_SIDED_MAX_DESC_NUM|COMM_NAME_MAX_LENGTH|UDI_MAX_LENGTH'

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# Prints the declaration of function $1 from ascend_decls.h (it may span lines).
decl_of() {
  perl -0777 -ne "print \$1 if /^(\w[^;{}]*\b$1\s*\([^;]*\);)/m" "$DECLS"
}

CANN="${ASCEND_HOME_PATH:-${ASCEND_TOOLKIT_HOME:-}}"
if [[ -n "$CANN" ]]; then
  INC="$CANN/include"
  [[ -f "$INC/acl/acl.h" ]] || { echo "gen_bindings.sh: no $INC/acl/acl.h" >&2; exit 1; }
  ONE_SIDED=""
  for pkg in "$CANN"/*-linux/pkg_inc "$CANN/pkg_inc"; do
    for sub in hccl legacy/hccl; do
      if [[ -f "$pkg/$sub/hccl_one_sided_services.h" ]]; then
        ONE_SIDED="$pkg/$sub/hccl_one_sided_services.h"
        PKG_INC="$pkg"
        break 2
      fi
    done
  done
  if [[ -z "$ONE_SIDED" ]]; then
    echo "gen_bindings.sh: hccl_one_sided_services.h not found under $CANN/*-linux/pkg_inc or $CANN/pkg_inc;" \
      "refusing to generate bindings without the one-sided API" >&2
    exit 1
  fi
  SOURCE="CANN headers under $CANN ($(basename "$(dirname "$ONE_SIDED")")/hccl_one_sided_services.h)"
  mkdir -p "$TMP/shim"
  # hccl_mem_defs.h is not installed by 8.5: restate HcclMemType / HcclMem.
  perl -0777 -ne 'print "#pragma once\n#include <stdint.h>\n$1\n$2\n" if /(typedef enum \{\s*HCCL_MEM_TYPE_DEVICE.*?\} HcclMemType;).*?(typedef struct \{\s*HcclMemType type;.*?\} HcclMem;)/s' \
    "$DECLS" > "$TMP/shim/hccl_mem_defs.h"
  {
    echo '#include <acl/acl.h>'
    echo '#include <hccl/hccl.h>'
    echo "#include \"$ONE_SIDED\""
    echo 'extern "C" {'
    decl_of HcclCommInitClusterInfoMemConfig
    echo '}'
  } > "$TMP/wrapper.hpp"
  # CANN headers are C++-flavoured (file-scope const, inline functions).
  CLANG_ARGS=(-x c++ -std=c++14 -I"$INC" -I"$INC/hccl" -I"$INC/acl" -I"$PKG_INC" -I"$PKG_INC/hccl"
    -I"$(dirname "$ONE_SIDED")" -idirafter "$TMP/shim")
  HEADER="$TMP/wrapper.hpp"
else
  SOURCE="src/sys/ascend_decls.h"
  CLANG_ARGS=(-x c -std=c99)
  HEADER="$DECLS"
fi

ALLOW_FN="$(IFS='|'; echo "${FUNCS[*]}")"

"$BINDGEN" "$HEADER" \
  --allowlist-function "^(${ALLOW_FN})\$" \
  --allowlist-type "^(${TYPES})\$" \
  --allowlist-var "^(${VARS})\$" \
  --default-macro-constant-type signed \
  --no-doc-comments \
  --no-layout-tests \
  --use-core \
  --rust-target 1.80 \
  -o "$TMP/raw.rs" \
  -- "${CLANG_ARGS[@]}"

# Turn every `extern "C" { pub fn name(args) -> ret; }` into
# `pub type name_fn = unsafe extern "C" fn(args) -> ret;`.
perl -0777 -pe '
  s{(?:unsafe\s+)?extern\s+"C"\s*\{\s*pub\s+(?:safe\s+|unsafe\s+)?fn\s+(\w+)\s*\((.*?)\)\s*(->\s*[^;]+?)?\s*;\s*\}}
   {"pub type $1_fn = unsafe extern \"C\" fn(" . $2 . ")" . (defined $3 ? " $3" : "") . ";"}gse
' "$TMP/raw.rs" > "$TMP/fn.rs"

if grep -q 'extern "C"\s*{' "$TMP/fn.rs"; then
  echo "gen_bindings.sh: an extern block survived post-processing; refusing to write $OUT" >&2
  exit 1
fi
for f in "${FUNCS[@]}"; do
  if ! grep -q "pub type ${f}_fn" "$TMP/fn.rs"; then
    echo "gen_bindings.sh: $f is missing from the generated bindings ($SOURCE); refusing to write $OUT" >&2
    exit 1
  fi
done

{
  echo "// Generated by tools/gen_bindings.sh from ${SOURCE}; do not edit."
  echo "// Regenerate with: tools/gen_bindings.sh (bindgen $("$BINDGEN" --version | awk '{print $2}'))."
  echo "// Functions appear only as function-pointer type aliases (\`<name>_fn\`);"
  echo "// src/sys/loader.rs resolves them at run time with dlsym."
  echo
  cat "$TMP/fn.rs"
} > "$OUT"

if command -v rustfmt >/dev/null 2>&1; then
  rustfmt --edition 2021 "$OUT"
fi
echo "wrote $OUT"
