#!/usr/bin/env bash
# Builds llama.cpp's own llama-server (CPU) for the side-by-side benchmark, from the llama.cpp
# tree vendored in the llama-cpp-python source distribution on PyPI. Cached outside the
# checkout: $WARREN_CACHE_DIR/llama-server-<version>/llama-server (default ~/.cache/warren).
# Prints the binary's path on its last line.
set -euo pipefail

VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
CACHE="${WARREN_CACHE_DIR:-$HOME/.cache/warren}"
OUT="$CACHE/llama-server-$VERSION"
BIN="$OUT/llama-server"

if [ -x "$BIN" ]; then
  echo "$BIN"
  exit 0
fi
mkdir -p "$OUT"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
PIP="$(command -v pip3 || command -v pip)"
echo "llama-server: fetching llama-cpp-python==$VERSION (source)" >&2
"$PIP" download --quiet --no-deps --no-binary :all: -d "$work" "llama-cpp-python==$VERSION"
tar -xzf "$work"/llama_cpp_python-"$VERSION".tar.gz -C "$work"
src="$work/llama_cpp_python-$VERSION/vendor/llama.cpp"
echo "llama-server: building from $src (several minutes)" >&2
# Static, like warren's own build of llama.cpp; AVX2/FMA without -march=native, as llama-cpp-sys-2.
cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
  -DLLAMA_CURL=OFF -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF >&2
cmake --build "$work/build" --target llama-server -j"$(nproc)" >&2
cp "$work/build/bin/llama-server" "$BIN.tmp" && mv "$BIN.tmp" "$BIN"
echo "$BIN"
