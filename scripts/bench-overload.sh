#!/usr/bin/env bash
# `make bench-overload`: warren pushed past capacity through the gateway, side by side in one
# run. One worker (SLOTS slots), one gateway, CONCURRENCY callers that each send their next
# request when the last is answered (after a 429, PAUSE_MS later: a client backing off),
# TASKS requests of MAX_TOKENS tokens each. The same load against two targets:
#   bounded:   topology.queue_bound = BOUND (the policy the worker puts): a full queue is a
#              429 at once;
#   unbounded: topology.queue_bound = 0 (the baseline): every request waits in the queue.
# Prints the share of 429s and how fast they came, the latency and throughput of the accepted
# requests, and writes bench/results-overload-latest.md. Tunables: TASKS (240),
# CONCURRENCY (24), MAX_TOKENS (16), BOUND (4), SLOTS (1), PAUSE_MS (1000), THREADS (cores).
set -euo pipefail
cd "$(dirname "$0")/.."

TASKS="${TASKS:-240}"
CONCURRENCY="${CONCURRENCY:-24}"
MAX_TOKENS="${MAX_TOKENS:-16}"
BOUND="${BOUND:-4}"
SLOTS="${SLOTS:-1}"
PAUSE_MS="${PAUSE_MS:-1000}"
THREADS="${THREADS:-$(nproc)}"
MODEL="$(pwd)/models/gemma3-270m-q4_k_m.gguf"
WARREN="$(pwd)/target/release/warren"
OUT="$(mktemp -d)"
RUN_ID="bench-overload.$(date +%s)"
GATEWAY_PORT="${GATEWAY_PORT:-8091}"

export WARREN__BROKER__URL="${WARREN__BROKER__URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
export WARREN__ENGINE__MODEL_PATH="$MODEL" WARREN__ENGINE__THREADS="$THREADS"
export WARREN__ENGINE__SLOTS="$SLOTS" WARREN__METRICS__LISTEN="" WARREN__LOG__LEVEL=warn
export WARREN__GATEWAY__LISTEN="127.0.0.1:$GATEWAY_PORT" GATEWAY_PORT
export WARREN__GATEWAY__RESULTS_QUEUE="$RUN_ID.gateway-results"

# shellcheck source=scripts/bench-run.sh
source scripts/bench-run.sh

LOAD=(--gateway "http://127.0.0.1:$GATEWAY_PORT/v1" --tasks "$TASKS" --concurrency "$CONCURRENCY"
      --max-tokens "$MAX_TOKENS" --refused-pause-ms "$PAUSE_MS" --json)
start_gateway "$OUT/gateway.log"
for bound in "$BOUND" 0; do
  echo "== warren through the gateway, topology.queue_bound=$bound" >&2
  # The worker puts (or, with 0, removes) the bound policy on the queue as it starts.
  start_worker "$OUT/worker-$bound.log" WARREN__TOPOLOGY__QUEUE_BOUND="$bound"
  "$WARREN" bench "${LOAD[@]}" --label "queue_bound=$bound" > "$OUT/bound-$bound.json"
  kill -TERM "$worker"; wait "$worker" || true; worker=""
done

mkdir -p bench
python3 - "$OUT" "$BOUND" <<PY | tee bench/results-overload-latest.md
import json, sys
out, bound = sys.argv[1], sys.argv[2]
runs = [json.load(open(f"{out}/bound-{b}.json")) for b in (bound, "0")]
print("# Past capacity: bounded queue against unbounded")
print()
print("Model gemma3-270m Q4_K_M, $SLOTS slot(s), threads $THREADS, through the gateway: $CONCURRENCY callers,")
print("$TASKS requests of $MAX_TOKENS tokens, a refused caller waits $PAUSE_MS ms before its next. One run.")
print()
print("| target | requests | 429s | share | 429 p50 / p99 ms | accepted | accepted tasks/s | accepted p50 / p99 ms | other errors |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in runs:
    refused = r["refused_ms"] or {"p50": 0, "p99": 0}
    accepted = r["tasks"] - r["refused"] - r["errors"]
    print(f"| {r['label']} | {r['tasks']} | {r['refused']} | {100 * r['refused'] / r['tasks']:.0f}% | "
          f"{refused['p50']:.1f} / {refused['p99']:.1f} | {accepted} | {r['tasks_per_s']:.2f} | "
          f"{r['latency_ms']['p50']:.0f} / {r['latency_ms']['p99']:.0f} | {r['errors']} |")
bounded, unbounded = runs
ratio = unbounded["latency_ms"]["p99"] / max(bounded["latency_ms"]["p99"], 1e-9)
print()
print(f"Accepted requests' p99 latency: {ratio:.1f}x lower with the bound; "
      f"throughput {bounded['tasks_per_s'] / max(unbounded['tasks_per_s'], 1e-9):.2f}x the unbounded run's.")
PY
