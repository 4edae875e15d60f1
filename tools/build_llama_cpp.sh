#!/usr/bin/env bash
# Build pieces of llama.cpp exactly as vendored in llama-cpp-python==0.3.36 (the version our byte-exact
# claims are made against). Nothing of it is committed: the sdist is fetched from PyPI into .cache/.
# Usage: tools/build_llama_cpp.sh TARGET...   (ggml-base for the oracle; llama-quantize etc. for peers)
set -euo pipefail
cd "$(dirname "$0")/.."
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
build=.cache/llama-build
if [ ! -f "$build/CMakeCache.txt" ]; then
  cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON \
    -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF \
    -DGGML_AMX_INT8=OFF -DGGML_OPENMP=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TESTS=OFF >/dev/null
fi
cmake --build "$build" --target "$@" -j2 >/dev/null
mkdir -p .cache/oracle/lib .cache/oracle/bin
cp -a "$build"/bin/*.so* .cache/oracle/lib/ 2>/dev/null || true
find "$build" -name 'libggml*.so*' -exec cp -a {} .cache/oracle/lib/ \;
find "$build" -name 'libllama*.so*' -exec cp -a {} .cache/oracle/lib/ \;
for t in "$@"; do [ -x "$build/bin/$t" ] && cp -a "$build/bin/$t" .cache/oracle/bin/; done
echo "built: $*"
