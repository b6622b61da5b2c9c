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
echo "llama-server: fetching llama-cpp-python==$VERSION (source)" >&2
# The sdist itself, by its URL in PyPI's simple index (JSON form): `pip download` would first
# build the package's build dependencies from source to read its metadata.
python3 - "$VERSION" "$work" <<'PY'
import json, sys, urllib.request
version, work = sys.argv[1], sys.argv[2]
name = f"llama_cpp_python-{version}.tar.gz"
request = urllib.request.Request(
    "https://pypi.org/simple/llama-cpp-python/",
    headers={"Accept": "application/vnd.pypi.simple.v1+json"},
)
files = json.load(urllib.request.urlopen(request))["files"]
url = next(f["url"] for f in files if f["filename"] == name)
urllib.request.urlretrieve(url, f"{work}/{name}")
PY
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
