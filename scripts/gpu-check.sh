#!/usr/bin/env bash
# The GPU check: builds warren with CUDA (make build-cuda, in target-cuda/), then measures on
# this machine's GPU, with the default model, and prints one table:
#   1. the engine alone with engine.n_gpu_layers 0 (CPU) and 99 (every layer on the GPU);
#   2. warren through RabbitMQ (a worker with n_gpu_layers 99 and `warren bench`).
# Each at SLOTS (default "1 8 32") concurrent tasks = slots, TASKS tasks of MAX_TOKENS tokens,
# greedy. Needs nvidia-smi and nvcc (the CUDA toolkit), and RabbitMQ for the broker path
# (make broker-up; set SKIP_BROKER=1 to measure the engine alone).
# Usage: scripts/gpu-check.sh            (WARREN_BIN=path skips the build)
set -euo pipefail
cd "$(dirname "$0")/.."

command -v nvidia-smi >/dev/null 2>&1 || { echo "gpu-check: no nvidia-smi: no NVIDIA GPU here" >&2; exit 1; }
SLOTS="${SLOTS:-1 8 32}"
TASKS="${TASKS:-64}"
MAX_TOKENS="${MAX_TOKENS:-128}"
MODEL="$(pwd)/models/gemma3-270m-q4_k_m.gguf"
[ -f "$MODEL" ] || make model
if [ -z "${WARREN_BIN:-}" ]; then
  make build-cuda
  WARREN_BIN="$(pwd)/target-cuda/release/warren"
fi
OUT="$(mktemp -d)"
RUN_ID="gpucheck.$(date +%s)"
export WARREN__ENGINE__MODEL_PATH="$MODEL" WARREN__ENGINE__CONTEXT_SIZE=2048 WARREN__LOG__LEVEL=warn
export WARREN__METRICS__LISTEN="" WARREN__TOPOLOGY__REQUESTS_QUEUE="$RUN_ID.requests"
export WARREN__TOPOLOGY__DEAD_LETTER_EXCHANGE="$RUN_ID.dlx" WARREN__TOPOLOGY__DEAD_LETTER_QUEUE="$RUN_ID.dead"
export WARREN__TOPOLOGY__RESULTS_QUEUE="$RUN_ID.results" WARREN__RETRY__QUEUE_PREFIX="$RUN_ID.retry"
export WARREN__TOPOLOGY__CONTROL_EXCHANGE="$RUN_ID.control"
LOAD=(--tasks "$TASKS" --max-tokens "$MAX_TOKENS" --json)

worker=""
cleanup() {
  [ -n "$worker" ] && kill -TERM "$worker" 2>/dev/null && wait "$worker" 2>/dev/null || true
  curl -fsS -u guest:guest "http://127.0.0.1:15672/api/queues/%2F?columns=name" 2>/dev/null \
    | python3 -c 'import json,sys; [print(q["name"]) for q in json.load(sys.stdin) if q["name"].startswith(sys.argv[1] + ".")]' "$RUN_ID" \
    | while read -r q; do curl -fsS -u guest:guest -X DELETE "http://127.0.0.1:15672/api/queues/%2F/$q" >/dev/null || true; done
}
trap cleanup EXIT

for n in $SLOTS; do
  for layers in 0 99; do
    echo "-- engine alone, $n slots, n_gpu_layers $layers" >&2
    WARREN__ENGINE__SLOTS="$n" WARREN__ENGINE__N_GPU_LAYERS="$layers" \
      "$WARREN_BIN" bench --in-process --concurrency "$n" "${LOAD[@]}" > "$OUT/engine-$n-$layers.json"
  done
  if [ -z "${SKIP_BROKER:-}" ]; then
    echo "-- warren through RabbitMQ, $n slots, n_gpu_layers 99" >&2
    WARREN__ENGINE__SLOTS="$n" WARREN__ENGINE__N_GPU_LAYERS=99 WARREN__LOG__LEVEL=info \
      "$WARREN_BIN" worker 2> "$OUT/worker-$n.log" &
    worker=$!
    until grep -q consuming "$OUT/worker-$n.log" 2>/dev/null; do
      kill -0 "$worker" 2>/dev/null || { cat "$OUT/worker-$n.log" >&2; exit 1; }
      sleep 0.3
    done
    "$WARREN_BIN" bench --concurrency "$n" "${LOAD[@]}" > "$OUT/warren-$n.json"
    kill -TERM "$worker"; wait "$worker" || true; worker=""
  fi
done

python3 - "$OUT" "$SLOTS" <<'PY'
import json, os, subprocess, sys
out, slots = sys.argv[1], sys.argv[2].split()
gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"], capture_output=True, text=True).stdout.strip()
def load(name):
    path = f"{out}/{name}.json"
    return json.load(open(path)) if os.path.exists(path) else None
print(f"## GPU check: {gpu}")
print()
print("| slots | engine, CPU (0 layers) tok/s | engine, GPU (99 layers) tok/s | warren via RabbitMQ, GPU tok/s | broker path p50 ms | errors |")
print("|---|---|---|---|---|---|")
for n in slots:
    cpu, gpu_run, warren = load(f"engine-{n}-0"), load(f"engine-{n}-99"), load(f"warren-{n}")
    fmt = lambda r: f"{r['tokens_per_s']:.0f}" if r else "-"
    path = f"{warren['overhead_ms']['p50']:.2f}" if warren and warren.get("overhead_ms") else "-"
    errors = sum(r["errors"] for r in (cpu, gpu_run, warren) if r)
    print(f"| {n} | {fmt(cpu)} | {fmt(gpu_run)} | {fmt(warren)} | {path} | {errors} |")
PY
