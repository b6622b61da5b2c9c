#!/usr/bin/env bash
# `make bench`: measures, side by side in one run, on the same model, threads, prompts and
# max_tokens, with nothing else running:
#   1. warren through RabbitMQ with engine.slots = 1, 4, 8, 16 (concurrency = slots), then the
#      same worker through `warren gateway` (the OpenAI HTTP path);
#   2. llama.cpp's llama-server with -np 1, 4, 8, 16 and continuous batching, over HTTP;
#   3. the engine alone (same step loop, tasks fed in-process), slots = 1, 4, 8, 16.
# Each measurement runs ROUNDS times, interleaved (so a slow minute of the machine hits every
# target alike), and the table shows the median round with the range of tokens/s.
# Prints one table (tokens/s, tasks/s, p50/p99 latency, peak RSS, ratios) and writes it to
# bench/results-latest.md. Tunables: TASKS (32), MAX_TOKENS (64), THREADS (cores), SLOTS,
# ROUNDS (3).
set -euo pipefail
cd "$(dirname "$0")/.."

TASKS="${TASKS:-32}"
MAX_TOKENS="${MAX_TOKENS:-64}"
THREADS="${THREADS:-$(nproc)}"
SLOTS="${SLOTS:-1 4 8 16}"
ROUNDS="${ROUNDS:-3}"
CONTEXT=2048
BATCH=128
MODEL="$(pwd)/models/gemma3-270m-q4_k_m.gguf"
WARREN="$(pwd)/target/release/warren"
PORT="${LLAMA_SERVER_PORT:-8089}"
GATEWAY_PORT="${GATEWAY_PORT:-8088}"
OUT="$(mktemp -d)"
RUN_ID="bench.$(date +%s)"

LLAMA_SERVER="$(scripts/build-llama-server.sh | tail -n1)"
LLAMA_COMMIT="$("$LLAMA_SERVER" --version 2>&1 | grep -o 'commit [0-9a-f]*' | head -n1 || echo "commit unknown")"
CRATE_VERSION="$(grep -A1 'name = "llama-cpp-sys-2"' Cargo.lock | grep version | cut -d'"' -f2)"

peak_rss_mib() { awk '/VmHWM/ {printf "%.0f", $2 / 1024}' "/proc/$1/status" 2>/dev/null || echo 0; }

export WARREN__BROKER__URL="${WARREN__BROKER__URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
export WARREN__ENGINE__MODEL_PATH="$MODEL" WARREN__ENGINE__THREADS="$THREADS"
export WARREN__ENGINE__CONTEXT_SIZE="$CONTEXT" WARREN__ENGINE__BATCH_SIZE="$BATCH"
export WARREN__METRICS__LISTEN="" WARREN__LOG__LEVEL=warn
# The built-in prompts repeat: the prefix cache would skip what llama-server (cache_prompt
# off here) reads again. Prefix reuse is measured by scripts/bench-prefix.sh, against
# llama-server's own cache.
export WARREN__ENGINE__PREFIX_CACHE=false
export WARREN__GATEWAY__LISTEN="127.0.0.1:$GATEWAY_PORT" WARREN__GATEWAY__REQUEST_TIMEOUT_MS=600000
LOAD=(--tasks "$TASKS" --max-tokens "$MAX_TOKENS" --json)

# shellcheck source=scripts/bench-run.sh
source scripts/bench-run.sh

for round in $(seq 1 "$ROUNDS"); do
for n in $SLOTS; do
  echo "== round $round/$ROUNDS, slots / parallel = $n" >&2
  r="$n-$round"

  echo "-- engine alone" >&2
  WARREN__ENGINE__SLOTS="$n" "$WARREN" bench --in-process --concurrency "$n" "${LOAD[@]}" \
    --label "engine alone" > "$OUT/engine-$r.json"

  echo "-- warren through RabbitMQ" >&2
  start_worker "$OUT/worker-$r.log" WARREN__ENGINE__SLOTS="$n"
  "$WARREN" bench --concurrency "$n" "${LOAD[@]}" --label "warren" > "$OUT/warren-$r.json"
  echo "$(peak_rss_mib "$worker")" > "$OUT/warren-$r.rss"

  echo "-- warren through the gateway (HTTP)" >&2
  start_gateway "$OUT/gateway-$r.log"
  "$WARREN" bench --gateway "http://127.0.0.1:$GATEWAY_PORT/v1" --concurrency "$n" "${LOAD[@]}" \
    --label "gateway" > "$OUT/gateway-$r.json"
  kill -TERM "$gateway"; wait "$gateway" || true; gateway=""
  kill -TERM "$worker"; wait "$worker" || true; worker=""

  echo "-- llama-server" >&2
  start_llama_server "$n" "$OUT/llama-$r.log"
  "$WARREN" bench --llama-server "http://127.0.0.1:$PORT" --concurrency "$n" "${LOAD[@]}" \
    --label "llama-server" > "$OUT/llama-$r.json"
  echo "$(peak_rss_mib "$server")" > "$OUT/llama-$r.rss"
  kill -TERM "$server"; wait "$server" 2>/dev/null || true; server=""
done
done

mkdir -p bench
python3 - "$OUT" "$SLOTS" "$ROUNDS" <<PY | tee bench/results-latest.md
import json, sys, os
out, slots, rounds = sys.argv[1], sys.argv[2].split(), int(sys.argv[3])
def load_round(kind, n, round):
    r = json.load(open(f"{out}/{kind}-{n}-{round}.json"))
    rss = r.get("peak_rss_mib")
    path = f"{out}/{kind}-{n}-{round}.rss"
    if os.path.exists(path):
        rss = float(open(path).read().strip() or 0)
    r["rss"] = rss or 0
    return r
def load(kind, n):
    """The median round by tokens/s, with the range of tokens/s over all rounds."""
    runs = sorted((load_round(kind, n, i) for i in range(1, rounds + 1)), key=lambda r: r["tokens_per_s"])
    r = dict(runs[len(runs) // 2])
    r["range"] = f"{runs[0]['tokens_per_s']:.1f}–{runs[-1]['tokens_per_s']:.1f}"
    return r
print("## Benchmark: $(date -u +%Y-%m-%d), $(nproc) CPU cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), no GPU")
print()
print("Model gemma3-270m Q4_K_M, threads $THREADS, $TASKS tasks x max_tokens $MAX_TOKENS, greedy, 8 prompts,")
print("concurrency = slots; context $CONTEXT per slot, batch $BATCH; median of $ROUNDS interleaved rounds (tokens/s range in brackets).")
print("warren: llama-cpp-sys-2 $CRATE_VERSION (its vendored llama.cpp); llama-server: llama.cpp $LLAMA_COMMIT (from llama-cpp-python 0.3.36).")
print()
print("| slots | target | tokens/s | tasks/s | p50 ms | p99 ms | ttft p50 ms | broker path p50 ms | broker floor p50 ms | peak RSS MiB | errors |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
rows = {}
for n in slots:
    for kind, name in (("warren", "warren (RabbitMQ)"), ("gateway", "warren (gateway, HTTP)"), ("llama", "llama-server"), ("engine", "engine alone")):
        r = load(kind, n); rows[(kind, n)] = r
        overhead, floor = r.get("overhead_ms"), r.get("broker_floor_ms")
        path = f"{overhead['p50']:.2f}" if overhead else "-"
        floor = f"{floor['p50']:.2f}" if floor else "-"
        ttft = "-" if kind == "gateway" else f"{r['ttft_ms']['p50']:.0f}"
        print(f"| {n} | {name} | {r['tokens_per_s']:.1f} [{r['range']}] | {r['tasks_per_s']:.2f} | {r['latency_ms']['p50']:.0f} | {r['latency_ms']['p99']:.0f} | {ttft} | {path} | {floor} | {r['rss']:.0f} | {r['errors']} |")
print()
print("| slots | warren / llama-server | warren / engine alone |")
print("|---|---|---|")
for n in slots:
    w, l, e = rows[("warren", n)], rows[("llama", n)], rows[("engine", n)]
    print(f"| {n} | {w['tokens_per_s'] / max(l['tokens_per_s'], 1e-9):.2f}x | {w['tokens_per_s'] / max(e['tokens_per_s'], 1e-9):.2f}x |")
print()
print("| slots | gateway path p50 ms (HTTP + broker) | AMQP broker path p50 ms | the gateway adds |")
print("|---|---|---|---|")
for n in slots:
    g, w = rows[("gateway", n)].get("overhead_ms"), rows[("warren", n)].get("overhead_ms")
    if g and w:
        print(f"| {n} | {g['p50']:.2f} | {w['p50']:.2f} | {g['p50'] - w['p50']:+.2f} ms |")
first, last = slots[0], slots[-1]
print()
print(f"warren {last} slots / {first} slot: {rows[('warren', last)]['tokens_per_s'] / max(rows[('warren', first)]['tokens_per_s'], 1e-9):.2f}x completion tokens/s")
PY
