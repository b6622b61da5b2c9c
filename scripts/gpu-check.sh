#!/usr/bin/env bash
# The GPU check (`make gpu-check`): warren on this machine's GPU with the default model, side by
# side with llama-server in the same run. For each SLOTS value n (n concurrent tasks on n slots,
# TASKS_PER_SLOT x n tasks, at least 16, of MAX_TOKENS tokens each):
#   1. the engine alone, every layer on the GPU, tokens chosen on the host (engine.device_sampling
#      "off": the logits copied back and scanned, the path before) and on the device ("on", the
#      GPU default), greedy and sampled (temperature 0.7, top-k 40, top-p 0.95, seeded per task);
#      then (n > 1) engine.kv_unified true (one KV cache) against the default (a stream per
#      slot), with tasks of one length and of eight (--mixed-lengths);
#   2. warren through RabbitMQ, greedy: a worker with the GPU defaults (SKIP_BROKER=1 skips it;
#      needs a broker: make broker-up);
#   3. llama-server (LLAMA_SERVER=path of a CUDA build; skipped when unset), -ngl 99 -np n, the
#      same tasks greedy and sampled, with its default host sampling and with --backend-sampling.
# Then, with BATCH_CHECK=1, engine.batch_size 128 against the GPU default (512): generation at
# the largest n, and the shared-prefix workload (bench/shared-prefix) at 32 slots.
# Prints the tables; each run's JSON report stays in RESULTS (a temporary folder by default).
# Usage: scripts/gpu-check.sh   (builds with CUDA: make build-cuda; WARREN_BIN=path skips that)
#        TABLE_ONLY=1 RESULTS=folder scripts/gpu-check.sh   (the tables of an earlier run)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -n "${TABLE_ONLY:-}" ]; then exec python3 scripts/gpu-table.py "$RESULTS" "${SLOTS:-1 8 32 64}" "${MAX_TOKENS:-128}"; fi
command -v nvidia-smi >/dev/null 2>&1 || { echo "gpu-check: no nvidia-smi: no NVIDIA GPU here" >&2; exit 1; }
SLOTS="${SLOTS:-1 8 32 64}"
MAX_TOKENS="${MAX_TOKENS:-128}"
TASKS_PER_SLOT="${TASKS_PER_SLOT:-2}"
MODEL="${MODEL:-$(pwd)/models/gemma3-270m-q4_k_m.gguf}"
[ -f "$MODEL" ] || make model
if [ -z "${WARREN_BIN:-}" ]; then
  make build-cuda
  WARREN_BIN="$(pwd)/target-cuda/release/warren"
fi
RESULTS="${RESULTS:-$(mktemp -d)}"
mkdir -p "$RESULTS"
RUN_ID="gpucheck.$(date +%s)"
export WARREN__ENGINE__MODEL_PATH="$MODEL" WARREN__ENGINE__CONTEXT_SIZE=2048 WARREN__LOG__LEVEL=warn
export WARREN__ENGINE__N_GPU_LAYERS=99
export WARREN__METRICS__LISTEN="" WARREN__TOPOLOGY__REQUESTS_QUEUE="$RUN_ID.requests"
export WARREN__TOPOLOGY__DEAD_LETTER_EXCHANGE="$RUN_ID.dlx" WARREN__TOPOLOGY__DEAD_LETTER_QUEUE="$RUN_ID.dead"
export WARREN__TOPOLOGY__RESULTS_QUEUE="$RUN_ID.results" WARREN__RETRY__QUEUE_PREFIX="$RUN_ID.retry"
export WARREN__TOPOLOGY__CONTROL_EXCHANGE="$RUN_ID.control"
SAMPLED=(--temperature 0.7 --top-p 0.95)
PORT="${PORT:-8089}"

tasks() { local t=$(( $1 * TASKS_PER_SLOT )); echo $(( t < 16 ? 16 : t )); }
background=""
cleanup() {
  [ -n "$background" ] && kill -TERM "$background" 2>/dev/null && wait "$background" 2>/dev/null || true
  curl -fsS -u guest:guest "http://127.0.0.1:15672/api/queues/%2F?columns=name" 2>/dev/null \
    | python3 -c 'import json,sys; [print(q["name"]) for q in json.load(sys.stdin) if q["name"].startswith(sys.argv[1] + ".")]' "$RUN_ID" 2>/dev/null \
    | while read -r q; do curl -fsS -u guest:guest -X DELETE "http://127.0.0.1:15672/api/queues/%2F/$q" >/dev/null || true; done
}
trap cleanup EXIT

# engine NAME SLOTS [bench options...]: the engine alone; engine.* settings from the environment.
engine() {
  local name=$1 n=$2; shift 2
  echo "-- $name" >&2
  WARREN__ENGINE__SLOTS="$n" timeout 300 "$WARREN_BIN" bench --in-process --concurrency "$n" \
    --tasks "$(tasks "$n")" --max-tokens "$MAX_TOKENS" --json --label "$name" "$@" \
    > "$RESULTS/$name.json" || echo "gpu-check: $name failed" >&2
}

for n in $SLOTS; do
  WARREN__ENGINE__DEVICE_SAMPLING=off engine "engine-host-$n" "$n"
  WARREN__ENGINE__DEVICE_SAMPLING=on engine "engine-device-$n" "$n"
  WARREN__ENGINE__DEVICE_SAMPLING=off engine "engine-host-sampled-$n" "$n" "${SAMPLED[@]}"
  WARREN__ENGINE__DEVICE_SAMPLING=on engine "engine-device-sampled-$n" "$n" "${SAMPLED[@]}"
  if [ "$n" -gt 1 ]; then
    # The KV cache's layout: one cache against a stream per slot (the default), with tasks of
    # one length and of eight (slots freed here and there: with streams, one pass per run of
    # consecutive busy slots).
    WARREN__ENGINE__DEVICE_SAMPLING=on WARREN__ENGINE__KV_UNIFIED=true engine "engine-device-unified-$n" "$n"
    WARREN__ENGINE__DEVICE_SAMPLING=on WARREN__ENGINE__KV_UNIFIED=true engine "engine-device-unified-mixed-$n" "$n" --mixed-lengths
    WARREN__ENGINE__DEVICE_SAMPLING=on engine "engine-device-mixed-$n" "$n" --mixed-lengths
  fi
  if [ -z "${SKIP_BROKER:-}" ]; then
    echo "-- warren-$n (through RabbitMQ)" >&2
    WARREN__ENGINE__SLOTS="$n" WARREN__LOG__LEVEL=info "$WARREN_BIN" worker 2> "$RESULTS/worker-$n.log" &
    background=$!
    until grep -q consuming "$RESULTS/worker-$n.log" 2>/dev/null; do
      kill -0 "$background" 2>/dev/null || { cat "$RESULTS/worker-$n.log" >&2; exit 1; }
      sleep 0.3
    done
    timeout 300 "$WARREN_BIN" bench --concurrency "$n" --tasks "$(tasks "$n")" --max-tokens "$MAX_TOKENS" \
      --json --label "warren-$n" > "$RESULTS/warren-$n.json" || echo "gpu-check: warren-$n failed" >&2
    kill -TERM "$background"; wait "$background" || true; background=""
  fi
done

if [ -n "${LLAMA_SERVER:-}" ]; then
  for n in $SLOTS; do
    for mode in host backend; do
      flags=(); [ "$mode" = backend ] && flags=(--backend-sampling)
      "$LLAMA_SERVER" -m "$MODEL" -ngl 99 -np "$n" -c $((2048 * n)) \
        "${flags[@]}" --port "$PORT" --host 127.0.0.1 > "$RESULTS/llama-server-$mode-$n.log" 2>&1 &
      background=$!
      for _ in $(seq 240); do curl -fsS "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break; sleep 0.5; done
      for kind in greedy sampled; do
        options=(); [ "$kind" = sampled ] && options=("${SAMPLED[@]}")
        echo "-- llama-server-$mode-$kind-$n" >&2
        timeout 300 "$WARREN_BIN" bench --llama-server "http://127.0.0.1:$PORT" --concurrency "$n" \
          --tasks "$(tasks "$n")" --max-tokens "$MAX_TOKENS" --json --label "llama-server-$mode-$kind-$n" \
          "${options[@]}" > "$RESULTS/llama-server-$mode-$kind-$n.json" || echo "gpu-check: llama-server-$mode-$kind-$n failed" >&2
      done
      kill "$background"; wait "$background" 2>/dev/null || true; background=""
    done
  done
fi

if [ -n "${BATCH_CHECK:-}" ]; then
  largest=$(echo "$SLOTS" | tr ' ' '\n' | sort -n | tail -1)
  WARREN__ENGINE__BATCH_SIZE=128 engine "batch128-$largest" "$largest"
  PREFIX=(--prompts bench/shared-prefix/questions.txt --prefix bench/shared-prefix/system.txt)
  for batch in 128 512; do
    WARREN__ENGINE__BATCH_SIZE=$batch MAX_TOKENS=64 engine "prefix-batch$batch" 32 "${PREFIX[@]}"
  done
fi

python3 scripts/gpu-table.py "$RESULTS" "$SLOTS" "$MAX_TOKENS" "$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"
