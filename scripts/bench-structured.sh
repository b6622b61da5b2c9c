#!/usr/bin/env bash
# `make bench-structured`: what structured output costs per token, side by side in one run.
# The same TASKS prompts (the built-in ones) at CONCURRENCY, MAX_TOKENS out, greedy, five ways:
#   warren's engine alone (in this process, no broker), without and with the JSON Schema of
#   bench/structured/schema.json, and as a chat turn that must call a function whose
#   arguments follow that schema (a tool call: llama.cpp's tool-call grammar);
#   llama-server (the same slots, threads, context and batch), without and with it (its
#   `json_schema`).
# Prints a table with tasks/s, tokens/s and the time per generated token of one sequence
# ((latency - time to first token) / tokens), and what the schema adds to it, and writes it to bench/results-structured-latest.md. Tunables: TASKS (16), CONCURRENCY (4),
# MAX_TOKENS (96), THREADS (cores).
set -euo pipefail
cd "$(dirname "$0")/.."

TASKS="${TASKS:-16}"
CONCURRENCY="${CONCURRENCY:-4}"
MAX_TOKENS="${MAX_TOKENS:-96}"
THREADS="${THREADS:-$(nproc)}"
CONTEXT=1024
BATCH=128
SCHEMA=bench/structured/schema.json
MODEL="$(pwd)/models/gemma3-270m-q4_k_m.gguf"
WARREN="$(pwd)/target/release/warren"
PORT="${LLAMA_SERVER_PORT:-8089}"
OUT="$(mktemp -d)"
RUN_ID="bench-structured.$(date +%s)"
LOAD=(--tasks "$TASKS" --concurrency "$CONCURRENCY" --max-tokens "$MAX_TOKENS" --json)

LLAMA_SERVER="$(scripts/build-llama-server.sh | tail -n1)"
LLAMA_COMMIT="$("$LLAMA_SERVER" --version 2>&1 | grep -o 'commit [0-9a-f]*' | head -n1 || echo "commit unknown")"

export WARREN__ENGINE__MODEL_PATH="$MODEL" WARREN__ENGINE__THREADS="$THREADS"
export WARREN__ENGINE__CONTEXT_SIZE="$CONTEXT" WARREN__ENGINE__BATCH_SIZE="$BATCH"
export WARREN__ENGINE__SLOTS="$CONCURRENCY" WARREN__ENGINE__PREFIX_CACHE=false
export WARREN__METRICS__LISTEN="" WARREN__LOG__LEVEL=warn

# shellcheck source=scripts/bench-run.sh
source scripts/bench-run.sh

for schema in none schema tool; do
  flag=(); [ "$schema" = schema ] && flag=(--json-schema "$SCHEMA")
  [ "$schema" = tool ] && flag=(--tool-schema "$SCHEMA")
  echo "== engine alone, $schema" >&2
  "$WARREN" bench --in-process "${LOAD[@]}" "${flag[@]}" --label warren > "$OUT/warren-$schema.json"
done
start_llama_server "$CONCURRENCY" "$OUT/llama.log"
for schema in none schema; do
  flag=(); [ "$schema" = schema ] && flag=(--json-schema "$SCHEMA")
  echo "== llama-server, $schema" >&2
  "$WARREN" bench --llama-server "http://127.0.0.1:$PORT" "${LOAD[@]}" "${flag[@]}" \
    --label llama-server > "$OUT/llama-$schema.json"
done
kill -TERM "$server"; wait "$server" 2>/dev/null || true; server=""

mkdir -p bench
python3 - "$OUT" <<PY | tee bench/results-structured-latest.md
import json, sys
out = sys.argv[1]
print("## Structured-output benchmark: $(date -u +%Y-%m-%d), $(nproc) CPU cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), no GPU")
print()
print("Model gemma3-270m Q4_K_M, threads $THREADS, $TASKS tasks at concurrency $CONCURRENCY (= slots), max_tokens $MAX_TOKENS,")
print("greedy; context $CONTEXT per slot, batch $BATCH; schema bench/structured/schema.json. llama-server: llama.cpp $LLAMA_COMMIT.")
print()
print("| target | schema | tasks/s | tokens/s | tokens per task | latency p50 ms | ttft p50 ms | ms per generated token, one sequence | errors |")
print("|---|---|---|---|---|---|---|---|---|")
per_token = {}
for kind, name in (("warren", "warren engine alone"), ("llama", "llama-server")):
    for schema in (("none", "schema", "tool") if kind == "warren" else ("none", "schema")):
        r = json.load(open(f"{out}/{kind}-{schema}.json"))
        tokens = r["tokens_per_s"] / max(r["tasks_per_s"], 1e-9)
        # Time between the first token and the last, per token: what a constraint slows.
        ms = (r["latency_ms"]["p50"] - r["ttft_ms"]["p50"]) / max(tokens, 1e-9)
        per_token[(kind, schema)] = ms
        label = {"none": "none", "schema": "yes", "tool": "tool call"}[schema]
        print(f"| {name} | {label} | {r['tasks_per_s']:.2f} | {r['tokens_per_s']:.1f} | {tokens:.0f} | {r['latency_ms']['p50']:.0f} | {r['ttft_ms']['p50']:.0f} | {ms:.1f} | {r['errors']} |")
print()
for kind, name in (("warren", "warren"), ("llama", "llama-server")):
    cost = per_token[(kind, "schema")] - per_token[(kind, "none")]
    print(f"{name}: the schema adds {cost:+.1f} ms per generated token ({per_token[(kind, 'schema')] / max(per_token[(kind, 'none')], 1e-9):.2f}x)")
tool = per_token[("warren", "tool")]
print(f"warren: a tool call with the schema as its arguments adds {tool - per_token[('warren', 'none')]:+.1f} ms per generated token ({tool / max(per_token[('warren', 'none')], 1e-9):.2f}x plain, {tool / max(per_token[('warren', 'schema')], 1e-9):.2f}x the schema)")
PY
