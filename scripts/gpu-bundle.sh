#!/usr/bin/env bash
# Packs what `scripts/gpu-check.sh` needs on a CUDA machine that has no cargo and no network
# (scripts/gpu-remote.sh unpacks and runs it there). Into DIR (default .gpu/, ignored by git):
#   src/      llama.cpp sources: the tree llama-cpp-sys-2 vendors (built there as shared
#             libraries with CUDA, which warren loads) and the llama-cpp-python sdist's tree
#             (llama-server and llama-batched-bench, as `make bench` uses on the CPU);
#   run/      warren built here against llama.cpp's shared libraries (llama-cpp-2/dynamic-link:
#             it needs libllama.so.0 and the libggml*.so of whatever build LD_LIBRARY_PATH finds,
#             and llama.cpp's libllama-common.so.0, built here),
#             and RabbitMQ with Erlang as Debian installs them under /usr/lib;
#   model-N/  the model in pieces of at most PIECE (default 60M): a transfer may be size-limited.
# Usage: scripts/gpu-bundle.sh [DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-.gpu}"
piece="${PIECE:-60M}"
model="${MODEL:-models/gemma3-270m-q4_k_m.gguf}"
version="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
rm -rf "$dir" && mkdir -p "$dir/src" "$dir/run"

CARGO_TARGET_DIR=target-dyn cargo build --release --locked --features llama-cpp-2/dynamic-link
strip -o "$dir/run/warren" target-dyn/release/warren
# warren's native shims call llama.cpp's common library, which the dynamic build links as a
# shared library too: it has no CUDA code, so the one built here goes along.
common=$(find target-dyn/release/build -name libllama-common.so.0 | head -1)
strip -o "$dir/run/libllama-common.so.0" "$common"
xz -T0 "$dir/run/warren" "$dir/run/libllama-common.so.0"

# Sources without what a CUDA build of the libraries and tools does not read.
pack() {
  tar -C "$1" -cJf "$2" --exclude=./docs --exclude=./models --exclude=./tests --exclude=./benches \
    --exclude=./examples/model-conversion --exclude=./tools/server/public --exclude=./tools/server/webui \
    --exclude=./ggml/src/ggml-vulkan --exclude=./ggml/src/ggml-sycl --exclude=./ggml/src/ggml-metal \
    --exclude=./ggml/src/ggml-cann --exclude=./ggml/src/ggml-opencl --exclude=./ggml/src/ggml-musa \
    --exclude=./ggml/src/ggml-kompute --exclude=./ggml/src/ggml-webgpu --exclude=./ggml/src/ggml-zdnn \
    --exclude=./ggml/src/ggml-hexagon --exclude=./.git .
}
crate=$(cargo metadata --locked --format-version 1 | python3 -c '
import json, sys, os
meta = json.load(sys.stdin)
print(next(os.path.dirname(p["manifest_path"]) for p in meta["packages"] if p["name"] == "llama-cpp-sys-2"))')
pack "$crate/llama.cpp" "$dir/src/crate.tar.xz"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 - "$version" "$work" <<'PY'
import json, sys, urllib.request
version, work = sys.argv[1], sys.argv[2]
name = f"llama_cpp_python-{version}.tar.gz"
request = urllib.request.Request("https://pypi.org/simple/llama-cpp-python/",
                                 headers={"Accept": "application/vnd.pypi.simple.v1+json"})
files = json.load(urllib.request.urlopen(request))["files"]
urllib.request.urlretrieve(next(f["url"] for f in files if f["filename"] == name), f"{work}/{name}")
PY
tar -xzf "$work/llama_cpp_python-$version.tar.gz" -C "$work"
pack "$work/llama_cpp_python-$version/vendor/llama.cpp" "$dir/src/server.tar.xz"

tar -C / -cJf "$dir/run/rabbitmq.tar.xz" --exclude='*/doc' --exclude='*/man' --exclude='*/src/*.erl' \
  usr/lib/erlang usr/lib/rabbitmq
sha256sum "$model" | cut -d' ' -f1 > "$dir/run/model.sha256"
split -b "$piece" -d "$model" "$work/model."
i=1
for part in "$work"/model.*; do
  mkdir -p "$dir/model-$i" && mv "$part" "$dir/model-$i/"
  i=$((i + 1))
done
du -sh "$dir"/* >&2
