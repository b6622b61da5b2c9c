#!/usr/bin/env bash
# The GPU machine's side of the GPU check, for a CUDA machine with no cargo and no network:
# scripts/gpu-bundle.sh packs on a build machine what this unpacks, builds and runs. Each step
# may be a separate session on that machine as long as WORK (default /tmp/warren-gpu) stays:
#   gpu-remote.sh build DIR   unpack DIR/src and start both CUDA builds in the background
#                             (nohup, own session): the llama.cpp tree warren was built
#                             against, as shared libraries; llama-server and
#                             llama-batched-bench from the llama-cpp-python tree, static
#   gpu-remote.sh stash DIR   move DIR's files (model pieces, run/) into WORK
#   gpu-remote.sh check       join and check the model, start RabbitMQ (own data folder, no
#                             plugins), wait for the builds, run scripts/gpu-check.sh with
#                             everything pinned; reports into RESULTS (default WORK/results)
# ARCHS (default 90: H100/H200) are the compute capabilities built. FA=ON (the default) builds
# llama.cpp's flash-attention kernels and runs both sides with flash attention on; FA=OFF leaves
# them out (about half the build time) and runs both sides with it off. SERVER=0 skips the
# llama-cpp-python build (no llama-server, no llama-batched-bench) and gives its cores to
# warren's.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
WORK="${WORK:-/tmp/warren-gpu}"
ARCHS="${ARCHS:-90}"
FA="${FA:-ON}"
SERVER="${SERVER:-1}"
if [ "$SERVER" = 1 ]; then JOBS="${JOBS:-$(( $(nproc) / 2 ))}"; else JOBS="${JOBS:-$(nproc)}"; fi
mkdir -p "$WORK"
export PATH="/usr/local/cuda/bin:$PATH"
CUDA=(-G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON -DGGML_CUDA_FA=$FA -DGGML_CUDA_NCCL=OFF
  -DCMAKE_CUDA_ARCHITECTURES="$ARCHS" -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF)

build() {
  local src=$1
  mkdir -p "$WORK/crate" "$WORK/server"
  tar -xJf "$src/src/crate.tar.xz" -C "$WORK/crate"
  [ "$SERVER" = 1 ] && tar -xJf "$src/src/server.tar.xz" -C "$WORK/server"
  # Each build writes NAME.log and, when it ends, NAME.done holding its exit status and seconds.
  setsid nohup bash -c "
    t=\$(date +%s)
    cmake -S '$WORK/crate' -B '$WORK/crate/build' ${CUDA[*]} -DBUILD_SHARED_LIBS=ON \
      -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_COMMON=OFF \
      && cmake --build '$WORK/crate/build' --target llama -j $JOBS
    echo \"\$? \$(( \$(date +%s) - t ))\" > '$WORK/crate.done'" > "$WORK/crate.log" 2>&1 < /dev/null &
  [ "$SERVER" = 1 ] && setsid nohup bash -c "
    t=\$(date +%s)
    cmake -S '$WORK/server' -B '$WORK/server/build' ${CUDA[*]} -DBUILD_SHARED_LIBS=OFF \
      -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
      && cmake --build '$WORK/server/build' --target llama-server llama-batched-bench -j $JOBS
    echo \"\$? \$(( \$(date +%s) - t ))\" > '$WORK/server.done'" > "$WORK/server.log" 2>&1 < /dev/null &
  echo "builds started in $WORK ($JOBS jobs each)"
}

stash() {
  find "$1" -type f -exec mv -t "$WORK" {} +
  ls -la "$WORK"
}

check() {
  local results="${RESULTS:-$WORK/results}"
  mkdir -p "$results"
  if [ ! -f "$WORK/model.gguf" ]; then
    cat "$WORK"/model.[0-9]* > "$WORK/model.gguf"
    [ "$(sha256sum "$WORK/model.gguf" | cut -d' ' -f1)" = "$(cat "$WORK/model.sha256")" ] \
      || { echo "gpu-remote: the joined model's sha256 differs" >&2; exit 1; }
  fi
  [ -x "$WORK/warren" ] || { xz -dc "$WORK/warren.xz" > "$WORK/warren" && chmod +x "$WORK/warren"; }
  mkdir -p "$WORK/lib"
  [ -f "$WORK/lib/libllama-common.so.0" ] || xz -dc "$WORK/libllama-common.so.0.xz" > "$WORK/lib/libllama-common.so.0"
  if ! (echo > /dev/tcp/127.0.0.1/5672) 2>/dev/null; then
    [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || tar -xJf "$WORK/rabbitmq.tar.xz" -C /
    local rmq="$WORK/rabbitmq"
    mkdir -p "$rmq" && echo "[]." > "$rmq/enabled_plugins"
    echo "listeners.tcp.local = 127.0.0.1:5672" > "$rmq/rabbitmq.conf" && : > "$rmq/env.conf"
    env HOME="$rmq" RABBITMQ_NODENAME=rabbit@localhost RABBITMQ_MNESIA_BASE="$rmq/mnesia" \
      RABBITMQ_LOG_BASE="$rmq/log" RABBITMQ_ENABLED_PLUGINS_FILE="$rmq/enabled_plugins" \
      RABBITMQ_CONFIG_FILE="$rmq/rabbitmq.conf" RABBITMQ_CONF_ENV_FILE="$rmq/env.conf" \
      PATH="/usr/lib/erlang/bin:$PATH" setsid nohup /usr/lib/rabbitmq/bin/rabbitmq-server \
      > "$rmq/out.log" 2>&1 < /dev/null &
  fi
  local builds=crate
  [ "$SERVER" = 1 ] && builds="crate server"
  for build in $builds; do
    local waited=0
    until [ -f "$WORK/$build.done" ]; do
      [ "$waited" -lt 1200 ] || { echo "gpu-remote: no $build build finished (gpu-remote.sh build first?)" >&2; exit 1; }
      sleep 1; waited=$((waited + 1))
    done
    echo "build $build: status and seconds $(cat "$WORK/$build.done")"
    tail -3 "$WORK/$build.log"
    [ "$(cut -d' ' -f1 < "$WORK/$build.done")" = 0 ] || { echo "gpu-remote: the $build build failed" >&2; exit 1; }
  done
  for _ in $(seq 120); do (echo > /dev/tcp/127.0.0.1/5672) 2>/dev/null && break; sleep 0.5; done
  (echo > /dev/tcp/127.0.0.1/5672) 2>/dev/null || { echo "gpu-remote: RabbitMQ did not start" >&2; exit 1; }
  local libs
  libs=$(dirname "$(find "$WORK/crate/build" -name 'libllama.so*' | head -1)")
  export LD_LIBRARY_PATH="$libs:$WORK/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  ldd "$WORK/warren" | grep -E "llama|ggml|cuda|not found" || true
  cp "$WORK"/*.log "$results/" 2>/dev/null || true
  BUILD_NOTE="llama.cpp of llama-cpp-sys-2 (shared) for warren, of llama-cpp-python ${LLAMA_CPP_PYTHON_VERSION:-0.3.36} (static) for llama-server; CUDA $(nvcc --version | grep -o 'release [0-9.]*'), sm_$ARCHS, GGML_CUDA_FA=$FA, GGML_NATIVE=ON" \
  FLASH_ATTENTION="$( [ "$FA" = ON ] && echo on || echo off )" WARREN_BIN="$WORK/warren" MODEL="$WORK/model.gguf" RESULTS="$results" \
    LLAMA_SERVER="$(find "$WORK/server/build" -name llama-server -type f 2>/dev/null | head -1)" \
    BATCHED_BENCH="$(find "$WORK/server/build" -name llama-batched-bench -type f 2>/dev/null | head -1)" \
    "$repo/scripts/gpu-check.sh"
}

case "${1:-}" in
  build) build "${2:?the bundle folder}" ;;
  stash) stash "${2:?a folder of the bundle}" ;;
  check) check ;;
  *) echo "usage: $0 build DIR | stash DIR | check" >&2; exit 64 ;;
esac
