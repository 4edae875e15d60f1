#!/usr/bin/env bash
# Build pieces of llama.cpp exactly as vendored in llama-cpp-python==0.3.36 (the version our byte-exact
# claims are made against). Nothing of it is committed: the sdist is fetched from PyPI into .cache/.
#
# Usage: tools/build_llama_cpp.sh [--flavour avx2|native] TARGET...
#        (or LLAMA_FLAVOUR=native tools/build_llama_cpp.sh TARGET...)
#   ggml-base for the oracle; llama-quantize, llama-perplexity, llama-bench ... for the peers.
#
# Two flavours, in separate build and output directories so both can exist side by side:
#   avx2   (default) -> .cache/llama-build,        .cache/oracle/{lib,bin}
#          AVX2+FMA+F16C, no AVX-512, no OpenMP: the byte oracle and the peers used by the tests
#          (ggml's results do not depend on the ISA for what we compare; this build is portable).
#   native           -> .cache/llama-build-native, .cache/oracle-native/{lib,bin}
#          what a user's plain `cmake` gives: GGML_NATIVE=ON (-march=native: AVX-512/VNNI where the
#          CPU has them), OpenMP as default. Only the switches that need a network or a server are off.
#          The speed peer for `quantlab bench model --peer native`.
# JOBS=N sets the parallel compile jobs (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
flavour=${LLAMA_FLAVOUR:-avx2}
if [ "${1:-}" = "--flavour" ]; then flavour=$2; shift 2; fi
case "$flavour" in
  avx2)   build=.cache/llama-build;        out=.cache/oracle
          isa=(-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF
               -DGGML_AMX_INT8=OFF -DGGML_OPENMP=OFF) ;;
  native) build=.cache/llama-build-native; out=.cache/oracle-native
          isa=(-DGGML_NATIVE=ON) ;;
  *) echo "tools/build_llama_cpp.sh: unknown flavour '$flavour' (expected avx2 or native)" >&2; exit 2 ;;
esac
# AMX: -march=native enables it wherever the CPU lists amx_tile, but some virtual machines list it and
# fault on the first tile instruction (seen here: llama-bench pp512 died with SIGILL in
# ggml_backend_amx_mul_mat, tileloadd). A 20-line probe asks for the tile permission and loads a tile;
# when it dies, the native flavour is built with -mno-amx-* (everything else still -march=native) and
# BUILD says so. A CPU without AMX, or one where the probe runs, gets the plain native build.
amx_note=""
if [ "$flavour" = native ] && grep -qw amx_tile /proc/cpuinfo 2>/dev/null; then
  probe=$(mktemp -d)
  cat > "$probe/amx.c" <<'C'
#include <immintrin.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(void) {
    if (syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */)) return 2;
    unsigned char cfg[64]; static unsigned char buf[1024];
    memset(cfg, 0, sizeof cfg); cfg[0] = 1; cfg[16] = 64; cfg[48] = 16; /* tile 0: 16 x 64 bytes */
    _tile_loadconfig(cfg); _tile_loadd(0, buf, 64); _tile_release();
    return 0;
}
C
  if ${CC:-cc} -O1 -mamx-tile -o "$probe/amx" "$probe/amx.c" 2>/dev/null && ! "$probe/amx" 2>/dev/null; then
    noamx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    isa+=("-DCMAKE_C_FLAGS=$noamx" "-DCMAKE_CXX_FLAGS=$noamx")
    amx_note="GGML_AMX=OFF (the CPU lists AMX but a tile load faults here: built with $noamx)"
  fi
  rm -rf "$probe"
fi
[ $# -gt 0 ] || { echo "usage: tools/build_llama_cpp.sh [--flavour avx2|native] TARGET..." >&2; exit 2; }
ver=0.3.36
cache=.cache/llama-cpp-python
src=$cache/llama_cpp_python-$ver/vendor/llama.cpp
py=${PY:-.venv/bin/python}
[ -x "$py" ] || py=python3
if [ ! -d "$src" ]; then
  mkdir -p "$cache"
  "$py" -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$ver" -d "$cache"
  tar -xzf "$cache/llama_cpp_python-$ver.tar.gz" -C "$cache"
fi
if [ ! -f "$build/CMakeCache.txt" ] || [ -n "$amx_note" ]; then  # (re)configure: AMX flags must reach the cache
  cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON "${isa[@]}" \
    -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TESTS=OFF >/dev/null
fi
cmake --build "$build" --target "$@" -j"${JOBS:-2}" >/dev/null
mkdir -p "$out/lib" "$out/bin"
cp -a "$build"/bin/*.so* "$out/lib/" 2>/dev/null || true
find "$build" -name 'libggml*.so*' -exec cp -a {} "$out/lib/" \;
find "$build" -name 'libllama*.so*' -exec cp -a {} "$out/lib/" \;
for t in "$@"; do [ -x "$build/bin/$t" ] && cp -a "$build/bin/$t" "$out/bin/"; done
# what was built, for `quantlab bench model` to report (flavour + the ISA switches cmake resolved)
{ echo "flavour=$flavour"
  grep -E '^(GGML_NATIVE|GGML_AVX|GGML_AVX2|GGML_AVX512|GGML_AVX512_VNNI|GGML_AVX_VNNI|GGML_FMA|GGML_F16C|GGML_OPENMP|GGML_AMX_INT8):' \
    "$build/CMakeCache.txt" | sed 's/:BOOL//'
  [ -z "$amx_note" ] || echo "$amx_note"
} > "$out/BUILD"
echo "built ($flavour): $*"
