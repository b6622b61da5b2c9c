#!/usr/bin/env bash
# The GPU check (`make gpu-check`): warren on this machine's GPU with the default model, side by
# side with llama-server and llama.cpp's own ceiling in the same run. n concurrent tasks on n
# slots, TASKS_PER_SLOT x n tasks (at least 16) of MAX_TOKENS tokens each:
#   1. the engine alone, every layer on the GPU, tokens chosen on the device
#      (engine.device_sampling "on"), greedy at each of SLOTS, with where each step's time
#      went (schedule, decode, sample, emit: the report's step_profile); at HOST_SLOTS also
#      with tokens chosen on the host ("off", the logits copied back and scanned); at
#      SAMPLED_SLOTS sampled (temperature 0.7, top-k 40, top-p 0.95, seeded per task) both
#      ways; at LAYOUT_SLOTS engine.kv_unified true (one KV cache) against the default (a
#      stream per slot), with tasks of one length and of eight (--mixed-lengths);
#   2. warren through RabbitMQ at BROKER_SLOTS, greedy, tokens chosen on the device
#      (SKIP_BROKER=1 skips it; needs a broker: make broker-up);
#   3. llama-server (LLAMA_SERVER=path of a CUDA build; skipped when unset) at SERVER_SLOTS:
#      -ngl 99 -np n --cont-batching, warren's batch sizes, greedy and sampled, with its default
#      host sampling and with --backend-sampling;
#   4. llama-batched-bench (BATCHED_BENCH=path, from llama-server's build): llama.cpp decoding
#      the same shapes with no sampling and no server, its ceiling on this card.
# Both sides run flash attention as FLASH_ATTENTION says (default off, as a build without its
# kernels needs; scripts/gpu-remote.sh sets it from its FA build switch). nvidia-smi samples GPU utilisation during each run.
# With FLASH_ATTENTION=on, the engine alone also with it off at FA_OFF_SLOTS (same build).
# Where Nsight Systems (nsys) is installed, the engine alone runs under it at PROFILE_SLOTS and
# its kernel, CUDA API and memory-copy summaries go to RESULTS/profile-N.txt.
# With BATCH_CHECK=1, engine.batch_size 128 against the GPU default (512) as well.
# Prints the tables; each run's JSON report stays in RESULTS (a temporary folder by default).
# Usage: scripts/gpu-check.sh   (builds with CUDA: make build-cuda; WARREN_BIN=path skips that)
#        TABLE_ONLY=1 RESULTS=folder scripts/gpu-check.sh   (the tables of an earlier run)
set -euo pipefail
cd "$(dirname "$0")/.."

SLOTS="${SLOTS:-1 32 64 128 256}"
MAX_TOKENS="${MAX_TOKENS:-128}"
if [ -n "${TABLE_ONLY:-}" ]; then exec python3 scripts/gpu-table.py "$RESULTS" "$SLOTS" "$MAX_TOKENS"; fi
command -v nvidia-smi >/dev/null 2>&1 || { echo "gpu-check: no nvidia-smi: no NVIDIA GPU here" >&2; exit 1; }
HOST_SLOTS="${HOST_SLOTS-1 64}"
SAMPLED_SLOTS="${SAMPLED_SLOTS-1 32 64}"
LAYOUT_SLOTS="${LAYOUT_SLOTS-64}"
BROKER_SLOTS="${BROKER_SLOTS-$SLOTS}"
SERVER_SLOTS="${SERVER_SLOTS-$SLOTS}"
TASKS_PER_SLOT="${TASKS_PER_SLOT:-2}"
FLASH_ATTENTION="${FLASH_ATTENTION:-off}"
FA_OFF_SLOTS="${FA_OFF_SLOTS-64}"
PROFILE_SLOTS="${PROFILE_SLOTS-64}"
BATCH_SIZE=512
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
export WARREN__ENGINE__N_GPU_LAYERS=99 WARREN__ENGINE__FLASH_ATTENTION="$FLASH_ATTENTION"
export WARREN__ENGINE__BATCH_SIZE="$BATCH_SIZE"
export WARREN__METRICS__LISTEN="" WARREN__TOPOLOGY__REQUESTS_QUEUE="$RUN_ID.requests"
export WARREN__TOPOLOGY__DEAD_LETTER_EXCHANGE="$RUN_ID.dlx" WARREN__TOPOLOGY__DEAD_LETTER_QUEUE="$RUN_ID.dead"
export WARREN__TOPOLOGY__RESULTS_QUEUE="$RUN_ID.results" WARREN__RETRY__QUEUE_PREFIX="$RUN_ID.retry"
export WARREN__TOPOLOGY__CONTROL_EXCHANGE="$RUN_ID.control"
SAMPLED=(--temperature 0.7 --top-p 0.95)
PORT="${PORT:-8089}"
{
  echo "gpu: $(nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv,noheader)"
  echo "flash attention: $FLASH_ATTENTION; batch and micro-batch: $BATCH_SIZE; context per slot: 2048"
  echo "build: ${BUILD_NOTE:-(not recorded)}"
  echo "warren: $("$WARREN_BIN" --version 2>/dev/null || echo "$WARREN_BIN")"
} | tee "$RESULTS/setup.txt" >&2

tasks() { local t=$(( $1 * TASKS_PER_SLOT )); echo $(( t < 16 ? 16 : t )); }
has() { case " $1 " in *" $2 "*) return 0;; *) return 1;; esac; }
background="" watcher=""
cleanup() {
  [ -n "$watcher" ] && kill "$watcher" 2>/dev/null || true
  [ -n "$background" ] && kill -TERM "$background" 2>/dev/null && wait "$background" 2>/dev/null || true
  curl -fsS -u guest:guest "http://127.0.0.1:15672/api/queues/%2F?columns=name" 2>/dev/null \
    | python3 -c 'import json,sys; [print(q["name"]) for q in json.load(sys.stdin) if q["name"].startswith(sys.argv[1] + ".")]' "$RUN_ID" 2>/dev/null \
    | while read -r q; do curl -fsS -u guest:guest -X DELETE "http://127.0.0.1:15672/api/queues/%2F/$q" >/dev/null || true; done
}
trap cleanup EXIT

# watch NAME / unwatch: GPU utilisation (percent of time a kernel ran) every 200 ms into
# RESULTS/NAME.gpu while a run lasts.
watch() {
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits -lms 200 \
    > "$RESULTS/$1.gpu" 2>/dev/null &
  watcher=$!
}
unwatch() { kill "$watcher" 2>/dev/null || true; wait "$watcher" 2>/dev/null || true; watcher=""; }

# summary NAME: one line of the run's report on stderr, as the runs go.
summary() {
  python3 - "$RESULTS/$1.json" "$RESULTS/$1.gpu" <<'PY' >&2 || true
import json, sys
r = json.load(open(sys.argv[1]))
try:
    busy = [float(l.split(",")[0]) for l in open(sys.argv[2]) if l.strip()]
except (OSError, ValueError):
    busy = []
line = f"   {r['label']}: {r['tokens_per_s']:.0f} tokens/s, {r['errors']} errors"
if busy:
    line += f", GPU busy {sum(busy) / len(busy):.0f}%"
p = r.get("step_profile")
if p:
    line += (f"; step {p['schedule_ms']:.3f} schedule, {p['decode_ms']:.3f} decode, {p['sample_ms']:.3f} sample,"
             f" {p['emit_ms']:.3f} emit ms ({p['tokens_per_step']:.0f} tokens)")
print(line)
PY
}

# engine NAME SLOTS [bench options...]: the engine alone; engine.* settings from the environment.
engine() {
  local name=$1 n=$2; shift 2
  echo "-- $name" >&2
  watch "$name"
  WARREN__ENGINE__SLOTS="$n" timeout 300 "$WARREN_BIN" bench --in-process --concurrency "$n" \
    --tasks "$(tasks "$n")" --max-tokens "$MAX_TOKENS" --json --label "$name" "$@" \
    > "$RESULTS/$name.json" || echo "gpu-check: $name failed" >&2
  unwatch
  summary "$name"
}

# The headline runs first (a run cut short by a time limit keeps what it measured): the
# engine, warren through RabbitMQ, llama-server --backend-sampling and llama.cpp's ceiling,
# greedy at every SLOTS value; then the comparisons.
for n in $SLOTS; do
  WARREN__ENGINE__DEVICE_SAMPLING=on engine "engine-device-$n" "$n"
done

if [ -z "${SKIP_BROKER:-}" ]; then
  for n in $BROKER_SLOTS; do
    echo "-- warren-$n (through RabbitMQ)" >&2
    WARREN__ENGINE__SLOTS="$n" WARREN__ENGINE__DEVICE_SAMPLING=on WARREN__LOG__LEVEL=info \
      "$WARREN_BIN" worker 2> "$RESULTS/worker-$n.log" &
    background=$!
    started=$(date +%s)
    until grep -q consuming "$RESULTS/worker-$n.log" 2>/dev/null; do
      kill -0 "$background" 2>/dev/null || { cat "$RESULTS/worker-$n.log" >&2; exit 1; }
      [ $(( $(date +%s) - started )) -lt 180 ] || { echo "gpu-check: the worker never consumed" >&2; tail -5 "$RESULTS/worker-$n.log" >&2; exit 1; }
      sleep 0.3
    done
    watch "warren-$n"
    timeout 300 "$WARREN_BIN" bench --concurrency "$n" --tasks "$(tasks "$n")" --max-tokens "$MAX_TOKENS" \
      --json --label "warren-$n" > "$RESULTS/warren-$n.json" || echo "gpu-check: warren-$n failed" >&2
    unwatch
    summary "warren-$n"
    # The worker logs its engine's step times as it stops.
    kill -TERM "$background"; wait "$background" || true; background=""
  done
fi

# server MODE SLOTS KINDS: llama-server with its default host sampling (host) or with
# --backend-sampling (backend), -np SLOTS, the tasks greedy and/or sampled.
server() {
  local mode=$1 n=$2 kinds=$3 flags=()
  [ "$mode" = backend ] && flags=(--backend-sampling)
  "$LLAMA_SERVER" -m "$MODEL" -ngl 99 -np "$n" -c $((2048 * n)) -b "$BATCH_SIZE" -ub "$BATCH_SIZE" \
    --cont-batching -fa "$FLASH_ATTENTION" "${flags[@]}" --port "$PORT" --host 127.0.0.1 \
    > "$RESULTS/llama-server-$mode-$n.log" 2>&1 &
  background=$!
  for _ in $(seq 240); do curl -fsS "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break; sleep 0.5; done
  for kind in $kinds; do
    local options=() name="llama-server-$mode-$kind-$n"
    [ "$kind" = sampled ] && options=("${SAMPLED[@]}")
    echo "-- $name" >&2
    watch "$name"
    timeout 300 "$WARREN_BIN" bench --llama-server "http://127.0.0.1:$PORT" --concurrency "$n" \
      --tasks "$(tasks "$n")" --max-tokens "$MAX_TOKENS" --json --label "$name" \
      "${options[@]}" > "$RESULTS/$name.json" || echo "gpu-check: $name failed" >&2
    unwatch
    summary "$name"
  done
  kill "$background"; wait "$background" 2>/dev/null || true; background=""
}
kinds() { if has "$SAMPLED_SLOTS" "$1"; then echo "greedy sampled"; else echo greedy; fi; }

if [ -n "${LLAMA_SERVER:-}" ]; then
  for n in $SERVER_SLOTS; do server backend "$n" "$(kinds "$n")"; done
fi

if [ -n "${BATCHED_BENCH:-}" ]; then
  # Prompts of 16 tokens, MAX_TOKENS generated, n sequences decoded together.
  largest=$(echo "$SLOTS" | tr ' ' '\n' | sort -n | tail -1)
  echo "-- llama-batched-bench" >&2
  watch batched-bench
  "$BATCHED_BENCH" -m "$MODEL" -ngl 99 -c $(( (16 + MAX_TOKENS) * largest + 256 )) -b "$BATCH_SIZE" \
    -ub "$BATCH_SIZE" -fa "$FLASH_ATTENTION" -npp 16 -ntg "$MAX_TOKENS" -npl "$(echo "$SLOTS" | tr ' ' ',')" \
    --output-format jsonl > "$RESULTS/batched-bench.jsonl" 2> "$RESULTS/batched-bench.log" \
    || echo "gpu-check: llama-batched-bench failed" >&2
  unwatch
  grep -h '^{"n_kv_max"' "$RESULTS"/batched-bench.* >&2 || true
fi

for n in $SLOTS; do
  if has "$SAMPLED_SLOTS" "$n"; then
    WARREN__ENGINE__DEVICE_SAMPLING=on engine "engine-device-sampled-$n" "$n" "${SAMPLED[@]}"
  fi
  if has "$HOST_SLOTS" "$n"; then
    WARREN__ENGINE__DEVICE_SAMPLING=off engine "engine-host-$n" "$n"
    if has "$SAMPLED_SLOTS" "$n"; then
      WARREN__ENGINE__DEVICE_SAMPLING=off engine "engine-host-sampled-$n" "$n" "${SAMPLED[@]}"
    fi
  fi
  if has "$LAYOUT_SLOTS" "$n"; then
    # One KV cache against a stream per slot (the default), with tasks of one length and of
    # eight (slots freed here and there: with streams, one pass per run of busy slots).
    WARREN__ENGINE__DEVICE_SAMPLING=on WARREN__ENGINE__KV_UNIFIED=true engine "engine-device-unified-$n" "$n"
    WARREN__ENGINE__DEVICE_SAMPLING=on WARREN__ENGINE__KV_UNIFIED=true engine "engine-device-unified-mixed-$n" "$n" --mixed-lengths
    WARREN__ENGINE__DEVICE_SAMPLING=on engine "engine-device-mixed-$n" "$n" --mixed-lengths
  fi
done

nsys=$(command -v nsys || ls /usr/local/cuda/bin/nsys /opt/nvidia/nsight-systems/*/bin/nsys 2>/dev/null | head -1 || true)
for n in $SLOTS; do
  if [ "$FLASH_ATTENTION" = on ] && has "$FA_OFF_SLOTS" "$n"; then
    WARREN__ENGINE__DEVICE_SAMPLING=on WARREN__ENGINE__FLASH_ATTENTION=off engine "engine-device-fa-off-$n" "$n"
  fi
  if [ -n "$nsys" ] && has "$PROFILE_SLOTS" "$n"; then
    echo "-- profile-$n (nsys)" >&2
    WARREN__ENGINE__SLOTS="$n" WARREN__ENGINE__DEVICE_SAMPLING=on timeout 300 "$nsys" profile --force-overwrite true \
      --trace cuda,nvtx,osrt --sample none --output "$RESULTS/profile-$n" "$WARREN_BIN" bench --in-process \
      --concurrency "$n" --tasks "$(tasks "$n")" --max-tokens "$MAX_TOKENS" --json --label "profile-$n" \
      > "$RESULTS/profile-$n.json" 2> "$RESULTS/profile-$n.log" || echo "gpu-check: profile-$n failed" >&2
    "$nsys" stats --force-export true --report cuda_gpu_kern_sum,cuda_api_sum,cuda_gpu_mem_time_sum,osrt_sum \
      --format table "$RESULTS/profile-$n.nsys-rep" > "$RESULTS/profile-$n.txt" 2>&1 || true
    rm -f "$RESULTS/profile-$n.sqlite"
    head -c 6000 "$RESULTS/profile-$n.txt" >&2 || true
  fi
done

if [ -n "${LLAMA_SERVER:-}" ]; then
  for n in $HOST_SLOTS; do has "$SERVER_SLOTS" "$n" && server host "$n" "$(kinds "$n")"; done
fi

if [ -n "${BATCH_CHECK:-}" ]; then
  largest=$(echo "$SLOTS" | tr ' ' '\n' | sort -n | tail -1)
  WARREN__ENGINE__DEVICE_SAMPLING=on WARREN__ENGINE__BATCH_SIZE=128 engine "batch128-$largest" "$largest"
  PREFIX=(--prompts bench/shared-prefix/questions.txt --prefix bench/shared-prefix/system.txt)
  for batch in 128 512; do
    WARREN__ENGINE__DEVICE_SAMPLING=on WARREN__ENGINE__BATCH_SIZE=$batch MAX_TOKENS=64 engine "prefix-batch$batch" 32 "${PREFIX[@]}"
  done
fi

python3 scripts/gpu-table.py "$RESULTS" "$SLOTS" "$MAX_TOKENS" "$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"
