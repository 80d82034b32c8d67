#!/usr/bin/env bash
# The consumer test (CTest `consumer_install`): installs the build tree into a
# temporary prefix with `cmake --install`, checks what was installed (versioned
# SONAME and its links, no debug info in the shipped library, headers, CMake
# package, pkg-config file), then builds and runs the same two small programs
# twice: with find_package(llmdd CONFIG) and with `pkg-config --cflags --libs
# llmdd`, each checking that the programs record NEEDED libllmdd.so.<major>.
#   run.sh <llmdd build dir> <this directory>
set -euo pipefail
build=$1
here=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix

fail() { echo "consumer_install: $*" >&2; exit 1; }

cmake --install "$build" --prefix "$prefix" >/dev/null
lib=$(find "$prefix" -name 'libllmdd.so.*.*.*' -type f | head -n1)
[ -n "$lib" ] || fail "no libllmdd.so.X.Y.Z installed"
libdir=$(dirname "$lib")
soname=$(readelf -d "$lib" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
case "$soname" in libllmdd.so.[0-9]*) ;; *) fail "SONAME is '$soname'" ;; esac
[ "$(readlink "$libdir/$soname")" = "$(basename "$lib")" ] || fail "$soname does not link to $(basename "$lib")"
[ "$(readlink "$libdir/libllmdd.so")" = "$soname" ] || fail "libllmdd.so does not link to $soname"
if readelf -S --wide "$lib" | grep -q '\.debug_info'; then fail "the shipped library carries debug info"; fi
for h in llmdd.h llm_datadist/llm_datadist.h llm_datadist/llm_error_codes.h llm_datadist/llm_engine_types.h hixl/hixl.h hixl/hixl_types.h; do
  [ -f "$prefix/include/$h" ] || fail "missing header $h"
done
echo "installed $(basename "$lib") ($(stat -c %s "$lib") bytes, SONAME $soname, no DWARF)"

needs_soname() {
  readelf -d "$1" | grep -q "(NEEDED).*\[$soname\]" || fail "$1 does not record NEEDED $soname"
}

# 1. CMake package.
cmake -S "$here" -B "$tmp/cmake" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$tmp/cmake" >/dev/null
for p in consumer_c consumer_cpp; do
  needs_soname "$tmp/cmake/$p"
  "$tmp/cmake/$p"
done

# 2. pkg-config (with the flags CANN's C++ samples build with).
export PKG_CONFIG_PATH="$libdir/pkgconfig"
flags=$(pkg-config --cflags --libs llmdd)
mkdir -p "$tmp/pc"
cc -std=c11 -Wall -Wextra -Werror "$here/consumer.c" $flags -o "$tmp/pc/consumer_c"
c++ -std=c++11 -O2 -D_GLIBCXX_USE_CXX11_ABI=0 -ftrapv -fno-common -Wfloat-equal -Wall -Wextra -Werror \
  "$here/consumer.cpp" $flags -o "$tmp/pc/consumer_cpp"
c++ -std=c++20 -Wall -Wextra -Werror -Wpedantic -fsyntax-only "$here/consumer.cpp" $(pkg-config --cflags llmdd)
for p in consumer_c consumer_cpp; do
  needs_soname "$tmp/pc/$p"
  LD_LIBRARY_PATH="$libdir" "$tmp/pc/$p"
done
echo "consumer_install: ok"
