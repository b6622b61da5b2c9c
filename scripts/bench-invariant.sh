#!/usr/bin/env bash
# `make bench-invariant` (also run by `make bench`): what batch-invariant generation costs,
# side by side in one run: warren's engine alone with engine.batch_invariant off (one decode
# for every slot's tokens), on (one decode per task), and off with one task in 8 asking for
# it (its own `batch_invariant`, at 8 slots or more), at SLOTS slots with as many tasks at a
# time, sampled with a seed as the tasks that want it are, interleaved over ROUNDS. Prints a
# table and writes it to bench/results-invariant-latest.md.
# Tunables: TASKS (32), MAX_TOKENS (64), SLOTS ("1 4 8 16"), THREADS (cores), ROUNDS (2).
set -euo pipefail
cd "$(dirname "$0")/.."

TASKS="${TASKS:-32}"
MAX_TOKENS="${MAX_TOKENS:-64}"
SLOTS="${SLOTS:-1 4 8 16}"
THREADS="${THREADS:-$(nproc)}"
ROUNDS="${ROUNDS:-2}"
WARREN="$(pwd)/target/release/warren"
OUT="$(mktemp -d)"

export WARREN__ENGINE__MODEL_PATH="$(pwd)/models/gemma3-270m-q4_k_m.gguf"
export WARREN__ENGINE__THREADS="$THREADS" WARREN__ENGINE__CONTEXT_SIZE=2048
export WARREN__METRICS__LISTEN="" WARREN__LOG__LEVEL=warn

for round in $(seq 1 "$ROUNDS"); do
  for n in $SLOTS; do
    modes="false true"
    if [ "$n" -ge 8 ]; then modes="$modes 1in8"; fi
    for mode in $modes; do
      echo "== round $round/$ROUNDS: $n slots, batch_invariant=$mode" >&2
      setting="$mode" per_task=()
      if [ "$mode" = 1in8 ]; then setting=false per_task=(--batch-invariant-every 8); fi
      WARREN__ENGINE__SLOTS="$n" WARREN__ENGINE__BATCH_INVARIANT="$setting" \
        "$WARREN" bench --in-process --tasks "$TASKS" --concurrency "$n" \
        --max-tokens "$MAX_TOKENS" --temperature 0.7 "${per_task[@]}" --json \
        --label "batch_invariant=$mode" > "$OUT/$n-$mode-$round.json"
    done
  done
done

mkdir -p bench
python3 - "$OUT" "$ROUNDS" "$SLOTS" <<PY | tee bench/results-invariant-latest.md
import json, statistics, sys
out, rounds, slots = sys.argv[1], int(sys.argv[2]), sys.argv[3].split()
print("## Batch-invariant generation: $(date -u +%Y-%m-%d), $(nproc) CPU cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), no GPU")
print()
print("Engine alone, gemma3-270m Q4_K_M, threads $THREADS, $TASKS tasks of $MAX_TOKENS tokens, as many")
print("at a time as slots, temperature 0.7; $ROUNDS interleaved rounds, median [min-max].")
print()
print("| slots | batch_invariant | tokens/s | latency p50 ms | tokens per decode | against off |")
print("|---|---|---|---|---|---|")
names = {"false": "off", "true": "on (engine)", "1in8": "1 task in 8 (its own)"}
for n in slots:
    medians = {}
    for invariant in ("false", "true", "1in8"):
        if invariant == "1in8" and int(n) < 8:
            continue
        runs = [json.load(open(f"{out}/{n}-{invariant}-{r}.json")) for r in range(1, rounds + 1)]
        tps = [r["tokens_per_s"] for r in runs]
        medians[invariant] = statistics.median(tps)
        steps = [r["step_profile"] for r in runs if r.get("step_profile")]
        per_token = (f"{statistics.median(s['tokens_per_step'] for s in steps):.2f}"
                     if steps else "-")
        ratio = f"{medians[invariant] / medians['false']:.2f}x" if invariant != "false" else ""
        print(f"| {n} | {names[invariant]} | {medians[invariant]:.1f} [{min(tps):.1f}-{max(tps):.1f}] | "
              f"{statistics.median(r['latency_ms']['p50'] for r in runs):.0f} | {per_token} | {ratio} |")
PY
