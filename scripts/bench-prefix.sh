#!/usr/bin/env bash
# `make bench-prefix` (also run by `make bench`): the shared-prefix workload, side by side in
# one run: every task is the same ~1,000-token system prompt (bench/shared-prefix/system.txt)
# plus a short distinct question (questions.txt), TASKS tasks at CONCURRENCY, MAX_TOKENS out,
# greedy. Four targets, interleaved over ROUNDS:
#   warren through RabbitMQ with engine.prefix_cache on, and off (the no-cache run);
#   llama-server with its cache_prompt on, and off.
# Both servers get the same slots (= concurrency), threads, context per slot and batch size.
# Prints a table and writes it to bench/results-prefix-latest.md. Tunables: TASKS (32),
# CONCURRENCY (8), MAX_TOKENS (64), THREADS (cores), ROUNDS (1).
set -euo pipefail
cd "$(dirname "$0")/.."

TASKS="${TASKS:-32}"
CONCURRENCY="${CONCURRENCY:-8}"
MAX_TOKENS="${MAX_TOKENS:-64}"
THREADS="${THREADS:-$(nproc)}"
ROUNDS="${ROUNDS:-1}"
CONTEXT=2048
BATCH=128
MODEL="$(pwd)/models/gemma3-270m-q4_k_m.gguf"
WARREN="$(pwd)/target/release/warren"
PORT="${LLAMA_SERVER_PORT:-8089}"
OUT="$(mktemp -d)"
RUN_ID="bench-prefix.$(date +%s)"
WORKLOAD=(--prompts bench/shared-prefix/questions.txt --prefix bench/shared-prefix/system.txt)
LOAD=(--tasks "$TASKS" --concurrency "$CONCURRENCY" --max-tokens "$MAX_TOKENS" --json "${WORKLOAD[@]}")

LLAMA_SERVER="$(scripts/build-llama-server.sh | tail -n1)"
LLAMA_COMMIT="$("$LLAMA_SERVER" --version 2>&1 | grep -o 'commit [0-9a-f]*' | head -n1 || echo "commit unknown")"

export WARREN__BROKER__URL="${WARREN__BROKER__URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
export WARREN__ENGINE__MODEL_PATH="$MODEL" WARREN__ENGINE__THREADS="$THREADS"
export WARREN__ENGINE__CONTEXT_SIZE="$CONTEXT" WARREN__ENGINE__BATCH_SIZE="$BATCH"
export WARREN__ENGINE__SLOTS="$CONCURRENCY"
export WARREN__METRICS__LISTEN="" WARREN__LOG__LEVEL=warn

# shellcheck source=scripts/bench-run.sh
source scripts/bench-run.sh

for round in $(seq 1 "$ROUNDS"); do
  for cache in true false; do
    echo "== round $round/$ROUNDS: warren through RabbitMQ, prefix_cache=$cache" >&2
    start_worker "$OUT/worker-$cache-$round.log" WARREN__ENGINE__PREFIX_CACHE="$cache"
    "$WARREN" bench "${LOAD[@]}" --label "warren" > "$OUT/warren-$cache-$round.json"
    kill -TERM "$worker"; wait "$worker" || true; worker=""
  done
  echo "== round $round/$ROUNDS: llama-server" >&2
  start_llama_server "$CONCURRENCY" "$OUT/llama-$round.log"
  for cache in true false; do
    echo "-- llama-server, cache_prompt=$cache" >&2
    flag=(); [ "$cache" = true ] && flag=(--cache-prompt)
    "$WARREN" bench --llama-server "http://127.0.0.1:$PORT" "${LOAD[@]}" "${flag[@]}" \
      --label "llama-server" > "$OUT/llama-$cache-$round.json"
  done
  kill -TERM "$server"; wait "$server" 2>/dev/null || true; server=""
done

mkdir -p bench
python3 - "$OUT" "$ROUNDS" <<PY | tee bench/results-prefix-latest.md
import json, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def load(kind, cache):
    """The median round by tasks/s, with the range of tasks/s over all rounds."""
    runs = sorted((json.load(open(f"{out}/{kind}-{cache}-{i}.json")) for i in range(1, rounds + 1)), key=lambda r: r["tasks_per_s"])
    r = dict(runs[len(runs) // 2])
    r["range"] = f"{runs[0]['tasks_per_s']:.2f}–{runs[-1]['tasks_per_s']:.2f}"
    return r
print("## Shared-prefix benchmark: $(date -u +%Y-%m-%d), $(nproc) CPU cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), no GPU")
print()
print("Model gemma3-270m Q4_K_M, threads $THREADS, $TASKS tasks at concurrency $CONCURRENCY (= slots), each the shared")
print("system prompt of bench/shared-prefix/system.txt + one question, max_tokens $MAX_TOKENS, greedy; context $CONTEXT per slot,")
print("batch $BATCH; median of $ROUNDS round(s) (tasks/s range in brackets). llama-server: llama.cpp $LLAMA_COMMIT.")
print()
print("| target | prefix reuse | tasks/s | tokens/s | prompt tokens read per task | ttft p50 ms | latency p50 ms | p99 ms | errors |")
print("|---|---|---|---|---|---|---|---|---|")
rows = {}
for kind, name, knob in (("warren", "warren (RabbitMQ)", "engine.prefix_cache"), ("llama", "llama-server", "cache_prompt")):
    for cache in ("true", "false"):
        r = load(kind, cache); rows[(kind, cache)] = r
        print(f"| {name} | {knob} = {cache} | {r['tasks_per_s']:.2f} [{r['range']}] | {r['tokens_per_s']:.1f} | {r['prompt_read_per_task']:.0f} | {r['ttft_ms']['p50']:.0f} | {r['latency_ms']['p50']:.0f} | {r['latency_ms']['p99']:.0f} | {r['errors']} |")
w, l, wn = rows[("warren", "true")], rows[("llama", "true")], rows[("warren", "false")]
print()
print(f"warren with the prefix cache / llama-server with cache_prompt: {w['tasks_per_s'] / max(l['tasks_per_s'], 1e-9):.2f}x tasks/s (target >= 1.5x)")
print(f"warren time to first token p50, cache / no cache: {w['ttft_ms']['p50'] / max(wn['ttft_ms']['p50'], 1e-9):.2f} (target <= 0.5)")
PY
