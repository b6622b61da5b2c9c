#!/usr/bin/env bash
# `make bench-kv` (also run by `make bench`): the KV cache's layout, side by side in one run:
# warren's engine alone with engine.kv_unified true (one cache for every slot) and false (a
# llama.cpp stream per slot, the default), interleaved over ROUNDS. The load: TASKS tasks of
# eight lengths (1/8 to 8/8 of MAX_TOKENS, `warren bench --mixed-lengths`) kept CONCURRENCY at
# a time on SLOTS slots, so tasks end at different times and busy slots are not consecutive,
# as in real traffic. With streams llama.cpp decodes each batch in one pass per run of
# consecutive busy slots. Prints a table and writes it to bench/results-kv-latest.md.
# Tunables: TASKS (48), SLOTS (8), CONCURRENCY (6), MAX_TOKENS (96), THREADS (cores), ROUNDS (2).
set -euo pipefail
cd "$(dirname "$0")/.."

TASKS="${TASKS:-48}"
SLOTS="${SLOTS:-8}"
CONCURRENCY="${CONCURRENCY:-6}"
MAX_TOKENS="${MAX_TOKENS:-96}"
THREADS="${THREADS:-$(nproc)}"
ROUNDS="${ROUNDS:-2}"
WARREN="$(pwd)/target/release/warren"
OUT="$(mktemp -d)"

export WARREN__ENGINE__MODEL_PATH="$(pwd)/models/gemma3-270m-q4_k_m.gguf"
export WARREN__ENGINE__THREADS="$THREADS" WARREN__ENGINE__SLOTS="$SLOTS"
export WARREN__METRICS__LISTEN="" WARREN__LOG__LEVEL=warn

for round in $(seq 1 "$ROUNDS"); do
  for unified in true false; do
    echo "== round $round/$ROUNDS: engine.kv_unified=$unified" >&2
    WARREN__ENGINE__KV_UNIFIED="$unified" "$WARREN" bench --in-process --tasks "$TASKS" \
      --concurrency "$CONCURRENCY" --max-tokens "$MAX_TOKENS" --mixed-lengths --json \
      --label "kv_unified=$unified" > "$OUT/$unified-$round.json"
  done
done

mkdir -p bench
python3 - "$OUT" "$ROUNDS" <<PY | tee bench/results-kv-latest.md
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
print("## KV cache layout: $(date -u +%Y-%m-%d), $(nproc) CPU cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), no GPU")
print()
print("Engine alone, gemma3-270m Q4_K_M, threads $THREADS, $SLOTS slots, $TASKS tasks of eight lengths (up to $MAX_TOKENS tokens)")
print("kept $CONCURRENCY at a time, greedy; $ROUNDS interleaved rounds, median [min-max].")
print()
print("| engine.kv_unified | tokens/s | tasks/s | latency p50 ms |")
print("|---|---|---|---|")
medians = {}
for unified in ("true", "false"):
    runs = [json.load(open(f"{out}/{unified}-{r}.json")) for r in range(1, rounds + 1)]
    tps = [r["tokens_per_s"] for r in runs]
    medians[unified] = statistics.median(tps)
    name = "true (one cache)" if unified == "true" else "false (a stream per slot)"
    print(f"| {name} | {medians[unified]:.1f} [{min(tps):.1f}-{max(tps):.1f}] | "
          f"{statistics.median(r['tasks_per_s'] for r in runs):.2f} | "
          f"{statistics.median(r['latency_ms']['p50'] for r in runs):.0f} |")
print()
print(f"one cache / streams: {medians['true'] / medians['false']:.2f}x tokens/s")
PY
